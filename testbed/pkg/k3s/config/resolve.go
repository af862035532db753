package config

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Defaults k3s v1.33 applies (k3s: pkg/cli/cmds/server.go and agent.go flag values,
// pkg/cli/server/server.go for the derived ones, pkg/daemons/control/server.go defaults).
const (
	DefaultDataDir              = "/var/lib/rancher/k3s"
	DefaultClusterCIDR          = "10.42.0.0/16"
	DefaultServiceCIDR          = "10.43.0.0/16"
	DefaultClusterDomain        = "cluster.local"
	DefaultServiceNodePortRange = "30000-32767"
	DefaultFlannelBackend       = "vxlan"
	DefaultPrivateRegistry      = "/etc/rancher/k3s/registries.yaml"
	DefaultSnapshotter          = "overlayfs"
	DefaultHTTPSPort            = 6443
	// DefaultPauseImage is k3s's --pause-image default (k3s: pkg/cli/cmds/const_linux.go),
	// written fully qualified.
	DefaultPauseImage = "docker.io/rancher/mirrored-pause:3.6"
	// DefaultHelmJobImage is the klipper-helm image of k3s v1.33.5's k3s-images.txt, which
	// helm-controller runs its install Jobs with (k3s: pkg/server/server.go coreControllers,
	// helmchart.DefaultJobImage).
	DefaultHelmJobImage = "docker.io/rancher/klipper-helm:v0.9.8-build20250709"
	// GlobalKubeconfig is where k3s writes the admin kubeconfig when run as root
	// (k3s: pkg/datadir GlobalConfig, pkg/server/server.go HomeKubeConfig).
	GlobalKubeconfig = "/etc/rancher/k3s/k3s.yaml"
)

// Resolved is the server configuration with every default filled and every value checked.
type Resolved struct {
	*Server
	ClusterCIDRs   []*net.IPNet
	ServiceCIDRs   []*net.IPNet
	ClusterDNSIPs  []net.IP
	NodeIPs        []net.IP
	APIServerPort  int
	Disabled       []string
	Vars           map[string]string // manifest template values, without the %{ }% marks
	KubeconfigPath string
	KubeconfigMode os.FileMode
}

// Disables says whether component was named in --disable.
func (r *Resolved) Disables(component string) bool {
	for _, d := range r.Disabled {
		if d == component {
			return true
		}
	}
	return false
}

func parseCIDRs(flag string, values []string, def string) ([]*net.IPNet, error) {
	var out []*net.IPNet
	for _, v := range values {
		for _, item := range strings.Split(v, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			_, n, err := net.ParseCIDR(item)
			if err != nil {
				return nil, fmt.Errorf("--%s: invalid CIDR %q: %w", flag, item, err)
			}
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		_, n, _ := net.ParseCIDR(def)
		out = append(out, n)
	}
	return out, nil
}

// IndexedIP is the i-th address of n (k3s: k8s.io/utils/net GetIndexedIP, used for the
// default cluster DNS, service network + 10, and the kubernetes service, + 1).
func IndexedIP(n *net.IPNet, i int) net.IP {
	ip := make(net.IP, len(n.IP))
	copy(ip, n.IP)
	for j := len(ip) - 1; j >= 0 && i > 0; j-- {
		sum := int(ip[j]) + i
		ip[j] = byte(sum % 256)
		i = sum / 256
	}
	if ip4 := ip.To4(); ip4 != nil {
		return ip4
	}
	return ip
}

// Resolve fills k3s's defaults and checks the values. detectNodeIP finds the address of the
// interface with the default route when --node-ip is not given (k3s: pkg/agent/config
// uses net.ChooseHostInterface through util.GetHostnameAndIPs).
func Resolve(s *Server, hostname string, detectNodeIP func() (net.IP, error)) (*Resolved, error) {
	r := &Resolved{Server: s}
	if s.DataDir == "" {
		s.DataDir = DefaultDataDir
	}
	abs, err := filepath.Abs(s.DataDir)
	if err != nil {
		return nil, fmt.Errorf("--data-dir %s: %w", s.DataDir, err)
	}
	s.DataDir = abs
	if r.ClusterCIDRs, err = parseCIDRs("cluster-cidr", s.ClusterCIDR, DefaultClusterCIDR); err != nil {
		return nil, err
	}
	if r.ServiceCIDRs, err = parseCIDRs("service-cidr", s.ServiceCIDR, DefaultServiceCIDR); err != nil {
		return nil, err
	}
	for _, v := range s.ClusterDNS {
		for _, item := range strings.Split(v, ",") {
			ip := net.ParseIP(strings.TrimSpace(item))
			if ip == nil {
				return nil, fmt.Errorf("--cluster-dns: invalid IP address %q", item)
			}
			r.ClusterDNSIPs = append(r.ClusterDNSIPs, ip)
		}
	}
	if len(r.ClusterDNSIPs) == 0 {
		// k3s: pkg/cli/server/server.go, "the first ServiceCIDR network + 10".
		r.ClusterDNSIPs = []net.IP{IndexedIP(r.ServiceCIDRs[0], 10)}
	}
	if s.ClusterDomain == "" {
		s.ClusterDomain = DefaultClusterDomain
	}
	if s.ServiceNodePortRange == "" {
		s.ServiceNodePortRange = DefaultServiceNodePortRange
	}
	if lo, hi, ok := strings.Cut(s.ServiceNodePortRange, "-"); !ok || atoi(lo) <= 0 || atoi(hi) < atoi(lo) || atoi(hi) > 65535 {
		return nil, fmt.Errorf("--service-node-port-range: invalid port range %q (want LOW-HIGH)", s.ServiceNodePortRange)
	}
	if s.FlannelBackend == "" {
		s.FlannelBackend = DefaultFlannelBackend
	}
	switch s.FlannelBackend {
	case "none", "vxlan", "host-gw", "wireguard-native", "ipsec", "wireguard", "extension":
	default:
		return nil, fmt.Errorf("--flannel-backend: invalid value %q", s.FlannelBackend)
	}
	r.APIServerPort = DefaultHTTPSPort
	if s.HTTPSPort != "" {
		if r.APIServerPort = atoi(s.HTTPSPort); r.APIServerPort <= 0 || r.APIServerPort > 65535 {
			return nil, fmt.Errorf("--https-listen-port: invalid port %q", s.HTTPSPort)
		}
	}
	if s.PrivateRegistry == "" {
		s.PrivateRegistry = DefaultPrivateRegistry
	}
	if s.Snapshotter == "" {
		s.Snapshotter = DefaultSnapshotter
	}
	if s.PauseImage == "" {
		s.PauseImage = DefaultPauseImage
		if s.SystemDefaultRegistry != "" {
			// k3s: pkg/agent/config, the system default registry prefixes k3s's own images.
			s.PauseImage = s.SystemDefaultRegistry + "/rancher/mirrored-pause:3.6"
		}
	}
	if s.HelmJobImage == "" {
		s.HelmJobImage = DefaultHelmJobImage
		if s.SystemDefaultRegistry != "" {
			// k3s: pkg/server/server.go coreControllers.
			s.HelmJobImage = s.SystemDefaultRegistry + "/rancher/klipper-helm:v0.9.8-build20250709"
		}
	}
	if s.DefaultLocalStoragePath == "" {
		s.DefaultLocalStoragePath = filepath.Join(s.DataDir, "storage")
	}
	if s.NodeName == "" {
		s.NodeName = hostname
	}
	// k3s: pkg/agent/config getHostnameAndIPs lowercases the node name.
	s.NodeName = strings.ToLower(s.NodeName)
	if s.NodeName == "" {
		return nil, fmt.Errorf("no node name: set --node-name or the host name")
	}
	for _, v := range s.NodeIP {
		for _, item := range strings.Split(v, ",") {
			ip := net.ParseIP(strings.TrimSpace(item))
			if ip == nil {
				return nil, fmt.Errorf("--node-ip: invalid IP address %q", item)
			}
			r.NodeIPs = append(r.NodeIPs, ip)
		}
	}
	if len(r.NodeIPs) == 0 {
		ip, err := detectNodeIP()
		if err != nil {
			return nil, fmt.Errorf("finding the node IP (set --node-ip or give the node a default route): %w", err)
		}
		r.NodeIPs = []net.IP{ip}
	}
	if s.AdvertiseAddress != "" && net.ParseIP(s.AdvertiseAddress) == nil {
		return nil, fmt.Errorf("--advertise-address: invalid IP address %q", s.AdvertiseAddress)
	}
	// k3s: pkg/cli/server/server.go splits every --disable value on commas.
	for _, d := range s.Disable {
		for _, item := range strings.Split(d, ",") {
			if item = strings.TrimSpace(item); item != "" {
				r.Disabled = append(r.Disabled, item)
			}
		}
	}
	r.KubeconfigPath = GlobalKubeconfig
	if s.WriteKubeconfig != "" {
		r.KubeconfigPath = s.WriteKubeconfig
	}
	r.KubeconfigMode = 0o600
	if s.WriteKubeconfigMode != "" {
		m, err := strconv.ParseInt(s.WriteKubeconfigMode, 8, 0)
		if err != nil {
			return nil, fmt.Errorf("--write-kubeconfig-mode: invalid mode %q: %w", s.WriteKubeconfigMode, err)
		}
		r.KubeconfigMode = os.FileMode(m)
	}
	registry := ""
	if s.SystemDefaultRegistry != "" {
		registry = s.SystemDefaultRegistry + "/"
	}
	// k3s: pkg/server/server.go stageFiles, templateVars.
	r.Vars = map[string]string{
		"CLUSTER_DNS":                 r.ClusterDNSIPs[0].String(),
		"CLUSTER_DOMAIN":              s.ClusterDomain,
		"DEFAULT_LOCAL_STORAGE_PATH":  s.DefaultLocalStoragePath,
		"SYSTEM_DEFAULT_REGISTRY":     registry,
		"SYSTEM_DEFAULT_REGISTRY_RAW": s.SystemDefaultRegistry,
	}
	return r, nil
}

func atoi(s string) int {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return -1
	}
	return n
}

// JoinIPNets joins networks with commas (k3s: pkg/util JoinIPNets).
func JoinIPNets(nets []*net.IPNet) string {
	var s []string
	for _, n := range nets {
		s = append(s, n.String())
	}
	return strings.Join(s, ",")
}
