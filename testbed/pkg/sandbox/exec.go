package sandbox

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Node is a running node as its sandbox directory describes it.
type Node struct {
	Dir     string
	Cgroup  string
	InitPid int
}

// OpenNode reads the files the keeper wrote in dir and checks the node is running.
func OpenNode(dir string) (Node, error) {
	n := Node{Dir: dir}
	cg, err := os.ReadFile(filepath.Join(dir, CgroupFile))
	if err != nil {
		return n, fmt.Errorf("no node at %s: %w", dir, err)
	}
	n.Cgroup = strings.TrimSpace(string(cg))
	if !NamePattern.MatchString(n.Cgroup) {
		return n, fmt.Errorf("%s: bad cgroup name %q", filepath.Join(dir, CgroupFile), n.Cgroup)
	}
	p, err := os.ReadFile(filepath.Join(dir, InitPidFile))
	if err != nil {
		return n, fmt.Errorf("the node at %s is not ready: %w", dir, err)
	}
	n.InitPid, err = strconv.Atoi(strings.TrimSpace(string(p)))
	if err != nil {
		return n, fmt.Errorf("%s: %w", filepath.Join(dir, InitPidFile), err)
	}
	// The pid must still be the node's init: PID 1 of its own PID namespace.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", n.InitPid))
	if err != nil {
		return n, fmt.Errorf("the node's init (pid %d) is gone", n.InitPid)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if f, ok := strings.CutPrefix(l, "NSpid:"); ok {
			if fs := strings.Fields(f); len(fs) < 2 || fs[len(fs)-1] != "1" {
				return n, fmt.Errorf("pid %d is not the node's init", n.InitPid)
			}
		}
	}
	return n, nil
}

// Exec is `sandbox exec`: it joins the node's cgroups and execs util-linux nsenter into the
// node's mount, network, PID, UTS, IPC and cgroup namespaces to run argv there, with PATH = ExecPath.
// In the node the working directory is / unless wd is given. stdin, stdout, stderr and the exit
// code pass through (nsenter forks into the PID namespace and exits as its child did).
// Returns only on failure.
func Exec(dir, wd string, argv []string) error {
	if len(argv) == 0 {
		return fmt.Errorf("no command")
	}
	n, err := OpenNode(dir)
	if err != nil {
		return err
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return err
	}
	hs, err := Hierarchies()
	if err != nil {
		return err
	}
	if err := JoinCgroup(hs, n.Cgroup, os.Getpid()); err != nil {
		return err
	}
	args := []string{"nsenter", "--target", strconv.Itoa(n.InitPid),
		"--mount", "--net", "--pid", "--uts", "--ipc", "--cgroup", "--"}
	if wd != "" {
		// nsenter --wd=DIR would open DIR on the host, before entering: env -C changes into
		// it inside the node.
		args = append(args, "env", "-C", wd, "--")
	}
	args = append(args, argv...)
	env := []string{"PATH=" + ExecPath}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "PATH=") {
			env = append(env, e)
		}
	}
	return syscall.Exec(nsenter, args, env)
}
