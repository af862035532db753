package localpath

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v11/controller"
	"sigs.k8s.io/yaml"
)

// Names v0.0.31 uses.
const (
	Name                   = "rancher.io/local-path"
	KeyNode                = "kubernetes.io/hostname"
	SelectedNodeAnnotation = "local.path.provisioner/selected-node"
	HelperPodFile          = "helperPod.yaml"
	ConfigFileKey          = "config.json"
	// ScriptDir is where the helper pod finds setup and teardown.
	ScriptDir = "/script"
	// ConfigFileCheckInterval is how often the config file is read again.
	ConfigFileCheckInterval = 30 * time.Second
	helperPodNameMaxLength  = 128
	dataVolume              = "data"
	scriptVolume            = "script"
)

// Action is what a helper pod does.
type Action string

const (
	ActionCreate Action = "create"
	ActionDelete Action = "delete"
)

// Provisioner implements controller.Provisioner.
type Provisioner struct {
	Client         kubernetes.Interface
	Namespace      string
	ServiceAccount string
	ConfigMapName  string
	// PollInterval is how often a helper pod's phase is read (1 s, as v0.0.31).
	PollInterval time.Duration

	mu        sync.RWMutex
	config    *Config
	configRaw []byte
	helperPod *corev1.Pod
}

var _ controller.Provisioner = (*Provisioner)(nil)

// New makes a provisioner from config.json's content and helperPod.yaml's.
func New(client kubernetes.Interface, namespace, serviceAccount, configMapName string, configJSON, helperPodYAML []byte) (*Provisioner, error) {
	p := &Provisioner{
		Client: client, Namespace: namespace, ServiceAccount: serviceAccount,
		ConfigMapName: configMapName, PollInterval: time.Second,
	}
	if err := p.SetConfig(configJSON); err != nil {
		return nil, err
	}
	if err := p.SetHelperPod(helperPodYAML); err != nil {
		return nil, err
	}
	return p, nil
}

// SetConfig swaps in a new config.json when it parses; an invalid one leaves the old in place.
// It reports whether anything changed through the log.
func (p *Provisioner) SetConfig(raw []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.config != nil && bytes.Equal(raw, p.configRaw) {
		return nil
	}
	c, err := ParseConfig(raw)
	if err != nil {
		return fmt.Errorf("fail to load config file: %w", err)
	}
	if p.config != nil && reflect.DeepEqual(c, p.config) {
		p.configRaw = raw
		return nil
	}
	p.config, p.configRaw = c, raw
	klog.Infof("Applied config: %s", strings.Join(strings.Fields(string(raw)), " "))
	return nil
}

// Config is the config in force.
func (p *Provisioner) Config() *Config {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.config
}

// SetHelperPod loads the helper pod template (a Pod manifest with at least one container).
func (p *Provisioner) SetHelperPod(manifest []byte) error {
	var pod corev1.Pod
	if err := yaml.Unmarshal(manifest, &pod); err != nil {
		return fmt.Errorf("invalid helper pod manifest: %w", err)
	}
	if len(pod.Spec.Containers) == 0 {
		return fmt.Errorf("helper pod template does not specify any container")
	}
	p.mu.Lock()
	p.helperPod = &pod
	p.mu.Unlock()
	return nil
}

// WatchConfig reads path every interval until ctx ends and swaps in what changed, as v0.0.31
// follows its mounted ConfigMap; helperPodPath, when not empty, is reloaded too.
func (p *Provisioner) WatchConfig(ctx context.Context, path, helperPodPath string, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if raw, err := os.ReadFile(path); err != nil {
			klog.Errorf("failed to load the new config file: %v", err)
		} else if err := p.SetConfig(raw); err != nil {
			klog.Errorf("failed to load the new config file %s: %v", path, err)
		}
		if helperPodPath != "" {
			if raw, err := os.ReadFile(helperPodPath); err != nil {
				klog.Errorf("failed to load the new helper pod manifest: %v", err)
			} else if err := p.SetHelperPod(raw); err != nil {
				klog.Errorf("failed to load the new helper pod manifest %s: %v", helperPodPath, err)
			}
		}
	}
}

// Volume describes what a helper pod works on.
type Volume struct {
	Name        string
	Path        string
	Mode        corev1.PersistentVolumeMode
	SizeInBytes int64
	Node        string
}

// Provision creates the volume's directory through a setup helper pod and returns its PV.
func (p *Provisioner) Provision(ctx context.Context, opts controller.ProvisionOptions) (*corev1.PersistentVolume, controller.ProvisioningState, error) {
	cfg := p.Config()
	class, err := cfg.ClassConfig(opts.StorageClass.Name)
	if err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	pv, err := p.provision(ctx, cfg, class, opts)
	return pv, controller.ProvisioningFinished, err
}

func (p *Provisioner) provision(ctx context.Context, cfg *Config, class *Class, opts controller.ProvisionOptions) (*corev1.PersistentVolume, error) {
	pvc, node, sc := opts.PVC, opts.SelectedNode, opts.StorageClass
	shared, err := class.Shared()
	if err != nil {
		return nil, err
	}
	if !shared {
		if pvc.Spec.Selector != nil {
			return nil, fmt.Errorf("claim.Spec.Selector is not supported")
		}
		for _, m := range pvc.Spec.AccessModes {
			if m != corev1.ReadWriteOnce && m != corev1.ReadWriteOncePod {
				return nil, fmt.Errorf("NodePath only supports ReadWriteOnce and ReadWriteOncePod (1.22+) access modes")
			}
		}
		if node == nil {
			return nil, fmt.Errorf("configuration error, no node was specified")
		}
	}
	nodeName := ""
	if node != nil {
		nodeName = node.Name
	}
	base, err := class.BasePath(nodeName, sc.Parameters["nodePath"])
	if err != nil {
		return nil, err
	}
	dir, err := VolumeDirName(sc.Parameters["pathPattern"], opts.PVName, pvc)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(base, dir)
	klog.Infof("Creating volume %v at %v:%v", opts.PVName, nodeName, path)

	mode := corev1.PersistentVolumeFilesystem
	if pvc.Spec.VolumeMode != nil {
		mode = *pvc.Spec.VolumeMode
	}
	size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	cmd := []string{"/bin/sh", ScriptDir + "/setup"}
	if cfg.SetupCommand != "" {
		cmd = []string{cfg.SetupCommand}
	}
	vol := Volume{Name: opts.PVName, Path: path, Mode: mode, SizeInBytes: size.Value(), Node: nodeName}
	if err := p.runHelper(ctx, cfg, ActionCreate, cmd, vol, shared); err != nil {
		return nil, err
	}

	volumeType := "hostPath"
	if v, ok := sc.Annotations["defaultVolumeType"]; ok {
		volumeType = v
	}
	if v, ok := pvc.Annotations["volumeType"]; ok {
		volumeType = v
	}
	var source corev1.PersistentVolumeSource
	switch strings.ToLower(volumeType) {
	case "local":
		source.Local = &corev1.LocalVolumeSource{Path: path}
	case "hostpath":
		t := corev1.HostPathDirectoryOrCreate
		source.HostPath = &corev1.HostPathVolumeSource{Path: path, Type: &t}
	default:
		return nil, fmt.Errorf("failed to create persistent volume source: %q is not a recognised volume type", volumeType)
	}
	var affinity *corev1.VolumeNodeAffinity
	if !shared {
		value, ok := node.Labels[KeyNode]
		if !ok {
			value = nodeName
		}
		affinity = &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{
			NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{
					Key: KeyNode, Operator: corev1.NodeSelectorOpIn, Values: []string{value},
				}},
			}},
		}}
	}
	reclaim := corev1.PersistentVolumeReclaimDelete
	if sc.ReclaimPolicy != nil {
		reclaim = *sc.ReclaimPolicy
	}
	fs := corev1.PersistentVolumeFilesystem
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        opts.PVName,
			Annotations: map[string]string{SelectedNodeAnnotation: nodeName},
		},
		Spec: corev1.PersistentVolumeSpec{
			PersistentVolumeReclaimPolicy: reclaim,
			AccessModes:                   pvc.Spec.AccessModes,
			VolumeMode:                    &fs,
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			PersistentVolumeSource:        source,
			NodeAffinity:                  affinity,
		},
	}, nil
}

// Delete removes the volume's directory through a teardown helper pod (unless the PV is
// retained).
func (p *Provisioner) Delete(ctx context.Context, pv *corev1.PersistentVolume) error {
	cfg := p.Config()
	class, err := cfg.ClassConfig(pv.Spec.StorageClassName)
	if err != nil {
		return err
	}
	if err := p.delete(ctx, cfg, class, pv); err != nil {
		return fmt.Errorf("failed to delete volume %v: %w", pv.Name, err)
	}
	return nil
}

func (p *Provisioner) delete(ctx context.Context, cfg *Config, class *Class, pv *corev1.PersistentVolume) error {
	path, node, err := PathAndNode(pv, class)
	if err != nil {
		return err
	}
	if pv.Spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimRetain {
		klog.Infof("Retained volume %v", pv.Name)
		return nil
	}
	klog.Infof("Deleting volume %v at %v:%v", pv.Name, node, path)
	mode := corev1.PersistentVolumeFilesystem
	if pv.Spec.VolumeMode != nil {
		mode = *pv.Spec.VolumeMode
	}
	size := pv.Spec.Capacity[corev1.ResourceStorage]
	cmd := []string{"/bin/sh", ScriptDir + "/teardown"}
	if cfg.TeardownCommand != "" {
		cmd = []string{cfg.TeardownCommand}
	}
	shared, _ := class.Shared()
	return p.runHelper(ctx, cfg, ActionDelete, cmd, Volume{Name: pv.Name, Path: path, Mode: mode, SizeInBytes: size.Value(), Node: node}, shared)
}

// PathAndNode reads a PV this provisioner made: its path (hostPath or local) and, unless the
// class is shared, the node of its kubernetes.io/hostname affinity.
func PathAndNode(pv *corev1.PersistentVolume, class *Class) (string, string, error) {
	src := pv.Spec.PersistentVolumeSource
	var path string
	switch {
	case src.HostPath != nil && src.Local == nil:
		path = src.HostPath.Path
	case src.Local != nil && src.HostPath == nil:
		path = src.Local.Path
	default:
		return "", "", fmt.Errorf("no path set")
	}
	shared, err := class.Shared()
	if err != nil {
		return "", "", err
	}
	if shared {
		return path, "", nil
	}
	if pv.Spec.NodeAffinity == nil || pv.Spec.NodeAffinity.Required == nil {
		return "", "", fmt.Errorf("no NodeAffinity set")
	}
	for _, term := range pv.Spec.NodeAffinity.Required.NodeSelectorTerms {
		for _, e := range term.MatchExpressions {
			if e.Key == KeyNode && e.Operator == corev1.NodeSelectorOpIn {
				if len(e.Values) != 1 {
					return "", "", fmt.Errorf("multiple values for the node affinity")
				}
				return path, e.Values[0], nil
			}
		}
	}
	return "", "", fmt.Errorf("cannot find affinited node")
}

// HelperPod renders the helper pod for action on vol from the template: the template's first
// container runs cmd with VOL_DIR, VOL_MODE and VOL_SIZE_BYTES; the volume's parent directory
// is mounted from the host (at its own path unless the template mounts "data" elsewhere), the
// ConfigMap's setup and teardown at /script (unless config commands replace them).
func (p *Provisioner) HelperPod(cfg *Config, action Action, cmd []string, vol Volume, shared bool) (*corev1.Pod, error) {
	if vol.Name == "" || vol.Path == "" || (!shared && vol.Node == "") {
		return nil, fmt.Errorf("invalid empty name or path or node")
	}
	if !filepath.IsAbs(vol.Path) {
		return nil, fmt.Errorf("volume path %s is not absolute", vol.Path)
	}
	clean := filepath.Clean(vol.Path)
	parent, volDir := filepath.Split(clean)
	p.mu.RLock()
	pod := p.helperPod.DeepCopy()
	p.mu.RUnlock()

	dirOrCreate := corev1.HostPathDirectoryOrCreate
	volumes := []corev1.Volume{{
		Name:         dataVolume,
		VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: parent, Type: &dirOrCreate}},
	}}
	c := &pod.Spec.Containers[0]
	var items []corev1.KeyToPath
	if cfg.SetupCommand == "" {
		items = append(items, corev1.KeyToPath{Key: "setup", Path: "setup"})
	}
	if cfg.TeardownCommand == "" {
		items = append(items, corev1.KeyToPath{Key: "teardown", Path: "teardown"})
	}
	if len(items) > 0 {
		volumes = append(volumes, corev1.Volume{
			Name: scriptVolume,
			VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: p.ConfigMapName},
				Items:                items,
			}},
		})
		mountAt(&c.VolumeMounts, scriptVolume, ScriptDir).MountPath = ScriptDir
	}
	dataMount := mountAt(&c.VolumeMounts, dataVolume, parent)
	parentInPod := strings.TrimSuffix(dataMount.MountPath, "/")
	volDir = strings.TrimSuffix(volDir, "/")
	if parentInPod == "" || volDir == "" || !filepath.IsAbs(parentInPod) {
		return nil, fmt.Errorf("invalid path %v for %v: cannot find parent dir or volume dir or parent dir is relative", action, vol.Path)
	}
	inPod := filepath.Join(parentInPod, volDir)
	size := strconv.FormatInt(vol.SizeInBytes, 10)
	c.Env = append(c.Env,
		corev1.EnvVar{Name: "VOL_DIR", Value: inPod},
		corev1.EnvVar{Name: "VOL_MODE", Value: string(vol.Mode)},
		corev1.EnvVar{Name: "VOL_SIZE_BYTES", Value: size},
	)
	c.Command = cmd
	c.Args = []string{"-p", inPod, "-s", size, "-m", string(vol.Mode), "-a", string(action)}

	pod.Name = pod.Name + "-" + string(action) + "-" + vol.Name
	if len(pod.Name) > helperPodNameMaxLength {
		pod.Name = pod.Name[:helperPodNameMaxLength]
	}
	pod.Namespace = p.Namespace
	if vol.Node != "" {
		pod.Spec.NodeName = vol.Node
	}
	pod.Spec.ServiceAccountName = p.ServiceAccount
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	pod.Spec.Tolerations = append(pod.Spec.Tolerations, corev1.Toleration{Operator: corev1.TolerationOpExists})
	pod.Spec.Volumes = append(pod.Spec.Volumes, volumes...)
	return pod, nil
}

// mountAt returns the container's mount called name, adding it at path when the template has
// none (a template's mount without a path gets path).
func mountAt(mounts *[]corev1.VolumeMount, name, path string) *corev1.VolumeMount {
	for i := range *mounts {
		if (*mounts)[i].Name == name {
			if (*mounts)[i].MountPath == "" {
				(*mounts)[i].MountPath = path
			}
			return &(*mounts)[i]
		}
	}
	*mounts = append(*mounts, corev1.VolumeMount{Name: name, MountPath: path})
	return &(*mounts)[len(*mounts)-1]
}

// runHelper creates the helper pod, waits up to cmdTimeoutSeconds for it to succeed, logs its
// output and deletes it.
func (p *Provisioner) runHelper(ctx context.Context, cfg *Config, action Action, cmd []string, vol Volume, shared bool) (err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("failed to %v volume %v: %w", action, vol.Name, err)
		}
	}()
	pod, err := p.HelperPod(cfg, action, cmd, vol, shared)
	if err != nil {
		return err
	}
	pods := p.Client.CoreV1().Pods(p.Namespace)
	klog.Infof("create the helper pod %s into %s", pod.Name, p.Namespace)
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	logged := false
	defer func() {
		if !logged {
			p.helperLogs(pod.Name, pod.Spec.Containers[0].Name)
		}
		if e := pods.Delete(context.Background(), pod.Name, metav1.DeleteOptions{}); e != nil {
			klog.Errorf("unable to delete the helper pod: %v", e)
		}
	}()
	deadline := time.Now().Add(time.Duration(cfg.CmdTimeoutSeconds) * time.Second)
	for {
		got, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		switch got.Status.Phase {
		case corev1.PodSucceeded:
			klog.Infof("Volume %v has been %vd on %v:%v", vol.Name, action, vol.Node, vol.Path)
			return nil
		case corev1.PodFailed:
			logged = true
			out := strings.TrimSpace(p.helperLogs(pod.Name, pod.Spec.Containers[0].Name))
			return fmt.Errorf("helper pod %s failed: %s", pod.Name, out)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("create process timeout after %v seconds", cfg.CmdTimeoutSeconds)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(p.PollInterval):
		}
	}
}

// helperLogs returns the helper container's output and copies it into the provisioner's log.
func (p *Provisioner) helperLogs(name, container string) string {
	req := p.Client.CoreV1().Pods(p.Namespace).GetLogs(name, &corev1.PodLogOptions{Container: container})
	rc, err := req.Stream(context.Background())
	if err != nil {
		klog.Errorf("failed to save %s logs: %v", name, err)
		return ""
	}
	defer rc.Close()
	data, _ := io.ReadAll(io.LimitReader(rc, 64<<10))
	klog.Infof("Start of %s logs", name)
	for _, l := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		if l != "" {
			klog.Info(l)
		}
	}
	klog.Infof("End of %s logs", name)
	return string(data)
}
