package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"sparkgap.dev/testbed/pkg/k3s/config"
	"sparkgap.dev/testbed/pkg/k3s/pki"
)

// KubeProxyArgs are kube-proxy's flags as k3s sets them (k3s: pkg/daemons/agent/agent_linux.go
// kubeProxyArgs) merged with --kube-proxy-arg: iptables mode, health on loopback, and conntrack
// left alone (those sysctls are global, not per network namespace).
func KubeProxyArgs(r *config.Resolved, p pki.Paths) []string {
	bind := "127.0.0.1"
	if r.NodeIPs[0].To4() == nil {
		bind = "::1"
	}
	def := map[string]string{
		"proxy-mode":                        "iptables",
		"healthz-bind-address":              bind,
		"kubeconfig":                        p.KubeconfigProxy,
		"cluster-cidr":                      config.JoinIPNets(r.ClusterCIDRs),
		"conntrack-max-per-core":            "0",
		"conntrack-tcp-timeout-established": "0s",
		"conntrack-tcp-timeout-close-wait":  "0s",
		"hostname-override":                 r.NodeName,
	}
	if r.VLevel != "" && r.VLevel != "0" {
		def["v"] = r.VLevel
	}
	if r.VModule != "" {
		def["vmodule"] = r.VModule
	}
	return config.GetArgs(def, r.KubeProxyArgs)
}

// CNIConfFile is the file k3s's flannel setup writes (k3s: pkg/agent/flannel/setup.go,
// flannelConf "10-flannel.conflist").
const CNIConfFile = "10-flannel.conflist"

// CNIConflist is the data path of k3s's flannel CNI configuration on one node. k3s writes the
// conflist "cbr0" with flannel delegating to the bridge plugin (cni0, hairpinMode, forceAddress,
// isDefaultGateway) and host-local over the node's podCIDR from /run/flannel/subnet.env, then
// portmap and bandwidth (k3s: pkg/agent/flannel/setup.go cniConf). flannel itself is not served
// to the test bed; with no peers its vxlan carries nothing, so the bridge plugin is configured
// directly the way flannel's delegate would be, with ipMasq standing in for flannel's own
// masquerade rules.
func CNIConflist(podCIDR string) ([]byte, error) {
	conf := map[string]any{
		"name":       "cbr0",
		"cniVersion": "1.0.0",
		"plugins": []any{
			map[string]any{
				"type":             "bridge",
				"bridge":           "cni0",
				"isGateway":        true,
				"isDefaultGateway": true,
				"ipMasq":           true,
				"hairpinMode":      true,
				"forceAddress":     true,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": podCIDR}}},
					"dataDir": "/var/lib/cni/networks",
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
			map[string]any{"type": "bandwidth", "capabilities": map[string]bool{"bandwidth": true}},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}

// WriteCNIConf writes the conflist atomically, so containerd never reads half of it.
func WriteCNIConf(dir, podCIDR string) error {
	data, err := CNIConflist(podCIDR)
	if err != nil {
		return err
	}
	return pki.WriteFile(filepath.Join(dir, CNIConfFile), data, 0o644)
}

// KubeRouterArgs run kube-router as k3s runs its network policy controller: the firewall only,
// no routing, no service proxy, the service networks and NodePort range, the node name
// (k3s: pkg/agent/netpol/netpol.go Run). k3s runs the controller inside its own process, without
// kube-router's health and metrics servers; the binary is told to start neither.
func KubeRouterArgs(r *config.Resolved, kubeconfig string) []string {
	def := map[string]string{
		"run-firewall":             "true",
		"run-router":               "false",
		"run-service-proxy":        "false",
		"run-loadbalancer":         "false",
		"kubeconfig":               kubeconfig,
		"hostname-override":        r.NodeName,
		"service-cluster-ip-range": config.JoinIPNets(r.ServiceCIDRs),
		// k3s: strings.ReplaceAll(ServiceNodePortRange, "-", ":"), iptables' multiport form.
		"service-node-port-range": strings.ReplaceAll(r.ServiceNodePortRange, "-", ":"),
		"enable-ipv4":             "true",
		"enable-ipv6":             fmt.Sprint(r.NodeIPs[0].To4() == nil),
		"health-port":             "0",
		"metrics-port":            "0",
	}
	if r.VLevel != "" && r.VLevel != "0" {
		def["v"] = r.VLevel
	}
	return config.GetArgs(def, nil)
}

// Sysctls are the settings k3s's agent makes at start (k3s: pkg/agent/syssetup/setup.go
// Configure): forwarding on all and default interfaces, and bridged traffic through iptables.
// Every one is per network namespace; the node's namespace gets them, never the host's.
func Sysctls(ipv6 bool) map[string]string {
	s := map[string]string{
		"net/ipv4/conf/all/forwarding":       "1",
		"net/ipv4/conf/default/forwarding":   "1",
		"net/bridge/bridge-nf-call-iptables": "1",
	}
	if ipv6 {
		s["net/ipv6/conf/all/forwarding"] = "1"
		s["net/ipv6/conf/default/forwarding"] = "1"
		s["net/bridge/bridge-nf-call-ip6tables"] = "1"
	}
	return s
}

// namespaced are the sysctl trees the kernel keeps per network namespace; SetSysctls refuses
// anything else, so the k3s role can never change a setting of the whole machine.
var namespaced = []string{"net/ipv4/conf/", "net/ipv6/conf/", "net/bridge/"}

// SetSysctls writes each setting whose value differs (k3s: syssetup Configure, "Set sysctl '%v'
// to %v"), under root (/proc/sys).
func SetSysctls(root string, settings map[string]string, logf func(string, ...any)) error {
	for key, want := range settings {
		ok := false
		for _, prefix := range namespaced {
			ok = ok || strings.HasPrefix(key, prefix)
		}
		if !ok || strings.Contains(key, "..") {
			return fmt.Errorf("refusing to set sysctl %s: not a per-network-namespace setting", key)
		}
		path := filepath.Join(root, key)
		cur, err := os.ReadFile(path)
		if err == nil && strings.TrimSpace(string(cur)) == want {
			continue
		}
		logf("Set sysctl '%s' to %s", key, want)
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			logf("Failed to set sysctl: %v", err)
		}
	}
	return nil
}
