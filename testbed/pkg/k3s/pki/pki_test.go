package pki

import (
	"bytes"
	"crypto/x509"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

func req() Request {
	return Request{
		NodeName:      "spark",
		NodeIPs:       []net.IP{net.ParseIP("203.0.113.10")},
		ServiceIP:     net.ParseIP("10.43.0.1"),
		ClusterDomain: "cluster.local",
		ExtraSANs:     []string{"api.example", "192.0.2.7"},
		APIServerURL:  "https://127.0.0.1:6443",
	}
}

func verify(t *testing.T, p Paths, certFile, caFile string, usage x509.ExtKeyUsage, name string) *x509.Certificate {
	t.Helper()
	c, err := readCert(certFile)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := readCert(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		t.Fatalf("%s: %v", certFile, err)
	}
	return c
}

func TestEnsure(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	p, err := Ensure(dir, req(), now)
	if err != nil {
		t.Fatal(err)
	}
	api := verify(t, p, p.ServingAPIServer, p.ServerCA, x509.ExtKeyUsageServerAuth, "kubernetes.default.svc.cluster.local")
	for _, n := range []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "spark", "api.example"} {
		if !slices.Contains(api.DNSNames, n) {
			t.Errorf("apiserver cert lacks %s: %v", n, api.DNSNames)
		}
	}
	for _, ip := range []string{"127.0.0.1", "10.43.0.1", "203.0.113.10", "192.0.2.7"} {
		if !slices.ContainsFunc(api.IPAddresses, net.ParseIP(ip).Equal) {
			t.Errorf("apiserver cert lacks %s: %v", ip, api.IPAddresses)
		}
	}
	// The kubelet's serving cert verifies against the CA the service account token carries
	// (the controller manager's root-ca-file is the server CA), which metrics-server relies on.
	verify(t, p, p.ServingKubelet, p.ServerCA, x509.ExtKeyUsageServerAuth, "spark")
	for _, c := range []struct{ file, cn, org string }{
		{p.ClientAdmin, "system:admin", "system:masters"},
		{p.ClientKubelet, "system:node:spark", "system:nodes"},
		{p.ClientKubeAPI, "kube-apiserver", ""},
		{p.ClientController, "system:kube-controller-manager", ""},
		{p.ClientScheduler, "system:kube-scheduler", ""},
		{p.ClientKubeProxy, "system:kube-proxy", ""},
		{p.AgentK3sController, "system:k3s-controller", ""},
	} {
		cert := verify(t, p, c.file, p.ClientCA, x509.ExtKeyUsageClientAuth, "")
		if cert.Subject.CommonName != c.cn || (c.org != "" && !slices.Equal(cert.Subject.Organization, []string{c.org})) {
			t.Errorf("%s: subject %v", c.file, cert.Subject)
		}
	}
	proxy := verify(t, p, p.ClientAuthProxy, p.RequestHeaderCA, x509.ExtKeyUsageClientAuth, "")
	if proxy.Subject.CommonName != RequestHeaderCN {
		t.Errorf("front proxy CN %q", proxy.Subject.CommonName)
	}
	if st, err := os.Stat(p.ServerCAKey); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("CA key mode: %v %v", st, err)
	}
	var k kubeconfig
	data, _ := os.ReadFile(p.KubeconfigKubelet)
	if err := yaml.Unmarshal(data, &k); err != nil || k.Users[0].User.ClientCertificate != p.ClientKubelet ||
		k.Clusters[0].Cluster.Server != "https://127.0.0.1:6443" || k.Clusters[0].Cluster.CertificateAuthority != p.ServerCA {
		t.Fatalf("kubelet kubeconfig: %v %s", err, data)
	}
}

func TestEnsureKeepsKeysAndReissuesOnlyWhatChanged(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	p, err := Ensure(dir, req(), now)
	if err != nil {
		t.Fatal(err)
	}
	snapshot := func() map[string][]byte {
		m := map[string][]byte{}
		for _, f := range []string{p.ServerCA, p.ServerCAKey, p.ServiceKey, p.ServingAPIServer, p.ServingAPIServerKey, p.ClientAdmin, p.ServingKubelet, p.ServingKubeletKey} {
			m[f], _ = os.ReadFile(f)
		}
		return m
	}
	before := snapshot()
	if _, err := Ensure(dir, req(), now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	for f, b := range snapshot() {
		if !bytes.Equal(b, before[f]) {
			t.Errorf("%s changed on a second start", f)
		}
	}
	r := req()
	r.NodeIPs = []net.IP{net.ParseIP("203.0.113.11")}
	if _, err := Ensure(dir, r, now.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	after := snapshot()
	for _, f := range []string{p.ServerCA, p.ServerCAKey, p.ServiceKey, p.ServingAPIServerKey, p.ServingKubeletKey, p.ClientAdmin} {
		if !bytes.Equal(after[f], before[f]) {
			t.Errorf("%s must be kept when the node IP changes", f)
		}
	}
	if bytes.Equal(after[p.ServingAPIServer], before[p.ServingAPIServer]) || bytes.Equal(after[p.ServingKubelet], before[p.ServingKubelet]) {
		t.Error("serving certificates must be re-issued for a new node IP")
	}
	// Close to expiry: re-issued with the same key.
	if _, err := Ensure(dir, r, now.Add(300*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	late := snapshot()
	if bytes.Equal(late[p.ClientAdmin], after[p.ClientAdmin]) || !bytes.Equal(late[p.ServerCAKey], before[p.ServerCAKey]) {
		t.Error("a certificate within 90 days of expiry is renewed, keys stay")
	}
}

func TestKubeconfigEmbedded(t *testing.T) {
	dir := t.TempDir()
	p, err := Ensure(dir, req(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	data, err := KubeconfigEmbedded("https://127.0.0.1:6443", p.ServerCA, p.ClientAdmin, p.ClientAdminKey)
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for _, want := range []string{"certificate-authority-data:", "client-certificate-data:", "client-key-data:", "server: https://127.0.0.1:6443", "current-context: default"} {
		if !strings.Contains(s, want) {
			t.Errorf("missing %q in\n%s", want, s)
		}
	}
}
