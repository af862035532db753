// Package images assembles the test bed's container images: the ones on k3s v1.33.5's
// k3s-images.txt, and the test's own, as deterministic single-platform linux/amd64 OCI images
// built from scripts/testbed's parts, the test bed's own programs, helm and Debian's binaries,
// each wrapped in an OCI image index as Docker Hub serves multi-platform images. Layers are
// written with sorted entries, uid/gid 0, a fixed mtime (Epoch) and gzip at GzipLevel, so the
// same inputs give the same digests. cmd/images is its command line.
package images

import (
	"fmt"
	"net/http"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Result is what was done with one image; the JSON of cmd/images' --out.
type Result struct {
	// Name is the canonical docker.io name, as sparkgap's lock keeps it.
	Name string `json:"name"`
	// Reference is where the image is now: "127.0.0.1:PORT/<repo>:<tag>" when pushed,
	// "oci:<layout dir>:<name>" when written to an OCI layout.
	Reference string `json:"reference"`
	// Destination is "registry" or "layout".
	Destination    string `json:"destination"`
	IndexDigest    string `json:"indexDigest"`
	ManifestDigest string `json:"manifestDigest"`
	// Size is the bytes of the index, the manifest, the config and the compressed layers.
	Size int64 `json:"size"`
	// BuiltFrom is the value of the image's dev.sparkgap.testbed label.
	BuiltFrom string `json:"builtFrom"`
	// K3s tells whether the image is on k3s's list (as opposed to the test's own images).
	K3s bool `json:"k3s"`
}

func (b *Built) result(dest, ref string) Result {
	id, _ := b.Index.Digest()
	md, _ := b.Index.ImageManifest().Digest()
	return Result{
		Name: b.Name, Reference: ref, Destination: dest,
		IndexDigest: id.String(), ManifestDigest: md.String(),
		Size: b.Index.TotalSize(), BuiltFrom: b.BuiltFrom,
	}
}

// Push writes the image index to registry (host:port, plain HTTP) under the repository path of
// its docker.io name, e.g. 127.0.0.1:5000/rancher/mirrored-pause:3.6.
func (b *Built) Push(registry string) (Result, error) {
	refStr := registry + "/" + RepoPath(b.Name)
	ref, err := name.NewTag(refStr, name.Insecure, name.StrictValidation)
	if err != nil {
		return Result{}, fmt.Errorf("image %s: reference %s: %w", b.Name, refStr, err)
	}
	if err := remote.WriteIndex(ref, b.Index, remote.WithTransport(http.DefaultTransport)); err != nil {
		return Result{}, fmt.Errorf("image %s: push to %s: %w", b.Name, refStr, err)
	}
	return b.result("registry", refStr), nil
}

// RefNameAnnotation and ContainerdNameAnnotation name an index.json entry of an OCI layout.
const (
	RefNameAnnotation        = "org.opencontainers.image.ref.name"
	ContainerdNameAnnotation = "io.containerd.image.name"
)

// WriteLayout adds the image index to the OCI layout at dir (created if missing), its
// index.json entry annotated with the docker.io name (org.opencontainers.image.ref.name and
// io.containerd.image.name), replacing an entry of the same name. skopeo reads it as
// oci:DIR:<name>.
func (b *Built) WriteLayout(dir string) (Result, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return Result{}, fmt.Errorf("image %s: %w", b.Name, err)
		}
		if p, err = layout.Write(dir, empty.Index); err != nil {
			return Result{}, fmt.Errorf("image %s: OCI layout %s: %w", b.Name, dir, err)
		}
	}
	ann := map[string]string{RefNameAnnotation: b.Name, ContainerdNameAnnotation: b.Name}
	if err := p.ReplaceIndex(b.Index, match.Annotation(RefNameAnnotation, b.Name), layout.WithAnnotations(ann)); err != nil {
		return Result{}, fmt.Errorf("image %s: OCI layout %s: %w", b.Name, dir, err)
	}
	return b.result("layout", "oci:"+dir+":"+b.Name), nil
}

// Digests returns the index and manifest digests.
func (b *Built) Digests() (index, manifest v1.Hash) {
	index, _ = b.Index.Digest()
	manifest, _ = b.Index.ImageManifest().Digest()
	return
}
