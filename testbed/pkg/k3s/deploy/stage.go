// Package deploy plays k3s's packaged manifests and its deploy controller: at every start the
// manifests are staged, templated, into server/manifests (k3s: pkg/deploy/stage.go), and every
// file of that directory is applied and tracked by an Addon object, first all of them, then
// each one that changes, every 15 s (k3s: pkg/deploy/controller.go). sparkgap places its own
// manifests there too (`sparkgap-*.yaml`, with autoDeployManifests) and stops k3s from applying
// local-storage.yaml with local-storage.yaml.skip.
package deploy

import (
	"bytes"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Config is what the k3s role passes from its flags. Vars are keyed by bare name (CLUSTER_DNS)
// or as k3s's placeholder (%{CLUSTER_DNS}%); SYSTEM_DEFAULT_REGISTRY may be given with or
// without its trailing slash, or only as SYSTEM_DEFAULT_REGISTRY_RAW. Disabled should hold
// "ccm" when the cloud controller is disabled, as k3s adds it for --disable-cloud-controller.
type Config struct {
	DataDir    string            // /var/lib/rancher/k3s
	Disabled   []string          // values of --disable (traefik, metrics-server, local-storage, coredns, servicelb, runtimes...)
	Vars       map[string]string // template values: CLUSTER_DNS, CLUSTER_DOMAIN, DEFAULT_LOCAL_STORAGE_PATH, SYSTEM_DEFAULT_REGISTRY, SYSTEM_DEFAULT_REGISTRY_RAW
	Kubeconfig string            // an admin kubeconfig
	Log        *log.Logger
}

// ManifestsDir is where k3s stages its manifests and deploys every file it finds.
func (c Config) ManifestsDir() string { return filepath.Join(c.DataDir, "server", "manifests") }

func (c Config) logf(format string, args ...interface{}) {
	if c.Log != nil {
		c.Log.Printf(format, args...)
	}
}

func (c Config) disabled() map[string]bool {
	m := make(map[string]bool, len(c.Disabled))
	for _, d := range c.Disabled {
		m[d] = true
	}
	return m
}

var placeholder = regexp.MustCompile(`%\{[A-Z_]+\}%`)

// templateVars turns Config.Vars (bare names, or already %{NAME}%) into k3s's replacement table,
// with k3s's derived values where the caller did not give them (k3s: pkg/server/server.go
// stageFiles): the registry prefix ends in "/" when a system default registry is set, a
// single-stack cluster DNS, and metrics-server preferring node InternalIPs.
func templateVars(vars map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range vars {
		if !strings.HasPrefix(k, "%{") {
			k = "%{" + k + "}%"
		}
		out[k] = v
	}
	def := func(k, v string) {
		if _, ok := out[k]; !ok {
			out[k] = v
		}
	}
	if raw := out["%{SYSTEM_DEFAULT_REGISTRY_RAW}%"]; raw != "" {
		def("%{SYSTEM_DEFAULT_REGISTRY}%", raw)
	}
	// The prefix of image names: empty, or the registry and a slash (k3s: registryTemplate),
	// whichever way the caller spelled it.
	if r := strings.TrimSuffix(out["%{SYSTEM_DEFAULT_REGISTRY}%"], "/"); r != "" {
		out["%{SYSTEM_DEFAULT_REGISTRY}%"] = r + "/"
	} else {
		out["%{SYSTEM_DEFAULT_REGISTRY}%"] = ""
	}
	def("%{SYSTEM_DEFAULT_REGISTRY_RAW}%", strings.TrimSuffix(out["%{SYSTEM_DEFAULT_REGISTRY}%"], "/"))
	if dns, ok := out["%{CLUSTER_DNS}%"]; ok {
		def("%{CLUSTER_DNS_LIST}%", "["+dns+"]")
	}
	def("%{CLUSTER_DNS_IPFAMILYPOLICY}%", "SingleStack")
	def("%{PREFERRED_ADDRESS_TYPES}%", "InternalIP,ExternalIP,Hostname")
	return out
}

// render replaces every placeholder of content (k3s: a plain byte replacement per variable);
// a placeholder left over is an error here, where k3s would stage it as is.
func render(name string, content []byte, vars map[string]string) ([]byte, error) {
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		content = bytes.ReplaceAll(content, []byte(k), []byte(vars[k]))
	}
	if left := placeholder.Find(content); left != nil {
		return nil, fmt.Errorf("%s: no value for %s", name, left)
	}
	return content, nil
}

// skipped mirrors the selection of k3s's Stage: a manifest is not staged when its path, its path
// without extension, or one of its parent directories is disabled (metrics-server/ as a whole,
// local-storage.yaml as local-storage).
func skipped(name string, disabled map[string]bool) bool {
	if disabled[name] || disabled[strings.TrimSuffix(name, filepath.Ext(name))] {
		return true
	}
	parts := strings.Split(name, "/")
	for i := 1; i < len(parts); i++ {
		if disabled[strings.Join(parts[:i], "/")] {
			return true
		}
	}
	return false
}

// Stage writes k3s's packaged manifests into DataDir/server/manifests, templated, leaving out
// the disabled ones (k3s: pkg/deploy/stage.go). It runs at every start and overwrites what is
// there: edits to these files do not survive a restart. A disabled manifest staged by an
// earlier start is left for the deploy controller, which deletes it with its objects.
func Stage(cfg Config) error {
	dir := cfg.ManifestsDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	files, err := Packaged()
	if err != nil {
		return err
	}
	vars, disabled := templateVars(cfg.Vars), cfg.disabled()
	for _, name := range PackagedNames() {
		if skipped(name, disabled) {
			continue
		}
		content, err := render(name, files[name], vars)
		if err != nil {
			return err
		}
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		cfg.logf("Writing manifest: %s", p)
		if err := os.WriteFile(p, content, 0o600); err != nil {
			return fmt.Errorf("failed to write to %s: %w", name, err)
		}
	}
	return nil
}
