package server

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"sparkgap.dev/testbed/pkg/proc"
)

// supervisor keeps the node's child processes. A child that exits while the k3s role is not
// stopping is fatal, as a component dying inside k3s's own process kills k3s: the role exits
// non-zero and the service manager's Restart=always starts it again.
type supervisor struct {
	logDir   string
	mu       sync.Mutex
	procs    []managed
	stopping atomic.Bool
	exits    chan error
	// killed is told the components that were still running when the grace ended.
	killed func(name string)
}

type managed struct {
	p       *proc.Process
	logFile string
	stop    bool // stopped at shutdown (containerd is not: it dies by Pdeathsig, as in k3s)
}

func newSupervisor(logDir string) *supervisor {
	return &supervisor{logDir: logDir, exits: make(chan error, 16)}
}

// start runs a component with its log in logDir/<name>.log and watches it.
func (s *supervisor) start(name, binary string, args, env []string) (*proc.Process, error) {
	p, err := proc.Start(s.logDir, name, binary, args, env)
	if err != nil {
		return nil, err
	}
	s.watch(p, filepath.Join(s.logDir, name+".log"), true)
	return p, nil
}

// watch reports p's exit as fatal unless the role is stopping.
func (s *supervisor) watch(p *proc.Process, logFile string, stop bool) {
	s.mu.Lock()
	s.procs = append(s.procs, managed{p: p, logFile: logFile, stop: stop})
	s.mu.Unlock()
	go func() {
		<-p.Done()
		if s.stopping.Load() {
			return
		}
		how := "with status 0"
		if err := p.Err(); err != nil {
			how = "with " + err.Error()
		}
		s.exits <- fmt.Errorf("%s exited %s; last lines of %s:\n%s", p.Name, how, logFile, tail(logFile, 25))
	}()
}

// stopAll stops the components: every one but etcd at once, then etcd, so the apiserver never
// loses its storage while it drains. Each gets SIGTERM and SIGKILL when grace ends; never their
// process groups, so containerd's shims and the containers they run outlive the role (the unit's
// KillMode=process, k3s: install.sh). containerd is left to its Pdeathsig, as in k3s.
func (s *supervisor) stopAll(grace time.Duration) {
	s.stopping.Store(true)
	s.mu.Lock()
	procs := append([]managed(nil), s.procs...)
	s.mu.Unlock()
	for _, last := range []bool{false, true} {
		timer := make(chan struct{})
		t := time.AfterFunc(grace, func() { close(timer) })
		var wg sync.WaitGroup
		for _, m := range procs {
			if !m.stop || (m.p.Name == "etcd") != last {
				continue
			}
			wg.Add(1)
			go func(m managed) {
				defer wg.Done()
				m.p.Stop(timer)
				select {
				case <-timer:
					if s.killed != nil {
						s.killed(m.p.Name)
					}
				default:
				}
			}(m)
		}
		wg.Wait()
		t.Stop()
	}
}

// tail is the last n lines of a log file, for the error that reports a component's exit.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "  (no log: " + err.Error() + ")"
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	const max = 64 << 10
	off := st.Size() - max
	if off < 0 {
		off = 0
	}
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && len(buf) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(bytes.ToValidUTF8(buf, []byte("?"))), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}
