package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Epoch is the time every layer entry and every image config carries: a fixed instant, so the
// same inputs give the same bytes (ko and other reproducible image builders do the same).
var Epoch = time.Unix(0, 0).UTC()

// GzipLevel is the one compression level of every layer (compress/gzip is deterministic for a
// given level and Go version).
const GzipLevel = gzip.DefaultCompression

type entryKind int

const (
	kindDir entryKind = iota
	kindFile
	kindSymlink
)

type entry struct {
	kind   entryKind
	mode   int64
	data   []byte
	target string
	// source names the host file the data came from, for error messages.
	source string
	xattrs map[string]string
}

// Tree is the content of one layer: absolute paths to directories, files and symlinks, all
// owned by uid/gid 0. Parent directories are implied (mode 0755). Written sorted by path.
type Tree struct {
	entries map[string]*entry
}

// NewTree returns an empty tree.
func NewTree() *Tree { return &Tree{entries: map[string]*entry{}} }

func clean(p string) string {
	p = path.Clean("/" + p)
	return strings.TrimPrefix(p, "/")
}

func (t *Tree) parents(p string) {
	for d := path.Dir(p); d != "." && d != "/" && d != ""; d = path.Dir(d) {
		if _, ok := t.entries[d]; !ok {
			t.entries[d] = &entry{kind: kindDir, mode: 0o755}
		}
	}
}

// Dir adds a directory with the given permission bits (sticky bit included, e.g. 01777).
func (t *Tree) Dir(p string, mode int64) {
	p = clean(p)
	t.parents(p)
	t.entries[p] = &entry{kind: kindDir, mode: mode}
}

// File adds a regular file holding data.
func (t *Tree) File(p string, mode int64, data []byte) {
	p = clean(p)
	t.parents(p)
	t.entries[p] = &entry{kind: kindFile, mode: mode, data: data}
}

// FileFrom adds a regular file with the content of the host file src. The error names src.
func (t *Tree) FileFrom(p string, mode int64, src string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	t.File(p, mode, data)
	t.entries[clean(p)].source = src
	return nil
}

// Symlink adds a symbolic link p -> target.
func (t *Tree) Symlink(p, target string) {
	p = clean(p)
	t.parents(p)
	t.entries[p] = &entry{kind: kindSymlink, mode: 0o777, target: target}
}

// Xattr sets an extended attribute on an existing entry (written as a PAX SCHILY.xattr record,
// which containerd's layer applier turns into setxattr).
func (t *Tree) Xattr(p, name string, value []byte) {
	e := t.entries[clean(p)]
	if e.xattrs == nil {
		e.xattrs = map[string]string{}
	}
	e.xattrs[name] = string(value)
}

// Has reports whether p is in the tree.
func (t *Tree) Has(p string) bool { _, ok := t.entries[clean(p)]; return ok }

// Paths lists the tree's paths, sorted.
func (t *Tree) Paths() []string {
	out := make([]string, 0, len(t.entries))
	for p := range t.entries {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// Tar writes the tree as an uncompressed tar stream: sorted entries, fixed mtimes, uid/gid 0,
// no user or group names.
func (t *Tree) Tar() ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range t.Paths() {
		e := t.entries[p]
		h := &tar.Header{
			Name:    p,
			Mode:    e.mode,
			ModTime: Epoch,
			Uid:     0,
			Gid:     0,
			Format:  tar.FormatPAX,
		}
		switch e.kind {
		case kindDir:
			h.Typeflag = tar.TypeDir
			h.Name += "/"
		case kindFile:
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.data))
		case kindSymlink:
			h.Typeflag = tar.TypeSymlink
			h.Linkname = e.target
		}
		if len(e.xattrs) > 0 {
			h.PAXRecords = map[string]string{}
			for k, v := range e.xattrs {
				h.PAXRecords["SCHILY.xattr."+k] = v
			}
		} else {
			// USTAR when nothing needs PAX: the plainest headers every reader takes.
			h.Format = tar.FormatUSTAR
			if len(p)+1 > 100 {
				h.Format = tar.FormatPAX
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("tar header for /%s: %w", p, err)
		}
		if e.kind == kindFile {
			if _, err := tw.Write(e.data); err != nil {
				return nil, fmt.Errorf("tar data for /%s: %w", p, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Layer turns the tree into a gzip-compressed OCI layer.
func (t *Tree) Layer() (*Layer, error) {
	raw, err := t.Tar()
	if err != nil {
		return nil, err
	}
	return NewLayer(raw)
}

// Layer is an in-memory gzip layer (application/vnd.oci.image.layer.v1.tar+gzip).
type Layer struct {
	compressed []byte
	raw        []byte
	digest     v1.Hash
	diffID     v1.Hash
}

var _ v1.Layer = (*Layer)(nil)

// NewLayer compresses an uncompressed tar stream at GzipLevel with an empty gzip header (no
// name, zero mtime), so the bytes depend on the content alone.
func NewLayer(raw []byte) (*Layer, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, GzipLevel)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(raw); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return &Layer{
		compressed: buf.Bytes(),
		raw:        raw,
		digest:     sha(buf.Bytes()),
		diffID:     sha(raw),
	}, nil
}

func sha(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

func (l *Layer) Digest() (v1.Hash, error) { return l.digest, nil }
func (l *Layer) DiffID() (v1.Hash, error) { return l.diffID, nil }
func (l *Layer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.compressed)), nil
}
func (l *Layer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.raw)), nil
}
func (l *Layer) Size() (int64, error)                { return int64(len(l.compressed)), nil }
func (l *Layer) MediaType() (types.MediaType, error) { return types.OCILayer, nil }
