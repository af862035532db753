package agent

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"sparkgap.dev/testbed/pkg/k3s/config"
	"sparkgap.dev/testbed/pkg/k3s/pki"
)

func resolved(t *testing.T, args ...string) *config.Resolved {
	t.Helper()
	s, err := config.ParseServer(args, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	r, err := config.Resolve(s, "spark", func() (net.IP, error) { return net.ParseIP("203.0.113.10"), nil })
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func has(t *testing.T, args []string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !slices.Contains(args, w) {
			t.Errorf("missing %s in %q", w, args)
		}
	}
}

func TestKubeletArgs(t *testing.T) {
	// The kubelet-arg values sparkgap writes (src/install/render.rs config_yaml).
	r := resolved(t, "--node-label=a=b", "--node-label=c=d",
		"--kubelet-arg=system-reserved=cpu=1,memory=1Gi", "--kubelet-arg=eviction-hard=memory.available<2Gi,nodefs.available<10%",
		"--kubelet-arg=max-pods=210")
	p := pki.Layout(r.DataDir)
	a := Layout(r.DataDir)
	args := KubeletArgs(r, p, a)
	has(t, args, "--config-dir=/var/lib/rancher/k3s/agent/etc/kubelet.conf.d", "--kubeconfig="+p.KubeconfigKubelet,
		"--read-only-port=0", "--root-dir=/var/lib/kubelet", "--cert-dir=/var/lib/kubelet/pki",
		"--hostname-override=spark", "--node-ip=203.0.113.10", "--node-labels=a=b,c=d",
		"--system-reserved=cpu=1,memory=1Gi", "--eviction-hard=memory.available<2Gi,nodefs.available<10%", "--max-pods=210")
	for _, a := range args {
		if strings.HasPrefix(a, "--cloud-provider") {
			t.Error("no --cloud-provider: the test bed runs no cloud controller")
		}
	}
}

func TestKubeletConfig(t *testing.T) {
	r := resolved(t, "--node-taint=dedicated=gpu:NoSchedule", "--node-taint=x:NoExecute", "--cluster-dns=10.43.0.53")
	data, err := KubeletConfig(KubeletSettings{Cfg: r, PKI: pki.Layout(r.DataDir), Paths: Layout(r.DataDir),
		RuntimeSock: "/run/k3s/containerd/containerd.sock", ResolvConf: "/etc/resolv.conf", CgroupRoot: "/sparkgap-node-x"})
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{
		"kind": "KubeletConfiguration", "cgroupDriver": "cgroupfs", "failSwapOn": false, "failCgroupV1": false,
		"clusterDomain": "cluster.local", "resolvConf": "/etc/resolv.conf", "serializeImagePulls": false,
		"containerRuntimeEndpoint": "unix:///run/k3s/containerd/containerd.sock", "cgroupRoot": "/sparkgap-node-x",
		"staticPodPath": "/var/lib/rancher/k3s/agent/pod-manifests",
	} {
		if c[k] != want {
			t.Errorf("%s = %v, want %v", k, c[k], want)
		}
	}
	if dns := c["clusterDNS"].([]any); len(dns) != 1 || dns[0] != "10.43.0.53" {
		t.Errorf("clusterDNS %v", dns)
	}
	if e := c["evictionHard"].(map[string]any); e["nodefs.available"] != "5%" || e["imagefs.available"] != "5%" {
		t.Errorf("k3s's default evictions: %v", e)
	}
	taints := c["registerWithTaints"].([]any)
	if len(taints) != 2 || taints[0].(map[string]any)["value"] != "gpu" || taints[1].(map[string]any)["effect"] != "NoExecute" {
		t.Errorf("taints %v", taints)
	}
	authn := c["authentication"].(map[string]any)
	if authn["x509"].(map[string]any)["clientCAFile"] != pki.Layout(r.DataDir).AgentClientCA || authn["webhook"].(map[string]any)["enabled"] != true {
		t.Errorf("authentication %v", authn)
	}
	if _, err := ParseTaints([]string{"bad"}); err == nil {
		t.Error("a taint without effect is an error")
	}
}

func TestKubeProxyAndKubeRouterArgs(t *testing.T) {
	r := resolved(t, "--kube-proxy-arg=metrics-bind-address=0.0.0.0:10249", "--service-node-port-range=30000-32000")
	p := pki.Layout(r.DataDir)
	has(t, KubeProxyArgs(r, p), "--proxy-mode=iptables", "--healthz-bind-address=127.0.0.1", "--conntrack-max-per-core=0",
		"--conntrack-tcp-timeout-established=0s", "--conntrack-tcp-timeout-close-wait=0s", "--cluster-cidr=10.42.0.0/16",
		"--hostname-override=spark", "--kubeconfig="+p.KubeconfigProxy, "--metrics-bind-address=0.0.0.0:10249")
	has(t, KubeRouterArgs(r, "/k.kubeconfig"), "--run-firewall=true", "--run-router=false", "--run-service-proxy=false",
		"--hostname-override=spark", "--service-cluster-ip-range=10.43.0.0/16", "--service-node-port-range=30000:32000",
		"--kubeconfig=/k.kubeconfig")
}

func TestCNIConflist(t *testing.T) {
	data, err := CNIConflist("10.42.0.0/24")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Name    string           `json:"name"`
		Plugins []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	b := c.Plugins[0]
	if c.Name != "cbr0" || b["type"] != "bridge" || b["bridge"] != "cni0" || b["isGateway"] != true || b["ipMasq"] != true ||
		b["hairpinMode"] != true || b["forceAddress"] != true || c.Plugins[1]["type"] != "portmap" || c.Plugins[2]["type"] != "bandwidth" {
		t.Fatalf("%s", data)
	}
	if !strings.Contains(string(data), `"subnet": "10.42.0.0/24"`) {
		t.Fatalf("host-local over the podCIDR: %s", data)
	}
}

func TestSetSysctlsOnlyNamespaced(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "net/ipv4/conf/all"), 0o755)
	os.WriteFile(filepath.Join(root, "net/ipv4/conf/all/forwarding"), []byte("0\n"), 0o644)
	var logs []string
	logf := func(f string, a ...any) { logs = append(logs, f) }
	if err := SetSysctls(root, map[string]string{"net/ipv4/conf/all/forwarding": "1"}, logf); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "net/ipv4/conf/all/forwarding")); string(b) != "1" || len(logs) != 1 {
		t.Fatalf("%q %q", b, logs)
	}
	for _, global := range []string{"vm/overcommit_memory", "net/netfilter/nf_conntrack_max", "net/bridge/../../kernel/panic"} {
		if err := SetSysctls(root, map[string]string{global: "1"}, logf); err == nil {
			t.Errorf("%s must be refused", global)
		}
	}
	for k := range Sysctls(true) {
		if err := SetSysctls(t.TempDir(), map[string]string{k: "1"}, func(string, ...any) {}); err != nil {
			t.Errorf("k3s's own %s must be allowed: %v", k, err)
		}
	}
}

func TestResolvConfFallback(t *testing.T) {
	r := resolved(t, "--resolv-conf=/x/resolv.conf")
	if f, _ := ResolvConf(r, Layout(t.TempDir()), func(string) {}); f != "/x/resolv.conf" {
		t.Error(f)
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte("search x\nnameserver 203.0.113.1\n"), 0o644)
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("nameserver 127.0.0.53\n"), 0o644)
	if !usableResolvConf(good) || usableResolvConf(bad) {
		t.Error("a loopback nameserver makes resolv.conf unusable for pods, as k3s checks")
	}
}
