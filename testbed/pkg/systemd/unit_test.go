package systemd

import (
	"os"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
	"time"
)

// k3sUnit is what src/install/render.rs k3s_service() writes.
const k3sUnit = `# k3s, written by ` + "`sparkgap install`" + ` after k3s's own install.sh; settings live in
# /etc/rancher/k3s/config.yaml. Do not edit: the next install replaces it.
[Unit]
Description=Lightweight Kubernetes (sparkgap appliance)
Documentation=https://k3s.io
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=notify
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-/etc/systemd/system/k3s.service.env
KillMode=process
Delegate=yes
User=root
# Having non-zero Limit*s causes performance problems due to accounting overhead
# in the kernel. We recommend using cgroups to do container-local accounting.
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/local/bin/k3s server
`

func TestParseK3sUnit(t *testing.T) {
	u, err := Parse("k3s.service", k3sUnit)
	if err != nil {
		t.Fatal(err)
	}
	if u.Type != "notify" || u.KillMode != "process" || u.Restart != "always" ||
		u.RestartSec != 5*time.Second || u.TimeoutStartSec != 0 || u.TimeoutStopSec != 90*time.Second ||
		u.User != "root" || u.KillSignal != syscall.SIGTERM {
		t.Fatalf("%+v", u)
	}
	if u.Description != "Lightweight Kubernetes (sparkgap appliance)" {
		t.Fatalf("description %q", u.Description)
	}
	wantFiles := []EnvFile{
		{"/etc/default/k3s", true},
		{"/etc/sysconfig/k3s", true},
		{"/etc/systemd/system/k3s.service.env", true},
	}
	if !reflect.DeepEqual(u.EnvironmentFiles, wantFiles) {
		t.Fatalf("env files %+v", u.EnvironmentFiles)
	}
	if len(u.ExecStartPre) != 2 || !u.ExecStartPre[0].IgnoreFailure ||
		!reflect.DeepEqual(u.ExecStartPre[1].Argv, []string{"/sbin/modprobe", "overlay"}) {
		t.Fatalf("pre %+v", u.ExecStartPre)
	}
	if len(u.ExecStart) != 1 || !reflect.DeepEqual(u.ExecStart[0].Argv, []string{"/usr/local/bin/k3s", "server"}) ||
		u.ExecStart[0].IgnoreFailure {
		t.Fatalf("start %+v", u.ExecStart)
	}
	limits := map[string][2]uint64{}
	for _, l := range u.Limits {
		limits[l.Key] = [2]uint64{l.Soft, l.Hard}
	}
	if limits["LimitNOFILE"] != [2]uint64{1048576, 1048576} || limits["LimitNPROC"] != [2]uint64{RLimInfinity, RLimInfinity} ||
		limits["LimitCORE"] != [2]uint64{RLimInfinity, RLimInfinity} {
		t.Fatalf("limits %+v", limits)
	}
	if len(u.Warnings) != 0 {
		t.Fatalf("warnings for the k3s unit: %v", u.Warnings)
	}
	if !reflect.DeepEqual(u.WantedBy, []string{"multi-user.target"}) {
		t.Fatalf("wanted by %v", u.WantedBy)
	}
}

func TestParseSyntax(t *testing.T) {
	u, err := Parse("web@blue.service", `
[Unit]
Description=a \
  continued description
; comment
[Service]
Environment="A=one two" B=three
Environment=C=%i
ExecStartPre=/bin/true
ExecStartPre=
ExecStartPre=-@/bin/echo echo-argv0 "quoted word" 'single $X' \x41\t
ExecStart=:/bin/srv --name=%N --prefix=%p %% $A ${B}
KillMode=mixed
KillSignal=SIGINT
TimeoutSec=1min 30s
RestartSec=250ms
LimitNOFILE=1024:4096
LimitAS=2G
Unknown=1
`)
	if err != nil {
		t.Fatal(err)
	}
	if u.Description != "a continued description" {
		t.Fatalf("description %q", u.Description)
	}
	if !reflect.DeepEqual(u.Environment, []string{"A=one two", "B=three", "C=blue"}) {
		t.Fatalf("env %q", u.Environment)
	}
	if len(u.ExecStartPre) != 1 {
		t.Fatalf("an empty ExecStartPre= resets the list: %+v", u.ExecStartPre)
	}
	pre := u.ExecStartPre[0]
	if !pre.IgnoreFailure || pre.Argv0 != "echo-argv0" ||
		!reflect.DeepEqual(pre.Argv, []string{"/bin/echo", "quoted word", "single $X", "A\t"}) {
		t.Fatalf("pre %+v", pre)
	}
	start := u.ExecStart[0]
	if !start.NoEnvExpand || !reflect.DeepEqual(start.Argv, []string{"/bin/srv", "--name=web@blue", "--prefix=web", "%", "$A", "${B}"}) {
		t.Fatalf("start %+v", start)
	}
	if u.KillMode != "mixed" || u.KillSignal != syscall.SIGINT || u.TimeoutStartSec != 90*time.Second ||
		u.TimeoutStopSec != 90*time.Second || u.RestartSec != 250*time.Millisecond {
		t.Fatalf("%+v", u)
	}
	if u.Limits[0].Soft != 1024 || u.Limits[0].Hard != 4096 || u.Limits[1].Soft != 2<<30 {
		t.Fatalf("limits %+v", u.Limits)
	}
	if len(u.Warnings) != 1 {
		t.Fatalf("warnings %v", u.Warnings)
	}
}

func TestParseErrors(t *testing.T) {
	for name, text := range map[string]string{
		"no ExecStart":       "[Service]\nType=simple\n",
		"two ExecStart":      "[Service]\nExecStart=/a\nExecStart=/b\n",
		"unsupported type":   "[Service]\nType=forking\nExecStart=/a\n",
		"relative exec":      "[Service]\nExecStart=bin/a\n",
		"bad time":           "[Service]\nExecStart=/a\nRestartSec=5 parsecs\n",
		"bad specifier":      "[Service]\nExecStart=/a %z\n",
		"outside a section":  "ExecStart=/a\n",
		"bad kill mode":      "[Service]\nExecStart=/a\nKillMode=some\n",
		"unterminated quote": "[Service]\nExecStart=/a \"b\n",
		"relative env file":  "[Service]\nExecStart=/a\nEnvironmentFile=etc/x\n",
	} {
		if _, err := Parse("x.service", text); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestTimespan(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"5s": 5 * time.Second, "5": 5 * time.Second, "90": 90 * time.Second, "0": 0, "infinity": 0,
		"1min 30s": 90 * time.Second, "2m": 2 * time.Minute, "500ms": 500 * time.Millisecond,
		"1h2min": time.Hour + 2*time.Minute, "1.5s": 1500 * time.Millisecond, "3 sec": 3 * time.Second,
	} {
		got, err := ParseTimespan(in)
		if err != nil || got != want {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "s", "5 parsecs", "-1"} {
		if _, err := ParseTimespan(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestEnvFileAndExpand(t *testing.T) {
	kv, err := ReadEnvFile(`# The test bed's knobs
K3S_TESTBED_PARTS=/opt/k3s-testbed/parts
 ; a comment
QUOTED="a \"b\" c"
SINGLE='x y'
SPACES =  v w  
CONT=one \
two
EMPTY=
`)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"K3S_TESTBED_PARTS=/opt/k3s-testbed/parts", `QUOTED=a "b" c`, "SINGLE=x y",
		"SPACES=v w", "CONT=one two", "EMPTY="}
	if !reflect.DeepEqual(kv, want) {
		t.Fatalf("%q", kv)
	}
	if _, err := ReadEnvFile("export X=1\n"); err == nil {
		t.Fatal("export accepted")
	}
	c, _ := ParseCommand(`/bin/k3s server $ARGS --x=${X}y $UNSET $$literal "${X}"`)
	got := c.Expand([]string{"ARGS=--a  --b", "X=1"})
	if !reflect.DeepEqual(got, []string{"/bin/k3s", "server", "--a", "--b", "--x=1y", "$literal", "1"}) {
		t.Fatalf("%q", got)
	}
}

func TestServiceEnv(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "k3s")
	if err := os.WriteFile(f, []byte("A=file\nK3S_TESTBED_LOG_DIR=/var/log/tb\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	u, err := Parse("k3s.service", "[Service]\nUser=root\nEnvironment=A=unit B=unit\nEnvironmentFile=-"+
		filepath.Join(dir, "missing")+"\nEnvironmentFile="+f+"\nExecStart=/bin/k3s\n")
	if err != nil {
		t.Fatal(err)
	}
	env, err := u.ServiceEnv()
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := lookupEnv(env, "A"); v != "file" {
		t.Fatalf("EnvironmentFile= must override Environment=: %q", env)
	}
	if v, _ := lookupEnv(env, "HOME"); v != "/root" {
		t.Fatalf("HOME: %q", env)
	}
	if v, _ := lookupEnv(env, "PATH"); v != "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" {
		t.Fatalf("PATH: %q", env)
	}
	if u.LogPath() != "/var/log/tb/k3s.service.log" {
		t.Fatalf("log %s", u.LogPath())
	}
	u.EnvironmentFiles = append(u.EnvironmentFiles, EnvFile{Path: filepath.Join(dir, "required")})
	if _, err := u.ServiceEnv(); err == nil {
		t.Fatal("a missing required EnvironmentFile= accepted")
	}
}

func TestNormalizeName(t *testing.T) {
	for in, want := range map[string]string{"k3s": "k3s.service", "k3s.service": "k3s.service", "a.b": "a.b.service"} {
		if got, err := NormalizeName(in); err != nil || got != want {
			t.Errorf("%q: %q %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "x.socket", "a/b"} {
		if _, err := NormalizeName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
