// Package sandbox is the test bed's machine: a k3s-like node in its own mount, network, PID,
// UTS and IPC namespaces and its own cgroups, reachable only from the test, and removed whole
// when the test ends however it ends.
//
// Two halves: the keeper (Run) stays on the host, creates the cgroups, starts the init in new
// namespaces, and tears everything down when its stdin closes; the init (Init) is PID 1 of the
// node, builds its mounts and network, starts the site and reaps orphans. Exec runs a command
// inside a running node.
package sandbox

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Node network: eth0 of the node and its peer in the site, on a TEST-NET-3 subnet (RFC 5737)
// that routes nowhere.
const (
	NodeAddr = "203.0.113.10"
	SiteAddr = "203.0.113.1"
	NetMask  = 24
)

// DefaultHostname is the node's hostname when --hostname is not given.
const DefaultHostname = "sparkgap-node"

// ExecPath is PATH inside the node for `sandbox exec`: systemd's default, so the systemctl
// stand-in at /usr/local/sbin comes first.
const ExecPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Files the keeper writes in the sandbox directory.
const (
	InitPidFile   = "init.pid"   // the init's pid as the host sees it
	CgroupFile    = "cgroup"     // the cgroup name
	KeeperPidFile = "keeper.pid" // the keeper's pid: a later keeper sweeps the directory once it is dead
	LogFile       = "sandbox.log"
	SiteLogFile   = "site.log"
)

// Bind is one --bind SRC:DST[:ro].
type Bind struct {
	Src, Dst string
	RO       bool
}

// File is one --file DST=SRC: SRC's content copied to DST inside the node.
type File struct {
	Dst, Src string
}

// Options are the arguments of `sandbox run`.
type Options struct {
	Dir        string
	Cgroup     string
	Hostname   string
	Binds      []Bind
	Files      []File
	SiteCmd    string
	ResolvConf string
}

// ParseBind reads SRC:DST[:ro].
func ParseBind(s string) (Bind, error) {
	parts := strings.Split(s, ":")
	b := Bind{}
	switch {
	case len(parts) == 2:
	case len(parts) == 3 && parts[2] == "ro":
		b.RO = true
	case len(parts) == 3 && parts[2] == "rw":
	default:
		return b, fmt.Errorf("--bind %q: want SRC:DST or SRC:DST:ro", s)
	}
	b.Src, b.Dst = parts[0], parts[1]
	if !filepath.IsAbs(b.Src) || !filepath.IsAbs(b.Dst) {
		return b, fmt.Errorf("--bind %q: both paths must be absolute", s)
	}
	b.Src, b.Dst = filepath.Clean(b.Src), filepath.Clean(b.Dst)
	return b, nil
}

// ParseFile reads DST=SRC.
func ParseFile(s string) (File, error) {
	dst, src, ok := strings.Cut(s, "=")
	if !ok || !filepath.IsAbs(dst) || !filepath.IsAbs(src) {
		return File{}, fmt.Errorf("--file %q: want DST=SRC, both absolute", s)
	}
	return File{Dst: filepath.Clean(dst), Src: filepath.Clean(src)}, nil
}

// overlayDirs are the host directories the node sees through an overlay whose upper layer is
// in the sandbox directory; name is the layer's directory under DIR/overlay. /usr whole, not
// only /usr/local: the kubelet creates /usr/libexec/kubernetes/kubelet-plugins. /root: HOME of
// the unit and of `sandbox exec` (kubectl's and helm's caches).
var overlayDirs = []struct{ Path, Name string }{
	{"/etc", "etc"},
	{"/usr", "usr"},
	{"/var", "var"},
	{"/opt", "opt"},
	{"/root", "root"},
}

// writableHost are the host directories the node may write besides its own mounts: /tmp, the
// host's by design (the test hands files over there). The rest of the host's root file system
// is read-only inside the node.
var writableHost = []string{"/tmp"}

// diskDirs are real directories of the sandbox directory bound over the /var overlay:
// containerd's overlay snapshots and the kubelet's volumes need a file system that is not an
// overlay. All of /var/lib, not /var/lib/rancher and /var/lib/kubelet each: on a real machine
// those are plain directories, and sparkgap's uninstall refuses to delete k3s's data
// directories while a mount point is at or below them. The host's /var/lib (dpkg, apt, ...)
// is not seen inside the node.
var diskDirs = []struct{ Path, Name string }{
	{"/var/lib", "lib"},
}

// ownMounts are the mounts of the node whose content lives in the sandbox (overlays, tmpfs,
// disk dirs): the only places --bind and --file may create or write a target.
func ownMounts() []string {
	m := []string{"/run"}
	for _, o := range overlayDirs {
		m = append(m, o.Path)
	}
	for _, d := range diskDirs {
		m = append(m, d.Path)
	}
	return m
}

// sysctls are the global kernel settings the kubelet writes at start
// (kubernetes: pkg/kubelet/cm/container_manager_linux.go setupKernelTunables): files holding
// these values are bound over them inside the node, so the kubelet finds them set and the
// host's stay as they are.
var sysctls = []struct{ Key, Value string }{
	{"vm/overcommit_memory", "1"},
	{"vm/panic_on_oom", "0"},
	{"kernel/panic", "10"},
	{"kernel/panic_on_oops", "1"},
	{"kernel/keys/root_maxkeys", "1000000"},
	{"kernel/keys/root_maxbytes", "25000000"},
}

// Validate checks the options the keeper can check on the host.
func (o *Options) Validate() error {
	if o.Dir == "" || o.Cgroup == "" {
		return fmt.Errorf("--dir and --cgroup are required")
	}
	abs, err := filepath.Abs(o.Dir)
	if err != nil {
		return err
	}
	o.Dir = abs
	for _, ov := range overlayDirs {
		if o.Dir == ov.Path || strings.HasPrefix(o.Dir, ov.Path+"/") || o.Dir == "/" {
			return fmt.Errorf("--dir %s: must not be inside %s (an overlay's upper layer cannot live in its lower layer)", o.Dir, ov.Path)
		}
	}
	if !NamePattern.MatchString(o.Cgroup) {
		return fmt.Errorf("--cgroup %q: want sparkgap-node-<pid>-<n>", o.Cgroup)
	}
	if o.Hostname == "" {
		o.Hostname = DefaultHostname
	}
	return nil
}
