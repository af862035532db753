package systemd

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// fdSupervisorLock is the supervisor lock `start` hands the supervisor, already held.
const fdSupervisorLock = 3

// Results of a run of the service (systemd.exec(5) $SERVICE_RESULT).
const (
	resSuccess   = "success"
	resExitCode  = "exit-code"
	resSignal    = "signal"
	resCoreDump  = "core-dump"
	resTimeout   = "timeout"
	resResources = "resources"
)

type supervisor struct {
	name     string
	u        *Unit
	st       State
	stop     chan os.Signal
	stopping bool
	notify   chan string
	sockPath string
}

func (s *supervisor) logf(format string, args ...any) {
	fmt.Fprintf(os.Stdout, "%s systemd-standin[%d]: %s: %s\n", time.Now().Format(time.RFC3339Nano),
		os.Getpid(), s.name, fmt.Sprintf(format, args...))
}

func (s *supervisor) set(state, msg string) {
	if state == "inactive" || state == "failed" || state == "auto-restart" {
		s.st.Status = "" // the service's STATUS= described a process that is gone
	}
	s.st.State = state
	s.st.Since = time.Now()
	s.st.Message = msg
	if err := writeState(s.name, s.st); err != nil {
		s.logf("write state: %v", err)
	}
}

// Supervise is `systemctl __supervise UNIT`: the manager of one unit, started detached by
// `systemctl start` with the unit's supervisor lock as fd 3 and its log as stdout and stderr.
// It runs the service until it is stopped (SIGTERM from `systemctl stop`) or, by its Restart=
// policy, not restarted.
func Supervise(name string) int {
	unix.CloseOnExec(fdSupervisorLock)
	s := &supervisor{name: name, stop: make(chan os.Signal, 2), notify: make(chan string, 16)}
	signal.Notify(s.stop, syscall.SIGTERM, syscall.SIGINT)
	signal.Ignore(syscall.SIGHUP)
	s.st = readState(name)
	s.st.SupervisorPid = os.Getpid()
	u, err := Load(name)
	if err != nil {
		s.logf("%v", err)
		s.st.Result = resResources
		s.set("failed", err.Error())
		return 1
	}
	s.u = u
	for _, w := range u.Warnings {
		s.logf("%s", w)
	}
	s.applyLimits()
	if u.Type == "notify" {
		if err := s.listenNotify(); err != nil {
			s.logf("notify socket: %v", err)
			s.st.Result = resResources
			s.set("failed", err.Error())
			return 1
		}
		defer os.Remove(s.sockPath)
	}
	for {
		s.st.Invocation++
		s.st.MainPid = 0
		s.st.Status = ""
		s.st.Result = ""
		s.set("activating", "starting")
		s.logf("Starting %s (invocation %d)...", s.describe(), s.st.Invocation)
		res := s.runOnce()
		s.st.Result = res
		s.st.MainPid = 0
		if s.stopping {
			if res == resSuccess {
				s.set("inactive", "stopped")
				s.logf("Stopped %s.", s.describe())
			} else {
				s.set("failed", "stopped, result "+res)
				s.logf("Stopped %s (result %s).", s.describe(), res)
			}
			return 0
		}
		if s.restarts(res) {
			s.set("auto-restart", fmt.Sprintf("main process ended (%s), restarting in %v", res, u.RestartSec))
			s.logf("Scheduled restart in %v (Restart=%s, result %s).", u.RestartSec, u.Restart, res)
			select {
			case <-time.After(u.RestartSec):
				// A changed unit file is read at the next start, as after daemon-reload.
				if nu, err := Load(name); err == nil {
					s.u = nu
				}
				continue
			case <-s.stop:
				s.stopping = true
				s.set("inactive", "stopped while waiting to restart")
				s.logf("Stopped %s.", s.describe())
				return 0
			}
		}
		if res == resSuccess {
			s.set("inactive", "main process exited")
			s.logf("%s: deactivated successfully.", name)
		} else {
			s.set("failed", "main process ended: "+res)
			s.logf("%s: failed with result '%s'.", name, res)
		}
		return 0
	}
}

func (s *supervisor) describe() string {
	if s.u != nil && s.u.Description != "" {
		return s.name + " - " + s.u.Description
	}
	return s.name
}

func (s *supervisor) restarts(res string) bool {
	switch s.u.Restart {
	case "always":
		return true
	case "on-success":
		return res == resSuccess
	case "on-failure":
		return res != resSuccess
	case "on-abnormal":
		return res == resSignal || res == resCoreDump || res == resTimeout
	case "on-abort":
		return res == resSignal || res == resCoreDump
	}
	return false
}

// applyLimits sets the unit's Limit*s on the supervisor, whence every process of the unit
// inherits them. A limit this machine refuses (raising a hard limit needs CAP_SYS_RESOURCE,
// which root lacks here: LimitNOFILE=1048576 against a hard 20000) is warned about and
// lowered to what is allowed, where systemd would fail the unit.
func (s *supervisor) applyLimits() {
	for _, l := range s.u.Limits {
		want := syscall.Rlimit{Cur: l.Soft, Max: l.Hard}
		// syscall.Setrlimit (not unix's): for RLIMIT_NOFILE it also stops os/exec from
		// restoring the soft limit Go had at start in the children.
		err := syscall.Setrlimit(l.Resource, &want)
		if err == nil {
			continue
		}
		var cur syscall.Rlimit
		_ = syscall.Getrlimit(l.Resource, &cur)
		got := syscall.Rlimit{Cur: min(l.Soft, cur.Max), Max: min(l.Hard, cur.Max)}
		if got.Cur > got.Max {
			got.Cur = got.Max
		}
		err2 := syscall.Setrlimit(l.Resource, &got)
		if err2 != nil {
			_ = syscall.Getrlimit(l.Resource, &got)
		}
		s.logf("warning: %s=%s:%s refused by this machine (%v); the unit runs with soft %s, hard %s",
			l.Key, fmtLimit(l.Soft), fmtLimit(l.Hard), err, fmtLimit(got.Cur), fmtLimit(got.Max))
	}
}

func fmtLimit(v uint64) string {
	if v == RLimInfinity {
		return "infinity"
	}
	return fmt.Sprint(v)
}

// listenNotify opens the unit's notify socket (sd_notify(3): a datagram socket whose path the
// service finds in NOTIFY_SOCKET) and forwards each message to s.notify.
func (s *supervisor) listenNotify() error {
	s.sockPath = filepath.Join(unitDir(s.name), "notify")
	_ = os.Remove(s.sockPath)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: s.sockPath, Net: "unixgram"})
	if err != nil {
		return err
	}
	go func() {
		buf := make([]byte, 64*1024)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			s.notify <- string(buf[:n])
		}
	}()
	return nil
}

// command builds the exec.Cmd of c: the service's environment, the log as stdout and
// stderr, a process group of its own.
func (s *supervisor) command(c Command, env []string) (*exec.Cmd, error) {
	argv := c.Expand(env)
	path := argv[0]
	if !filepath.IsAbs(path) {
		pathVar, _ := lookupEnv(env, "PATH")
		found := ""
		for _, d := range filepath.SplitList(pathVar) {
			p := filepath.Join(d, path)
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
				found = p
				break
			}
		}
		if found == "" {
			return nil, fmt.Errorf("executable %s not found in PATH %s", path, pathVar)
		}
		path = found
	}
	cmd := &exec.Cmd{Path: path, Args: argv, Env: env, Stdout: os.Stdout, Stderr: os.Stderr}
	if c.Argv0 != "" {
		cmd.Args[0] = c.Argv0
	}
	cmd.Dir = "/"
	if s.u.WorkingDirectory != "" {
		cmd.Dir = s.u.WorkingDirectory
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd, nil
}

// runOnce runs ExecStartPre and the main process once, until the main process ends.
// Returns the result.
func (s *supervisor) runOnce() string {
	env, err := s.u.ServiceEnv()
	if err != nil {
		s.logf("%v", err)
		return resResources
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	env = mergeEnv(env, "INVOCATION_ID="+hex.EncodeToString(id))
	if s.u.Type == "notify" {
		env = mergeEnv(env, "NOTIFY_SOCKET="+s.sockPath)
	}
	for _, c := range s.u.ExecStartPre {
		res := s.runControl(c, env)
		if s.stopping {
			return resSuccess
		}
		if res != resSuccess && !c.IgnoreFailure {
			s.logf("ExecStartPre=%s failed (%s).", c.Line, res)
			return res
		}
	}
	return s.runMain(s.u.ExecStart[0], env)
}

// runControl runs an ExecStartPre command to its end; a stop meanwhile ends it.
func (s *supervisor) runControl(c Command, env []string) string {
	cmd, err := s.command(c, env)
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		if c.IgnoreFailure {
			s.logf("ExecStartPre=%s: %v (ignored: '-')", c.Line, err)
		} else {
			s.logf("ExecStartPre=%s: %v", c.Line, err)
		}
		return resExitCode
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case err := <-done:
			res := result(cmd.ProcessState, err)
			if res != resSuccess {
				s.logf("ExecStartPre=%s: %v", c.Line, cmd.ProcessState)
			}
			return res
		case <-s.stop:
			s.stopping = true
			s.set("deactivating", "stopping (during ExecStartPre)")
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-done:
			case <-afterOrNever(s.u.TimeoutStopSec):
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-done
			}
			return resSuccess
		}
	}
}

func afterOrNever(d time.Duration) <-chan time.Time {
	if d <= 0 {
		return nil
	}
	return time.After(d)
}

// runMain starts the main process and follows it to its end: readiness (Type=notify: READY=1
// on the notify socket; simple and exec: once it runs), its STATUS=, a stop (KillSignal to the
// main process only under KillMode=process, to its process group otherwise; SIGKILL after
// TimeoutStopSec) and TimeoutStartSec.
func (s *supervisor) runMain(c Command, env []string) string {
	cmd, err := s.command(c, env)
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		s.logf("ExecStart=%s: %v", c.Line, err)
		return resExitCode
	}
	pid := cmd.Process.Pid
	s.st.MainPid = pid
	s.logf("Main process %d: %s", pid, strings.Join(cmd.Args, " "))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	if s.u.Type != "notify" {
		s.set("active", "running")
		s.logf("Started %s.", s.describe())
	} else {
		s.set("activating", "waiting for READY=1")
	}
	var startTimer <-chan time.Time
	if s.u.Type == "notify" {
		startTimer = afterOrNever(s.u.TimeoutStartSec)
	}
	var killTimer <-chan time.Time
	timedOut := false
	terminate := func(why string) {
		s.set("deactivating", why)
		s.signal(pid, s.u.KillSignal, false)
		if s.u.KillSignal != syscall.SIGKILL {
			s.signal(pid, syscall.SIGCONT, false)
		}
		killTimer = afterOrNever(s.u.TimeoutStopSec)
	}
	for {
		select {
		case err := <-done:
			res := result(cmd.ProcessState, err)
			if timedOut {
				res = resTimeout
			}
			s.logf("Main process %d exited: %v (result %s).", pid, cmd.ProcessState, res)
			if s.stopping && s.u.KillMode == "mixed" {
				s.signal(pid, syscall.SIGKILL, true)
			}
			return res
		case msg := <-s.notify:
			s.handleNotify(msg)
		case <-startTimer:
			s.logf("Start operation timed out (TimeoutStartSec=%v). Terminating.", s.u.TimeoutStartSec)
			timedOut = true
			terminate("start timed out")
		case <-s.stop:
			if s.stopping {
				continue
			}
			s.stopping = true
			s.logf("Stopping %s (KillMode=%s)...", s.describe(), s.u.KillMode)
			if s.u.KillMode == "none" {
				s.logf("KillMode=none: main process %d left running.", pid)
				return resSuccess
			}
			terminate("stopping")
		case <-killTimer:
			s.logf("State 'stop-sigterm' timed out (TimeoutStopSec=%v). Killing.", s.u.TimeoutStopSec)
			timedOut = true
			s.signal(pid, syscall.SIGKILL, s.u.KillMode != "process")
			killTimer = nil
		}
	}
}

// signal sends sig to the main process, or to its process group when the kill mode (or
// final, for mixed's SIGKILL) asks for the whole unit: the process group stands in for the
// unit's cgroup.
func (s *supervisor) signal(pid int, sig syscall.Signal, final bool) {
	group := s.u.KillMode == "control-group" || (final && s.u.KillMode == "mixed")
	if group {
		_ = syscall.Kill(-pid, sig)
	} else {
		_ = syscall.Kill(pid, sig)
	}
}

// handleNotify reads one sd_notify message: newline-separated VAR=VALUE.
func (s *supervisor) handleNotify(msg string) {
	for _, l := range strings.Split(msg, "\n") {
		k, v, _ := strings.Cut(l, "=")
		switch k {
		case "READY":
			if v == "1" && s.st.State == "activating" {
				s.set("active", "running")
				s.logf("Started %s.", s.describe())
			}
		case "STATUS":
			s.st.Status = v
			_ = writeState(s.name, s.st)
		case "STOPPING":
			if v == "1" && s.st.State != "deactivating" {
				s.set("deactivating", "the service is stopping")
			}
		case "RELOADING":
			if v == "1" {
				s.set("activating", "reloading")
			}
		}
	}
}

// result reads a process's end as systemd does: exit 0 is success, and so is death by SIGHUP,
// SIGINT, SIGTERM or SIGPIPE (the clean signals of systemd.service(5) SuccessExitStatus=).
func result(ps *os.ProcessState, err error) string {
	if ps == nil {
		if err != nil && !errors.Is(err, os.ErrProcessDone) {
			return resResources
		}
		return resSuccess
	}
	ws, ok := ps.Sys().(syscall.WaitStatus)
	if !ok {
		return resResources
	}
	switch {
	case ws.Exited() && ws.ExitStatus() == 0:
		return resSuccess
	case ws.Exited():
		return resExitCode
	case ws.Signaled():
		switch ws.Signal() {
		case syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGPIPE:
			return resSuccess
		}
		if ws.CoreDump() {
			return resCoreDump
		}
		return resSignal
	}
	return resExitCode
}
