package config

import (
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The drop-in example of k3s's documentation (docs.k3s.io, "Configuration File", "Multiple
// Config Files"): later files replace a key, `key+` appends to it.
func TestReadConfigFileDropins(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "config.yaml")
	write(t, file, "token: boop\nnode-label:\n  - foo=bar\n  - bar=baz\n")
	write(t, file+".d/test1.yaml", "write-kubeconfig-mode: 600\nnode-taint:\n  - alice=bob:NoExecute\n")
	write(t, file+".d/test2.yaml", "write-kubeconfig-mode: 777\nnode-label:\n  - other=what\n  - foo=three\nnode-taint+:\n  - charlie=delta:NoSchedule\n")
	write(t, file+".d/ignored.txt", "node-name: nope\n")
	got, err := ReadConfigFile(file)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"--token=boop",
		"--node-label=other=what",
		"--node-label=foo=three",
		"--write-kubeconfig-mode=777",
		"--node-taint=alice=bob:NoExecute",
		"--node-taint=charlie=delta:NoSchedule",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}

func TestReadConfigFileOnlyDropins(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "config.yaml")
	write(t, file+".d/10.yml", "node-name: a\n")
	got, err := ReadConfigFile(file)
	if err != nil || !reflect.DeepEqual(got, []string{"--node-name=a"}) {
		t.Fatalf("got %q, %v", got, err)
	}
	if _, err := ReadConfigFile(filepath.Join(dir, "missing.yaml")); !os.IsNotExist(err) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestReadConfigFileScalars(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "config.yaml")
	// What sparkgap writes (src/install/render.rs config_yaml): JSON-quoted scalars, lists,
	// a bool; and a one-letter key gets a single dash.
	write(t, file, `write-kubeconfig-mode: "0600"
disable:
  - "traefik"
  - "metrics-server"
disable-helm-controller: true
cluster-dns: "10.43.0.10"
kubelet-arg:
  - "system-reserved=cpu=1,memory=1Gi"
  - "eviction-hard=memory.available<2Gi,nodefs.available<10%"
d: /tmp/x
max: 10
`)
	got, err := ReadConfigFile(file)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"--write-kubeconfig-mode=0600",
		"--disable=traefik",
		"--disable=metrics-server",
		"--disable-helm-controller=true",
		"--cluster-dns=10.43.0.10",
		"--kubelet-arg=system-reserved=cpu=1,memory=1Gi",
		"--kubelet-arg=eviction-hard=memory.available<2Gi,nodefs.available<10%",
		"-d=/tmp/x",
		"--max=10",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}

func TestExpandArgsInsertsAfterServerAndWarns(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "config.yaml")
	write(t, file, "node-name: fromfile\nnot-a-flag: 1\nnode-label: [a=b]\n")
	var warnings []string
	env := map[string]string{ConfigEnv: file}
	got, err := ExpandArgs([]string{"k3s", "server", "--node-name=cli"}, func(k string) string { return env[k] },
		IsServerFlag, func(w string) { warnings = append(warnings, w) })
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"k3s", "server", "--node-name=fromfile", "--node-label=a=b", "--node-name=cli"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	if !reflect.DeepEqual(warnings, []string{"Unknown flag --not-a-flag found in config.yaml, skipping"}) {
		t.Fatalf("warnings %q", warnings)
	}
	s, err := ParseServer(got[2:], func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if s.NodeName != "cli" || !reflect.DeepEqual(s.NodeLabels, []string{"a=b"}) {
		t.Fatalf("command line must win: %+v", s)
	}
}

func TestExpandArgsConfigFlagAndMissingFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	write(t, file, "node-name: x\n")
	none := func(string) string { return "" }
	got, err := ExpandArgs([]string{"k3s", "server", "-c", file}, none, IsServerFlag, func(string) {})
	if err != nil || !reflect.DeepEqual(got, []string{"k3s", "server", "--node-name=x", "-c", file}) {
		t.Fatalf("got %q, %v", got, err)
	}
	got, err = ExpandArgs([]string{"k3s", "server", "--config=" + filepath.Join(dir, "nope")}, none, IsServerFlag, func(string) {})
	if err != nil || len(got) != 3 {
		t.Fatalf("a missing file is no error: %q, %v", got, err)
	}
	write(t, filepath.Join(dir, "bad.yaml"), "a: [\n")
	if _, err := ExpandArgs([]string{"k3s", "server", "--config", filepath.Join(dir, "bad.yaml")}, none, IsServerFlag, func(string) {}); err == nil || !strings.Contains(err.Error(), "bad.yaml") {
		t.Fatalf("bad YAML must name the file: %v", err)
	}
}

func TestParseServerForms(t *testing.T) {
	env := map[string]string{"K3S_NODE_NAME": "envnode", "K3S_KUBECONFIG_MODE": "0644", "K3S_TOKEN": "x"}
	s, err := ParseServer([]string{
		"--disable", "traefik", "--disable=servicelb", "--disable-helm-controller",
		"--disable-network-policy=false", "-d", "/data", "--kube-controller-arg=a=b",
		"--write-kubeconfig-mode=0640", "--cluster-init",
	}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.Disable, []string{"traefik", "servicelb"}) || !s.DisableHelmController ||
		s.DisableNetworkPolicy || s.DataDir != "/data" || s.NodeName != "envnode" ||
		s.WriteKubeconfigMode != "0640" || !reflect.DeepEqual(s.ControllerManagerArgs, []string{"a=b"}) {
		t.Fatalf("%+v", s)
	}
	if !reflect.DeepEqual(s.Unimplemented, []string{"cluster-init", "token"}) {
		t.Fatalf("unimplemented %q", s.Unimplemented)
	}
	for _, bad := range [][]string{{"--nope"}, {"--node-name"}, {"--debug=maybe"}, {"positional"}} {
		if _, err := ParseServer(bad, func(string) string { return "" }); err == nil {
			t.Errorf("%q: want a usage error", bad)
		}
	}
}

// k3s's own table (k3s: pkg/util/args_test.go Test_UnitGetArgs).
func TestGetArgs(t *testing.T) {
	tests := []struct {
		name  string
		def   map[string]string
		extra []string
		want  []string
	}{
		{"default", map[string]string{"aaa": "A", "bbb": "B", "ccc": "C", "ddd": "d"},
			[]string{"bbb=BB", "ddd=DD", "iii=II"},
			[]string{"--aaa=A", "--bbb=BB", "--ccc=C", "--ddd=DD", "--iii=II"}},
		{"hyphens", map[string]string{"aaa": "A", "bbb": "B"},
			[]string{"--bbb=BB", "--iii=II"},
			[]string{"--aaa=A", "--bbb=BB", "--iii=II"}},
		{"repeated", map[string]string{"aaa": "A", "bbb": "B"},
			[]string{"--ccc=C", "--bbb=DD", "--bbb=AA"},
			[]string{"--aaa=A", "--bbb=DD", "--bbb=AA", "--ccc=C"}},
		{"prefix", map[string]string{"aaa": "A", "bbb": "B"},
			[]string{"--ccc=C", "--bbb-=DD"},
			[]string{"--aaa=A", "--bbb=DD", "--bbb=B", "--ccc=C"}},
		{"suffix", map[string]string{"aaa": "A", "bbb": "B"},
			[]string{"--ccc=C", "--bbb+=DD"},
			[]string{"--aaa=A", "--bbb=B", "--bbb=DD", "--ccc=C"}},
		{"bare", map[string]string{}, []string{"flag"}, []string{"--flag=true"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			def := map[string]string{}
			for k, v := range tt.def {
				def[k] = v
			}
			if got := GetArgs(def, tt.extra); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %q\nwant %q", got, tt.want)
			}
			if !reflect.DeepEqual(def, tt.def) {
				t.Fatal("GetArgs must not change the defaults map")
			}
		})
	}
}

func TestResolveDefaults(t *testing.T) {
	s, _ := ParseServer([]string{"--disable=traefik,metrics-server", "--disable", "local-storage", "--node-name=Spark"}, func(string) string { return "" })
	r, err := Resolve(s, "host", func() (net.IP, error) { return net.ParseIP("203.0.113.10"), nil })
	if err != nil {
		t.Fatal(err)
	}
	if r.ClusterDNSIPs[0].String() != "10.43.0.10" || r.NodeName != "spark" || r.DataDir != DefaultDataDir ||
		r.KubeconfigPath != GlobalKubeconfig || r.KubeconfigMode != 0o600 || r.APIServerPort != 6443 ||
		r.PauseImage != DefaultPauseImage || r.DefaultLocalStoragePath != "/var/lib/rancher/k3s/storage" ||
		!reflect.DeepEqual(r.Disabled, []string{"traefik", "metrics-server", "local-storage"}) ||
		r.NodeIPs[0].String() != "203.0.113.10" || r.Vars["SYSTEM_DEFAULT_REGISTRY"] != "" {
		t.Fatalf("%+v %+v", r, r.Server)
	}
	s, _ = ParseServer([]string{"--service-cidr=10.96.0.0/12", "--system-default-registry=reg.test:5000", "--write-kubeconfig-mode=644"}, func(string) string { return "" })
	r, err = Resolve(s, "h", func() (net.IP, error) { return net.ParseIP("192.0.2.1"), nil })
	if err != nil {
		t.Fatal(err)
	}
	if r.ClusterDNSIPs[0].String() != "10.96.0.10" || r.PauseImage != "reg.test:5000/rancher/mirrored-pause:3.6" ||
		r.Vars["SYSTEM_DEFAULT_REGISTRY"] != "reg.test:5000/" || r.KubeconfigMode != 0o644 {
		t.Fatalf("%+v", r)
	}
	for _, bad := range [][]string{{"--cluster-cidr=nope"}, {"--write-kubeconfig-mode=rw"}, {"--service-node-port-range=5"}, {"--node-ip=x"}} {
		s, _ := ParseServer(bad, func(string) string { return "" })
		if _, err := Resolve(s, "h", func() (net.IP, error) { return net.ParseIP("192.0.2.1"), nil }); err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(strings.Split(bad[0], "=")[0], "")) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
