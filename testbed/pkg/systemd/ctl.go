package systemd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Exit codes of systemctl (systemctl(1) "Exit status", after the LSB).
const (
	exitOK          = 0
	exitFailure     = 1
	exitNotRunning  = 3
	exitNoSuchUnit  = 4 // status of an unknown unit
	exitUnitMissing = 5 // start/stop/restart of an unknown unit
)

// pollEvery is how often waiting commands look at the unit's state.
var pollEvery = 50 * time.Millisecond

type ctl struct {
	stdout, stderr io.Writer
	quiet, now     bool
	noBlock        bool
	lines          int
}

func (c *ctl) errf(format string, args ...any) {
	fmt.Fprintf(c.stderr, format+"\n", args...)
}

const usage = `systemctl (sparkgap test bed stand-in for systemd's; services only)

  daemon-reload                 re-read units (each start reads its unit anyway)
  enable [--now] UNIT...        mark enabled (and start)
  disable [--now] UNIT...       mark disabled (and stop)
  start UNIT...                 start; for Type=notify wait for READY=1
  stop UNIT...                  stop: KillSignal to the main process (or its group), SIGKILL after TimeoutStopSec
  restart UNIT...               stop, then start
  try-restart UNIT...           restart if running
  is-active [--quiet] UNIT...   exit 0 when active
  is-failed [--quiet] UNIT...   exit 0 when failed
  is-enabled [--quiet] UNIT...  exit 0 when enabled
  status UNIT...                a few lines and the end of the unit's log
  reset-failed [UNIT...]        forget a failed state
`

// Main is systemctl's command line. args excludes the program name.
func Main(args []string, stdout, stderr io.Writer) int {
	c := &ctl{stdout: stdout, stderr: stderr, lines: 10}
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			pos = append(pos, a)
			continue
		}
		switch {
		case a == "-q" || a == "--quiet":
			c.quiet = true
		case a == "--now":
			c.now = true
		case a == "--no-block":
			c.noBlock = true
		case a == "--no-pager" || a == "--system" || a == "--full" || a == "-l" ||
			a == "--no-legend" || a == "--plain" || a == "--no-ask-password":
		case a == "-n" || a == "--lines":
			if i+1 >= len(args) {
				c.errf("systemctl: option '%s' requires an argument", a)
				return exitFailure
			}
			i++
			n, err := strconv.Atoi(args[i])
			if err != nil {
				c.errf("Failed to parse lines '%s'", args[i])
				return exitFailure
			}
			c.lines = n
		case strings.HasPrefix(a, "--lines=") || strings.HasPrefix(a, "-n") && len(a) > 2:
			v := strings.TrimPrefix(strings.TrimPrefix(a, "--lines="), "-n")
			n, err := strconv.Atoi(v)
			if err != nil {
				c.errf("Failed to parse lines '%s'", v)
				return exitFailure
			}
			c.lines = n
		case a == "-h" || a == "--help":
			fmt.Fprint(stdout, usage)
			return exitOK
		case a == "--version":
			fmt.Fprintln(stdout, "systemd 252 (sparkgap test bed stand-in)")
			return exitOK
		case a == "--user" || a == "--global":
			c.errf("systemctl: %s is not supported by this stand-in (system services only)", a)
			return exitFailure
		default:
			c.errf("systemctl: unrecognized option '%s'", a)
			return exitFailure
		}
	}
	if len(pos) == 0 {
		c.errf("systemctl: listing units is not supported by this stand-in; give a command\n%s", usage)
		return exitFailure
	}
	verb, names := pos[0], pos[1:]
	if verb == "__supervise" {
		if len(names) != 1 {
			return exitFailure
		}
		return Supervise(names[0])
	}
	units := make([]string, 0, len(names))
	for _, n := range names {
		u, err := NormalizeName(n)
		if err != nil {
			c.errf("%v", err)
			return exitFailure
		}
		units = append(units, u)
	}
	needUnits := func() bool {
		if len(units) == 0 {
			c.errf("Too few arguments.")
			return false
		}
		return true
	}
	switch verb {
	case "daemon-reload", "daemon-reexec":
		return exitOK
	case "enable", "disable", "reenable":
		if !needUnits() {
			return exitFailure
		}
		return c.each(units, func(u string) int { return c.enable(u, verb != "disable") })
	case "start":
		if !needUnits() {
			return exitFailure
		}
		return c.each(units, c.start)
	case "stop":
		if !needUnits() {
			return exitFailure
		}
		return c.each(units, c.stop)
	case "restart", "reload-or-restart", "try-restart", "try-reload-or-restart", "condrestart":
		if !needUnits() {
			return exitFailure
		}
		onlyRunning := strings.HasPrefix(verb, "try") || verb == "condrestart"
		return c.each(units, func(u string) int { return c.restart(u, onlyRunning) })
	case "is-active":
		if !needUnits() {
			return exitFailure
		}
		return c.is(units, func(st string) bool { return st == "active" }, c.activeState)
	case "is-failed":
		if !needUnits() {
			return exitFailure
		}
		return c.is(units, func(st string) bool { return st == "failed" }, c.activeState)
	case "is-enabled":
		if !needUnits() {
			return exitFailure
		}
		return c.isEnabled(units)
	case "status":
		if !needUnits() {
			return exitFailure
		}
		code := exitOK
		for i, u := range units {
			if i > 0 {
				fmt.Fprintln(stdout)
			}
			if r := c.status(u); r != exitOK && code == exitOK {
				code = r
			}
		}
		return code
	case "reset-failed":
		for _, u := range units {
			unlock, err := lockCtl(u)
			if err != nil {
				continue
			}
			if st := readState(u); st.State == "failed" && !supervisorAlive(u) {
				st.State, st.Result = "inactive", ""
				_ = writeState(u, st)
			}
			unlock()
		}
		return exitOK
	default:
		c.errf("Unknown command verb '%s'.", verb)
		return exitFailure
	}
}

// each runs f for every unit; the first failure's code is the result.
func (c *ctl) each(units []string, f func(string) int) int {
	code := exitOK
	for _, u := range units {
		if r := f(u); r != exitOK && code == exitOK {
			code = r
		}
	}
	return code
}

func (c *ctl) enable(name string, on bool) int {
	u, err := Load(name)
	if err != nil {
		var nf ErrNotFound
		if errors.As(err, &nf) {
			verb := "enable"
			if !on {
				verb = "disable"
			}
			c.errf("Failed to %s unit: Unit file %s does not exist.", verb, name)
			return exitFailure
		}
		c.errf("Failed to load %s: %v", name, err)
		return exitFailure
	}
	if err := setEnabled(name, on); err != nil {
		c.errf("Failed to enable %s: %v", name, err)
		return exitFailure
	}
	if !c.now {
		return exitOK
	}
	if on {
		return c.startUnit(u)
	}
	return c.stop(name)
}

// activeState is what is-active prints: the state file, checked against the processes (a
// dead supervisor leaves no active unit).
func (c *ctl) activeState(name string) string {
	st := readState(name)
	if !supervisorAlive(name) {
		if st.State == "failed" {
			return "failed"
		}
		return "inactive"
	}
	if st.State == "active" && !pidAlive(st.MainPid) {
		return "activating"
	}
	if st.State == "auto-restart" {
		return "activating"
	}
	return st.State
}

func (c *ctl) is(units []string, ok func(string) bool, state func(string) string) int {
	code := exitNotRunning
	for _, u := range units {
		st := state(u)
		if !c.quiet {
			fmt.Fprintln(c.stdout, st)
		}
		if ok(st) {
			code = exitOK
		}
	}
	// systemctl is-active: 0 if at least one is active.
	return code
}

func (c *ctl) isEnabled(units []string) int {
	code := exitFailure
	for _, u := range units {
		if Find(u) == "" {
			c.errf("Failed to get unit file state for %s: No such file or directory", u)
			continue
		}
		st := "disabled"
		if isEnabled(u) {
			st = "enabled"
			code = exitOK
		}
		if !c.quiet {
			fmt.Fprintln(c.stdout, st)
		}
	}
	return code
}

func (c *ctl) start(name string) int {
	u, err := Load(name)
	if err != nil {
		return c.loadFailed("start", name, err)
	}
	return c.startUnit(u)
}

func (c *ctl) loadFailed(verb, name string, err error) int {
	var nf ErrNotFound
	if errors.As(err, &nf) {
		c.errf("Failed to %s %s: Unit %s not found.", verb, name, name)
		return exitUnitMissing
	}
	c.errf("Failed to %s %s: %v", verb, name, err)
	return exitFailure
}

// startUnit starts u's supervisor unless one runs, and waits for the unit to become active
// (for Type=notify: READY=1), to fail, or TimeoutStartSec.
func (c *ctl) startUnit(u *Unit) int {
	unlock, err := lockCtl(u.Name)
	if err != nil {
		c.errf("Failed to start %s: %v", u.Name, err)
		return exitFailure
	}
	defer unlock()
	return c.startLocked(u)
}

func (c *ctl) startLocked(u *Unit) int {
	lock, err := takeSupervisorLock(u.Name)
	if err != nil {
		c.errf("Failed to start %s: %v", u.Name, err)
		return exitFailure
	}
	want := 1
	if lock != nil {
		err := c.spawn(u, lock)
		lock.Close()
		if err != nil {
			c.errf("Failed to start %s: %v", u.Name, err)
			return exitFailure
		}
	} else {
		st := readState(u.Name)
		switch st.State {
		case "active":
			return exitOK
		case "auto-restart":
			want = st.Invocation + 1
		default:
			want = st.Invocation
		}
	}
	if c.noBlock {
		return exitOK
	}
	var deadline time.Time
	if u.TimeoutStartSec > 0 {
		deadline = time.Now().Add(u.TimeoutStartSec + 5*time.Second)
	}
	for {
		st := readState(u.Name)
		alive := supervisorAlive(u.Name)
		if st.Invocation >= want {
			switch st.State {
			case "active":
				return exitOK
			case "auto-restart", "failed", "inactive":
				return c.jobFailed(u, st)
			}
		}
		if !alive {
			return c.jobFailed(u, readState(u.Name))
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			st.Result = resTimeout
			return c.jobFailed(u, st)
		}
		time.Sleep(pollEvery)
	}
}

func (c *ctl) jobFailed(u *Unit, st State) int {
	why := "the control process exited with error code"
	switch st.Result {
	case resTimeout:
		why = "a timeout was exceeded"
	case resSignal, resCoreDump:
		why = "a fatal signal was delivered to the control process"
	case resResources:
		why = "of unavailable resources or another system error"
	case resSuccess:
		why = "the service did not take the steps required by its unit configuration"
	}
	log := st.Log
	if log == "" {
		log = u.LogPath()
	}
	c.errf("Job for %s failed because %s.\nSee \"systemctl status %s\" and %s for details.", u.Name, why, u.Name, log)
	return exitFailure
}

// spawn starts u's supervisor, detached (own session, no terminal, stdin /dev/null, stdout
// and stderr to the unit's log, never the caller's pipes), holding lock.
func (c *ctl) spawn(u *Unit, lock *os.File) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logPath := u.LogPath()
	if err := os.MkdirAll(dirOf(logPath), 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	// A fresh supervisor counts invocations from 1: the state of any earlier one goes.
	st := State{State: "activating", Since: time.Now(), Log: logPath, Message: "starting"}
	if err := writeState(u.Name, st); err != nil {
		return err
	}
	cmd := exec.Command(self, "__supervise", u.Name)
	cmd.Dir = "/"
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.ExtraFiles = []*os.File{lock}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	return cmd.Process.Release()
}

func dirOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i > 0 {
		return p[:i]
	}
	return "/"
}

func (c *ctl) stop(name string) int {
	if Find(name) == "" {
		if _, err := os.Stat(unitDir(name)); err != nil {
			c.errf("Failed to stop %s: Unit %s not loaded.", name, name)
			return exitUnitMissing
		}
	}
	unlock, err := lockCtl(name)
	if err != nil {
		c.errf("Failed to stop %s: %v", name, err)
		return exitFailure
	}
	defer unlock()
	return c.stopLocked(name)
}

func (c *ctl) stopLocked(name string) int {
	if !supervisorAlive(name) {
		return exitOK
	}
	timeout := 90 * time.Second
	if u, err := Load(name); err == nil {
		timeout = u.TimeoutStopSec
	}
	st := readState(name)
	for i := 0; st.SupervisorPid == 0 && i < 100; i++ {
		time.Sleep(pollEvery)
		st = readState(name)
	}
	if st.SupervisorPid == 0 {
		c.errf("Failed to stop %s: its supervisor runs but did not say its pid", name)
		return exitFailure
	}
	if err := syscall.Kill(st.SupervisorPid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		c.errf("Failed to stop %s: %v", name, err)
		return exitFailure
	}
	if c.noBlock {
		return exitOK
	}
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout + 10*time.Second)
	}
	for supervisorAlive(name) {
		if !deadline.IsZero() && time.Now().After(deadline) {
			st = readState(name)
			_ = syscall.Kill(st.SupervisorPid, syscall.SIGKILL)
			if st.MainPid > 0 {
				_ = syscall.Kill(st.MainPid, syscall.SIGKILL)
			}
			st.State, st.Result, st.Message = "failed", resTimeout, "the supervisor did not stop in time: killed"
			_ = writeState(name, st)
			c.errf("Job for %s failed because a timeout was exceeded.", name)
			return exitFailure
		}
		time.Sleep(pollEvery)
	}
	return exitOK
}

func (c *ctl) restart(name string, onlyRunning bool) int {
	u, err := Load(name)
	if err != nil {
		return c.loadFailed("restart", name, err)
	}
	unlock, err := lockCtl(name)
	if err != nil {
		c.errf("Failed to restart %s: %v", name, err)
		return exitFailure
	}
	defer unlock()
	if onlyRunning && !supervisorAlive(name) {
		return exitOK
	}
	if r := c.stopLocked(name); r != exitOK {
		return r
	}
	return c.startLocked(u)
}

func (c *ctl) status(name string) int {
	u, err := Load(name)
	if err != nil {
		var nf ErrNotFound
		if errors.As(err, &nf) {
			c.errf("Unit %s could not be found.", name)
			return exitNoSuchUnit
		}
		c.errf("Failed to load %s: %v", name, err)
		return exitFailure
	}
	st := readState(name)
	active := c.activeState(name)
	enabled := "disabled"
	if isEnabled(name) {
		enabled = "enabled"
	}
	dot := "○"
	switch active {
	case "active":
		dot = "●"
	case "failed":
		dot = "×"
	}
	w := c.stdout
	fmt.Fprintf(w, "%s %s - %s\n", dot, name, u.Description)
	fmt.Fprintf(w, "     Loaded: loaded (%s; %s)\n", u.Path, enabled)
	sub := map[string]string{"active": "running", "activating": "start", "deactivating": "stop",
		"inactive": "dead"}[active]
	if active == "failed" || st.State == "auto-restart" && st.Result != "" {
		sub = "Result: " + st.Result
	}
	line := fmt.Sprintf("     Active: %s (%s)", active, sub)
	if !st.Since.IsZero() {
		line += fmt.Sprintf(" since %s; %s ago", st.Since.Format("Mon 2006-01-02 15:04:05 MST"),
			time.Since(st.Since).Round(time.Second))
	}
	fmt.Fprintln(w, line)
	if st.MainPid > 0 && pidAlive(st.MainPid) {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", st.MainPid))
		fmt.Fprintf(w, "   Main PID: %d (%s)\n", st.MainPid, strings.TrimSpace(string(comm)))
	}
	if st.Status != "" {
		fmt.Fprintf(w, "     Status: %q\n", st.Status)
	}
	if st.Message != "" {
		fmt.Fprintf(w, "      Event: %s\n", st.Message)
	}
	log := st.Log
	if log == "" {
		log = u.LogPath()
	}
	fmt.Fprintf(w, "        Log: %s\n", log)
	if c.lines > 0 {
		if b, err := os.ReadFile(log); err == nil {
			ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
			if len(ls) > c.lines {
				ls = ls[len(ls)-c.lines:]
			}
			fmt.Fprintf(w, "\n%s\n", strings.Join(ls, "\n"))
		}
	}
	if active == "active" {
		return exitOK
	}
	return exitNotRunning
}
