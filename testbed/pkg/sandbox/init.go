package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func ilog(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s init: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// Init is `sandbox __init`, PID 1 of the node. It waits for its config (the keeper sends it
// once the init is in the node's cgroups), builds the node, reports readiness and then reaps
// orphans forever; it ends only by the keeper's SIGKILL, or by Pdeathsig when the keeper dies.
func Init() {
	ctl := os.NewFile(fdControl, "control")
	ready := os.NewFile(fdReady, "ready")
	unix.CloseOnExec(fdControl)
	unix.CloseOnExec(fdReady)
	// Signals from inside the node must not end it; caught (not ignored) so that children get
	// the default dispositions back.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE)
	chld := make(chan os.Signal, 16)
	signal.Notify(chld, syscall.SIGCHLD)

	var cfg initConfig
	if err := json.NewDecoder(ctl).Decode(&cfg); err != nil {
		// The keeper died before the init was in its cgroups.
		ilog("no config: %v", err)
		os.Exit(1)
	}
	ctl.Close()
	sitePid, siteNS, err := setup(cfg)
	if err != nil {
		ilog("setup failed: %v", err)
		fmt.Fprintf(ready, "error %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		os.Exit(1)
	}
	fmt.Fprintf(ready, "ready %s\n", siteNS)
	ready.Close()
	ilog("ready")

	for {
		select {
		case s := <-sigs:
			ilog("ignoring %v", s)
		case <-chld:
			for {
				var ws unix.WaitStatus
				pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
				if err != nil || pid <= 0 {
					break
				}
				if pid == sitePid {
					ilog("the site process (pid %d) exited: %v; the site network stays", pid, describeWait(ws))
				}
			}
		}
	}
}

func describeWait(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + ws.Signal().String()
	}
	return fmt.Sprintf("exit status %d", ws.ExitStatus())
}

// setup builds the node's file system, hostname and network. Returns the site process's
// pid and network namespace.
func setup(cfg initConfig) (int, string, error) {
	// Open what the options name on the host before the node's mounts hide anything.
	bindSrc := make([]*os.File, len(cfg.Binds))
	for i, b := range cfg.Binds {
		fd, err := unix.Open(b.Src, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return 0, "", fmt.Errorf("--bind %s: %w", b.Src, err)
		}
		bindSrc[i] = os.NewFile(uintptr(fd), b.Src)
		defer bindSrc[i].Close()
	}
	fileSrc := make([]*os.File, len(cfg.Files))
	for i, f := range cfg.Files {
		fh, err := os.Open(f.Src)
		if err != nil {
			return 0, "", fmt.Errorf("--file %s: %w", f.Src, err)
		}
		fileSrc[i] = fh
		defer fh.Close()
	}
	if err := mountNode(cfg); err != nil {
		return 0, "", err
	}
	if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
		return 0, "", fmt.Errorf("sethostname: %w", err)
	}
	if err := writeInside("/etc/hostname", []byte(cfg.Hostname+"\n"), 0o644); err != nil {
		return 0, "", err
	}
	if err := writeInside("/etc/resolv.conf", []byte(cfg.ResolvConf), 0o644); err != nil {
		return 0, "", err
	}
	for i, f := range cfg.Files {
		if err := copyInside(f.Dst, fileSrc[i]); err != nil {
			return 0, "", fmt.Errorf("--file %s=%s: %w", f.Dst, f.Src, err)
		}
	}
	for i, b := range cfg.Binds {
		if err := bindInside(b, bindSrc[i]); err != nil {
			return 0, "", fmt.Errorf("--bind %s:%s: %w", b.Src, b.Dst, err)
		}
	}
	// The kubelet needs mount propagation (pod volumes, containerd's mounts); every mount is
	// the node's own by now (the root was made private first), so nothing reaches the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SHARED, ""); err != nil {
		return 0, "", fmt.Errorf("make / rshared: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return 0, "", err
	}
	return setupNetwork(cfg)
}

// mountNode makes the node's mounts, in an order where each step still sees what it needs.
func mountNode(cfg initConfig) error {
	steps := []struct {
		what string
		do   func() error
	}{
		{"make / rprivate", func() error { return unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "") }},
		{"mount /proc", func() error {
			return unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
		}},
		{"mount /run", func() error {
			return unix.Mount("tmpfs", "/run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755")
		}},
		{"mount /sys", mountSys},
		{"mount /dev/shm", func() error {
			return unix.Mount("shm", "/dev/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777")
		}},
		{"mount the overlays", func() error { return mountOverlays(cfg.Dir) }},
		{"bind the disk dirs", func() error { return bindDisks(cfg.Dir) }},
		{"bind the sysctls", func() error { return bindSysctls(cfg.Dir) }},
		{"make the host's root file system read-only", func() error { return protectRoot(cfg.Dir) }},
		{"make /run's dirs", func() error {
			for _, d := range []string{"/run/netns", "/run/k3s", "/run/lock"} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					return err
				}
			}
			return nil
		}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("%s: %w", s.what, err)
		}
	}
	return nil
}

// mountSys gives the node a sysfs of its own network namespace (so /sys/class/net lists the
// node's interfaces, as the CNI plugins and kube-router expect), and the host's cgroup
// hierarchies mounted again from inside the node's cgroup namespace: their root is the node's
// cgroup.
func mountSys() error {
	cgs, err := hierarchyMounts()
	if err != nil {
		return err
	}
	if err := unix.Unmount("/sys", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the host's /sys: %w", err)
	}
	if err := unix.Mount("sysfs", "/sys", "sysfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", CgroupBase, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0755"); err != nil {
		return err
	}
	for _, m := range cgs {
		if err := os.MkdirAll(m.Point, 0o755); err != nil {
			return err
		}
		opts := hierarchyOptions(m)
		if err := unix.Mount("cgroup", m.Point, m.FSType, unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opts); err != nil {
			return fmt.Errorf("mount %s (%s %s): %w", m.Point, m.FSType, opts, err)
		}
	}
	return nil
}

// protectRoot makes the mount of / read-only inside the node, so that nothing of the node
// writes to the host's file system outside its own mounts (overlays, tmpfs, disk dirs), /tmp
// and the sandbox directory, which keep writable mounts of their own. The flag is the node's
// mount's only: the host's / stays as it is.
func protectRoot(dir string) error {
	for _, d := range append(append([]string(nil), writableHost...), dir) {
		if err := unix.Mount(d, d, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("keep %s writable: %w", d, err)
		}
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/", &st); err != nil {
		return err
	}
	flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY)
	for _, f := range []struct{ st, ms int64 }{
		{unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NODEV, unix.MS_NODEV}, {unix.ST_NOEXEC, unix.MS_NOEXEC},
		{unix.ST_NOATIME, unix.MS_NOATIME}, {unix.ST_NODIRATIME, unix.MS_NODIRATIME}, {unix.ST_RELATIME, unix.MS_RELATIME},
	} {
		if st.Flags&f.st != 0 {
			flags |= uintptr(f.ms)
		}
	}
	return unix.Mount("", "/", "", flags, "")
}

// mountOverlays puts an overlay over each of overlayDirs, its upper layer in DIR/overlay.
func mountOverlays(dir string) error {
	for _, o := range overlayDirs {
		base := filepath.Join(dir, "overlay", o.Name)
		upper, work := filepath.Join(base, "upper"), filepath.Join(base, "work")
		for _, d := range []string{upper, work} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", o.Path, upper, work)
		if err := unix.Mount("overlay", o.Path, "overlay", 0, opts); err != nil {
			return fmt.Errorf("overlay on %s: %w", o.Path, err)
		}
	}
	return nil
}

// bindDisks binds DIR/disk/<name> at each of diskDirs, its mount point made in the /var overlay.
func bindDisks(dir string) error {
	for _, d := range diskDirs {
		src := filepath.Join(dir, "disk", d.Name)
		if err := os.MkdirAll(src, 0o755); err != nil {
			return err
		}
		if err := os.MkdirAll(d.Path, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(src, d.Path, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s at %s: %w", src, d.Path, err)
		}
	}
	return nil
}

// bindSysctls binds a file of DIR/sysctl holding the kubelet's value over each of sysctls.
func bindSysctls(dir string) error {
	sd := filepath.Join(dir, "sysctl")
	if err := os.MkdirAll(sd, 0o755); err != nil {
		return err
	}
	for _, s := range sysctls {
		f := filepath.Join(sd, strings.ReplaceAll(s.Key, "/", "."))
		if err := os.WriteFile(f, []byte(s.Value+"\n"), 0o644); err != nil {
			return err
		}
		target := filepath.Join("/proc/sys", s.Key)
		if err := unix.Mount(f, target, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s over %s: %w", f, target, err)
		}
	}
	return nil
}

// resolveInside resolves p's symlinks as far as p exists (its last component only when
// followLast) and checks that the result lies on one of the node's own mounts (ownMounts):
// never on the host's file system or a --bind.
func resolveInside(p string, followLast bool) (string, error) {
	p = filepath.Clean(p)
	existing, rest := p, ""
	if !followLast && p != "/" {
		existing, rest = filepath.Dir(p), filepath.Base(p)
	}
	for {
		if _, err := os.Lstat(existing); err == nil {
			break
		}
		rest = filepath.Join(filepath.Base(existing), rest)
		existing = filepath.Dir(existing)
	}
	real, err := filepath.EvalSymlinks(existing)
	if err != nil {
		return "", err
	}
	resolved := filepath.Join(real, rest)
	ms, err := readMountInfo("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	on := "/"
	for _, m := range ms {
		if (resolved == m.Point || strings.HasPrefix(resolved, m.Point+"/")) && len(m.Point) > len(on) {
			on = m.Point
		}
	}
	// The target itself may already be a mount point (a bind of a previous run of the same
	// option): judge by the mount it sits on.
	if on == resolved {
		parent := "/"
		for _, m := range ms {
			if m.Point != resolved && strings.HasPrefix(resolved, m.Point+"/") && len(m.Point) > len(parent) {
				parent = m.Point
			}
		}
		on = parent
	}
	for _, own := range ownMounts() {
		if on == own {
			return resolved, nil
		}
	}
	return "", fmt.Errorf("%s (%s) is on %s, not in an overlay or tmpfs of the node: refused", p, resolved, on)
}

// writeInside replaces path (after resolveInside) with content.
func writeInside(p string, content []byte, mode fs.FileMode) error {
	real, err := resolveInside(p, false)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(real), 0o755); err != nil {
		return err
	}
	if err := os.Remove(real); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return os.WriteFile(real, content, mode)
}

// copyInside writes src's content to dst inside the node, with src's mode.
func copyInside(dst string, src *os.File) error {
	st, err := src.Stat()
	if err != nil {
		return err
	}
	real, err := resolveInside(dst, false)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(real), 0o755); err != nil {
		return err
	}
	if err := os.Remove(real); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	out, err := os.OpenFile(real, os.O_CREATE|os.O_EXCL|os.O_WRONLY, st.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, src); err != nil {
		out.Close()
		return err
	}
	if err := out.Chmod(st.Mode().Perm()); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// bindInside binds src (opened on the host before the node's mounts) at b.Dst, creating the
// mount point in the node's own mounts when missing.
func bindInside(b Bind, src *os.File) error {
	st, err := src.Stat()
	if err != nil {
		return err
	}
	real, err := resolveInside(b.Dst, true)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(real); errors.Is(err, fs.ErrNotExist) {
		if st.IsDir() {
			err = os.MkdirAll(real, 0o755)
		} else {
			if err = os.MkdirAll(filepath.Dir(real), 0o755); err == nil {
				err = os.WriteFile(real, nil, 0o644)
			}
		}
		if err != nil {
			return err
		}
	}
	from := fmt.Sprintf("/proc/self/fd/%d", src.Fd())
	if err := unix.Mount(from, real, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	if b.RO {
		if err := unix.Mount("", real, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("make read-only: %w", err)
		}
	}
	return nil
}
