package server

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// Logger writes the k3s role's log to stderr in logrus's text format, as k3s logs
// (time="..." level=info msg="...").
type Logger struct {
	Info, Warn, Error *log.Logger
}

type levelWriter struct {
	mu    *sync.Mutex
	out   io.Writer
	level string
}

func (w levelWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	msg := strings.TrimRight(string(p), "\n")
	_, err := fmt.Fprintf(w.out, "time=%q level=%s msg=%q\n", time.Now().UTC().Format(time.RFC3339), w.level, msg)
	return len(p), err
}

// NewLogger logs to out.
func NewLogger(out io.Writer) *Logger {
	mu := &sync.Mutex{}
	mk := func(level string) *log.Logger { return log.New(levelWriter{mu, out, level}, "", 0) }
	return &Logger{Info: mk("info"), Warn: mk("warning"), Error: mk("error")}
}

// Notify sends state to the service manager's socket, as sd_notify does; "" socket is a no-op
// (k3s: pkg/cli/server/server.go, systemd.SdNotify(true, "READY=1\n") once the apiserver is
// ready).
func Notify(socket, state string) error {
	if socket == "" {
		return nil
	}
	addr := &net.UnixAddr{Name: socket, Net: "unixgram"}
	if strings.HasPrefix(socket, "@") {
		addr.Name = "\x00" + socket[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(state))
	return err
}

// DefaultRouteIP is the first IPv4 address of the interface that holds the default route, the
// address k3s picks for the node (k3s: util.GetFirstValidIPString over
// k8s.io/apimachinery/pkg/util/net ChooseHostInterface, which reads /proc/net/route too).
func DefaultRouteIP(procNetRoute string) (net.IP, error) {
	f, err := os.Open(procNetRoute)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		// Iface Destination Gateway Flags ...; the default route has destination 00000000.
		if len(fields) < 8 || fields[1] != "00000000" || fields[7] != "00000000" {
			continue
		}
		if _, err := hex.DecodeString(fields[1]); err != nil {
			continue
		}
		iface, err := net.InterfaceByName(fields[0])
		if err != nil {
			continue
		}
		addrs, err := iface.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
				return n.IP.To4(), nil
			}
		}
	}
	return nil, fmt.Errorf("no default route with an IPv4 address in %s", procNetRoute)
}

// ReadEnvFile reads KEY=value lines of an environment file such as /etc/default/k3s
// (systemd's EnvironmentFile syntax, without its rarer escapes).
func ReadEnvFile(path string) map[string]string {
	out := map[string]string{}
	data, err := os.ReadFile(path)
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' && v[len(v)-1] == '"' || v[0] == '\'' && v[len(v)-1] == '\'') {
			v = v[1 : len(v)-1]
		}
		out[strings.TrimSpace(k)] = v
	}
	return out
}
