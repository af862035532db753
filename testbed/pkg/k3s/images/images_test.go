package images

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const digest = "sha256:1111111111111111111111111111111111111111111111111111111111111111"

func TestIsSupported(t *testing.T) {
	for p, want := range map[string]bool{
		"a.tar": true, "a.tar.gz": true, "a.tgz": true, "a.tar.zst": true, "a.tzst": true,
		"a.tar.bz2": true, "a.tbz": true, "a.tar.lz4": true, "list.txt": true,
		".cache.json": false, "a.zip": false, "a.TAR": false, "a.tar.xz": false,
	} {
		if IsSupported(p) != want {
			t.Errorf("%s: want %v", p, want)
		}
	}
}

func TestParseNamedTagged(t *testing.T) {
	for name, want := range map[string]string{
		"docker.io/rancher/mirrored-pause:3.6":     "docker.io/rancher/mirrored-pause 3.6",
		"127.0.0.1:5000/app:v1":                    "127.0.0.1:5000/app v1",
		"busybox:1.37.0":                           "busybox 1.37.0",
		"docker.io/library/busybox:1.37@" + digest: "docker.io/library/busybox 1.37",
	} {
		repo, tag, err := ParseNamedTagged(name)
		if err != nil || repo+" "+tag != want {
			t.Errorf("%s: %s %s %v", name, repo, tag, err)
		}
	}
	for _, bad := range []string{"docker.io/library/busybox@" + digest, "docker.io/library/busybox", "127.0.0.1:5000/app", "import-2026:"} {
		if _, _, err := ParseNamedTagged(bad); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("%s: want an error naming it, got %v", bad, err)
		}
	}
}

func TestParseImportOutput(t *testing.T) {
	out := "unpacking docker.io/rancher/mirrored-pause:3.6 (" + digest + ")...done\nunpacking docker.io/library/busybox:1.37.0 (" + digest + ")...done\n"
	got := ParseImportOutput(out)
	if len(got) != 2 || got[0].Name != "docker.io/rancher/mirrored-pause:3.6" || got[1].Digest != digest {
		t.Fatalf("%+v", got)
	}
}

func TestNeedsImport(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	if !needsImport(nil, 10, t0) {
		t.Error("no entry: import")
	}
	e := &fileInfo{Size: 10, ModTime: t0}
	if needsImport(e, 10, t0.Add(time.Hour)) {
		t.Error("same size, newer: not imported (k3s's rule: size must change)")
	}
	if needsImport(e, 11, t0) {
		t.Error("other size, same mtime: not imported")
	}
	if !needsImport(e, 11, t0.Add(time.Second)) {
		t.Error("other size and newer: imported")
	}
}

// fakeCtr is a ctr that records its arguments and answers import, list, label and tag.
func fakeCtr(t *testing.T, dir string, digestOnly bool) (string, string) {
	t.Helper()
	bad := ""
	if digestOnly {
		bad = `; echo "unpacking docker.io/library/busybox@` + digest + ` (` + digest + `)...done"`
	}
	logf := filepath.Join(dir, "ctr.log")
	script := filepath.Join(dir, "ctr")
	body := `#!/bin/sh
echo "$*" >> ` + logf + `
case "$*" in
  *" images import "*) cat >/dev/null; echo "unpacking docker.io/rancher/mirrored-pause:3.6 (` + digest + `)...done"` + bad + ` ;;
  *" images list "*) echo "docker.io/old/image:1" ;;
esac
`
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script, logf
}

func tarball(t *testing.T, path string) {
	t.Helper()
	var buf bytes.Buffer
	if strings.HasSuffix(path, ".gz") {
		z := gzip.NewWriter(&buf)
		z.Write(make([]byte, 1024))
		z.Close()
	} else {
		buf.Write(make([]byte, 1024))
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestPreload(t *testing.T) {
	dir := t.TempDir()
	ctr, logf := fakeCtr(t, dir, true)
	images := filepath.Join(dir, "images")
	os.MkdirAll(filepath.Join(images, "sub"), 0o755)
	tarball(t, filepath.Join(images, "a.tar"))
	tarball(t, filepath.Join(images, "sub", "b.tar.gz"))
	os.WriteFile(filepath.Join(images, "notes.md"), []byte("x"), 0o644)
	var logs bytes.Buffer
	im := &Importer{Ctr: ctr, Address: "/run/k3s/containerd/containerd.sock", Dir: images, Log: log.New(&logs, "", 0)}
	if err := im.Preload(context.Background()); err != nil {
		t.Fatal(err)
	}
	calls, _ := os.ReadFile(logf)
	got := string(calls)
	for _, want := range []string{
		"--address /run/k3s/containerd/containerd.sock --namespace k8s.io images list --quiet labels.\"io.cattle.k3s.pinned\"==pinned",
		"images label docker.io/old/image:1 io.cattle.k3s.pinned= io.cri-containerd.pinned=",
		"images import --local --all-platforms -",
		"images label docker.io/rancher/mirrored-pause:3.6 io.cattle.k3s.pinned=pinned io.cri-containerd.pinned=pinned",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing ctr call %q in\n%s", want, got)
		}
	}
	// k3s tags only under airgap extra registries (none here): no name@digest names.
	if strings.Contains(got, "images tag") {
		t.Errorf("no extra registry, no retag:\n%s", got)
	}
	if n := strings.Count(got, "images import"); n != 2 {
		t.Errorf("%d imports, want 2 (notes.md is not an archive)", n)
	}
	// A digest-only name is labelled but cannot be retagged: an error naming it, as k3s.
	if !strings.Contains(logs.String(), "failed to parse tags for image docker.io/library/busybox@"+digest) {
		t.Errorf("logs:\n%s", logs.String())
	}
	if _, err := os.Stat(filepath.Join(images, CacheFile)); !os.IsNotExist(err) {
		t.Error(".cache.json is written only if it exists")
	}
}

func TestPreloadCacheJSON(t *testing.T) {
	dir := t.TempDir()
	ctr, logf := fakeCtr(t, dir, false)
	images := filepath.Join(dir, "images")
	os.MkdirAll(images, 0o755)
	tarball(t, filepath.Join(images, "a.tar"))
	os.WriteFile(filepath.Join(images, CacheFile), nil, 0o644)
	im := &Importer{Ctr: ctr, Address: "s", Dir: images, Log: log.New(io.Discard, "", 0)}
	if err := im.Preload(context.Background()); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(images, CacheFile))
	var cache map[string]fileInfo
	if err := json.Unmarshal(data, &cache); err != nil || cache[filepath.Join(images, "a.tar")].Size != 1024 {
		t.Fatalf("cache %s %v", data, err)
	}
	// A second start with the cache: the unchanged archive is not imported again.
	os.Remove(logf)
	im2 := &Importer{Ctr: ctr, Address: "s", Dir: images, Log: log.New(io.Discard, "", 0)}
	if err := im2.Preload(context.Background()); err != nil {
		t.Fatal(err)
	}
	calls, _ := os.ReadFile(logf)
	if strings.Contains(string(calls), "images import") {
		t.Fatalf("unchanged archive re-imported:\n%s", calls)
	}
}

func TestOpenGzip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.tar.gz")
	tarball(t, p)
	r, wait, err := open(p)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r)
	r.Close()
	if err := wait(); err != nil || len(b) != 1024 {
		t.Fatalf("%d bytes, %v", len(b), err)
	}
}
