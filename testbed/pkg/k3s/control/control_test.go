package control

import (
	"net"
	"slices"
	"testing"

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

func TestAPIServerArgs(t *testing.T) {
	r := resolved(t, "--kube-apiserver-arg=enable-admission-plugins+=PodSecurity", "--kube-apiserver-arg=v=2")
	p := pki.Layout(r.DataDir)
	args := APIServerArgs(r, p)
	has(t, args,
		"--secure-port=6443", "--bind-address=0.0.0.0", "--advertise-address=203.0.113.10",
		"--authorization-mode=Node,RBAC", "--anonymous-auth=false", "--allow-privileged=true",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range=10.43.0.0/16", "--service-node-port-range=30000-32767",
		"--enable-admission-plugins=NodeRestriction", "--enable-admission-plugins=PodSecurity",
		"--requestheader-allowed-names=system:auth-proxy", "--etcd-servers=http://127.0.0.1:2379",
		"--kubelet-client-certificate="+p.ClientKubeAPI, "--proxy-client-cert-file="+p.ClientAuthProxy, "--v=2",
	)
	if slices.ContainsFunc(args, func(a string) bool { return a == "--advertise-port" || len(a) > 16 && a[:16] == "--advertise-port" }) {
		t.Error("upstream kube-apiserver has no --advertise-port")
	}
	r = resolved(t, "--kube-apiserver-arg=authorization-config=/etc/authz.yaml")
	if slices.Contains(APIServerArgs(r, p), "--authorization-mode=Node,RBAC") {
		t.Error("authorization-mode is left out when an authorization config is given, as k3s does")
	}
}

func TestControllerManagerAndSchedulerArgs(t *testing.T) {
	r := resolved(t, "--cluster-cidr=10.244.0.0/16", "--kube-controller-manager-arg=node-cidr-mask-size=25")
	p := pki.Layout(r.DataDir)
	has(t, ControllerManagerArgs(r, p),
		"--allocate-node-cidrs=true", "--cluster-cidr=10.244.0.0/16", "--use-service-account-credentials=true",
		"--controllers=*,tokencleaner,-service,-route,-cloud-node-lifecycle", "--configure-cloud-routes=false",
		"--root-ca-file="+p.ServerCA, "--service-account-private-key-file="+p.ServiceKey,
		"--cluster-signing-kubelet-serving-cert-file="+p.ServerCA, "--node-cidr-mask-size=25",
	)
	r = resolved(t, "--disable-cloud-controller", "--kube-scheduler-arg=v=4")
	has(t, ControllerManagerArgs(r, p), "--controllers=*,tokencleaner")
	has(t, SchedulerArgs(r, p), "--kubeconfig="+p.KubeconfigScheduler, "--bind-address=127.0.0.1", "--v=4")
}

func TestEtcdArgs(t *testing.T) {
	r := resolved(t, "--etcd-arg=quota-backend-bytes=8589934592")
	has(t, EtcdArgs(r), "--data-dir=/var/lib/rancher/k3s/server/db/etcd", "--listen-client-urls=http://127.0.0.1:2379", "--quota-backend-bytes=8589934592")
	if LocalURL(r) != "https://127.0.0.1:6443" {
		t.Error(LocalURL(r))
	}
}
