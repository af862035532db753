package sandbox

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Fds of the site process.
const (
	fdSiteGo  = 3 // init -> site: its end of the veth pair is there
	fdSiteErr = 4 // site -> init: an error, or EOF once the site command is exec'd
)

// SiteNetns is where the node keeps the site's network namespace (on its /run tmpfs), so the
// site network outlives a crash of the site's server and `ip netns exec site` works inside.
const SiteNetns = "/run/netns/site"

// ip runs iproute2's ip with args.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// setupNetwork gives the node lo and eth0 (NodeAddr, default route via SiteAddr) and starts
// the site: a process of the node's PID namespace in a network namespace of its own that
// holds eth0's peer (SiteAddr) and runs the site command. No interface of either namespace
// leads to the host. Returns the site's pid and network namespace.
func setupNetwork(cfg initConfig) (int, string, error) {
	if err := ip("link", "set", "lo", "up"); err != nil {
		return 0, "", err
	}
	self, err := os.Executable()
	if err != nil {
		return 0, "", err
	}
	goR, goW, err := os.Pipe()
	if err != nil {
		return 0, "", err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return 0, "", err
	}
	logf, err := os.OpenFile(filepath.Join(cfg.Dir, SiteLogFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, "", err
	}
	defer logf.Close()
	cmd := exec.Command(self, "__site", cfg.SiteCmd)
	cmd.Dir = "/"
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Env = append(os.Environ(), "PATH="+ExecPath)
	cmd.ExtraFiles = []*os.File{goR, errW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Setsid: true}
	err = cmd.Start()
	goR.Close()
	errW.Close()
	defer goW.Close()
	defer errR.Close()
	if err != nil {
		return 0, "", fmt.Errorf("start the site: %w", err)
	}
	pid := cmd.Process.Pid
	steps := [][]string{
		{"link", "add", "eth0", "type", "veth", "peer", "name", "site0"},
		{"link", "set", "site0", "netns", fmt.Sprint(pid)},
		{"addr", "add", fmt.Sprintf("%s/%d", NodeAddr, NetMask), "dev", "eth0"},
		{"link", "set", "eth0", "up"},
		{"route", "add", "default", "via", SiteAddr, "dev", "eth0"},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return 0, "", err
		}
	}
	nsPath := fmt.Sprintf("/proc/%d/ns/net", pid)
	if err := os.WriteFile(SiteNetns, nil, 0o444); err != nil {
		return 0, "", err
	}
	if err := unix.Mount(nsPath, SiteNetns, "", unix.MS_BIND, ""); err != nil {
		return 0, "", fmt.Errorf("keep the site's netns at %s: %w", SiteNetns, err)
	}
	ns, err := os.Readlink(nsPath)
	if err != nil {
		return 0, "", err
	}
	if _, err := goW.Write([]byte("go\n")); err != nil {
		return 0, "", fmt.Errorf("the site died: %w", err)
	}
	msg, _ := io.ReadAll(errR)
	if len(msg) > 0 {
		return 0, "", fmt.Errorf("site: %s", strings.TrimSpace(string(msg)))
	}
	ilog("site (pid %d, %s) up at %s, running %q", pid, ns, SiteAddr, cfg.SiteCmd)
	return pid, ns, nil
}

// Site is `sandbox __site CMD`: once its end of the veth pair is in its network namespace it
// brings lo and that end up with SiteAddr, then execs CMD through /bin/sh (or, without CMD,
// just holds the namespace).
func Site(siteCmd string) {
	unix.CloseOnExec(fdSiteGo)
	unix.CloseOnExec(fdSiteErr)
	fail := func(err error) {
		fmt.Fprintf(os.NewFile(fdSiteErr, "err"), "%v\n", err)
		os.Exit(1)
	}
	if _, err := bufio.NewReader(os.NewFile(fdSiteGo, "go")).ReadString('\n'); err != nil {
		fail(fmt.Errorf("no go from the init: %w", err))
	}
	steps := [][]string{
		{"link", "set", "lo", "up"},
		{"link", "set", "site0", "name", "eth0"},
		{"addr", "add", fmt.Sprintf("%s/%d", SiteAddr, NetMask), "dev", "eth0"},
		{"link", "set", "eth0", "up"},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			fail(err)
		}
	}
	if siteCmd == "" {
		unix.Close(fdSiteErr)
		for {
			_ = unix.Pause()
		}
	}
	err := syscall.Exec("/bin/sh", []string{"sh", "-c", "exec " + siteCmd}, os.Environ())
	fail(fmt.Errorf("exec /bin/sh -c %q: %w", siteCmd, err))
}
