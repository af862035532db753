package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The --out JSON the Rust test reads: names, references into the layout, digests, sizes.
func TestReportShape(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("no /bin/busybox (Debian busybox-static)")
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "images.json")
	layout := filepath.Join(dir, "oci")
	if err := run([]string{"--only", "busybox:1.37.0,sparkgap-testbed/hello:1", "--layout-dir", layout, "--out", out}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Registry string `json:"registry"`
		Layout   string `json:"layout"`
		Images   []struct {
			Name, Reference, Destination, IndexDigest, ManifestDigest, BuiltFrom string
			Size                                                                 int64
			K3s                                                                  bool
		} `json:"images"`
	}
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Registry != "" || rep.Layout != layout || len(rep.Images) != 2 {
		t.Fatalf("report %s", data)
	}
	for _, i := range rep.Images {
		if i.Destination != "layout" || i.Reference != "oci:"+layout+":"+i.Name || !strings.HasPrefix(i.IndexDigest, "sha256:") ||
			!strings.HasPrefix(i.ManifestDigest, "sha256:") || i.Size <= 0 || i.BuiltFrom == "" || i.K3s {
			t.Errorf("image %+v", i)
		}
	}
	if rep.Images[0].Name != "docker.io/library/busybox:1.37.0" || rep.Images[1].Name != "docker.io/sparkgap-testbed/hello:1" {
		t.Errorf("names %s, %s", rep.Images[0].Name, rep.Images[1].Name)
	}
}
