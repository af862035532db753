package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CgroupBase is where the machine mounts its cgroup hierarchies: cgroup v1 controllers each
// on their own (cpu and cpuacct apart), name=systemd, and cgroup2 at unified.
const CgroupBase = "/sys/fs/cgroup"

// NamePattern is the shape of a node's cgroup name: sparkgap-node-<test pid>-<n>. The pid lets
// a later keeper tell the cgroups of dead runs from those of live ones.
var NamePattern = regexp.MustCompile(`^sparkgap-node-([0-9]+)-[A-Za-z0-9_.-]+$`)

// Hierarchies lists the mount points of every cgroup hierarchy (v1 and v2) mounted under
// CgroupBase, as this process's mount namespace sees them.
func Hierarchies() ([]string, error) {
	ms, err := hierarchyMounts()
	if err != nil {
		return nil, err
	}
	hs := make([]string, len(ms))
	for i, m := range ms {
		hs[i] = m.Point
	}
	return hs, nil
}

func hierarchyMounts() ([]mount, error) {
	mounts, err := readMountInfo("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var hs []mount
	for _, m := range mounts {
		if (m.FSType == "cgroup" || m.FSType == "cgroup2") && strings.HasPrefix(m.Point, CgroupBase+"/") {
			hs = append(hs, m)
		}
	}
	if len(hs) == 0 {
		return nil, fmt.Errorf("no cgroup hierarchy mounted under %s", CgroupBase)
	}
	sort.Slice(hs, func(i, j int) bool { return hs[i].Point < hs[j].Point })
	return hs, nil
}

// hierarchyOptions are the options that select hierarchy m when mounting it again: its
// controllers and name= for cgroup v1, its flags but rw for cgroup2.
func hierarchyOptions(m mount) string {
	var keep []string
	for _, o := range strings.Split(m.Options, ",") {
		switch {
		case o == "rw" || o == "ro" || o == "":
		case m.FSType == "cgroup2":
			keep = append(keep, o)
		case o == "noprefix" || o == "xattr" || o == "clone_children" || o == "cpuset_v2_mode" ||
			strings.HasPrefix(o, "release_agent="):
		default:
			keep = append(keep, o)
		}
	}
	return strings.Join(keep, ",")
}

// OwnCgroups maps each hierarchy of hs to the cgroup this process is in there
// (/proc/self/cgroup, matched to the hierarchy by its controllers, or "0::" for cgroup2).
func OwnCgroups(hs []string) (map[string]string, error) {
	ms, err := hierarchyMounts()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	own := map[string]string{}
	for _, m := range ms {
		want := hierarchyOptions(m)
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			f := strings.SplitN(l, ":", 3)
			if len(f) != 3 {
				continue
			}
			if m.FSType == "cgroup2" && f[0] == "0" && f[1] == "" || m.FSType == "cgroup" && sameSet(f[1], want) {
				own[m.Point] = f[2]
			}
		}
	}
	for _, h := range hs {
		if _, ok := own[h]; !ok {
			return nil, fmt.Errorf("cannot tell this process's cgroup in %s", h)
		}
	}
	return own, nil
}

func sameSet(a, b string) bool {
	as, bs := strings.Split(a, ","), strings.Split(b, ",")
	sort.Strings(as)
	sort.Strings(bs)
	return strings.Join(as, ",") == strings.Join(bs, ",")
}

// MoveTo puts process pid back into the cgroups of own (as OwnCgroups returned them).
func MoveTo(own map[string]string, pid int) error {
	for h, p := range own {
		f := filepath.Join(h, p, "cgroup.procs")
		if err := os.WriteFile(f, []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("move back to %s: %w", f, err)
		}
	}
	return nil
}

// CreateCgroup makes name in every hierarchy. A cpuset cgroup gets its parent's cpus and mems:
// a v1 cpuset cgroup starts empty and takes no process until both are set.
func CreateCgroup(hs []string, name string) error {
	for _, h := range hs {
		dir := filepath.Join(h, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			if !errors.Is(err, fs.ErrExist) {
				return err
			}
			if pids, _ := CgroupProcs(h, name); len(pids) > 0 {
				return fmt.Errorf("cgroup %s exists and holds processes %v", dir, pids)
			}
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			val, err := os.ReadFile(filepath.Join(h, f))
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, f), val, 0o644); err != nil {
				return fmt.Errorf("%s: %w", filepath.Join(dir, f), err)
			}
		}
	}
	return nil
}

// JoinCgroup moves process pid (all its threads) into name in every hierarchy.
func JoinCgroup(hs []string, name string, pid int) error {
	for _, h := range hs {
		p := filepath.Join(h, name, "cgroup.procs")
		if err := os.WriteFile(p, []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("join %s: %w", p, err)
		}
	}
	return nil
}

// cgroupDirs lists name and every cgroup below it in hierarchy h, deepest first.
func cgroupDirs(h, name string) ([]string, error) {
	root := filepath.Join(h, name)
	var dirs []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool {
		return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/")
	})
	return dirs, err
}

// CgroupProcs lists the processes in name and below it in hierarchy h.
func CgroupProcs(h, name string) ([]int, error) {
	dirs, err := cgroupDirs(h, name)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, err
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids, nil
}

// AllProcs lists the processes in name and below in any hierarchy, without duplicates.
func AllProcs(hs []string, name string) []int {
	seen := map[int]bool{}
	var pids []int
	for _, h := range hs {
		ps, _ := CgroupProcs(h, name)
		for _, p := range ps {
			if !seen[p] {
				seen[p] = true
				pids = append(pids, p)
			}
		}
	}
	sort.Ints(pids)
	return pids
}

// EmptyCgroup waits until no process is left in name in any hierarchy. After grace it
// SIGKILLs what is left (every process there is the node's: the init's descendants and
// `sandbox exec`'s nsenter) and keeps waiting until timeout.
func EmptyCgroup(hs []string, name string, grace, timeout time.Duration) []int {
	start := time.Now()
	for {
		pids := AllProcs(hs, name)
		if len(pids) == 0 {
			return nil
		}
		if time.Since(start) > timeout {
			return pids
		}
		if time.Since(start) > grace {
			for _, p := range pids {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// RemoveCgroup removes name and every cgroup below it in every hierarchy, bottom-up. rmdir
// of a cgroup whose last task is still exiting fails with EBUSY for a moment: retried until
// timeout. Returns the directories it could not remove.
func RemoveCgroup(hs []string, name string, timeout time.Duration) []string {
	deadline := time.Now().Add(timeout)
	var left []string
	for _, h := range hs {
		for {
			dirs, err := cgroupDirs(h, name)
			if err == nil && len(dirs) == 0 {
				break
			}
			var failed []string
			for _, d := range dirs {
				if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
					failed = append(failed, fmt.Sprintf("%s (%v)", d, err))
				}
			}
			if len(failed) == 0 && err == nil {
				break
			}
			if time.Now().After(deadline) {
				left = append(left, failed...)
				if err != nil {
					left = append(left, fmt.Sprintf("%s (%v)", filepath.Join(h, name), err))
				}
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return left
}

// pidAlive says whether a process pid exists (in this PID namespace).
func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// SweepCgroups removes the cgroups of dead runs: names of NamePattern whose test pid is not
// alive and which hold no process. What it leaves (processes still inside) is reported.
func SweepCgroups(hs []string, logf func(string, ...any)) {
	names := map[string]bool{}
	for _, h := range hs {
		ents, err := os.ReadDir(h)
		if err != nil {
			continue
		}
		for _, e := range ents {
			m := NamePattern.FindStringSubmatch(e.Name())
			if m == nil || !e.IsDir() {
				continue
			}
			if pid, _ := strconv.Atoi(m[1]); pidAlive(pid) {
				continue
			}
			names[e.Name()] = true
		}
	}
	for name := range names {
		if pids := AllProcs(hs, name); len(pids) > 0 {
			logf("sweep: cgroup %s of a dead run still holds processes %v: left alone", name, pids)
			continue
		}
		if left := RemoveCgroup(hs, name, 2*time.Second); len(left) > 0 {
			logf("sweep: could not remove %s", strings.Join(left, ", "))
		} else {
			logf("sweep: removed cgroup %s of a dead run", name)
		}
	}
}

// mount is one line of a mountinfo file.
type mount struct {
	Point   string
	FSType  string
	Source  string
	Options string // the super block's options
}

// readMountInfo parses a mountinfo file (proc(5)): field 5 is the mount point, the fields after
// " - " the file system type and source. Octal escapes (\040) are decoded.
func readMountInfo(path string) ([]mount, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ms []mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		fa := strings.Fields(pre)
		fb := strings.Fields(post)
		if len(fa) < 5 || len(fb) < 2 {
			continue
		}
		m := mount{Point: unescapeOctal(fa[4]), FSType: fb[0], Source: unescapeOctal(fb[1])}
		if len(fb) > 2 {
			m.Options = fb[2]
		}
		ms = append(ms, m)
	}
	return ms, sc.Err()
}

func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// MountsUnder lists the mount points at or below dir in this mount namespace.
func MountsUnder(dir string) ([]string, error) {
	ms, err := readMountInfo("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if m.Point == dir || strings.HasPrefix(m.Point, strings.TrimSuffix(dir, "/")+"/") {
			out = append(out, m.Point)
		}
	}
	return out, nil
}
