// Package agent builds the node side as k3s's agent does: the kubelet's configuration and flags,
// kube-proxy's flags, the CNI configuration flannel would leave, the network-policy controller's
// flags and the sysctls (k3s: pkg/daemons/agent, pkg/agent/syssetup, pkg/agent/flannel,
// pkg/agent/netpol).
package agent

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"

	"sparkgap.dev/testbed/pkg/k3s/config"
	"sparkgap.dev/testbed/pkg/k3s/pki"
)

// Paths of the agent's files (k3s: pkg/agent/config/config.go).
type Paths struct {
	KubeletConfigDir string // <data-dir>/agent/etc/kubelet.conf.d
	PodManifests     string // <data-dir>/agent/pod-manifests
	CNIConfDir       string // <data-dir>/agent/etc/cni/net.d
	RootDir          string // the kubelet's root, /var/lib/kubelet
	ResolvConf       string // k3s's fallback resolv.conf, <data-dir>/agent/etc/resolv.conf
}

// Layout is where k3s keeps the agent's files.
func Layout(dataDir string) Paths {
	agent := filepath.Join(dataDir, "agent")
	return Paths{
		KubeletConfigDir: filepath.Join(agent, "etc", "kubelet.conf.d"),
		PodManifests:     filepath.Join(agent, "pod-manifests"),
		CNIConfDir:       filepath.Join(agent, "etc", "cni", "net.d"),
		RootDir:          "/var/lib/kubelet",
		ResolvConf:       filepath.Join(agent, "etc", "resolv.conf"),
	}
}

// KubeletConfigFile is k3s's drop-in of defaults (k3s: pkg/daemons/agent/agent.go
// writeKubeletConfig, "00-" + version.Program + "-defaults.conf").
const KubeletConfigFile = "00-k3s-defaults.conf"

// Taint is a node taint of --node-taint, key=value:Effect or key:Effect.
type Taint struct {
	Key    string `json:"key"`
	Value  string `json:"value,omitempty"`
	Effect string `json:"effect"`
}

// ParseTaints reads --node-taint values as the kubelet's taints.ParseTaints does.
func ParseTaints(specs []string) ([]Taint, error) {
	var out []Taint
	for _, s := range specs {
		kv, effect, ok := strings.Cut(s, ":")
		if !ok {
			return nil, fmt.Errorf("--node-taint %q: invalid taint spec, want key=value:Effect", s)
		}
		switch effect {
		case "NoSchedule", "PreferNoSchedule", "NoExecute":
		default:
			return nil, fmt.Errorf("--node-taint %q: invalid taint effect %q", s, effect)
		}
		k, v, _ := strings.Cut(kv, "=")
		if k == "" {
			return nil, fmt.Errorf("--node-taint %q: empty key", s)
		}
		out = append(out, Taint{Key: k, Value: v, Effect: effect})
	}
	return out, nil
}

// KubeletSettings are the inputs of the kubelet's configuration.
type KubeletSettings struct {
	Cfg         *config.Resolved
	PKI         pki.Paths
	Paths       Paths
	RuntimeSock string // containerd's socket
	ResolvConf  string
	// CgroupRoot is the test bed's cgroup for the node (K3S_TESTBED_CGROUP_ROOT); real k3s
	// leaves the kubelet's cgroupRoot at /.
	CgroupRoot string
	// NoCPUController: k3s turns CFS quota off when the cpu controller is missing.
	NoCPUController bool
}

// KubeletConfig is the KubeletConfiguration k3s writes as its drop-in of defaults (k3s:
// pkg/daemons/agent/agent.go defaultKubeletConfig, agent_linux.go kubeletArgsAndConfig).
// failCgroupV1 is written explicitly (it defaults to false in v1.33; this host is cgroup v1), and
// cgroupRoot is the test bed's.
func KubeletConfig(s KubeletSettings) ([]byte, error) {
	r := s.Cfg
	taints, err := ParseTaints(r.NodeTaints)
	if err != nil {
		return nil, err
	}
	var dns []string
	for _, ip := range r.ClusterDNSIPs {
		dns = append(dns, ip.String())
	}
	healthz := "127.0.0.1"
	if r.NodeIPs[0].To4() == nil {
		healthz = "::1"
	}
	c := map[string]any{
		"apiVersion":                       "kubelet.config.k8s.io/v1beta1",
		"kind":                             "KubeletConfiguration",
		"cpuManagerReconcilePeriod":        "10s",
		"cgroupDriver":                     "cgroupfs",
		"clusterDomain":                    r.ClusterDomain,
		"clusterDNS":                       dns,
		"evictionPressureTransitionPeriod": "5m0s",
		"failSwapOn":                       false,
		"failCgroupV1":                     false,
		"fileCheckFrequency":               "20s",
		"httpCheckFrequency":               "20s",
		"healthzBindAddress":               healthz,
		"imageMinimumGCAge":                "2m0s",
		"nodeStatusReportFrequency":        "5m0s",
		"nodeStatusUpdateFrequency":        "10s",
		"runtimeRequestTimeout":            "2m0s",
		"streamingConnectionIdleTimeout":   "4h0m0s",
		"syncFrequency":                    "1m0s",
		"volumeStatsAggPeriod":             "1m0s",
		"evictionHard":                     map[string]string{"imagefs.available": "5%", "nodefs.available": "5%"},
		"evictionMinimumReclaim":           map[string]string{"imagefs.available": "10%", "nodefs.available": "10%"},
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": false},
			"webhook":   map[string]any{"enabled": true, "cacheTTL": "2m0s"},
			"x509":      map[string]any{"clientCAFile": s.PKI.AgentClientCA},
		},
		"authorization": map[string]any{
			"mode":    "Webhook",
			"webhook": map[string]any{"cacheAuthorizedTTL": "5m0s", "cacheUnauthorizedTTL": "30s"},
		},
		"logging":                  map[string]any{"format": "text", "flushFrequency": "5s"},
		"tlsCertFile":              s.PKI.ServingKubelet,
		"tlsPrivateKeyFile":        s.PKI.ServingKubeletKey,
		"resolvConf":               s.ResolvConf,
		"staticPodPath":            s.Paths.PodManifests,
		"serializeImagePulls":      false,
		"containerRuntimeEndpoint": "unix://" + s.RuntimeSock,
	}
	if len(taints) > 0 {
		c["registerWithTaints"] = taints
	}
	if s.NoCPUController {
		c["cpuCFSQuota"] = false
	}
	if s.CgroupRoot != "" {
		c["cgroupRoot"] = s.CgroupRoot
	}
	return yaml.Marshal(c)
}

// KubeletArgs are the kubelet's flags as k3s passes them (k3s: pkg/daemons/agent/agent_linux.go
// kubeletArgsAndConfig) merged with --kubelet-arg. No --cloud-provider=external: the test bed
// runs no cloud controller, so the node must not wait for one to initialize it (k3s passes it
// unless --disable-cloud-controller, and its own cloud controller then clears the taint).
func KubeletArgs(r *config.Resolved, p pki.Paths, a Paths) []string {
	def := map[string]string{
		"config-dir":        a.KubeletConfigDir,
		"kubeconfig":        p.KubeconfigKubelet,
		"read-only-port":    "0",
		"root-dir":          a.RootDir,
		"cert-dir":          filepath.Join(a.RootDir, "pki"),
		"hostname-override": r.NodeName,
		"node-ip":           joinIPs(r.NodeIPs),
		"node-labels":       strings.Join(r.NodeLabels, ","),
	}
	if r.VLevel != "" && r.VLevel != "0" {
		def["v"] = r.VLevel
	}
	if r.VModule != "" {
		def["vmodule"] = r.VModule
	}
	return config.GetArgs(def, r.KubeletArgs)
}

func joinIPs(ips []net.IP) string {
	var s []string
	for _, ip := range ips {
		s = append(s, ip.String())
	}
	return strings.Join(s, ",")
}

// ResolvConf picks the kubelet's resolv.conf as k3s does: --resolv-conf, else /etc/resolv.conf
// when it names a nameserver that is not loopback, else systemd-resolved's upstream file, else a
// file of k3s's own naming 8.8.8.8 (k3s: pkg/agent/config/config.go getResolvConf/
// validateResolvConf).
func ResolvConf(r *config.Resolved, a Paths, warn func(string)) (string, error) {
	if r.ResolvConf != "" {
		return r.ResolvConf, nil
	}
	for _, f := range []string{"/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"} {
		if usableResolvConf(f) {
			return f, nil
		}
	}
	warn("Host resolv.conf includes loopback or multicast nameservers - kubelet will use autogenerated resolv.conf with nameserver 8.8.8.8")
	if err := pki.WriteFile(a.ResolvConf, []byte("nameserver 8.8.8.8\n"), 0o644); err != nil {
		return "", err
	}
	return a.ResolvConf, nil
}

func usableResolvConf(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			if ip := net.ParseIP(fields[1]); ip != nil && !ip.IsLoopback() && !ip.IsMulticast() && !ip.IsLinkLocalMulticast() {
				return true
			}
		}
	}
	return false
}

// CgroupControllers lists the cgroup v1 controllers the process is in, and the v2 ones
// (k3s: pkg/cgroups CheckCgroups reads /proc/self/cgroup the same way).
func CgroupControllers(procSelfCgroup string) map[string]bool {
	out := map[string]bool{}
	data, err := os.ReadFile(procSelfCgroup)
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(data), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			// cgroup v2: the controllers of the unified hierarchy.
			if b, err := os.ReadFile("/sys/fs/cgroup" + parts[2] + "/cgroup.controllers"); err == nil {
				for _, c := range strings.Fields(string(b)) {
					out[c] = true
				}
			}
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			out[c] = true
		}
	}
	return out
}
