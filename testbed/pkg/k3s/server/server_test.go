package server

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSupervisorReportsExitWithLogTail(t *testing.T) {
	s := newSupervisor(t.TempDir())
	if _, err := s.start("boom", "/bin/sh", []string{"-c", "echo first; echo last words; exit 3"}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-s.exits:
		msg := err.Error()
		if !strings.Contains(msg, "boom exited with exit status 3") || !strings.Contains(msg, "last words") {
			t.Fatalf("%s", msg)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit reported")
	}
}

func TestSupervisorStopIsQuiet(t *testing.T) {
	s := newSupervisor(t.TempDir())
	p, err := s.start("sleeper", "/bin/sleep", []string{"60"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.stopAll(5 * time.Second)
	<-p.Done()
	select {
	case err := <-s.exits:
		t.Fatalf("a stopped component is not a failure: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestTail(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.log")
	var b bytes.Buffer
	for i := 0; i < 100; i++ {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	os.WriteFile(p, b.Bytes(), 0o644)
	got := tail(p, 3)
	if got != "  line 97\n  line 98\n  line 99" {
		t.Fatalf("%q", got)
	}
}

func TestNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := Notify(sock, "READY=1\n"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1\n" {
		t.Fatalf("%q %v", buf[:n], err)
	}
	if err := Notify("", "READY=1\n"); err != nil {
		t.Fatal("no socket is no error")
	}
}

func TestReadEnvFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k3s")
	os.WriteFile(p, []byte("# knobs\nK3S_TESTBED_PARTS=/parts\nexport TMPDIR=\"/tmp/x y\"\n\nBAD\nK3S_TESTBED_LOG_DIR='/logs'\n"), 0o644)
	got := ReadEnvFile(p)
	if got["K3S_TESTBED_PARTS"] != "/parts" || got["TMPDIR"] != "/tmp/x y" || got["K3S_TESTBED_LOG_DIR"] != "/logs" || len(got) != 3 {
		t.Fatalf("%v", got)
	}
}

func TestDefaultRouteIP(t *testing.T) {
	ifaces, _ := net.Interfaces()
	var name string
	var want net.IP
	for _, i := range ifaces {
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() && want == nil {
				name, want = i.Name, n.IP.To4()
			}
		}
	}
	if want == nil {
		t.Skip("no interface with a global IPv4 address here")
	}
	route := filepath.Join(t.TempDir(), "route")
	os.WriteFile(route, []byte("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"+
		name+"\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"+
		name+"\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"), 0o644)
	got, err := DefaultRouteIP(route)
	if err != nil || !got.Equal(want) {
		t.Fatalf("%v %v, want %v", got, err, want)
	}
	os.WriteFile(route, []byte("Iface\tDestination\n"), 0o644)
	if _, err := DefaultRouteIP(route); err == nil {
		t.Fatal("no default route is an error")
	}
}
