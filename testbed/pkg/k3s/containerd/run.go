package containerd

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sparkgap.dev/testbed/pkg/proc"
)

// Args are containerd's arguments as k3s passes them
// (k3s: pkg/agent/containerd/config_linux.go getContainerdArgs).
func Args(p Paths) []string {
	return []string{"-c", p.Config, "-a", p.Address, "--state", p.State, "--root", p.Root}
}

// Env turns CONTAINERD_<NAME> variables of the k3s role into <NAME> for containerd, e.g.
// CONTAINERD_HTTPS_PROXY, and CONTAINERD_LOG_LEVEL into --log-level
// (k3s: pkg/agent/containerd/containerd.go Run).
func Env(environ []string) (env, extraArgs []string) {
	for _, e := range environ {
		k, v, _ := strings.Cut(e, "=")
		switch {
		case k == "CONTAINERD_LOG_LEVEL":
			extraArgs = append(extraArgs, "--log-level", v)
		case strings.HasPrefix(k, "CONTAINERD_"):
			env = append(env, strings.TrimPrefix(k, "CONTAINERD_")+"="+v)
		}
	}
	return env, extraArgs
}

// Start runs containerd from binary with Pdeathsig, so it dies with the k3s role while the runc
// shims it started (they detach) keep the containers running, and waits until its socket
// answers. Its log is logDir/containerd.log, with every other component's; k3s's place for it,
// agent/containerd/containerd.log, links there. It returns the log's path.
func Start(ctx context.Context, binary string, p Paths, logDir string) (*proc.Process, string, error) {
	env, extra := Env(os.Environ())
	if err := os.MkdirAll(p.State, 0o711); err != nil {
		return nil, "", err
	}
	if logDir == "" {
		logDir = filepath.Dir(p.Log)
	}
	logFile := filepath.Join(logDir, "containerd.log")
	if logFile != p.Log {
		if err := os.MkdirAll(filepath.Dir(p.Log), 0o700); err != nil {
			return nil, "", err
		}
		if target, err := os.Readlink(p.Log); err != nil || target != logFile {
			_ = os.Remove(p.Log)
			if err := os.Symlink(logFile, p.Log); err != nil {
				return nil, "", err
			}
		}
	}
	// A socket left by a containerd that died with an earlier k3s role.
	_ = os.Remove(p.Address)
	c, err := proc.Start(logDir, "containerd", binary, append(Args(p), extra...), env)
	if err != nil {
		return nil, "", err
	}
	if err := WaitForSocket(ctx, p.Address, c.Done()); err != nil {
		return c, logFile, err
	}
	return c, logFile, nil
}

// WaitForSocket waits until a unix socket accepts connections (k3s: pkg/agent/cri
// WaitForService), failing early when exited closes.
func WaitForSocket(ctx context.Context, path string, exited <-chan struct{}) error {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return fmt.Errorf("exited before its socket %s answered", path)
		case <-t.C:
		}
	}
}
