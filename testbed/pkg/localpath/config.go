// Package localpath is the test bed's stand-in for rancher/local-path-provisioner v0.0.31, which
// the Go module proxy does not serve: a dynamic provisioner (provisioner name
// rancher.io/local-path) on sigs.k8s.io/sig-storage-lib-external-provisioner that honours the
// contract sparkgap's storage stage renders, written from v0.0.31's documented behaviour and
// its provisioner.go (rancher/local-path-provisioner, tag v0.0.31), none of it copied:
//
//   - config.json: cmdTimeoutSeconds, setupCommand, teardownCommand, nodePathMap,
//     sharedFileSystemPath, storageClassConfigs{<class>: {nodePathMap, sharedFileSystemPath}}.
//     Once storageClassConfigs is non-empty the top-level nodePathMap is ignored and a class not
//     listed fails with "BUG: Got request for unexpected storage class <name>".
//     nodePathMap entries are per node, DEFAULT_PATH_FOR_NON_LISTED_NODES for every other node.
//     The file is read again every 30 s and swapped in when it changed and is valid
//     (v0.0.31's ConfigFileCheckInterval), the way it follows its mounted ConfigMap.
//   - StorageClass parameter nodePath picks one of the node's configured paths (it must be one
//     of them: "config doesn't contain path ..."); pathPattern (a text/template over .PVName and
//     .PVC) replaces the volume directory name, which is otherwise <pv>_<namespace>_<pvc>.
//   - Each volume is set up and torn down by a helper pod built from helperPod.yaml: in the
//     provisioner's namespace (POD_NAMESPACE), on the selected node, running
//     `/bin/sh /script/setup` (or `teardown`) with the scripts mounted from the ConfigMap
//     local-path-config at /script, the parent directory mounted from the host at its own path,
//     env VOL_DIR, VOL_MODE, VOL_SIZE_BYTES and args -p -s -m -a; the provisioner waits up to
//     cmdTimeoutSeconds (default 120) for it to succeed, logs its output and deletes it.
//   - The PV is a hostPath (DirectoryOrCreate; "local" when the StorageClass annotation
//     defaultVolumeType or the PVC annotation volumeType says so) with node affinity
//     kubernetes.io/hostname In [<node>] and annotation local.path.provisioner/selected-node;
//     its reclaim policy is the class's. Deleting a PV whose policy is not Retain runs teardown.
//
// Where it differs from v0.0.31: when a node has several paths and the class names none, the
// first in sorted order is used (v0.0.31 picks one at random); a helper pod that fails ends the
// wait at once with its log in the error (v0.0.31 waits out cmdTimeoutSeconds); logs are klog
// lines, not logrus.
package localpath

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DefaultNode is the nodePathMap key that applies to every node not listed.
const DefaultNode = "DEFAULT_PATH_FOR_NON_LISTED_NODES"

// DefaultCmdTimeoutSeconds is how long a helper pod may take when the config names no time.
const DefaultCmdTimeoutSeconds = 120

// NodePaths is one nodePathMap entry of config.json.
type NodePaths struct {
	Node  string   `json:"node,omitempty"`
	Paths []string `json:"paths,omitempty"`
}

// ClassFile is a storage class's part of config.json (also the top level's).
type ClassFile struct {
	NodePathMap          []NodePaths `json:"nodePathMap,omitempty"`
	SharedFileSystemPath string      `json:"sharedFileSystemPath,omitempty"`
}

// File is config.json as written.
type File struct {
	CmdTimeoutSeconds int    `json:"cmdTimeoutSeconds,omitempty"`
	SetupCommand      string `json:"setupCommand,omitempty"`
	TeardownCommand   string `json:"teardownCommand,omitempty"`
	ClassFile
	StorageClassConfigs map[string]ClassFile `json:"storageClassConfigs"`
}

// Class is the checked configuration of one storage class.
type Class struct {
	// NodePaths maps a node name (or DefaultNode) to its base paths, sorted.
	NodePaths            map[string][]string
	SharedFileSystemPath string
}

// Config is the checked config.json.
type Config struct {
	CmdTimeoutSeconds int
	SetupCommand      string
	TeardownCommand   string
	// Default applies to every class when Classes is empty.
	Default Class
	Classes map[string]Class
}

// ParseConfig reads config.json: paths must be absolute and not "/", nodes and paths unique.
func ParseConfig(data []byte) (*Config, error) {
	var f File
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	c := &Config{
		CmdTimeoutSeconds: f.CmdTimeoutSeconds,
		SetupCommand:      f.SetupCommand,
		TeardownCommand:   f.TeardownCommand,
	}
	if c.CmdTimeoutSeconds <= 0 {
		c.CmdTimeoutSeconds = DefaultCmdTimeoutSeconds
	}
	if len(f.StorageClassConfigs) == 0 {
		d, err := checkClass(f.ClassFile)
		if err != nil {
			return nil, err
		}
		c.Default = *d
		return c, nil
	}
	c.Classes = map[string]Class{}
	for name, cf := range f.StorageClassConfigs {
		cl, err := checkClass(cf)
		if err != nil {
			return nil, fmt.Errorf("config for class %s is invalid: %w", name, err)
		}
		c.Classes[name] = *cl
	}
	return c, nil
}

func checkClass(f ClassFile) (*Class, error) {
	c := &Class{NodePaths: map[string][]string{}, SharedFileSystemPath: f.SharedFileSystemPath}
	for _, np := range f.NodePathMap {
		if _, dup := c.NodePaths[np.Node]; dup {
			return nil, fmt.Errorf("duplicate node %v", np.Node)
		}
		seen := map[string]bool{}
		paths := []string{}
		for _, p := range np.Paths {
			if !strings.HasPrefix(p, "/") {
				return nil, fmt.Errorf("path must start with / for path %v on node %v", p, np.Node)
			}
			clean := filepath.Clean(p)
			if clean == "/" {
				return nil, fmt.Errorf("cannot use root ('/') as path on node %v", np.Node)
			}
			if seen[clean] {
				return nil, fmt.Errorf("duplicate path %v on node %v", p, np.Node)
			}
			seen[clean] = true
			paths = append(paths, clean)
		}
		sort.Strings(paths)
		c.NodePaths[np.Node] = paths
	}
	return c, nil
}

// ClassConfig is the configuration for storage class name: the top level when
// storageClassConfigs is empty, else the class's own entry.
func (c *Config) ClassConfig(name string) (*Class, error) {
	if len(c.Classes) == 0 {
		return &c.Default, nil
	}
	cl, ok := c.Classes[name]
	if !ok {
		return nil, fmt.Errorf("BUG: Got request for unexpected storage class %s", name)
	}
	return &cl, nil
}

// Shared reports whether the class uses one shared file system path (no node affinity).
func (c *Class) Shared() (bool, error) {
	switch {
	case c.SharedFileSystemPath != "" && len(c.NodePaths) != 0:
		return false, fmt.Errorf("both nodePathMap and sharedFileSystemPath are defined. Please make sure only one is in use")
	case len(c.NodePaths) != 0:
		return false, nil
	case c.SharedFileSystemPath != "":
		return true, nil
	}
	return false, fmt.Errorf("both nodePathMap and sharedFileSystemPath are unconfigured")
}

// BasePath is the directory volumes of this class go under on node: the node's entry (else
// DefaultNode's); requested (the StorageClass's nodePath) must be one of its paths; without it
// the first path.
func (c *Class) BasePath(node, requested string) (string, error) {
	shared, err := c.Shared()
	if err != nil {
		return "", err
	}
	if shared {
		return c.SharedFileSystemPath, nil
	}
	paths, ok := c.NodePaths[node]
	if !ok {
		if paths, ok = c.NodePaths[DefaultNode]; !ok {
			return "", fmt.Errorf("config doesn't contain node %v, and no %v available", node, DefaultNode)
		}
	}
	if len(paths) == 0 {
		return "", fmt.Errorf("no local path available on node %v", node)
	}
	if requested != "" {
		for _, p := range paths {
			if p == requested {
				return p, nil
			}
		}
		return "", fmt.Errorf("config doesn't contain path %v on node %v", requested, node)
	}
	return paths[0], nil
}

// VolumeDirName is the directory of a volume under its base path: <pv>_<namespace>_<pvc>, or
// pattern (the StorageClass parameter pathPattern) rendered over .PVName and .PVC.
func VolumeDirName(pattern, pvName string, pvc *corev1.PersistentVolumeClaim) (string, error) {
	if pattern == "" {
		return strings.Join([]string{pvName, pvc.Namespace, pvc.Name}, "_"), nil
	}
	tpl, err := template.New("pathPattern").Parse(pattern)
	if err != nil {
		return "", fmt.Errorf("failed to create path from pattern %v: %w", pattern, err)
	}
	var buf bytes.Buffer
	data := struct {
		PVName string
		PVC    metav1.ObjectMeta
	}{pvName, pvc.ObjectMeta}
	if err := tpl.Execute(&buf, data); err != nil {
		return "", fmt.Errorf("failed to create path from pattern %v: %w", pattern, err)
	}
	return buf.String(), nil
}
