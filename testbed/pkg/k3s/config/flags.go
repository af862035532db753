package config

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

type kind int

const (
	kString kind = iota
	kBool
	kSlice
)

// flagDef is one flag of `k3s server` (k3s: pkg/cli/cmds/server.go ServerFlags and the agent
// flags it shares from pkg/cli/cmds/agent.go). set stores a value in Server; a nil set means
// k3s has the flag but the test bed does not implement it: it is accepted and reported.
type flagDef struct {
	names []string // first is the long name, then aliases
	kind  kind
	env   string
	set   func(s *Server, v string)
}

func str(p func(*Server) *string) func(*Server, string) {
	return func(s *Server, v string) { *p(s) = v }
}

func list(p func(*Server) *[]string) func(*Server, string) {
	return func(s *Server, v string) { *p(s) = append(*p(s), v) }
}

func boolean(p func(*Server) *bool) func(*Server, string) {
	return func(s *Server, v string) { *p(s), _ = strconv.ParseBool(v) }
}

// serverFlags are the flags of `k3s server` v1.33, with the environment variables k3s reads
// for them (k3s: pkg/cli/cmds/server.go, agent.go, log.go, config.go).
var serverFlags = []flagDef{
	{names: []string{"config", "c"}, kind: kString, env: ConfigEnv, set: str(func(s *Server) *string { return &s.ConfigFile })},
	{names: []string{"debug"}, kind: kBool, env: "K3S_DEBUG", set: boolean(func(s *Server) *bool { return &s.Debug })},
	{names: []string{"v"}, kind: kString, set: str(func(s *Server) *string { return &s.VLevel })},
	{names: []string{"vmodule"}, kind: kString, set: str(func(s *Server) *string { return &s.VModule })},
	{names: []string{"log", "l"}, kind: kString},
	{names: []string{"alsologtostderr"}, kind: kBool},

	{names: []string{"bind-address"}, kind: kString, set: str(func(s *Server) *string { return &s.BindAddress })},
	{names: []string{"https-listen-port"}, kind: kString, set: str(func(s *Server) *string { return &s.HTTPSPort })},
	{names: []string{"supervisor-port"}, kind: kString},
	{names: []string{"apiserver-port"}, kind: kString},
	{names: []string{"apiserver-bind-address"}, kind: kString},
	{names: []string{"advertise-address"}, kind: kString, set: str(func(s *Server) *string { return &s.AdvertiseAddress })},
	{names: []string{"advertise-port"}, kind: kString},
	{names: []string{"tls-san"}, kind: kSlice, set: list(func(s *Server) *[]string { return &s.TLSSAN })},
	{names: []string{"tls-san-security"}, kind: kBool},
	{names: []string{"data-dir", "d"}, kind: kString, env: "K3S_DATA_DIR", set: str(func(s *Server) *string { return &s.DataDir })},
	{names: []string{"cluster-cidr"}, kind: kSlice, set: list(func(s *Server) *[]string { return &s.ClusterCIDR })},
	{names: []string{"service-cidr"}, kind: kSlice, set: list(func(s *Server) *[]string { return &s.ServiceCIDR })},
	{names: []string{"service-node-port-range"}, kind: kString, set: str(func(s *Server) *string { return &s.ServiceNodePortRange })},
	{names: []string{"cluster-dns"}, kind: kSlice, set: list(func(s *Server) *[]string { return &s.ClusterDNS })},
	{names: []string{"cluster-domain"}, kind: kString, set: str(func(s *Server) *string { return &s.ClusterDomain })},
	{names: []string{"flannel-backend"}, kind: kString, set: str(func(s *Server) *string { return &s.FlannelBackend })},
	{names: []string{"flannel-ipv6-masq"}, kind: kBool},
	{names: []string{"flannel-external-ip"}, kind: kBool},
	{names: []string{"egress-selector-mode"}, kind: kString},
	{names: []string{"servicelb-namespace"}, kind: kString},
	{names: []string{"write-kubeconfig", "o"}, kind: kString, env: "K3S_KUBECONFIG_OUTPUT", set: str(func(s *Server) *string { return &s.WriteKubeconfig })},
	{names: []string{"write-kubeconfig-mode"}, kind: kString, env: "K3S_KUBECONFIG_MODE", set: str(func(s *Server) *string { return &s.WriteKubeconfigMode })},
	{names: []string{"write-kubeconfig-group"}, kind: kString, env: "K3S_KUBECONFIG_GROUP"},
	{names: []string{"helm-job-image"}, kind: kString, set: str(func(s *Server) *string { return &s.HelmJobImage })},
	{names: []string{"token", "t"}, kind: kString, env: "K3S_TOKEN"},
	{names: []string{"token-file"}, kind: kString, env: "K3S_TOKEN_FILE"},
	{names: []string{"agent-token"}, kind: kString, env: "K3S_AGENT_TOKEN"},
	{names: []string{"agent-token-file"}, kind: kString, env: "K3S_AGENT_TOKEN_FILE"},
	{names: []string{"server", "s"}, kind: kString, env: "K3S_URL"},
	{names: []string{"cluster-init"}, kind: kBool, env: "K3S_CLUSTER_INIT"},
	{names: []string{"cluster-reset"}, kind: kBool, env: "K3S_CLUSTER_RESET"},
	{names: []string{"cluster-reset-restore-path"}, kind: kString},
	{names: []string{"kube-apiserver-arg"}, kind: kSlice, set: list(func(s *Server) *[]string { return &s.APIServerArgs })},
	{names: []string{"etcd-arg"}, kind: kSlice, set: list(func(s *Server) *[]string { return &s.EtcdArgs })},
	{names: []string{"kube-controller-manager-arg", "kube-controller-arg"}, kind: kSlice, set: list(func(s *Server) *[]string { return &s.ControllerManagerArgs })},
	{names: []string{"kube-scheduler-arg"}, kind: kSlice, set: list(func(s *Server) *[]string { return &s.SchedulerArgs })},
	{names: []string{"kube-cloud-controller-manager-arg", "kube-cloud-controller-arg"}, kind: kSlice},
	{names: []string{"datastore-endpoint"}, kind: kString, env: "K3S_DATASTORE_ENDPOINT"},
	{names: []string{"datastore-cafile"}, kind: kString, env: "K3S_DATASTORE_CAFILE"},
	{names: []string{"datastore-certfile"}, kind: kString, env: "K3S_DATASTORE_CERTFILE"},
	{names: []string{"datastore-keyfile"}, kind: kString, env: "K3S_DATASTORE_KEYFILE"},
	{names: []string{"etcd-expose-metrics"}, kind: kBool},
	{names: []string{"etcd-disable-snapshots"}, kind: kBool},
	{names: []string{"etcd-snapshot-name"}, kind: kString},
	{names: []string{"etcd-snapshot-schedule-cron"}, kind: kString},
	{names: []string{"etcd-snapshot-retention"}, kind: kString},
	{names: []string{"etcd-snapshot-dir"}, kind: kString},
	{names: []string{"etcd-snapshot-compress"}, kind: kBool},
	{names: []string{"etcd-s3"}, kind: kBool},
	{names: []string{"etcd-s3-endpoint"}, kind: kString},
	{names: []string{"etcd-s3-endpoint-ca"}, kind: kString},
	{names: []string{"etcd-s3-skip-ssl-verify"}, kind: kBool},
	{names: []string{"etcd-s3-access-key"}, kind: kString, env: "AWS_ACCESS_KEY_ID"},
	{names: []string{"etcd-s3-secret-key"}, kind: kString, env: "AWS_SECRET_ACCESS_KEY"},
	{names: []string{"etcd-s3-session-token"}, kind: kString},
	{names: []string{"etcd-s3-bucket"}, kind: kString},
	{names: []string{"etcd-s3-bucket-lookup-type"}, kind: kString},
	{names: []string{"etcd-s3-region"}, kind: kString},
	{names: []string{"etcd-s3-folder"}, kind: kString},
	{names: []string{"etcd-s3-retention"}, kind: kString},
	{names: []string{"etcd-s3-proxy"}, kind: kString},
	{names: []string{"etcd-s3-config-secret"}, kind: kString},
	{names: []string{"etcd-s3-insecure"}, kind: kBool},
	{names: []string{"etcd-s3-timeout"}, kind: kString},
	{names: []string{"default-local-storage-path"}, kind: kString, set: str(func(s *Server) *string { return &s.DefaultLocalStoragePath })},
	{names: []string{"disable"}, kind: kSlice, set: list(func(s *Server) *[]string { return &s.Disable })},
	{names: []string{"disable-scheduler"}, kind: kBool, set: boolean(func(s *Server) *bool { return &s.DisableScheduler })},
	{names: []string{"disable-cloud-controller"}, kind: kBool, set: boolean(func(s *Server) *bool { return &s.DisableCloudController })},
	{names: []string{"disable-kube-proxy"}, kind: kBool, set: boolean(func(s *Server) *bool { return &s.DisableKubeProxy })},
	{names: []string{"disable-network-policy"}, kind: kBool, set: boolean(func(s *Server) *bool { return &s.DisableNetworkPolicy })},
	{names: []string{"disable-helm-controller"}, kind: kBool, set: boolean(func(s *Server) *bool { return &s.DisableHelmController })},
	{names: []string{"disable-apiserver"}, kind: kBool},
	{names: []string{"disable-controller-manager"}, kind: kBool},
	{names: []string{"disable-etcd"}, kind: kBool},
	{names: []string{"embedded-registry"}, kind: kBool},
	{names: []string{"supervisor-metrics"}, kind: kBool},
	{names: []string{"node-name"}, kind: kString, env: "K3S_NODE_NAME", set: str(func(s *Server) *string { return &s.NodeName })},
	{names: []string{"with-node-id"}, kind: kBool},
	{names: []string{"node-label"}, kind: kSlice, set: list(func(s *Server) *[]string { return &s.NodeLabels })},
	{names: []string{"node-taint"}, kind: kSlice, set: list(func(s *Server) *[]string { return &s.NodeTaints })},
	{names: []string{"image-credential-provider-bin-dir"}, kind: kString},
	{names: []string{"image-credential-provider-config"}, kind: kString},
	{names: []string{"docker"}, kind: kBool},
	{names: []string{"container-runtime-endpoint"}, kind: kString},
	{names: []string{"default-runtime"}, kind: kString},
	{names: []string{"image-service-endpoint"}, kind: kString},
	{names: []string{"disable-default-registry-endpoint"}, kind: kBool, set: boolean(func(s *Server) *bool { return &s.DisableDefaultRegistryEndpoint })},
	{names: []string{"nonroot-devices"}, kind: kBool},
	{names: []string{"pause-image"}, kind: kString, set: str(func(s *Server) *string { return &s.PauseImage })},
	{names: []string{"snapshotter"}, kind: kString, set: str(func(s *Server) *string { return &s.Snapshotter })},
	{names: []string{"private-registry"}, kind: kString, set: str(func(s *Server) *string { return &s.PrivateRegistry })},
	{names: []string{"system-default-registry"}, kind: kString, env: "K3S_SYSTEM_DEFAULT_REGISTRY", set: str(func(s *Server) *string { return &s.SystemDefaultRegistry })},
	{names: []string{"airgap-extra-registry"}, kind: kSlice, set: list(func(s *Server) *[]string { return &s.AirgapExtraRegistry })},
	{names: []string{"node-ip", "i"}, kind: kSlice, set: list(func(s *Server) *[]string { return &s.NodeIP })},
	{names: []string{"node-external-ip"}, kind: kSlice},
	{names: []string{"node-internal-dns"}, kind: kSlice},
	{names: []string{"node-external-dns"}, kind: kSlice},
	{names: []string{"resolv-conf"}, kind: kString, env: "K3S_RESOLV_CONF", set: str(func(s *Server) *string { return &s.ResolvConf })},
	{names: []string{"flannel-iface"}, kind: kString},
	{names: []string{"flannel-conf"}, kind: kString},
	{names: []string{"flannel-cni-conf"}, kind: kString},
	{names: []string{"vpn-auth"}, kind: kString, env: "K3S_VPN_AUTH"},
	{names: []string{"vpn-auth-file"}, kind: kString, env: "K3S_VPN_AUTH_FILE"},
	{names: []string{"kubelet-arg"}, kind: kSlice, set: list(func(s *Server) *[]string { return &s.KubeletArgs })},
	{names: []string{"kube-proxy-arg"}, kind: kSlice, set: list(func(s *Server) *[]string { return &s.KubeProxyArgs })},
	{names: []string{"protect-kernel-defaults"}, kind: kBool},
	{names: []string{"secrets-encryption"}, kind: kBool},
	{names: []string{"secrets-encryption-provider"}, kind: kString},
	{names: []string{"enable-pprof"}, kind: kBool},
	{names: []string{"rootless"}, kind: kBool},
	{names: []string{"prefer-bundled-bin"}, kind: kBool},
	{names: []string{"selinux"}, kind: kBool, env: "K3S_SELINUX"},
	{names: []string{"lb-server-port"}, kind: kString, env: "K3S_LB_SERVER_PORT"},
	{names: []string{"disable-agent"}, kind: kBool},
}

var byName = func() map[string]*flagDef {
	m := map[string]*flagDef{}
	for i := range serverFlags {
		for _, n := range serverFlags[i].names {
			m[n] = &serverFlags[i]
		}
	}
	return m
}()

// IsServerFlag says whether name (without dashes) is a flag of `k3s server`; config.yaml keys
// that are not are warned about and dropped (k3s: pkg/configfilearg/parser.go ValidFlags).
func IsServerFlag(name string) bool { return byName[name] != nil }

// Server holds the settings of `k3s server` as given (defaults are filled by Resolve).
type Server struct {
	ConfigFile              string
	Debug                   bool
	VLevel, VModule         string
	BindAddress             string
	HTTPSPort               string
	AdvertiseAddress        string
	TLSSAN                  []string
	DataDir                 string
	ClusterCIDR             []string
	ServiceCIDR             []string
	ServiceNodePortRange    string
	ClusterDNS              []string
	ClusterDomain           string
	FlannelBackend          string
	WriteKubeconfig         string
	WriteKubeconfigMode     string
	HelmJobImage            string
	APIServerArgs           []string
	EtcdArgs                []string
	ControllerManagerArgs   []string
	SchedulerArgs           []string
	DefaultLocalStoragePath string
	Disable                 []string
	DisableScheduler        bool
	DisableCloudController  bool
	DisableKubeProxy        bool
	DisableNetworkPolicy    bool
	DisableHelmController   bool
	NodeName                string
	NodeLabels              []string
	NodeTaints              []string

	DisableDefaultRegistryEndpoint bool
	PauseImage                     string
	Snapshotter                    string
	PrivateRegistry                string
	SystemDefaultRegistry          string
	AirgapExtraRegistry            []string
	NodeIP                         []string
	ResolvConf                     string
	KubeletArgs                    []string
	KubeProxyArgs                  []string

	// Unimplemented lists the flags k3s has that were given but that the test bed does not
	// act on (sorted, without dashes).
	Unimplemented []string
}

// UsageError is a command line k3s would refuse ("Incorrect Usage").
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return "Incorrect Usage: " + e.Msg }

// ParseServer reads the `k3s server` flags (already expanded with the configuration file) the
// way urfave/cli's flag set does: `--name=value`, `--name value`, `-n value`, a bool flag alone
// meaning true, list flags repeated, the last value of any other flag winning; flags not given
// fall back to their environment variable (k3s: pkg/cli/cmds/server.go EnvVar fields).
func ParseServer(args []string, getenv func(string) string) (*Server, error) {
	s := &Server{}
	given := map[*flagDef]bool{}
	unimplemented := map[string]bool{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			return nil, &UsageError{Msg: fmt.Sprintf("unexpected argument %q (k3s server takes flags only)", a)}
		}
		body := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		name, value, hasValue := strings.Cut(body, "=")
		f := byName[name]
		if f == nil {
			return nil, &UsageError{Msg: "flag provided but not defined: -" + name}
		}
		if !hasValue {
			if f.kind == kBool {
				value = "true"
			} else {
				if i+1 >= len(args) {
					return nil, &UsageError{Msg: "flag needs an argument: -" + name}
				}
				i++
				value = args[i]
			}
		}
		if f.kind == kBool {
			if _, err := strconv.ParseBool(value); err != nil {
				return nil, &UsageError{Msg: fmt.Sprintf("invalid boolean value %q for -%s: parse error", value, name)}
			}
		}
		given[f] = true
		if f.set == nil {
			unimplemented[f.names[0]] = true
			continue
		}
		f.set(s, value)
	}
	for i := range serverFlags {
		f := &serverFlags[i]
		if given[f] || f.env == "" {
			continue
		}
		if v := getenv(f.env); v != "" {
			if f.set == nil {
				unimplemented[f.names[0]] = true
				continue
			}
			if f.kind == kSlice {
				for _, item := range strings.Split(v, ",") {
					f.set(s, item)
				}
			} else {
				f.set(s, v)
			}
		}
	}
	for n := range unimplemented {
		s.Unimplemented = append(s.Unimplemented, n)
	}
	sort.Strings(s.Unimplemented)
	return s, nil
}
