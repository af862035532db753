package images

import (
	"archive/tar"
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func readTar(t *testing.T, raw []byte) []*tar.Header {
	t.Helper()
	var out []*tar.Header
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h)
	}
}

func sampleTree() *Tree {
	t := NewTree()
	t.File("/usr/bin/tool", 0o755, []byte("#!/bin/sh\n"))
	t.Dir("/tmp", 0o1777)
	t.Symlink("/bin/sh", "busybox")
	t.File("/etc/passwd", 0o644, []byte("root:x:0:0::/root:/bin/sh\n"))
	t.Xattr("/usr/bin/tool", "security.capability", capNetBindService())
	return t
}

func TestTreeIsSortedOwnedByRootAtEpochWithImpliedParents(t *testing.T) {
	raw, err := sampleTree().Tar()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range readTar(t, raw) {
		names = append(names, h.Name)
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: owner %d:%d %q:%q, want 0:0 unnamed", h.Name, h.Uid, h.Gid, h.Uname, h.Gname)
		}
		if !h.ModTime.Equal(Epoch) {
			t.Errorf("%s: mtime %v, want %v", h.Name, h.ModTime, Epoch)
		}
		switch h.Name {
		case "tmp/":
			if h.Mode != 0o1777 {
				t.Errorf("tmp/: mode %o", h.Mode)
			}
		case "usr/bin/tool":
			if got := h.PAXRecords["SCHILY.xattr.security.capability"]; got != string(capNetBindService()) {
				t.Errorf("usr/bin/tool: xattr %q", got)
			}
		case "bin/sh":
			if h.Typeflag != tar.TypeSymlink || h.Linkname != "busybox" {
				t.Errorf("bin/sh: %c -> %q", h.Typeflag, h.Linkname)
			}
		}
	}
	want := []string{"bin/", "bin/sh", "etc/", "etc/passwd", "tmp/", "usr/", "usr/bin/", "usr/bin/tool"}
	if !slices.Equal(names, want) {
		t.Errorf("entries %q, want %q", names, want)
	}
}

func TestSameInputsSameDigests(t *testing.T) {
	build := func() *Index {
		l, err := sampleTree().Layer()
		if err != nil {
			t.Fatal(err)
		}
		img, err := NewImage(Config{Cmd: []string{"sh"}, Env: []string{DefaultPath}, Labels: map[string]string{Label: "x"}}, []*Layer{l}, []string{"sample"})
		if err != nil {
			t.Fatal(err)
		}
		idx, err := NewIndex(img)
		if err != nil {
			t.Fatal(err)
		}
		return idx
	}
	a, b := build(), build()
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Fatalf("index digests differ: %s %s", da, db)
	}
	m, _ := a.IndexManifest()
	if len(m.Manifests) != 1 || m.Manifests[0].Platform.OS != "linux" || m.Manifests[0].Platform.Architecture != "amd64" {
		t.Fatalf("index %+v", m)
	}
	cf, _ := a.ImageManifest().ConfigFile()
	if cf.Config.Labels[Label] != "x" || !cf.Created.Equal(Epoch) || len(cf.RootFS.DiffIDs) != 1 {
		t.Fatalf("config %+v", cf)
	}
}

func TestCapNetBindServiceIsSetcapsEncoding(t *testing.T) {
	// getcap's encoding of cap_net_bind_service=ep: revision 2 with the effective flag,
	// permitted bit 10.
	want := []byte{0x01, 0, 0, 0x02, 0, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	if got := capNetBindService(); !bytes.Equal(got, want) {
		t.Fatalf("% x, want % x", got, want)
	}
}

func TestCanonicalNames(t *testing.T) {
	for in, want := range map[string]string{
		"busybox:1.37.0":                       "docker.io/library/busybox:1.37.0",
		"rancher/mirrored-pause:3.6":           "docker.io/rancher/mirrored-pause:3.6",
		"docker.io/rancher/mirrored-pause:3.6": "docker.io/rancher/mirrored-pause:3.6",
		"sparkgap-testbed/hello:1":             "docker.io/sparkgap-testbed/hello:1",
	} {
		if got := Canonical(in); got != want {
			t.Errorf("Canonical(%q) = %q, want %q", in, got, want)
		}
	}
	if got := RepoPath("docker.io/library/busybox:1.37.0"); got != "library/busybox:1.37.0" {
		t.Errorf("RepoPath = %q", got)
	}
}

func TestK3sListIsTheFixture(t *testing.T) {
	fixture := filepath.Join("..", "..", "..", "tests", "fixtures", "k3s-images-v1.33.5.txt")
	got, err := ReadImagesTxt(fixture)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, K3sImages) {
		t.Fatalf("fixture %q, K3sImages %q", got, K3sImages)
	}
	bad := filepath.Join(t.TempDir(), "k3s-images.txt")
	os.WriteFile(bad, []byte("docker.io/rancher/mirrored-pause:3.6\n\ndocker.io/rancher/unknown:1\n"), 0o644)
	if _, err := ReadImagesTxt(bad); err == nil || !strings.Contains(err.Error(), bad+":3: no recipe for image docker.io/rancher/unknown:1") {
		t.Fatalf("error %v", err)
	}
}

func TestMissingInputsNameTheFlag(t *testing.T) {
	in := &Inputs{}
	for name, flag := range map[string]string{
		"docker.io/rancher/mirrored-pause:3.6":                "--parts is required (it holds bin/pause)",
		"docker.io/rancher/local-path-provisioner:v0.0.31":    "--own is required",
		"docker.io/rancher/klipper-helm:v0.9.8-build20250709": "--helm is required",
	} {
		_, err := Build(name, in)
		if err == nil || !strings.Contains(err.Error(), "image "+name+": "+flag) {
			t.Errorf("%s: %v", name, err)
		}
	}
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	_, err := Build("docker.io/rancher/mirrored-coredns-coredns:1.12.3", &Inputs{Parts: dir})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "bin", "coredns")) {
		t.Errorf("coredns: %v", err)
	}
}

// fakeBin writes an executable script.
func fakeBin(t *testing.T, path, script string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestWgetWrapperTakesTimeoutOff(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "wget"), []byte(WgetWrapper), 0o755)
	fakeBin(t, filepath.Join(dir, "busybox"), `for a in "$@"; do printf '[%s]' "$a"; done; echo`)
	for args, want := range map[string]string{
		"-q -T 5 -O - http://h:1/":         "[timeout][5][" + dir + "/busybox][wgeT][-q][-O][-][http://h:1/]",
		"-S -T5 -O /dev/null http://h/v2/": "[timeout][5][" + dir + "/busybox][wgeT][-S][-O][/dev/null][http://h/v2/]",
		"--timeout=7 http://h/":            "[timeout][7][" + dir + "/busybox][wgeT][http://h/]",
		"-q -O - http://h/":                "[wgeT][-q][-O][-][http://h/]",
	} {
		out, err := exec.Command(filepath.Join(dir, "wget"), strings.Fields(args)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v %s", args, err, out)
		}
		if got := strings.TrimSpace(string(out)); got != want {
			t.Errorf("wget %s:\n got %s\nwant %s", args, got, want)
		}
	}
	// An argument with spaces stays one argument.
	out, _ := exec.Command(filepath.Join(dir, "wget"), "-O", "a b", "-T", "3", "u").CombinedOutput()
	if got := strings.TrimSpace(string(out)); got != "[timeout][3]["+dir+"/busybox][wgeT][-O][a b][u]" {
		t.Errorf("spaces: %s", got)
	}
}

func TestBusyboxImage(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("no /bin/busybox (Debian busybox-static)")
	}
	in := &Inputs{}
	a, err := Build(BusyboxImage, in)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(BusyboxImage, &Inputs{})
	if err != nil {
		t.Fatal(err)
	}
	ia, ma := a.Digests()
	ib, mb := b.Digests()
	if ia != ib || ma != mb {
		t.Fatalf("two builds differ: %s/%s and %s/%s", ia, ma, ib, mb)
	}
	layers, _ := a.Index.ImageManifest().Layers()
	rc, _ := layers[0].Uncompressed()
	raw, _ := io.ReadAll(rc)
	have := map[string]*tar.Header{}
	for _, h := range readTar(t, raw) {
		have[h.Name] = h
	}
	for _, p := range []string{"bin/sh", "bin/httpd", "bin/nslookup", "bin/timeout"} {
		if h := have[p]; h == nil || h.Linkname != "busybox" {
			t.Errorf("%s: %+v", p, h)
		}
	}
	if h := have["bin/wget"]; h == nil || h.Typeflag != tar.TypeReg {
		t.Errorf("bin/wget is not the wrapper: %+v", h)
	}
	if have["tmp/"] == nil || have["etc/passwd"] == nil {
		t.Error("no /tmp or /etc/passwd")
	}
}

// The image's busybox, on the host: sh -c 'wget -T 5 ...' reaches the wrapper (the renamed
// applet leaves PATH to decide) and fetches, where Debian's own binary crashes.
func TestBusyboxShellRunsTheWgetWrapper(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("no /bin/busybox")
	}
	bb, err := ProbeBusybox("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "busybox"), bb.Patched, 0o755)
	for _, a := range []string{"sh", "timeout"} {
		os.Symlink("busybox", filepath.Join(dir, a))
	}
	os.WriteFile(filepath.Join(dir, "wget"), []byte(WgetWrapper), 0o755)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "tok\n") }))
	defer srv.Close()
	cmd := exec.Command(filepath.Join(dir, "sh"), "-c", "wget -q -T 5 -O - "+srv.URL+"/; echo rc=$?")
	cmd.Env = []string{"PATH=" + dir}
	out, err := cmd.CombinedOutput()
	if err != nil || string(out) != "tok\nrc=0\n" {
		t.Fatalf("%v: %q", err, out)
	}
}

func TestSharedLibrariesOfDockerRegistry(t *testing.T) {
	const bin = "/usr/bin/docker-registry"
	if _, err := os.Stat(bin); err != nil {
		t.Skip("no Debian docker-registry")
	}
	libs, err := SharedLibraries(bin)
	if err != nil {
		t.Fatal(err)
	}
	if len(libs) < 2 || !strings.HasPrefix(filepath.Base(libs[0]), "ld-linux") || !slices.ContainsFunc(libs, func(s string) bool { return strings.Contains(s, "libc.so") }) {
		t.Fatalf("libs %q", libs)
	}
	if libs, err := SharedLibraries("/bin/busybox"); err == nil && len(libs) != 0 {
		t.Fatalf("static busybox has %q", libs)
	}
}

// startRegistry runs Debian's docker-registry on a free loopback port, as sparkgap's demo does.
func startRegistry(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Skip("no docker-registry")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yml")
	os.WriteFile(cfg, []byte("version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    rootdirectory: "+
		filepath.Join(dir, "storage")+"\nhttp:\n  addr: 127.0.0.1:0\n  secret: test\n"), 0o644)
	cmd := exec.Command(bin, "serve", cfg)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`listening on (127\.0\.0\.1:\d+)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
	}()
	select {
	case a := <-addr:
		for i := 0; i < 100; i++ {
			if c, err := net.Dial("tcp", a); err == nil {
				c.Close()
				return a
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("registry at %s does not answer", a)
	case <-time.After(15 * time.Second):
		t.Fatal("docker-registry printed no listening line")
	}
	return ""
}

func TestPushedAsAnIndexUnderTheDockerHubPath(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("no /bin/busybox")
	}
	reg := startRegistry(t)
	b, err := Build(BusyboxImage, &Inputs{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := b.Push(reg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Reference != reg+"/library/busybox:1.37.0" || r.Destination != "registry" {
		t.Fatalf("result %+v", r)
	}
	ref, _ := name.NewTag(r.Reference, name.Insecure)
	desc, err := remote.Get(ref, remote.WithTransport(http.DefaultTransport))
	if err != nil {
		t.Fatal(err)
	}
	if string(desc.MediaType) != "application/vnd.oci.image.index.v1+json" || desc.Digest.String() != r.IndexDigest {
		t.Fatalf("registry serves %s %s, pushed %s", desc.MediaType, desc.Digest, r.IndexDigest)
	}
	if skopeo, err := exec.LookPath("skopeo"); err == nil {
		out, err := exec.Command(skopeo, "inspect", "--tls-verify=false", "docker://"+r.Reference).CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"Digest": "`+r.IndexDigest+`"`) {
			t.Fatalf("skopeo inspect: %v\n%s", err, out)
		}
	}
	// The layout gets the same bytes.
	lr, err := b.WriteLayout(filepath.Join(t.TempDir(), "oci"))
	if err != nil || lr.IndexDigest != r.IndexDigest {
		t.Fatalf("layout %+v %v", lr, err)
	}
}
