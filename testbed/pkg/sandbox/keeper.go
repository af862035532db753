package sandbox

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// initConfig is what the keeper sends the init once the init is in the node's cgroups.
type initConfig struct {
	Dir        string
	Hostname   string
	Binds      []Bind
	Files      []File
	SiteCmd    string
	ResolvConf string
}

// Fds of the init and of the site process, after stdin, stdout and stderr.
const (
	fdControl = 3 // keeper -> init: the config (its arrival means "you are in the cgroups, go")
	fdReady   = 4 // init -> keeper: "ready <site netns>" or "error <message>"
)

// readyTimeout bounds the init's setup (mounts, network, starting the site; no waiting on
// the site's server).
const readyTimeout = 60 * time.Second

type keeper struct {
	o      Options
	hs     []string
	stderr io.Writer
	init   *exec.Cmd
	exited chan struct{} // closed when the init has exited
	ns     []string      // namespaces of the node ("net:[4026532...]"), to check none outlives teardown
}

func (k *keeper) logf(format string, args ...any) {
	fmt.Fprintf(k.stderr, "sandbox: "+format+"\n", args...)
}

// Run is `sandbox run`: it brings the node up, prints "ready <init pid>" on stdout, waits for
// EOF on stdin or SIGTERM/SIGINT/SIGHUP (or the init's death), tears the node down and
// returns the exit code: 0 when nothing is left, 1 otherwise.
func Run(o Options, stdin io.Reader, stdout, stderr io.Writer) int {
	// The init's Pdeathsig fires when the thread that forked it exits: keep that thread for
	// the keeper's whole life.
	runtime.LockOSThread()
	k := &keeper{o: o, stderr: stderr, exited: make(chan struct{})}
	if err := k.o.Validate(); err != nil {
		k.logf("%v", err)
		return 2
	}
	// Not the test's process group or terminal: the keeper must outlive the test and clean up.
	_, _ = syscall.Setsid()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	// A write to the closed stdout/stderr of a dead test must fail, not kill the keeper.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)

	hs, err := Hierarchies()
	if err != nil {
		k.logf("%v", err)
		return 1
	}
	k.hs = hs
	SweepCgroups(hs, k.logf)
	sweepDirs(k.o.Dir, k.logf)

	cfg, err := k.config()
	if err != nil {
		k.logf("%v", err)
		return 2
	}
	if err := k.writeFile(KeeperPidFile, strconv.Itoa(os.Getpid())); err != nil {
		k.logf("%v", err)
		return 1
	}
	if err := k.writeFile(CgroupFile, k.o.Cgroup); err != nil {
		k.logf("%v", err)
		return 1
	}
	if err := CreateCgroup(hs, k.o.Cgroup); err != nil {
		k.logf("create cgroups: %v", err)
		k.teardown()
		return 1
	}
	// Inside the node's cgroup namespace its cgroup is "/"; a cgroup NAME inside it makes the
	// host's name for it, /NAME (K3S_TESTBED_CGROUP_ROOT, testbed/README.md), resolve inside
	// too, still below the node's cgroup.
	alias := make([]string, len(hs))
	for i, h := range hs {
		alias[i] = filepath.Join(h, k.o.Cgroup)
	}
	if err := CreateCgroup(alias, k.o.Cgroup); err != nil {
		k.logf("create cgroups: %v", err)
		k.teardown()
		return 1
	}
	siteNS, err := k.start(cfg)
	if err != nil {
		k.logf("%v", err)
		k.teardown()
		return 1
	}
	pid := k.init.Process.Pid
	for _, n := range nsKinds {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, n)); err == nil {
			k.ns = append(k.ns, l)
		}
	}
	if siteNS != "" {
		k.ns = append(k.ns, siteNS)
	}
	if err := k.writeFile(InitPidFile, strconv.Itoa(pid)); err != nil {
		k.logf("%v", err)
		k.teardown()
		return 1
	}
	fmt.Fprintf(stdout, "ready %d\n", pid)

	eof := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		close(eof)
	}()
	select {
	case <-eof:
		k.logf("stdin closed: tearing the node down")
	case s := <-sigs:
		k.logf("%v: tearing the node down", s)
	case <-k.exited:
		k.logf("the node's init died (see %s): tearing the node down", filepath.Join(k.o.Dir, LogFile))
		k.teardown()
		return 1
	}
	return k.teardown()
}

// config checks the host side of the options and builds the init's config.
func (k *keeper) config() (initConfig, error) {
	cfg := initConfig{
		Dir:        k.o.Dir,
		Hostname:   k.o.Hostname,
		Binds:      k.o.Binds,
		Files:      k.o.Files,
		SiteCmd:    k.o.SiteCmd,
		ResolvConf: fmt.Sprintf("nameserver %s\n", SiteAddr),
	}
	st, err := os.Stat(k.o.Dir)
	if err != nil || !st.IsDir() {
		return cfg, fmt.Errorf("--dir %s: not a directory", k.o.Dir)
	}
	if strings.ContainsAny(k.o.Dir, ",:") {
		return cfg, fmt.Errorf("--dir %s: overlay options cannot carry ',' or ':'", k.o.Dir)
	}
	if k.o.ResolvConf != "" {
		b, err := os.ReadFile(k.o.ResolvConf)
		if err != nil {
			return cfg, fmt.Errorf("--resolv-conf: %w", err)
		}
		cfg.ResolvConf = string(b)
	}
	for _, b := range k.o.Binds {
		if _, err := os.Stat(b.Src); err != nil {
			return cfg, fmt.Errorf("--bind %s: %w", b.Src, err)
		}
	}
	for _, f := range k.o.Files {
		st, err := os.Stat(f.Src)
		if err != nil {
			return cfg, fmt.Errorf("--file %s: %w", f.Src, err)
		}
		if !st.Mode().IsRegular() {
			return cfg, fmt.Errorf("--file %s: not a regular file", f.Src)
		}
	}
	return cfg, nil
}

func (k *keeper) writeFile(name, content string) error {
	return os.WriteFile(filepath.Join(k.o.Dir, name), []byte(content+"\n"), 0o644)
}

// start starts the init in new namespaces, puts it into the node's cgroups before it does
// anything, sends it its config and waits for its readiness. Returns the site's network
// namespace as the init reported it.
func (k *keeper) start(cfg initConfig) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	logf, err := os.OpenFile(filepath.Join(k.o.Dir, LogFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return "", err
	}
	defer logf.Close()
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		return "", err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return "", err
	}
	defer readyR.Close()
	cmd := exec.Command(self, "__init")
	cmd.Dir = "/"
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.ExtraFiles = []*os.File{ctlR, readyW}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWNET | syscall.CLONE_NEWPID |
			syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWCGROUP,
		Pdeathsig: syscall.SIGKILL,
		Setpgid:   true,
	}
	// The init is born in the node's cgroups, with a cgroup namespace rooted there: the keeper
	// joins them for the clone and goes back to its own cgroups right after. Inside the node,
	// its cgroup is "/" in every hierarchy, so nothing of the node (a kubelet with k3s's
	// default cgroup root, a container without a cgroup path) can make a cgroup outside it.
	own, err := OwnCgroups(k.hs)
	if err != nil {
		ctlW.Close()
		return "", err
	}
	if err := JoinCgroup(k.hs, k.o.Cgroup, os.Getpid()); err != nil {
		_ = MoveTo(own, os.Getpid())
		ctlW.Close()
		return "", err
	}
	err = cmd.Start()
	backErr := MoveTo(own, os.Getpid())
	ctlR.Close()
	readyW.Close()
	if err != nil {
		ctlW.Close()
		return "", fmt.Errorf("start the init: %w", err)
	}
	k.init = cmd
	go func() {
		_ = cmd.Wait()
		close(k.exited)
	}()
	if backErr != nil {
		ctlW.Close()
		return "", backErr
	}
	// The init waits for its config before it does anything.
	err = json.NewEncoder(ctlW).Encode(cfg)
	ctlW.Close()
	if err != nil {
		return "", fmt.Errorf("send the init its config: %w", err)
	}
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(readyR).ReadString('\n')
		line <- strings.TrimSpace(l)
	}()
	select {
	case l := <-line:
		if ns, ok := strings.CutPrefix(l, "ready"); ok {
			return strings.TrimSpace(ns), nil
		}
		if msg, ok := strings.CutPrefix(l, "error "); ok {
			return "", fmt.Errorf("the node's init failed: %s", msg)
		}
		return "", fmt.Errorf("the node's init died before it was ready (see %s)", filepath.Join(k.o.Dir, LogFile))
	case <-time.After(readyTimeout):
		return "", fmt.Errorf("the node's init was not ready after %v (see %s)", readyTimeout, filepath.Join(k.o.Dir, LogFile))
	}
}

// teardown kills the node and removes everything it left: SIGKILL to the init (the kernel
// then kills every process of its PID namespace, containers included, and the namespaces go
// with their last process, taking mounts, interfaces and iptables rules along), waits for the
// cgroups to empty, removes them bottom-up, checks that no process still holds a namespace
// of the node, and removes the sandbox directory. Returns 0 when nothing is left.
func (k *keeper) teardown() int {
	failed := false
	if k.init != nil {
		_ = k.init.Process.Signal(syscall.SIGKILL)
		select {
		case <-k.exited:
		case <-time.After(30 * time.Second):
			k.logf("the init (pid %d) did not exit 30s after SIGKILL", k.init.Process.Pid)
			failed = true
		}
	}
	if pids := EmptyCgroup(k.hs, k.o.Cgroup, 5*time.Second, 60*time.Second); len(pids) > 0 {
		k.logf("processes left in cgroup %s: %v", k.o.Cgroup, pids)
		failed = true
	}
	if left := RemoveCgroup(k.hs, k.o.Cgroup, 10*time.Second); len(left) > 0 {
		k.logf("cgroups left: %s", strings.Join(left, ", "))
		failed = true
	}
	if holders := nsHolders(k.ns, 5*time.Second); len(holders) > 0 {
		k.logf("namespaces of the node still held: %s", strings.Join(holders, ", "))
		failed = true
	}
	if ms, _ := MountsUnder(k.o.Dir); len(ms) > 0 {
		k.logf("mounts left under %s on the host: %s; the directory is kept", k.o.Dir, strings.Join(ms, ", "))
		return 1
	}
	if err := removeAll(k.o.Dir); err != nil {
		k.logf("remove %s: %v", k.o.Dir, err)
		failed = true
	}
	if failed {
		return 1
	}
	return 0
}

// nsKinds are the namespaces of the node.
var nsKinds = []string{"mnt", "net", "pid", "uts", "ipc", "cgroup"}

// nsHolders lists the processes that still hold one of the namespaces ns, waiting up to
// timeout for them to go.
func nsHolders(ns []string, timeout time.Duration) []string {
	if len(ns) == 0 {
		return nil
	}
	want := map[string]bool{}
	for _, n := range ns {
		want[n] = true
	}
	deadline := time.Now().Add(timeout)
	for {
		var holders []string
		procs, _ := os.ReadDir("/proc")
		for _, p := range procs {
			if _, err := strconv.Atoi(p.Name()); err != nil {
				continue
			}
			for _, n := range nsKinds {
				if l, err := os.Readlink(filepath.Join("/proc", p.Name(), "ns", n)); err == nil && want[l] {
					holders = append(holders, fmt.Sprintf("pid %s (%s)", p.Name(), l))
				}
			}
		}
		if len(holders) == 0 || time.Now().After(deadline) {
			return holders
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeAll removes dir, retrying briefly: the node's mounts over its overlay layers are
// released when the mount namespace goes, which can trail its last process by a moment.
func removeAll(dir string) error {
	var err error
	for i := 0; i < 50; i++ {
		if err = os.RemoveAll(dir); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// sweepDirs removes sandbox directories of dead runs beside dir: a sibling holding a keeper
// pid file and a cgroup file whose keeper and test are both gone, and with no mount under it.
func sweepDirs(dir string, logf func(string, ...any)) {
	parent := filepath.Dir(dir)
	ents, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !e.IsDir() || e.Type()&fs.ModeSymlink != 0 {
			continue
		}
		d := filepath.Join(parent, e.Name())
		if d == dir {
			continue
		}
		kp, err1 := os.ReadFile(filepath.Join(d, KeeperPidFile))
		cg, err2 := os.ReadFile(filepath.Join(d, CgroupFile))
		if err1 != nil || err2 != nil {
			continue
		}
		m := NamePattern.FindStringSubmatch(strings.TrimSpace(string(cg)))
		kpid, err := strconv.Atoi(strings.TrimSpace(string(kp)))
		if m == nil || err != nil {
			continue
		}
		tpid, _ := strconv.Atoi(m[1])
		if pidAlive(kpid) || pidAlive(tpid) {
			continue
		}
		if ms, _ := MountsUnder(d); len(ms) > 0 {
			logf("sweep: %s of a dead run has mounts (%s): left alone", d, strings.Join(ms, ", "))
			continue
		}
		if err := os.RemoveAll(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			logf("sweep: remove %s: %v", d, err)
		} else {
			logf("sweep: removed %s of a dead run", d)
		}
	}
}
