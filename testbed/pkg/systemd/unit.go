// Package systemd is the test bed's stand-in for systemd's service manager: enough of
// systemctl and of a service's life cycle to run the unit `sparkgap install` writes
// (src/install/render.rs k3s_service) the way systemd runs it: Type=notify with NOTIFY_SOCKET,
// EnvironmentFile=-/etc/default/%N, KillMode=process (stop signals the main process only, so
// containers keep running in their shims), Restart=always with RestartSec, TimeoutStopSec,
// Limit*. Behaviour follows systemd.service(5), systemd.exec(5), systemd.kill(5),
// systemd.unit(5) and systemctl(1); nothing is copied from systemd.
//
// A unit runs under a supervisor process (`systemctl __supervise`), detached from the caller,
// which plays the manager for that one unit: it runs ExecStartPre and ExecStart, listens on
// the notify socket, restarts, and stops. Its state lives under /run/systemd-standin.
package systemd

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// UnitDirs are where units are looked up, in order (systemd.unit(5): the local configuration
// and the runtime units; the distribution's /lib units are the host's and not this node's).
var UnitDirs = []string{"/etc/systemd/system", "/run/systemd/system"}

// Command is one Exec*= line.
type Command struct {
	Line          string   // as written, for messages
	Argv          []string // after word splitting (environment variables expanded at start)
	IgnoreFailure bool     // "-": a failure (or a missing executable) is not the unit's failure
	NoEnvExpand   bool     // ":"
	Argv0         string   // "@": the second word is argv[0]
}

// EnvFile is one EnvironmentFile= entry.
type EnvFile struct {
	Path     string
	Optional bool // "-": a missing file is fine
}

// Limit is one Limit*= setting.
type Limit struct {
	Key        string // LimitNOFILE
	Resource   int
	Soft, Hard uint64
}

// Unit is a parsed service unit.
type Unit struct {
	Name             string // k3s.service
	Path             string
	Description      string
	Type             string // simple, exec, notify
	ExecStartPre     []Command
	ExecStart        []Command
	Environment      []string // KEY=VALUE, in order
	EnvironmentFiles []EnvFile
	KillMode         string // control-group, mixed, process, none
	KillSignal       syscall.Signal
	Restart          string // no, always, on-success, on-failure, on-abnormal, on-abort
	RestartSec       time.Duration
	TimeoutStartSec  time.Duration // 0: none
	TimeoutStopSec   time.Duration // 0: none
	Limits           []Limit
	WorkingDirectory string
	User             string
	WantedBy         []string
	// Warnings are settings the stand-in does not honour (systemd would), for the log.
	Warnings []string
}

// NormalizeName turns "k3s" into "k3s.service"; other unit types are refused.
func NormalizeName(name string) (string, error) {
	if name == "" || strings.ContainsRune(name, '/') {
		return "", fmt.Errorf("invalid unit name %q", name)
	}
	if strings.HasSuffix(name, ".service") {
		return name, nil
	}
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		switch name[i+1:] {
		case "socket", "target", "timer", "mount", "path", "slice", "scope", "device", "swap", "automount":
			return "", fmt.Errorf("unit %s: only services are supported by this systemctl stand-in", name)
		}
	}
	return name + ".service", nil
}

// ErrNotFound is returned by Load when no unit file exists.
type ErrNotFound struct{ Name string }

func (e ErrNotFound) Error() string { return fmt.Sprintf("Unit %s not found.", e.Name) }

// Find returns the path of unit name's file, or "".
func Find(name string) string {
	for _, d := range UnitDirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// Load reads and parses unit name (normalized) from UnitDirs.
func Load(name string) (*Unit, error) {
	p := Find(name)
	if p == "" {
		return nil, ErrNotFound{name}
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	u, err := Parse(name, string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	u.Path = p
	return u, nil
}

// entry is one assignment of a unit file.
type entry struct {
	Section, Key, Value string
	Line                int
}

// lexUnit splits a unit file into assignments (systemd.syntax(7)): [Section] headers,
// Key=Value lines, '#' and ';' comments, a trailing backslash continuing a line.
func lexUnit(text string) ([]entry, error) {
	var out []entry
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	n := 0
	var cont strings.Builder
	contStart := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if cont.Len() > 0 {
			if strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
				continue
			}
		} else {
			if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
				continue
			}
			contStart = n
		}
		if strings.HasSuffix(line, `\`) && !strings.HasSuffix(line, `\\`) {
			cont.WriteString(strings.TrimRight(strings.TrimSuffix(line, `\`), " \t"))
			cont.WriteString(" ")
			continue
		}
		cont.WriteString(line)
		line = cont.String()
		cont.Reset()
		if strings.HasPrefix(line, "[") {
			if !strings.HasSuffix(line, "]") {
				return nil, fmt.Errorf("line %d: bad section header %q", contStart, line)
			}
			section = line[1 : len(line)-1]
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: not an assignment: %q", contStart, line)
		}
		if section == "" {
			return nil, fmt.Errorf("line %d: assignment outside a section", contStart)
		}
		out = append(out, entry{section, strings.TrimSpace(k), strings.TrimSpace(v), contStart})
	}
	if cont.Len() > 0 {
		return nil, fmt.Errorf("line %d: continuation at end of file", contStart)
	}
	return out, sc.Err()
}

// settings the stand-in reads but has no use for here (they hold on the real machine).
var ignored = map[string]bool{
	"Unit/Documentation": true, "Unit/Wants": true, "Unit/After": true, "Unit/Before": true,
	"Unit/Requires": true, "Unit/Conflicts": true, "Unit/StartLimitIntervalSec": true,
	"Unit/StartLimitBurst": true, "Install/Alias": true, "Install/RequiredBy": true,
	"Service/Delegate": true, "Service/TasksMax": true, "Service/NotifyAccess": true,
	"Service/SuccessExitStatus": true, "Service/RemainAfterExit": true, "Service/Group": true,
	"Service/StandardOutput": true, "Service/StandardError": true, "Service/SyslogIdentifier": true,
	"Service/CPUAccounting": true, "Service/MemoryAccounting": true, "Service/OOMScoreAdjust": true,
}

// limitKeys maps Limit*= to the rlimit resource.
var limitKeys = map[string]int{
	"LimitCPU": unix.RLIMIT_CPU, "LimitFSIZE": unix.RLIMIT_FSIZE, "LimitDATA": unix.RLIMIT_DATA,
	"LimitSTACK": unix.RLIMIT_STACK, "LimitCORE": unix.RLIMIT_CORE, "LimitRSS": unix.RLIMIT_RSS,
	"LimitNOFILE": unix.RLIMIT_NOFILE, "LimitAS": unix.RLIMIT_AS, "LimitNPROC": unix.RLIMIT_NPROC,
	"LimitMEMLOCK": unix.RLIMIT_MEMLOCK, "LimitLOCKS": unix.RLIMIT_LOCKS,
	"LimitSIGPENDING": unix.RLIMIT_SIGPENDING, "LimitMSGQUEUE": unix.RLIMIT_MSGQUEUE,
	"LimitNICE": unix.RLIMIT_NICE, "LimitRTPRIO": unix.RLIMIT_RTPRIO, "LimitRTTIME": unix.RLIMIT_RTTIME,
}

// Parse parses the text of unit name.
func Parse(name, text string) (*Unit, error) {
	entries, err := lexUnit(text)
	if err != nil {
		return nil, err
	}
	u := &Unit{
		Name:            name,
		Type:            "simple",
		KillMode:        "control-group",
		KillSignal:      syscall.SIGTERM,
		Restart:         "no",
		RestartSec:      100 * time.Millisecond,
		TimeoutStartSec: 90 * time.Second,
		TimeoutStopSec:  90 * time.Second,
	}
	for _, e := range entries {
		v, err := expandSpecifiers(e.Value, name)
		if err != nil {
			return nil, fmt.Errorf("line %d: %s=: %w", e.Line, e.Key, err)
		}
		if err := u.set(e.Section, e.Key, v); err != nil {
			return nil, fmt.Errorf("line %d: %s=%s: %w", e.Line, e.Key, e.Value, err)
		}
	}
	switch u.Type {
	case "simple", "exec", "notify":
		if len(u.ExecStart) != 1 {
			return nil, fmt.Errorf("Type=%s needs exactly one ExecStart=, found %d", u.Type, len(u.ExecStart))
		}
	default:
		return nil, fmt.Errorf("Type=%s is not supported by this systemctl stand-in", u.Type)
	}
	return u, nil
}

func (u *Unit) set(section, key, v string) error {
	var err error
	switch section + "/" + key {
	case "Unit/Description":
		u.Description = v
	case "Install/WantedBy":
		u.WantedBy = append(u.WantedBy, strings.Fields(v)...)
	case "Service/Type":
		u.Type = v
	case "Service/ExecStartPre":
		u.ExecStartPre, err = appendCommand(u.ExecStartPre, v)
	case "Service/ExecStart":
		u.ExecStart, err = appendCommand(u.ExecStart, v)
	case "Service/Environment":
		if v == "" {
			u.Environment = nil
			return nil
		}
		words, err := SplitWords(v)
		if err != nil {
			return err
		}
		for _, w := range words {
			if k, _, ok := strings.Cut(w, "="); !ok || k == "" {
				return fmt.Errorf("not an assignment: %q", w)
			}
			u.Environment = append(u.Environment, w)
		}
	case "Service/EnvironmentFile":
		if v == "" {
			u.EnvironmentFiles = nil
			return nil
		}
		f := EnvFile{Path: v}
		if strings.HasPrefix(v, "-") {
			f = EnvFile{Path: v[1:], Optional: true}
		}
		if !filepath.IsAbs(f.Path) {
			return fmt.Errorf("path is not absolute")
		}
		u.EnvironmentFiles = append(u.EnvironmentFiles, f)
	case "Service/KillMode":
		switch v {
		case "control-group", "mixed", "process", "none":
			u.KillMode = v
		default:
			return fmt.Errorf("unknown KillMode")
		}
	case "Service/KillSignal":
		u.KillSignal, err = ParseSignal(v)
	case "Service/Restart":
		switch v {
		case "no", "always", "on-success", "on-failure", "on-abnormal", "on-abort", "on-watchdog":
			u.Restart = v
		default:
			return fmt.Errorf("unknown Restart")
		}
	case "Service/RestartSec":
		u.RestartSec, err = ParseTimespan(v)
	case "Service/TimeoutStartSec":
		u.TimeoutStartSec, err = ParseTimespan(v)
	case "Service/TimeoutStopSec":
		u.TimeoutStopSec, err = ParseTimespan(v)
	case "Service/TimeoutSec":
		u.TimeoutStartSec, err = ParseTimespan(v)
		u.TimeoutStopSec = u.TimeoutStartSec
	case "Service/WorkingDirectory":
		u.WorkingDirectory = strings.TrimPrefix(v, "-")
	case "Service/User":
		u.User = v
	default:
		if res, ok := limitKeys[key]; ok && section == "Service" {
			l := Limit{Key: key, Resource: res}
			l.Soft, l.Hard, err = ParseLimit(v)
			u.Limits = append(u.Limits, l)
			return err
		}
		if !ignored[section+"/"+key] {
			u.Warnings = append(u.Warnings, fmt.Sprintf("[%s] %s= is not supported by this systemctl stand-in: ignored", section, key))
		}
	}
	return err
}

func appendCommand(list []Command, v string) ([]Command, error) {
	if v == "" {
		return nil, nil // an empty assignment resets the list
	}
	c, err := ParseCommand(v)
	if err != nil {
		return list, err
	}
	return append(list, c), nil
}

// ParseCommand parses an Exec*= value: its prefixes ('-', '@', ':', '+', '!', '!!') and its
// words (systemd.service(5) "Command lines").
func ParseCommand(v string) (Command, error) {
	c := Command{Line: v}
	rest := v
	argv0 := false
prefixes:
	for rest != "" {
		switch rest[0] {
		case '-':
			c.IgnoreFailure = true
		case '@':
			argv0 = true
		case ':':
			c.NoEnvExpand = true
		case '+', '!':
			// privilege settings: everything runs as root here anyway
		default:
			break prefixes
		}
		rest = rest[1:]
	}
	words, err := SplitWords(rest)
	if err != nil {
		return c, err
	}
	if len(words) == 0 {
		return c, fmt.Errorf("empty command")
	}
	if argv0 {
		if len(words) < 2 {
			return c, fmt.Errorf("'@' needs argv[0] after the executable")
		}
		c.Argv0 = words[1]
		words = append(words[:1], words[2:]...)
	}
	if !filepath.IsAbs(words[0]) && strings.ContainsRune(words[0], '/') {
		return c, fmt.Errorf("executable %q is neither absolute nor a plain name", words[0])
	}
	c.Argv = words
	return c, nil
}

// SplitWords splits v into words at whitespace, honouring double and single quotes and
// C-style backslash escapes, as systemd does for command lines and Environment=.
func SplitWords(v string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	quote := byte(0)
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote == 0 && (c == '"' || c == '\''):
			quote = c
			inWord = true
		case quote == 0 && (c == ' ' || c == '\t' || c == '\n'):
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\\' && quote != '\'':
			if i+1 >= len(v) {
				return nil, fmt.Errorf("trailing backslash in %q", v)
			}
			i++
			switch v[i] {
			case 'n':
				cur.WriteByte('\n')
			case 't':
				cur.WriteByte('\t')
			case 'r':
				cur.WriteByte('\r')
			case 'a':
				cur.WriteByte('\a')
			case 'b':
				cur.WriteByte('\b')
			case 'f':
				cur.WriteByte('\f')
			case 'v':
				cur.WriteByte('\v')
			case 's':
				cur.WriteByte(' ')
			case 'x':
				if i+2 >= len(v) {
					return nil, fmt.Errorf("bad \\x escape in %q", v)
				}
				b, err := strconv.ParseUint(v[i+1:i+3], 16, 8)
				if err != nil {
					return nil, fmt.Errorf("bad \\x escape in %q", v)
				}
				cur.WriteByte(byte(b))
				i += 2
			default:
				cur.WriteByte(v[i])
			}
			inWord = true
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quote in %q", v)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// expandSpecifiers resolves the % specifiers of systemd.unit(5) that make sense for a
// system service of this node.
func expandSpecifiers(v, unit string) (string, error) {
	if !strings.ContainsRune(v, '%') {
		return v, nil
	}
	full := unit
	base := strings.TrimSuffix(full, ".service")
	prefix, instance, _ := strings.Cut(base, "@")
	host, _ := os.Hostname()
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] != '%' {
			b.WriteByte(v[i])
			continue
		}
		if i+1 >= len(v) {
			return "", fmt.Errorf("'%%' at the end")
		}
		i++
		switch v[i] {
		case '%':
			b.WriteByte('%')
		case 'n':
			b.WriteString(full)
		case 'N':
			b.WriteString(base)
		case 'p', 'P':
			b.WriteString(prefix)
		case 'i', 'I':
			b.WriteString(instance)
		case 't':
			b.WriteString("/run")
		case 'S':
			b.WriteString("/var/lib")
		case 'C':
			b.WriteString("/var/cache")
		case 'L':
			b.WriteString("/var/log")
		case 'E':
			b.WriteString("/etc")
		case 'T':
			b.WriteString("/tmp")
		case 'V':
			b.WriteString("/var/tmp")
		case 'h':
			b.WriteString("/root")
		case 'u':
			b.WriteString("root")
		case 'U':
			b.WriteString("0")
		case 'H':
			b.WriteString(host)
		default:
			return "", fmt.Errorf("unknown specifier %%%c", v[i])
		}
	}
	return b.String(), nil
}

// ParseTimespan reads a systemd time span (systemd.time(7)): "5s", "90", "1min 30s",
// "500ms", "infinity". A bare number is seconds. infinity is 0 (no timeout), as is "0".
func ParseTimespan(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if v == "infinity" {
		return 0, nil
	}
	units := []struct {
		name string
		d    time.Duration
	}{
		{"usec", time.Microsecond}, {"us", time.Microsecond}, {"µs", time.Microsecond},
		{"msec", time.Millisecond}, {"ms", time.Millisecond},
		{"seconds", time.Second}, {"second", time.Second}, {"sec", time.Second}, {"s", time.Second},
		{"minutes", time.Minute}, {"minute", time.Minute}, {"min", time.Minute}, {"m", time.Minute},
		{"hours", time.Hour}, {"hour", time.Hour}, {"hr", time.Hour}, {"h", time.Hour},
		{"days", 24 * time.Hour}, {"day", 24 * time.Hour}, {"d", 24 * time.Hour},
		{"weeks", 7 * 24 * time.Hour}, {"week", 7 * 24 * time.Hour}, {"w", 7 * 24 * time.Hour},
	}
	if v == "" {
		return 0, fmt.Errorf("empty time span")
	}
	var total time.Duration
	rest := v
	for rest != "" {
		rest = strings.TrimLeft(rest, " \t")
		if rest == "" {
			break
		}
		i := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '.') {
			i++
		}
		if i == 0 {
			return 0, fmt.Errorf("bad time span %q", v)
		}
		num, err := strconv.ParseFloat(rest[:i], 64)
		if err != nil {
			return 0, fmt.Errorf("bad time span %q", v)
		}
		rest = strings.TrimLeft(rest[i:], " \t")
		unit := time.Second
		for _, u := range units {
			if strings.HasPrefix(rest, u.name) {
				next := rest[len(u.name):]
				if next == "" || next[0] == ' ' || next[0] == '\t' || next[0] >= '0' && next[0] <= '9' {
					unit = u.d
					rest = next
					break
				}
			}
		}
		if rest != "" && !(rest[0] == ' ' || rest[0] == '\t' || rest[0] >= '0' && rest[0] <= '9') {
			return 0, fmt.Errorf("bad time span %q", v)
		}
		total += time.Duration(num * float64(unit))
	}
	return total, nil
}

// RLimInfinity is RLIM_INFINITY.
const RLimInfinity = ^uint64(0)

// ParseLimit reads a Limit*= value: "N", "infinity", "SOFT:HARD", numbers with an optional
// K, M, G, T, P or E suffix (powers of 1024).
func ParseLimit(v string) (soft, hard uint64, err error) {
	one := func(s string) (uint64, error) {
		s = strings.TrimSpace(s)
		if s == "infinity" {
			return RLimInfinity, nil
		}
		mult := uint64(1)
		if s != "" {
			switch s[len(s)-1] {
			case 'K':
				mult = 1 << 10
			case 'M':
				mult = 1 << 20
			case 'G':
				mult = 1 << 30
			case 'T':
				mult = 1 << 40
			case 'P':
				mult = 1 << 50
			case 'E':
				mult = 1 << 60
			}
			if mult != 1 {
				s = s[:len(s)-1]
			}
		}
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bad limit %q", v)
		}
		return n * mult, nil
	}
	if a, b, ok := strings.Cut(v, ":"); ok {
		if soft, err = one(a); err != nil {
			return
		}
		hard, err = one(b)
		if err == nil && soft > hard {
			err = fmt.Errorf("soft limit above hard limit in %q", v)
		}
		return
	}
	soft, err = one(v)
	return soft, soft, err
}

// ParseSignal reads a signal name ("SIGTERM", "TERM") or number.
func ParseSignal(v string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(v); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	names := map[string]syscall.Signal{
		"HUP": syscall.SIGHUP, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT, "KILL": syscall.SIGKILL,
		"TERM": syscall.SIGTERM, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2,
		"CONT": syscall.SIGCONT, "STOP": syscall.SIGSTOP, "WINCH": syscall.SIGWINCH,
		"PWR": syscall.SIGPWR, "ABRT": syscall.SIGABRT,
	}
	if s, ok := names[strings.TrimPrefix(v, "SIG")]; ok {
		return s, nil
	}
	return 0, fmt.Errorf("unknown signal %q", v)
}

// ReadEnvFile parses an EnvironmentFile= (systemd.exec(5)): KEY=VALUE lines, '#' and ';'
// comments, values optionally in double quotes (with backslash escapes) or single quotes,
// a trailing backslash continuing the line.
func ReadEnvFile(text string) ([]string, error) {
	var out []string
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		for strings.HasSuffix(line, `\`) && i+1 < len(lines) {
			i++
			line = strings.TrimSuffix(line, `\`) + strings.TrimSpace(lines[i])
		}
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			return nil, fmt.Errorf("line %d: not an assignment: %q", i+1, line)
		}
		v = strings.TrimSpace(v)
		var val strings.Builder
		for j := 0; j < len(v); j++ {
			switch c := v[j]; {
			case c == '"':
				j++
				for ; j < len(v) && v[j] != '"'; j++ {
					if v[j] == '\\' && j+1 < len(v) && strings.IndexByte("\"\\`$", v[j+1]) >= 0 {
						j++
					}
					val.WriteByte(v[j])
				}
			case c == '\'':
				j++
				for ; j < len(v) && v[j] != '\''; j++ {
					val.WriteByte(v[j])
				}
			case c == '\\' && j+1 < len(v):
				j++
				val.WriteByte(v[j])
			default:
				val.WriteByte(c)
			}
		}
		out = append(out, k+"="+val.String())
	}
	return out, nil
}

// mergeEnv sets each KEY=VALUE of add in env, replacing an earlier value of the same key.
func mergeEnv(env []string, add ...string) []string {
	for _, kv := range add {
		k, _, _ := strings.Cut(kv, "=")
		replaced := false
		for i, e := range env {
			if strings.HasPrefix(e, k+"=") {
				env[i] = kv
				replaced = true
				break
			}
		}
		if !replaced {
			env = append(env, kv)
		}
	}
	return env
}

// lookupEnv returns key's value in env.
func lookupEnv(env []string, key string) (string, bool) {
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, key+"="); ok {
			return v, true
		}
	}
	return "", false
}

// ServiceEnv is the environment a service's processes start with (systemd.exec(5)
// "Environment variables in spawned processes"): not the caller's, but PATH, the user's
// variables when User= is set, Environment=, then the EnvironmentFile=s, which override it.
// A missing optional file is skipped; a missing required one is an error.
func (u *Unit) ServiceEnv() ([]string, error) {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if u.User == "root" || u.User == "0" {
		env = append(env, "HOME=/root", "LOGNAME=root", "USER=root", "SHELL=/bin/sh")
	}
	env = mergeEnv(env, u.Environment...)
	for _, f := range u.EnvironmentFiles {
		b, err := os.ReadFile(f.Path)
		if err != nil {
			if f.Optional && os.IsNotExist(err) {
				continue
			}
			return nil, fmt.Errorf("EnvironmentFile=%s: %w", f.Path, err)
		}
		kv, err := ReadEnvFile(string(b))
		if err != nil {
			return nil, fmt.Errorf("EnvironmentFile=%s: %w", f.Path, err)
		}
		env = mergeEnv(env, kv...)
	}
	return env, nil
}

// Expand returns c's argv with the environment's variables substituted (systemd.service(5)):
// "${FOO}" within a word, "$FOO" as a whole word split at whitespace into words; "$$" is "$".
// The executable (the first word) is never expanded.
func (c Command) Expand(env []string) []string {
	if c.NoEnvExpand || len(c.Argv) == 0 {
		return append([]string(nil), c.Argv...)
	}
	out := []string{c.Argv[0]}
	for _, w := range c.Argv[1:] {
		if len(w) > 1 && w[0] == '$' && w[1] != '{' && w[1] != '$' && isName(w[1:]) {
			v, _ := lookupEnv(env, w[1:])
			out = append(out, strings.Fields(v)...)
			continue
		}
		var b strings.Builder
		for j := 0; j < len(w); j++ {
			if w[j] == '$' && j+1 < len(w) && w[j+1] == '$' {
				b.WriteByte('$')
				j++
				continue
			}
			if w[j] == '$' && j+1 < len(w) && w[j+1] == '{' {
				if end := strings.IndexByte(w[j:], '}'); end > 0 {
					v, _ := lookupEnv(env, w[j+2:j+end])
					b.WriteString(v)
					j += end
					continue
				}
			}
			b.WriteByte(w[j])
		}
		out = append(out, b.String())
	}
	return out
}

func isName(s string) bool {
	for i, c := range s {
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return s != ""
}
