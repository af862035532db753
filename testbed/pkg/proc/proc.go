// Package proc starts the node's components as child processes of the k3s role.
//
// In k3s the control plane, the kubelet and kube-proxy run inside the k3s process, and
// containerd is a child started with Pdeathsig SIGKILL (k3s: pkg/agent/containerd/containerd.go),
// so all of them end with k3s while the runc shims, which detach, keep the containers running.
// The test bed runs the upstream programs as children with the same Pdeathsig, which gives the
// same semantics: stopping the k3s role stops every component and leaves the pods running.
package proc

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
)

// Process is a started component.
type Process struct {
	Name string
	Cmd  *exec.Cmd
	done chan struct{}
	err  error
	once sync.Once
}

// Start runs path with args as component name, its stdout and stderr appended to
// logDir/name.log, in its own process group, killed (SIGKILL) when the k3s role dies.
// env is added to the k3s role's own environment.
func Start(logDir, name, path string, args, env []string) (*Process, error) {
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	logPath := filepath.Join(logDir, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, path, err)
	}
	logFile.Close()
	p := &Process{Name: name, Cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is the exit error, once Done is closed.
func (p *Process) Err() error { return p.err }

// Stop sends SIGTERM to the process (never its group: containerd's shims must outlive it), and
// SIGKILL if it has not exited when grace ends.
func (p *Process) Stop(grace <-chan struct{}) {
	p.once.Do(func() {
		_ = p.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-grace:
			_ = p.Cmd.Process.Kill()
			<-p.done
		}
	})
}
