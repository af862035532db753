package pki

import (
	"fmt"
	"net"
	"path/filepath"
	"time"
)

// Paths are the files the k3s role's components read, at k3s's places
// (k3s: pkg/daemons/control/deps/deps.go CreateRuntimeCertFiles; pkg/agent/config/config.go).
type Paths struct {
	ServerCA, ServerCAKey                   string
	ClientCA, ClientCAKey                   string
	RequestHeaderCA, RequestHeaderCAKey     string
	ServiceKey                              string
	ServingAPIServer, ServingAPIServerKey   string
	ServingController, ServingControllerKey string
	ServingScheduler, ServingSchedulerKey   string
	ClientAdmin, ClientAdminKey             string
	ClientController, ClientControllerKey   string
	ClientScheduler, ClientSchedulerKey     string
	ClientKubeAPI, ClientKubeAPIKey         string
	ClientAuthProxy, ClientAuthProxyKey     string
	ClientK3sController, ClientK3sCtrlKey   string

	// The agent's files (k3s: <data-dir>/agent).
	AgentServerCA, AgentClientCA          string
	ClientKubelet, ClientKubeletKey       string
	ServingKubelet, ServingKubeletKey     string
	ClientKubeProxy, ClientKubeProxyKey   string
	AgentK3sController, AgentK3sCtrlKey   string
	KubeconfigAdmin, KubeconfigController string
	KubeconfigScheduler                   string
	KubeconfigKubelet, KubeconfigProxy    string
	KubeconfigK3sController               string
}

// Layout is where k3s keeps each file under dataDir (/var/lib/rancher/k3s).
func Layout(dataDir string) Paths {
	tls := filepath.Join(dataDir, "server", "tls")
	cred := filepath.Join(dataDir, "server", "cred")
	agent := filepath.Join(dataDir, "agent")
	t := func(n string) string { return filepath.Join(tls, n) }
	a := func(n string) string { return filepath.Join(agent, n) }
	return Paths{
		ServerCA: t("server-ca.crt"), ServerCAKey: t("server-ca.key"),
		ClientCA: t("client-ca.crt"), ClientCAKey: t("client-ca.key"),
		RequestHeaderCA: t("request-header-ca.crt"), RequestHeaderCAKey: t("request-header-ca.key"),
		ServiceKey:       t("service.key"),
		ServingAPIServer: t("serving-kube-apiserver.crt"), ServingAPIServerKey: t("serving-kube-apiserver.key"),
		ServingController:    t("kube-controller-manager/kube-controller-manager.crt"),
		ServingControllerKey: t("kube-controller-manager/kube-controller-manager.key"),
		ServingScheduler:     t("kube-scheduler/kube-scheduler.crt"),
		ServingSchedulerKey:  t("kube-scheduler/kube-scheduler.key"),
		ClientAdmin:          t("client-admin.crt"), ClientAdminKey: t("client-admin.key"),
		ClientController: t("client-controller.crt"), ClientControllerKey: t("client-controller.key"),
		ClientScheduler: t("client-scheduler.crt"), ClientSchedulerKey: t("client-scheduler.key"),
		ClientKubeAPI: t("client-kube-apiserver.crt"), ClientKubeAPIKey: t("client-kube-apiserver.key"),
		ClientAuthProxy: t("client-auth-proxy.crt"), ClientAuthProxyKey: t("client-auth-proxy.key"),
		ClientK3sController: t("client-k3s-controller.crt"), ClientK3sCtrlKey: t("client-k3s-controller.key"),

		AgentServerCA: a("server-ca.crt"), AgentClientCA: a("client-ca.crt"),
		ClientKubelet: a("client-kubelet.crt"), ClientKubeletKey: a("client-kubelet.key"),
		ServingKubelet: a("serving-kubelet.crt"), ServingKubeletKey: a("serving-kubelet.key"),
		ClientKubeProxy: a("client-kube-proxy.crt"), ClientKubeProxyKey: a("client-kube-proxy.key"),
		AgentK3sController: a("client-k3s-controller.crt"), AgentK3sCtrlKey: a("client-k3s-controller.key"),

		KubeconfigAdmin:         filepath.Join(cred, "admin.kubeconfig"),
		KubeconfigController:    filepath.Join(cred, "controller.kubeconfig"),
		KubeconfigScheduler:     filepath.Join(cred, "scheduler.kubeconfig"),
		KubeconfigKubelet:       a("kubelet.kubeconfig"),
		KubeconfigProxy:         a("kubeproxy.kubeconfig"),
		KubeconfigK3sController: a("k3scontroller.kubeconfig"),
	}
}

// Request is what the certificates must name.
type Request struct {
	NodeName      string
	NodeIPs       []net.IP
	ServiceIP     net.IP // the kubernetes service's ClusterIP, first address of the service network
	ClusterDomain string
	ExtraSANs     []string // --tls-san and --advertise-address
	APIServerURL  string   // for the kubeconfigs, https://127.0.0.1:6443
}

// RequestHeaderCN is the front-proxy client's name the apiserver allows
// (k3s: pkg/daemons/control/deps/deps.go RequestHeaderCN).
const RequestHeaderCN = "system:auth-proxy"

// Ensure makes or keeps every certificate, key and kubeconfig of the node.
func Ensure(dataDir string, req Request, now time.Time) (Paths, error) {
	p := Layout(dataDir)
	ca, err := LoadOrCreateCA(p.ServerCA, p.ServerCAKey, "k3s-server-ca", now)
	if err != nil {
		return p, fmt.Errorf("server CA %s: %w", p.ServerCA, err)
	}
	// One CA: the client CA files are the server CA's (see the package comment).
	for _, c := range [][2]string{{p.ServerCA, p.ClientCA}, {p.ServerCAKey, p.ClientCAKey}} {
		if err := copyFile(c[0], c[1], 0o600); err != nil {
			return p, err
		}
	}
	rh, err := LoadOrCreateCA(p.RequestHeaderCA, p.RequestHeaderCAKey, "k3s-request-header-ca", now)
	if err != nil {
		return p, fmt.Errorf("request-header CA %s: %w", p.RequestHeaderCA, err)
	}
	if err := ServiceAccountKey(p.ServiceKey); err != nil {
		return p, fmt.Errorf("service account key %s: %w", p.ServiceKey, err)
	}

	// k3s: pkg/daemons/control/deps/deps.go genServerCerts, the apiserver's names.
	apiDNS := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc." + req.ClusterDomain, req.NodeName}
	apiIPs := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), req.ServiceIP}
	apiIPs = append(apiIPs, req.NodeIPs...)
	for _, san := range req.ExtraSANs {
		if ip := net.ParseIP(san); ip != nil {
			apiIPs = append(apiIPs, ip)
		} else if san != "" {
			apiDNS = append(apiDNS, san)
		}
	}
	nodeDNS := []string{req.NodeName, "localhost"}
	nodeIPs := append([]net.IP{net.ParseIP("127.0.0.1")}, req.NodeIPs...)
	loopDNS := []string{"localhost"}
	loopIPs := []net.IP{net.ParseIP("127.0.0.1")}

	leaves := []struct {
		ca *CA
		l  Leaf
	}{
		{ca, Leaf{CertFile: p.ServingAPIServer, KeyFile: p.ServingAPIServerKey, CommonName: "kube-apiserver", DNSNames: apiDNS, IPs: apiIPs, Server: true}},
		{ca, Leaf{CertFile: p.ServingController, KeyFile: p.ServingControllerKey, CommonName: "kube-controller-manager", DNSNames: loopDNS, IPs: loopIPs, Server: true}},
		{ca, Leaf{CertFile: p.ServingScheduler, KeyFile: p.ServingSchedulerKey, CommonName: "kube-scheduler", DNSNames: loopDNS, IPs: loopIPs, Server: true}},
		{ca, Leaf{CertFile: p.ClientAdmin, KeyFile: p.ClientAdminKey, CommonName: "system:admin", Organization: []string{"system:masters"}}},
		{ca, Leaf{CertFile: p.ClientController, KeyFile: p.ClientControllerKey, CommonName: "system:kube-controller-manager"}},
		{ca, Leaf{CertFile: p.ClientScheduler, KeyFile: p.ClientSchedulerKey, CommonName: "system:kube-scheduler"}},
		// k3s: the apiserver's kubelet client, bound to system:kubelet-api-admin by
		// manifests/rolebindings.yaml (kube-apiserver-kubelet-admin).
		{ca, Leaf{CertFile: p.ClientKubeAPI, KeyFile: p.ClientKubeAPIKey, CommonName: "kube-apiserver"}},
		{rh, Leaf{CertFile: p.ClientAuthProxy, KeyFile: p.ClientAuthProxyKey, CommonName: RequestHeaderCN}},
		{ca, Leaf{CertFile: p.ClientK3sController, KeyFile: p.ClientK3sCtrlKey, CommonName: "system:k3s-controller"}},
		{ca, Leaf{CertFile: p.ClientKubelet, KeyFile: p.ClientKubeletKey, CommonName: "system:node:" + req.NodeName, Organization: []string{"system:nodes"}}},
		{ca, Leaf{CertFile: p.ServingKubelet, KeyFile: p.ServingKubeletKey, CommonName: req.NodeName, DNSNames: nodeDNS, IPs: nodeIPs, Server: true}},
		{ca, Leaf{CertFile: p.ClientKubeProxy, KeyFile: p.ClientKubeProxyKey, CommonName: "system:kube-proxy"}},
		{ca, Leaf{CertFile: p.AgentK3sController, KeyFile: p.AgentK3sCtrlKey, CommonName: "system:k3s-controller"}},
	}
	for _, x := range leaves {
		if err := Issue(x.ca, x.l, now); err != nil {
			return p, fmt.Errorf("certificate %s: %w", x.l.CertFile, err)
		}
	}
	for _, c := range [][2]string{{p.ServerCA, p.AgentServerCA}, {p.ServerCA, p.AgentClientCA}} {
		if err := copyFile(c[0], c[1], 0o644); err != nil {
			return p, err
		}
	}

	kubeconfigs := []struct{ path, cert, key string }{
		{p.KubeconfigAdmin, p.ClientAdmin, p.ClientAdminKey},
		{p.KubeconfigController, p.ClientController, p.ClientControllerKey},
		{p.KubeconfigScheduler, p.ClientScheduler, p.ClientSchedulerKey},
		{p.KubeconfigKubelet, p.ClientKubelet, p.ClientKubeletKey},
		{p.KubeconfigProxy, p.ClientKubeProxy, p.ClientKubeProxyKey},
		{p.KubeconfigK3sController, p.AgentK3sController, p.AgentK3sCtrlKey},
	}
	for _, k := range kubeconfigs {
		data, err := KubeconfigFiles(req.APIServerURL, p.ServerCA, k.cert, k.key)
		if err != nil {
			return p, err
		}
		if err := writeFileAtomic(k.path, data, 0o600); err != nil {
			return p, fmt.Errorf("kubeconfig %s: %w", k.path, err)
		}
	}
	return p, nil
}
