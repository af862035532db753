package sandbox

import "testing"

func TestParseBind(t *testing.T) {
	b, err := ParseBind("/a/b:/opt/x:ro")
	if err != nil || b.Src != "/a/b" || b.Dst != "/opt/x" || !b.RO {
		t.Fatalf("%+v %v", b, err)
	}
	b, err = ParseBind("/a//b/:/etc/y")
	if err != nil || b.Src != "/a/b" || b.Dst != "/etc/y" || b.RO {
		t.Fatalf("%+v %v", b, err)
	}
	for _, bad := range []string{"/a", "a:/b", "/a:/b:rx", "/a:b"} {
		if _, err := ParseBind(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseFile(t *testing.T) {
	f, err := ParseFile("/usr/local/sbin/systemctl=/tmp/x/systemctl")
	if err != nil || f.Dst != "/usr/local/sbin/systemctl" || f.Src != "/tmp/x/systemctl" {
		t.Fatalf("%+v %v", f, err)
	}
	for _, bad := range []string{"/a", "a=/b", "/a=b"} {
		if _, err := ParseFile(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		dir, cg string
		ok      bool
	}{
		{"/tmp/n", "sparkgap-node-12-0", true},
		{"/var/tmp/n", "sparkgap-node-12-0", false},
		{"/etc", "sparkgap-node-12-0", false},
		{"/tmp/n", "other", false},
		{"/tmp/n", "sparkgap-node-x-0", false},
	} {
		o := Options{Dir: c.dir, Cgroup: c.cg}
		if err := o.Validate(); (err == nil) != c.ok {
			t.Errorf("%s %s: %v", c.dir, c.cg, err)
		}
	}
}

func TestUnescapeOctal(t *testing.T) {
	if got := unescapeOctal(`/tmp/a\040b\134`); got != `/tmp/a b\` {
		t.Fatalf("%q", got)
	}
}

func TestHierarchyOptions(t *testing.T) {
	for _, c := range []struct {
		m    mount
		want string
	}{
		{mount{FSType: "cgroup", Options: "rw,cpu"}, "cpu"},
		{mount{FSType: "cgroup", Options: "rw,cpu,cpuacct"}, "cpu,cpuacct"},
		{mount{FSType: "cgroup", Options: "rw,xattr,release_agent=/x,name=systemd"}, "name=systemd"},
		{mount{FSType: "cgroup2", Options: "rw,nsdelegate,memory_recursiveprot"}, "nsdelegate,memory_recursiveprot"},
		{mount{FSType: "cgroup2", Options: "rw"}, ""},
	} {
		if got := hierarchyOptions(c.m); got != c.want {
			t.Errorf("%+v: %q, want %q", c.m, got, c.want)
		}
	}
	if !sameSet("cpuacct,cpu", "cpu,cpuacct") || sameSet("cpu", "cpu,cpuacct") {
		t.Fatal("sameSet")
	}
}
