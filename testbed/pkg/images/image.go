package images

import (
	"encoding/json"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Label is the config label every test-bed image carries: what the image was built from.
const Label = "dev.sparkgap.testbed"

// Config is the runtime part of an image config, as the real image sets it.
type Config struct {
	Entrypoint []string
	Cmd        []string
	Env        []string
	User       string
	WorkingDir string
	// ExposedPorts like "5000/tcp".
	ExposedPorts []string
	Volumes      []string
	Labels       map[string]string
}

// DefaultPath is the PATH the Docker Hub images of this list set.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Image is a built single-platform linux/amd64 image, all bytes in memory.
type Image struct {
	layers     []*Layer
	rawConfig  []byte
	rawMfst    []byte
	manifest   *v1.Manifest
	configFile *v1.ConfigFile
}

var _ v1.Image = (*Image)(nil)

// NewImage assembles layers (bottom first) and cfg into an OCI image. history names, per
// layer, what it holds (the config's created_by).
func NewImage(cfg Config, layers []*Layer, history []string) (*Image, error) {
	if len(history) != len(layers) {
		return nil, fmt.Errorf("%d layers but %d history entries", len(layers), len(history))
	}
	cf := &v1.ConfigFile{
		Architecture: "amd64",
		OS:           "linux",
		Created:      v1.Time{Time: Epoch},
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			Entrypoint: cfg.Entrypoint,
			Cmd:        cfg.Cmd,
			Env:        cfg.Env,
			User:       cfg.User,
			WorkingDir: cfg.WorkingDir,
			Labels:     cfg.Labels,
		},
	}
	if len(cfg.ExposedPorts) > 0 {
		cf.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range cfg.ExposedPorts {
			cf.Config.ExposedPorts[p] = struct{}{}
		}
	}
	if len(cfg.Volumes) > 0 {
		cf.Config.Volumes = map[string]struct{}{}
		for _, v := range cfg.Volumes {
			cf.Config.Volumes[v] = struct{}{}
		}
	}
	m := &v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1}
	for i, l := range layers {
		cf.RootFS.DiffIDs = append(cf.RootFS.DiffIDs, l.diffID)
		cf.History = append(cf.History, v1.History{Created: v1.Time{Time: Epoch}, CreatedBy: history[i]})
		m.Layers = append(m.Layers, v1.Descriptor{
			MediaType: types.OCILayer,
			Size:      int64(len(l.compressed)),
			Digest:    l.digest,
		})
	}
	rawConfig, err := json.Marshal(cf)
	if err != nil {
		return nil, err
	}
	m.Config = v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(rawConfig)), Digest: sha(rawConfig)}
	rawMfst, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return &Image{layers: layers, rawConfig: rawConfig, rawMfst: rawMfst, manifest: m, configFile: cf}, nil
}

func (i *Image) Layers() ([]v1.Layer, error) {
	out := make([]v1.Layer, len(i.layers))
	for n, l := range i.layers {
		out[n] = l
	}
	return out, nil
}
func (i *Image) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
func (i *Image) Size() (int64, error)                { return int64(len(i.rawMfst)), nil }
func (i *Image) ConfigName() (v1.Hash, error)        { return sha(i.rawConfig), nil }
func (i *Image) ConfigFile() (*v1.ConfigFile, error) { return i.configFile.DeepCopy(), nil }
func (i *Image) RawConfigFile() ([]byte, error)      { return i.rawConfig, nil }
func (i *Image) Digest() (v1.Hash, error)            { return sha(i.rawMfst), nil }
func (i *Image) Manifest() (*v1.Manifest, error)     { return i.manifest.DeepCopy(), nil }
func (i *Image) RawManifest() ([]byte, error)        { return i.rawMfst, nil }
func (i *Image) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	for _, l := range i.layers {
		if l.digest == h {
			return l, nil
		}
	}
	if h == sha(i.rawConfig) {
		// remote.Write uploads the config through LayerByDigest.
		return &Layer{compressed: i.rawConfig, raw: i.rawConfig, digest: h, diffID: h}, nil
	}
	return nil, fmt.Errorf("no layer %s", h)
}
func (i *Image) LayerByDiffID(h v1.Hash) (v1.Layer, error) {
	for _, l := range i.layers {
		if l.diffID == h {
			return l, nil
		}
	}
	return nil, fmt.Errorf("no layer with diff id %s", h)
}

// TotalSize is the bytes of the manifest, the config and the compressed layers.
func (i *Image) TotalSize() int64 {
	n := int64(len(i.rawMfst) + len(i.rawConfig))
	for _, l := range i.layers {
		n += int64(len(l.compressed))
	}
	return n
}

// Index is an OCI image index holding one linux/amd64 manifest, as Docker Hub serves its
// multi-platform images.
type Index struct {
	image *Image
	raw   []byte
	mfst  *v1.IndexManifest
}

var _ v1.ImageIndex = (*Index)(nil)

// NewIndex wraps img in an index.
func NewIndex(img *Image) (*Index, error) {
	m := &v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: types.OCIManifestSchema1,
			Size:      int64(len(img.rawMfst)),
			Digest:    sha(img.rawMfst),
			Platform:  &v1.Platform{Architecture: "amd64", OS: "linux"},
		}},
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return &Index{image: img, raw: raw, mfst: m}, nil
}

func (x *Index) MediaType() (types.MediaType, error)       { return types.OCIImageIndex, nil }
func (x *Index) Digest() (v1.Hash, error)                  { return sha(x.raw), nil }
func (x *Index) Size() (int64, error)                      { return int64(len(x.raw)), nil }
func (x *Index) IndexManifest() (*v1.IndexManifest, error) { return x.mfst.DeepCopy(), nil }
func (x *Index) RawManifest() ([]byte, error)              { return x.raw, nil }
func (x *Index) Image(h v1.Hash) (v1.Image, error) {
	if h == sha(x.image.rawMfst) {
		return x.image, nil
	}
	return nil, fmt.Errorf("no image %s in the index", h)
}
func (x *Index) ImageIndex(h v1.Hash) (v1.ImageIndex, error) {
	return nil, fmt.Errorf("no child index %s", h)
}

// TotalSize is the bytes of the index and everything it holds.
func (x *Index) TotalSize() int64 { return int64(len(x.raw)) + x.image.TotalSize() }

// Manifest is the image inside.
func (x *Index) ImageManifest() *Image { return x.image }
