package systemd

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// StateRoot holds one directory per unit: enabled (a marker), state.json, the supervisor's
// lock, the commands' lock and the notify socket. On the node's /run tmpfs: gone with the node.
var StateRoot = "/run/systemd-standin"

// LogDirVars are the variables of a unit's environment naming the directory of its log
// (K3S_TESTBED_LOG_DIR: the test bed's one log directory, testbed/README.md); without them
// the log goes to DefaultLogDir. The log holds the supervisor's lines and the service's
// stdout and stderr, as the journal would.
var LogDirVars = []string{"SYSTEMD_STANDIN_LOG_DIR", "K3S_TESTBED_LOG_DIR"}

// DefaultLogDir is where units log when their environment names no directory.
const DefaultLogDir = "/var/log/systemd-standin"

// State is what the supervisor tells the commands about its unit.
type State struct {
	// State is systemd's ActiveState, with its auto-restart sub-state spelled out: activating,
	// active, deactivating, auto-restart, inactive, failed.
	State         string    `json:"state"`
	Invocation    int       `json:"invocation"` // starts of the main process by this supervisor
	SupervisorPid int       `json:"supervisorPid,omitempty"`
	MainPid       int       `json:"mainPid,omitempty"`
	Since         time.Time `json:"since"`
	Result        string    `json:"result,omitempty"`  // success, exit-code, signal, core-dump, timeout, resources
	Message       string    `json:"message,omitempty"` // the last event, for status
	Status        string    `json:"status,omitempty"`  // the service's STATUS=
	Log           string    `json:"log,omitempty"`
}

func unitDir(name string) string { return filepath.Join(StateRoot, name) }

func readState(name string) State {
	var st State
	b, err := os.ReadFile(filepath.Join(unitDir(name), "state.json"))
	if err == nil {
		_ = json.Unmarshal(b, &st)
	}
	if st.State == "" {
		st.State = "inactive"
	}
	return st
}

func writeState(name string, st State) error {
	d := unitDir(name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(d, ".state.json.tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(d, "state.json"))
}

// lockPath: "supervisor" is held by the unit's supervisor for its whole life (so a dead
// supervisor is never taken for a live one, whatever happened to pids); "ctl" serialises the
// commands acting on the unit.
func lockPath(name, which string) string { return filepath.Join(unitDir(name), which+".lock") }

func openLock(name, which string) (*os.File, error) {
	if err := os.MkdirAll(unitDir(name), 0o755); err != nil {
		return nil, err
	}
	return os.OpenFile(lockPath(name, which), os.O_RDWR|os.O_CREATE, 0o644)
}

// lockCtl takes the unit's command lock, waiting for it.
func lockCtl(name string) (func(), error) {
	f, err := openLock(name, "ctl")
	if err != nil {
		return nil, err
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// takeSupervisorLock returns the supervisor lock, held, when no supervisor runs; nil when
// one does.
func takeSupervisorLock(name string) (*os.File, error) {
	f, err := openLock(name, "supervisor")
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, nil
		}
		return nil, err
	}
	return f, nil
}

// supervisorAlive says whether the unit's supervisor runs.
func supervisorAlive(name string) bool {
	if _, err := os.Stat(lockPath(name, "supervisor")); err != nil {
		return false
	}
	f, err := takeSupervisorLock(name)
	if err != nil {
		return false
	}
	if f == nil {
		return true
	}
	f.Close()
	return false
}

func isEnabled(name string) bool {
	_, err := os.Stat(filepath.Join(unitDir(name), "enabled"))
	return err == nil
}

func setEnabled(name string, on bool) error {
	p := filepath.Join(unitDir(name), "enabled")
	if !on {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	if err := os.MkdirAll(unitDir(name), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, nil, 0o644)
}

func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// LogPath is where unit u logs.
func (u *Unit) LogPath() string {
	dir := DefaultLogDir
	if env, err := u.ServiceEnv(); err == nil {
		for _, k := range LogDirVars {
			if v, ok := lookupEnv(env, k); ok && filepath.IsAbs(v) {
				dir = v
				break
			}
		}
	}
	return filepath.Join(dir, u.Name+".log")
}
