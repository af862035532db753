package images

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// WgetApplet is the name the wget applet has in the images' busybox. Debian's busybox-static
// (1.35) is built without FEATURE_WGET_TIMEOUT, and `wget -T N` then writes through a NULL
// pointer and dies with SIGSEGV (fixed in Debian's 1.36.1-5; the images it plays, busybox
// 1.36.1 and 1.37.0 from Docker Hub, have the option). sparkgap's probes run
// `sh -c 'wget -q -T 5 ...'`, and that build's sh runs its own applets before looking at PATH
// (FEATURE_SH_STANDALONE), so a /bin/wget wrapper alone is never reached: the images' copy of
// busybox has the applet renamed (one byte of its applet name table, order kept), so "wget" is
// no applet, sh finds /bin/wget (WgetWrapper), and the wrapper runs the applet by its new name.
const WgetApplet = "wgeT"

// WgetWrapper stands at /bin/wget in every busybox image: it takes -T N (also -TN and
// --timeout=N) off the arguments and runs busybox's wget applet under busybox's `timeout N`;
// every other argument passes through unchanged. A wget killed by the timeout exits non-zero,
// as a timed-out wget does. Its messages start "wgeT:" instead of "wget:".
const WgetWrapper = `#!/bin/sh
# sparkgap test bed: Debian's busybox-static crashes on "wget -T N" (built without
# FEATURE_WGET_TIMEOUT); run its wget applet (renamed ` + WgetApplet + ` in this image's busybox)
# under "timeout N" instead.
bb=${0%/*}/busybox
t=
n=$#
while [ "$n" -gt 0 ]; do
	a=$1
	shift
	n=$((n - 1))
	case $a in
	-T)
		t=$1
		shift
		n=$((n - 1))
		continue
		;;
	-T*)
		t=${a#-T}
		continue
		;;
	--timeout=*)
		t=${a#--timeout=}
		continue
		;;
	esac
	set -- "$@" "$a"
done
if [ -n "$t" ]; then
	exec "$bb" timeout "$t" "$bb" ` + WgetApplet + ` "$@"
fi
exec "$bb" ` + WgetApplet + ` "$@"
`

// Busybox is a host busybox binary and what it says of itself.
type Busybox struct {
	Path    string
	Version string // e.g. "v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1)"
	Applets []string
	// Patched is the binary the images carry: wget renamed WgetApplet.
	Patched []byte
}

var busyboxBanner = regexp.MustCompile(`^BusyBox (v\S+(?: \([^)]*\))?)`)

// ProbeBusybox runs path --list and path (its banner) to learn its applets and version.
func ProbeBusybox(path string) (*Busybox, error) {
	out, err := exec.Command(path, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", path, err)
	}
	var applets []string
	for _, a := range strings.Fields(string(out)) {
		if strings.ContainsAny(a, "/[") || a == "busybox" {
			continue // [ and [[ are kept below; paths never appear with --list
		}
		applets = append(applets, a)
	}
	applets = append(applets, "[", "[[")
	sort.Strings(applets)
	// The banner goes to stdout with exit status 0 or 1 depending on the build.
	banner, _ := exec.Command(path).CombinedOutput()
	m := busyboxBanner.FindStringSubmatch(strings.TrimSpace(string(banner)))
	if m == nil {
		return nil, fmt.Errorf("%s: no \"BusyBox vX\" banner in its output", path)
	}
	need := []string{"sh", "httpd", "wget", "nslookup", "timeout", "base64", "sed", "grep"}
	have := map[string]bool{}
	for _, a := range applets {
		have[a] = true
	}
	for _, a := range need {
		if !have[a] {
			return nil, fmt.Errorf("%s has no %q applet (the test images need %s)", path, a, strings.Join(need, ", "))
		}
	}
	patched, err := renameWget(path, strings.Fields(string(out)))
	if err != nil {
		return nil, err
	}
	return &Busybox{Path: path, Version: m[1], Applets: applets, Patched: patched}, nil
}

// renameWget returns the binary at path with its wget applet renamed WgetApplet: the applet
// name table holds the names NUL-separated in --list order, so "\0<prev>\0wget\0<next>\0" must
// occur exactly once; the new name sorts between the same neighbours. The result is checked by
// running it.
func renameWget(path string, order []string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	i := slices.Index(order, "wget")
	if i <= 0 || i == len(order)-1 {
		return nil, fmt.Errorf("%s --list: wget has no neighbours", path)
	}
	prev, next := order[i-1], order[i+1]
	if !(prev < WgetApplet && WgetApplet < next) {
		return nil, fmt.Errorf("%s: renaming wget to %s would break the applet order (%s, %s)", path, WgetApplet, prev, next)
	}
	old := []byte("\x00" + prev + "\x00wget\x00" + next + "\x00")
	if n := bytes.Count(data, old); n != 1 {
		return nil, fmt.Errorf("%s: the applet name table (%q) occurs %d times, want once", path, old, n)
	}
	out := bytes.Replace(data, old, []byte("\x00"+prev+"\x00"+WgetApplet+"\x00"+next+"\x00"), 1)
	// Check: the renamed binary lists WgetApplet and no wget.
	tmp, err := os.CreateTemp("", "busybox-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(out); err != nil {
		return nil, err
	}
	tmp.Chmod(0o755)
	tmp.Close()
	list, err := exec.Command(tmp.Name(), "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s with wget renamed: --list: %w", path, err)
	}
	names := strings.Fields(string(list))
	if slices.Contains(names, "wget") || !slices.Contains(names, WgetApplet) {
		return nil, fmt.Errorf("%s with wget renamed: --list still has wget or lacks %s", path, WgetApplet)
	}
	return out, nil
}

// Tree adds /bin/busybox with a symlink per applet under /bin (the Docker Hub busybox image
// puts every applet in /bin), /bin/wget as WgetWrapper, and the directories the busybox
// image has: /tmp (1777), /root (0700), /home, /usr/bin, /usr/sbin, /var/www.
func (b *Busybox) Tree(t *Tree) error {
	t.File("/bin/busybox", 0o755, b.Patched)
	for _, a := range b.Applets {
		t.Symlink("/bin/"+a, "busybox")
	}
	t.File("/bin/wget", 0o755, []byte(WgetWrapper))
	t.Dir("/tmp", 0o1777)
	t.Dir("/root", 0o700)
	t.Dir("/home", 0o755)
	t.Dir("/usr/bin", 0o755)
	t.Dir("/usr/sbin", 0o755)
	t.Dir("/var/www", 0o755)
	return nil
}

// Users writes /etc/passwd and /etc/group: root, the users given as "name:uid:home", and
// nobody (65534).
func Users(t *Tree, shell string, users ...string) {
	passwd := "root:x:0:0:root:/root:" + shell + "\n"
	group := "root:x:0:\n"
	for _, u := range users {
		f := strings.SplitN(u, ":", 3)
		passwd += fmt.Sprintf("%s:x:%s:%s:%s:%s:%s\n", f[0], f[1], f[1], f[0], f[2], shell)
		group += fmt.Sprintf("%s:x:%s:\n", f[0], f[1])
	}
	passwd += "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
	group += "nobody:x:65534:\n"
	t.File("/etc/passwd", 0o644, []byte(passwd))
	t.File("/etc/group", 0o644, []byte(group))
}

// Placeholder is the entry script of an image the test node never runs (klipper-lb, traefik).
func Placeholder(name string) []byte {
	return []byte(fmt.Sprintf("#!/bin/sh\necho 'sparkgap test bed: %s is a placeholder (busybox only); the test node never runs it' >&2\nexit 1\n", name))
}
