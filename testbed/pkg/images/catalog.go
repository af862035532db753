package images

import (
	"bufio"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"sparkgap.dev/testbed/pkg/images/klipper"
)

// K3sImages is k3s v1.33.5's k3s-images.txt (tests/fixtures/k3s-images-v1.33.5.txt).
var K3sImages = []string{
	"docker.io/rancher/klipper-helm:v0.9.8-build20250709",
	"docker.io/rancher/klipper-lb:v0.4.13",
	"docker.io/rancher/local-path-provisioner:v0.0.31",
	"docker.io/rancher/mirrored-coredns-coredns:1.12.3",
	"docker.io/rancher/mirrored-library-busybox:1.36.1",
	"docker.io/rancher/mirrored-library-traefik:3.3.6",
	"docker.io/rancher/mirrored-metrics-server:v0.8.0",
	"docker.io/rancher/mirrored-pause:3.6",
}

// Test images: the probe image, the in-cluster registry and the app the in-cluster-registry
// test copies in.
const (
	BusyboxImage  = "docker.io/library/busybox:1.37.0"
	RegistryImage = "docker.io/library/registry:2.8.3"
	HelloImage    = "docker.io/sparkgap-testbed/hello:1"
)

// TestImages are built besides the k3s list.
var TestImages = []string{BusyboxImage, RegistryImage, HelloImage}

// HelloToken is what the hello image serves at / (port 8080).
const HelloToken = "sparkgap-testbed hello 1"

// HelloPort is the port the hello image's httpd listens on.
const HelloPort = 8080

// Inputs are the files images are assembled from. Each is needed only by the images that use
// it; a missing one fails those images, naming the flag.
type Inputs struct {
	// Parts is scripts/testbed's parts directory (bin/pause, bin/coredns, bin/metrics-server).
	Parts string
	// Own is the test bed's own programs directory (bin/local-path-provisioner).
	Own string
	// Helm is the helm binary of klipper-helm (scripts/helm --path).
	Helm string
	// Busybox is Debian's busybox-static binary (default /bin/busybox).
	Busybox string
	// Registry is Debian's docker-registry binary (default /usr/bin/docker-registry).
	Registry string

	bb *Busybox
}

// Built is one assembled image.
type Built struct {
	Name      string // docker.io/...
	BuiltFrom string // the label's value
	Index     *Index
}

type recipe func(in *Inputs) (Config, []*Tree, []string, string, error)

var recipes = map[string]recipe{
	"docker.io/rancher/mirrored-pause:3.6":                pause,
	"docker.io/rancher/mirrored-coredns-coredns:1.12.3":   coredns,
	"docker.io/rancher/mirrored-metrics-server:v0.8.0":    metricsServer,
	"docker.io/rancher/local-path-provisioner:v0.0.31":    localPath,
	"docker.io/rancher/mirrored-library-busybox:1.36.1":   busybox("1.36.1"),
	"docker.io/rancher/klipper-helm:v0.9.8-build20250709": klipperHelm,
	"docker.io/rancher/klipper-lb:v0.4.13":                placeholder("klipper-lb v0.4.13", "/usr/bin/entry", []string{"entry"}, nil),
	"docker.io/rancher/mirrored-library-traefik:3.3.6":    placeholder("traefik 3.3.6", "/entrypoint.sh", []string{"/entrypoint.sh"}, []string{"traefik"}),
	BusyboxImage:  busybox("1.37.0"),
	RegistryImage: registry,
	HelloImage:    hello,
}

// Known lists the names this package can build, sorted.
func Known() []string {
	out := make([]string, 0, len(recipes))
	for n := range recipes {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Canonical spells a reference as the lock does: docker.io/<namespace>/<repo>:<tag>
// ("busybox:1.37.0" -> "docker.io/library/busybox:1.37.0").
func Canonical(ref string) string {
	ref = strings.TrimSpace(ref)
	first, _, found := strings.Cut(ref, "/")
	if !found || (!strings.ContainsAny(first, ".:") && first != "localhost") {
		if !found {
			ref = "library/" + ref
		}
		ref = "docker.io/" + ref
	}
	return ref
}

// RepoPath is the repository path and tag of a docker.io name on a mirror:
// "docker.io/rancher/mirrored-pause:3.6" -> "rancher/mirrored-pause:3.6".
func RepoPath(name string) string {
	return strings.TrimPrefix(Canonical(name), "docker.io/")
}

// ReadImagesTxt reads a k3s-images.txt: one reference per line, blank lines and # comments
// skipped. Every name must be one this package can build; the error names the file and line.
func ReadImagesTxt(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name := Canonical(line)
		if _, ok := recipes[name]; !ok {
			return nil, fmt.Errorf("%s:%d: no recipe for image %s (known: %s)", path, n, line, strings.Join(Known(), ", "))
		}
		out = append(out, name)
	}
	return out, sc.Err()
}

// Build assembles the image called name (canonical) from in.
func Build(name string, in *Inputs) (*Built, error) {
	r, ok := recipes[name]
	if !ok {
		return nil, fmt.Errorf("image %s: no recipe (known: %s)", name, strings.Join(Known(), ", "))
	}
	cfg, trees, history, from, err := r(in)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", name, err)
	}
	if cfg.Labels == nil {
		cfg.Labels = map[string]string{}
	}
	cfg.Labels[Label] = from
	layers := make([]*Layer, len(trees))
	for i, t := range trees {
		if layers[i], err = t.Layer(); err != nil {
			return nil, fmt.Errorf("image %s: layer %d: %w", name, i, err)
		}
	}
	img, err := NewImage(cfg, layers, history)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", name, err)
	}
	idx, err := NewIndex(img)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", name, err)
	}
	return &Built{Name: name, BuiltFrom: from, Index: idx}, nil
}

// need returns dir/bin/file, or an error naming the flag and the file.
func need(dir, flag, file string) (string, error) {
	if dir == "" {
		return "", fmt.Errorf("%s is required (it holds bin/%s)", flag, file)
	}
	p := filepath.Join(dir, "bin", file)
	if st, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	} else if st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%s: not an executable file", p)
	}
	return p, nil
}

// pin returns the version scripts/testbed's parts were built from (its pins file), or "".
func pin(parts, module string) string {
	data, err := os.ReadFile(filepath.Join(parts, "pins"))
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(data), "\n") {
		if m, v, ok := strings.Cut(strings.TrimSpace(l), "@"); ok && m == module {
			return v
		}
	}
	return ""
}

func partsFrom(parts, module, what string) string {
	if v := pin(parts, module); v != "" {
		return fmt.Sprintf("%s from %s@%s (scripts/testbed parts)", what, module, v)
	}
	return fmt.Sprintf("%s from %s (scripts/testbed parts)", what, module)
}

func (in *Inputs) busybox() (*Busybox, error) {
	if in.bb != nil {
		return in.bb, nil
	}
	path := in.Busybox
	if path == "" {
		path = "/bin/busybox"
	}
	bb, err := ProbeBusybox(path)
	if err != nil {
		return nil, err
	}
	in.bb = bb
	return bb, nil
}

// distroless is the base of pause-less Go images as gcr.io/distroless/static has it: users
// root, nonroot (65532) and nobody, /tmp, /home/nonroot, /root.
func distroless() *Tree {
	t := NewTree()
	t.File("/etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\n"+
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"+
		"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"))
	t.File("/etc/group", 0o644, []byte("root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"))
	t.Dir("/tmp", 0o1777)
	t.Dir("/root", 0o700)
	t.Dir("/home/nonroot", 0o700)
	return t
}

func pause(in *Inputs) (Config, []*Tree, []string, string, error) {
	bin, err := need(in.Parts, "--parts", "pause")
	if err != nil {
		return Config{}, nil, nil, "", err
	}
	t := NewTree()
	if err := t.FileFrom("/pause", 0o755, bin); err != nil {
		return Config{}, nil, nil, "", err
	}
	cfg := Config{Entrypoint: []string{"/pause"}, Env: []string{DefaultPath}, User: "65535:65535", WorkingDir: "/"}
	from := partsFrom(in.Parts, "k8s.io/kubernetes", "/pause (build/pause/linux/pause.c, gcc -static)")
	return cfg, []*Tree{t}, []string{"COPY pause /pause"}, from, nil
}

// capNetBindService is a security.capability value (struct vfs_cap_data, revision 2) granting
// cap_net_bind_service=+ep, what `setcap cap_net_bind_service=+ep /coredns` writes in CoreDNS's
// Dockerfile, so the non-root CoreDNS can bind port 53.
func capNetBindService() []byte {
	const vfsCapRevision2, vfsCapFlagsEffective, capNetBindService = 0x02000000, 0x1, 10
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], vfsCapRevision2|vfsCapFlagsEffective)
	binary.LittleEndian.PutUint32(b[4:], 1<<capNetBindService) // permitted[0]
	return b                                                   // inheritable and the high words stay 0
}

func coredns(in *Inputs) (Config, []*Tree, []string, string, error) {
	bin, err := need(in.Parts, "--parts", "coredns")
	if err != nil {
		return Config{}, nil, nil, "", err
	}
	t := NewTree()
	if err := t.FileFrom("/coredns", 0o755, bin); err != nil {
		return Config{}, nil, nil, "", err
	}
	t.Xattr("/coredns", "security.capability", capNetBindService())
	cfg := Config{
		Entrypoint:   []string{"/coredns"},
		Env:          []string{DefaultPath},
		User:         "nonroot:nonroot",
		WorkingDir:   "/",
		ExposedPorts: []string{"53/tcp", "53/udp"},
	}
	from := partsFrom(in.Parts, "github.com/coredns/coredns", "/coredns (cap_net_bind_service=+ep) on a distroless-like base")
	return cfg, []*Tree{distroless(), t}, []string{"distroless-like base", "COPY coredns /coredns; setcap cap_net_bind_service=+ep"}, from, nil
}

func metricsServer(in *Inputs) (Config, []*Tree, []string, string, error) {
	bin, err := need(in.Parts, "--parts", "metrics-server")
	if err != nil {
		return Config{}, nil, nil, "", err
	}
	t := NewTree()
	if err := t.FileFrom("/metrics-server", 0o755, bin); err != nil {
		return Config{}, nil, nil, "", err
	}
	cfg := Config{Entrypoint: []string{"/metrics-server"}, Env: []string{DefaultPath}, User: "65534", WorkingDir: "/"}
	from := partsFrom(in.Parts, "sigs.k8s.io/metrics-server", "/metrics-server on a distroless-like base")
	return cfg, []*Tree{distroless(), t}, []string{"distroless-like base", "COPY metrics-server /metrics-server"}, from, nil
}

func localPath(in *Inputs) (Config, []*Tree, []string, string, error) {
	bin, err := need(in.Own, "--own", "local-path-provisioner")
	if err != nil {
		return Config{}, nil, nil, "", err
	}
	t := NewTree()
	if err := t.FileFrom("/usr/bin/local-path-provisioner", 0o755, bin); err != nil {
		return Config{}, nil, nil, "", err
	}
	Users(t, "/sbin/nologin")
	t.Dir("/tmp", 0o1777)
	cfg := Config{Cmd: []string{"local-path-provisioner"}, Env: []string{DefaultPath}}
	from := "the test bed's stand-in for local-path-provisioner v0.0.31 (testbed/cmd/local-path-provisioner) at /usr/bin/local-path-provisioner, no busybox"
	return cfg, []*Tree{t}, []string{"COPY local-path-provisioner /usr/bin/"}, from, nil
}

func busyboxLayer(in *Inputs) (*Tree, *Busybox, error) {
	bb, err := in.busybox()
	if err != nil {
		return nil, nil, err
	}
	t := NewTree()
	if err := bb.Tree(t); err != nil {
		return nil, nil, err
	}
	Users(t, "/bin/sh")
	return t, bb, nil
}

func busyboxFrom(bb *Busybox) string {
	return fmt.Sprintf("Debian busybox-static %s with its applets linked in /bin; its wget applet renamed %s and /bin/wget a wrapper taking -T (Debian's build crashes on it)", bb.Version, WgetApplet)
}

func busybox(tag string) recipe {
	return func(in *Inputs) (Config, []*Tree, []string, string, error) {
		t, bb, err := busyboxLayer(in)
		if err != nil {
			return Config{}, nil, nil, "", err
		}
		cfg := Config{Cmd: []string{"sh"}, Env: []string{DefaultPath}}
		return cfg, []*Tree{t}, []string{"busybox " + tag + " stand-in: busybox, applet links, /etc"}, busyboxFrom(bb), nil
	}
}

func placeholder(what, entry string, entrypoint, cmd []string) recipe {
	return func(in *Inputs) (Config, []*Tree, []string, string, error) {
		base, bb, err := busyboxLayer(in)
		if err != nil {
			return Config{}, nil, nil, "", err
		}
		t := NewTree()
		t.File(entry, 0o755, Placeholder(what))
		cfg := Config{Entrypoint: entrypoint, Cmd: cmd, Env: []string{DefaultPath}}
		from := fmt.Sprintf("placeholder for %s, never run by the test node: %s and an entry that exits 1", what, busyboxFrom(bb))
		return cfg, []*Tree{base, t}, []string{"busybox", "placeholder " + entry}, from, nil
	}
}

func klipperHelm(in *Inputs) (Config, []*Tree, []string, string, error) {
	if in.Helm == "" {
		return Config{}, nil, nil, "", fmt.Errorf("--helm is required (the helm binary, scripts/helm --path)")
	}
	base, bb, err := busyboxLayer(in)
	if err != nil {
		return Config{}, nil, nil, "", err
	}
	version, err := exec.Command(in.Helm, "version", "--template", "{{.Version}}").Output()
	if err != nil {
		return Config{}, nil, nil, "", fmt.Errorf("%s version --short: %w", in.Helm, err)
	}
	t := NewTree()
	Users(t, "/bin/sh", "klipper-helm:1000:/home/klipper-helm")
	t.Dir("/home/klipper-helm", 0o755)
	if err := t.FileFrom("/usr/bin/helm", 0o755, in.Helm); err != nil {
		return Config{}, nil, nil, "", err
	}
	t.File("/usr/bin/entry", 0o755, klipper.Entry)
	cfg := Config{
		Entrypoint: []string{"entry"},
		Env:        []string{DefaultPath, "STABLE_REPO_URL=https://charts.helm.sh/stable/", "TIMEOUT="},
		User:       "1000",
		WorkingDir: "/home/klipper-helm",
	}
	from := fmt.Sprintf("klipper-helm stand-in: helm %s (scripts/helm), the test bed's entry script (testbed/pkg/images/klipper/entry), %s",
		strings.TrimSpace(string(version)), busyboxFrom(bb))
	return cfg, []*Tree{base, t}, []string{"busybox", "helm, entry, user klipper-helm (1000)"}, from, nil
}

// RegistryConfig is /etc/docker/registry/config.yml of the registry image: filesystem storage
// under /var/lib/registry, listening on :5000, as the Docker Hub image's config.
const RegistryConfig = `version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
`

var lddLine = regexp.MustCompile(`^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)`)

// SharedLibraries lists the ELF interpreter of bin and the libraries ldd names for it (the
// paths as named, which may be symlinks on the host).
func SharedLibraries(bin string) ([]string, error) {
	f, err := elf.Open(bin)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return nil, fmt.Errorf("%s: reading PT_INTERP: %w", bin, err)
			}
			out = append(out, strings.TrimRight(string(b), "\x00"))
		}
	}
	if len(out) == 0 {
		return nil, nil // static
	}
	ldd, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	seen := map[string]bool{out[0]: true}
	for _, l := range strings.Split(string(ldd), "\n") {
		if m := lddLine.FindStringSubmatch(l); m != nil && !seen[m[1]] {
			seen[m[1]] = true
			out = append(out, m[1])
		}
	}
	sort.Strings(out[1:])
	return out, nil
}

func registry(in *Inputs) (Config, []*Tree, []string, string, error) {
	bin := in.Registry
	if bin == "" {
		bin = "/usr/bin/docker-registry"
	}
	libs, err := SharedLibraries(bin)
	if err != nil {
		return Config{}, nil, nil, "", err
	}
	version, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return Config{}, nil, nil, "", fmt.Errorf("%s --version: %w", bin, err)
	}
	t := NewTree()
	if err := t.FileFrom("/bin/registry", 0o755, bin); err != nil {
		return Config{}, nil, nil, "", err
	}
	for _, l := range libs {
		// The content of what the path resolves to, at the path the binary names.
		if err := t.FileFrom(l, 0o755, l); err != nil {
			return Config{}, nil, nil, "", fmt.Errorf("shared library of %s: %w", bin, err)
		}
	}
	t.File("/etc/docker/registry/config.yml", 0o644, []byte(RegistryConfig))
	t.Dir("/var/lib/registry", 0o755)
	Users(t, "/sbin/nologin")
	cfg := Config{
		Entrypoint:   []string{"registry", "serve"},
		Cmd:          []string{"/etc/docker/registry/config.yml"},
		Env:          []string{DefaultPath},
		ExposedPorts: []string{"5000/tcp"},
		Volumes:      []string{"/var/lib/registry"},
	}
	fields := strings.Fields(string(version)) // "docker-registry github.com/docker/distribution 2.8.2+ds1"
	v := "?"
	if len(fields) > 0 {
		v = fields[len(fields)-1]
	}
	from := fmt.Sprintf("Debian docker-registry %s at /bin/registry with %s; config storing under /var/lib/registry, listening on :5000",
		v, strings.Join(libs, ", "))
	return cfg, []*Tree{t}, []string{"registry, its shared libraries, config.yml"}, from, nil
}

func hello(in *Inputs) (Config, []*Tree, []string, string, error) {
	base, bb, err := busyboxLayer(in)
	if err != nil {
		return Config{}, nil, nil, "", err
	}
	t := NewTree()
	t.File("/www/index.html", 0o644, []byte(HelloToken+"\n"))
	cfg := Config{
		Cmd:          []string{"httpd", "-f", "-v", "-p", fmt.Sprint(HelloPort), "-h", "/www"},
		Env:          []string{DefaultPath},
		User:         "65534:65534",
		ExposedPorts: []string{fmt.Sprintf("%d/tcp", HelloPort)},
	}
	from := fmt.Sprintf("the in-cluster-registry test's app: busybox httpd serving %q on :%d; %s", HelloToken, HelloPort, busyboxFrom(bb))
	return cfg, []*Tree{base, t}, []string{"busybox", "/www/index.html"}, from, nil
}
