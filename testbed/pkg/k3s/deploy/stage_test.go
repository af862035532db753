package deploy

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

var testVars = map[string]string{
	"CLUSTER_DNS":                 "10.43.0.10",
	"CLUSTER_DOMAIN":              "cluster.local",
	"DEFAULT_LOCAL_STORAGE_PATH":  "/var/lib/rancher/k3s/storage",
	"SYSTEM_DEFAULT_REGISTRY":     "",
	"SYSTEM_DEFAULT_REGISTRY_RAW": "",
}

func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !info.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func TestStageWritesEveryPackagedManifestTemplated(t *testing.T) {
	cfg := Config{DataDir: t.TempDir(), Vars: testVars}
	if err := Stage(cfg); err != nil {
		t.Fatal(err)
	}
	got := listFiles(t, cfg.ManifestsDir())
	want := []string{
		"ccm.yaml", "coredns.yaml", "local-storage.yaml",
		"metrics-server/aggregated-metrics-reader.yaml", "metrics-server/auth-delegator.yaml",
		"metrics-server/auth-reader.yaml", "metrics-server/metrics-apiservice.yaml",
		"metrics-server/metrics-server-deployment.yaml", "metrics-server/metrics-server-service.yaml",
		"metrics-server/resource-reader.yaml", "rolebindings.yaml", "runtimes.yaml",
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("staged %v, want %v", got, want)
	}
	for _, name := range got {
		p := filepath.Join(cfg.ManifestsDir(), name)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "%{") {
			t.Errorf("%s keeps a placeholder:\n%s", name, b)
		}
		if strings.Contains(string(b), "targetPort: 0") || strings.Contains(string(b), "null") {
			t.Errorf("%s carries a zero value a typed field left behind:\n%s", name, b)
		}
		if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600 as k3s writes it", name, st.Mode().Perm())
		}
		objs, err := parseManifest(b)
		if err != nil || len(objs) == 0 {
			t.Errorf("%s does not parse back: %v", name, err)
		}
		for _, o := range objs {
			if o.GetName() == "" || o.GetKind() == "" || o.GetAPIVersion() == "" {
				t.Errorf("%s: incomplete object %v", name, o.Object)
			}
			if _, ok := o.Object["status"]; ok {
				t.Errorf("%s: %s %s carries a status", name, o.GetKind(), o.GetName())
			}
		}
	}
}

// The objects sparkgap relies on, as sparkgap reads them.
func TestCoreDNSIsWhatSparkgapExpects(t *testing.T) {
	files, err := Packaged()
	if err != nil {
		t.Fatal(err)
	}
	content, err := render("coredns.yaml", files["coredns.yaml"], templateVars(testVars))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := parseManifest(content)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, o := range objs {
		kinds[o.GetKind()+"/"+o.GetName()] = true
		switch o.GetKind() {
		case "ConfigMap":
			var cm corev1.ConfigMap
			mustConvert(t, o.Object, &cm)
			core := cm.Data["Corefile"]
			for _, want := range []string{
				"kubernetes cluster.local in-addr.arpa ip6.arpa {",
				"hosts /etc/coredns/NodeHosts {",
				"forward . /etc/resolv.conf",
				"    import /etc/coredns/custom/*.override\n}\nimport /etc/coredns/custom/*.server\n",
			} {
				if !strings.Contains(core, want) {
					t.Errorf("Corefile lacks %q:\n%s", want, core)
				}
			}
			if _, ok := cm.Data["NodeHosts"]; ok {
				t.Error("coredns.yaml must not carry NodeHosts (the node controller owns it)")
			}
		case "Deployment":
			var d appsv1.Deployment
			mustConvert(t, o.Object, &d)
			if d.Spec.Template.Labels["k8s-app"] != "kube-dns" || d.Spec.Selector.MatchLabels["k8s-app"] != "kube-dns" {
				t.Errorf("coredns pods are not labelled k8s-app: kube-dns: %v", d.Spec.Template.Labels)
			}
			c := d.Spec.Template.Spec.Containers[0]
			if c.Image != "rancher/mirrored-coredns-coredns:1.12.3" {
				t.Errorf("image %q", c.Image)
			}
			if d.Spec.Template.Spec.DNSPolicy != corev1.DNSDefault || d.Spec.Template.Spec.PriorityClassName != "system-cluster-critical" {
				t.Errorf("pod spec %+v", d.Spec.Template.Spec)
			}
			var custom *corev1.ConfigMapVolumeSource
			for _, v := range d.Spec.Template.Spec.Volumes {
				if v.ConfigMap != nil && v.ConfigMap.Name == "coredns-custom" {
					custom = v.ConfigMap
				}
			}
			if custom == nil || custom.Optional == nil || !*custom.Optional {
				t.Errorf("coredns-custom is not mounted as optional: %+v", d.Spec.Template.Spec.Volumes)
			}
		case "Service":
			var s corev1.Service
			mustConvert(t, o.Object, &s)
			if s.Name != "kube-dns" || s.Spec.ClusterIP != "10.43.0.10" || len(s.Spec.Ports) != 3 ||
				s.Spec.IPFamilyPolicy == nil || *s.Spec.IPFamilyPolicy != corev1.IPFamilyPolicySingleStack {
				t.Errorf("service %+v", s.Spec)
			}
		}
	}
	for _, want := range []string{"ServiceAccount/coredns", "ClusterRole/system:coredns", "ClusterRoleBinding/system:coredns",
		"ConfigMap/coredns", "Deployment/coredns", "Service/kube-dns"} {
		if !kinds[want] {
			t.Errorf("coredns.yaml lacks %s (has %v)", want, kinds)
		}
	}
}

func mustConvert(t *testing.T, in map[string]interface{}, out interface{}) {
	t.Helper()
	b, err := yaml.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, out); err != nil {
		t.Fatal(err)
	}
}

func TestStageSkipsDisabledComponents(t *testing.T) {
	cfg := Config{DataDir: t.TempDir(), Vars: testVars,
		Disabled: []string{"metrics-server", "local-storage", "runtimes", "traefik"}}
	if err := Stage(cfg); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(listFiles(t, cfg.ManifestsDir()), " ")
	if got != "ccm.yaml coredns.yaml rolebindings.yaml" {
		t.Fatalf("staged %s", got)
	}
	// A disabled component needs none of its values.
	cfg = Config{DataDir: t.TempDir(), Disabled: []string{"coredns"}, Vars: map[string]string{"DEFAULT_LOCAL_STORAGE_PATH": "/x"}}
	if err := Stage(cfg); err != nil {
		t.Fatal(err)
	}
	// ...but an enabled one does.
	cfg.Disabled = nil
	if err := Stage(cfg); err == nil || !strings.Contains(err.Error(), "coredns.yaml: no value for %{CLUSTER_") {
		t.Fatalf("want an error naming a missing cluster value, got %v", err)
	}
}

func TestStageOverwritesEditsAndLeavesOtherFiles(t *testing.T) {
	cfg := Config{DataDir: t.TempDir(), Vars: testVars}
	dir := cfg.ManifestsDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"coredns.yaml":            "edited",
		"local-storage.yaml.skip": "",
		"sparkgap-tanka-app.yaml": "kind: ConfigMap",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := Stage(cfg); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "coredns.yaml")); string(b) == "edited" {
		t.Error("an edit of a packaged manifest survived staging")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "sparkgap-tanka-app.yaml")); string(b) != "kind: ConfigMap" {
		t.Error("staging touched a file that is not k3s's")
	}
	// local-storage.yaml is staged even beside its .skip, as k3s does: the controller skips it.
	if _, err := os.Stat(filepath.Join(dir, "local-storage.yaml")); err != nil {
		t.Error(err)
	}
}

func TestTemplateVars(t *testing.T) {
	v := templateVars(map[string]string{"SYSTEM_DEFAULT_REGISTRY_RAW": "registry.local:5000", "%{CLUSTER_DNS}%": "10.43.0.10"})
	for k, want := range map[string]string{
		"%{SYSTEM_DEFAULT_REGISTRY}%":    "registry.local:5000/",
		"%{CLUSTER_DNS}%":                "10.43.0.10",
		"%{CLUSTER_DNS_LIST}%":           "[10.43.0.10]",
		"%{CLUSTER_DNS_IPFAMILYPOLICY}%": "SingleStack",
		"%{PREFERRED_ADDRESS_TYPES}%":    "InternalIP,ExternalIP,Hostname",
	} {
		if v[k] != want {
			t.Errorf("%s = %q, want %q", k, v[k], want)
		}
	}
	out, err := render("x", []byte("image: %{SYSTEM_DEFAULT_REGISTRY}%rancher/x:1"), v)
	if err != nil || string(out) != "image: registry.local:5000/rancher/x:1" {
		t.Errorf("render: %q %v", out, err)
	}
	if v := templateVars(nil); v["%{SYSTEM_DEFAULT_REGISTRY}%"] != "" || v["%{SYSTEM_DEFAULT_REGISTRY_RAW}%"] != "" {
		t.Errorf("empty registry: %v", v)
	}
	if v := templateVars(map[string]string{"SYSTEM_DEFAULT_REGISTRY": "r.local"}); v["%{SYSTEM_DEFAULT_REGISTRY}%"] != "r.local/" ||
		v["%{SYSTEM_DEFAULT_REGISTRY_RAW}%"] != "r.local" {
		t.Errorf("registry without its slash: %v", v)
	}
}
