// Package images imports the image archives of <data-dir>/agent/images into containerd before
// the kubelet starts, as k3s's PreloadImages does (k3s: pkg/agent/containerd/containerd.go,
// pkg/agent/containerd/watcher.go), through the parts' ctr instead of containerd's Go client.
package images

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

const (
	// Namespace is the containerd namespace of the CRI plugin (k3s: criK8sContainerdNamespace).
	Namespace = "k8s.io"
	// PinnedLabel marks images pinned by k3s's import, so a later start can clear them
	// (k3s: k3sPinnedImageLabelKey, "io.cattle." + version.Program + ".pinned").
	PinnedLabel = "io.cattle.k3s.pinned"
	// CRIPinnedLabel keeps the kubelet's image garbage collection off an image (containerd's CRI
	// pinned label, k3s: criPinnedImageLabelKey).
	CRIPinnedLabel = "io.cri-containerd.pinned"
	pinnedValue    = "pinned"
	// CacheFile opts in to importing only new or changed archives (k3s: watcher.go, .cache.json).
	CacheFile = ".cache.json"
)

// SupportedExtensions are the archive suffixes k3s imports (k3s: rancher/wharfie
// pkg/tarfile SupportedExtensions), plus .txt pull lists (k3s: watcher.go isFileSupported).
var SupportedExtensions = []string{".tar", ".tar.lz4", ".tar.bz2", ".tbz", ".tar.gz", ".tgz", ".tar.zst", ".tzst"}

// IsSupported says whether k3s's import looks at path (k3s: watcher.go isFileSupported, a
// case-sensitive suffix match).
func IsSupported(path string) bool {
	for _, ext := range append(SupportedExtensions, ".txt") {
		if strings.HasSuffix(path, ext) {
			return true
		}
	}
	return false
}

// fileInfo is one .cache.json entry (k3s: watcher.go fileInfo, modTime as metav1.Time: RFC 3339
// in seconds).
type fileInfo struct {
	Size    int64     `json:"size"`
	ModTime time.Time `json:"modTime"`
	seen    bool
}

// Importer imports the archives of Dir with the parts' ctr.
type Importer struct {
	Ctr     string // the parts' ctr
	Address string // containerd's socket
	Dir     string // <data-dir>/agent/images
	// ExtraRegistries are --airgap-extra-registry values: imported images are also tagged as if
	// pulled from them (k3s: retagImages).
	ExtraRegistries []string
	Log             *log.Logger

	cache map[string]*fileInfo
	// observed is each file's size and mtime when last looked at: the watch acts on files that
	// changed since, as k3s's acts on fsnotify events, so a file that failed is not retried
	// until it changes.
	observed map[string]fileInfo
}

func (im *Importer) ctr(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	full := append([]string{"--address", im.Address, "--namespace", Namespace}, args...)
	cmd := exec.CommandContext(ctx, im.Ctr, full...)
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// ClearPins removes both pinned labels from every image an earlier start pinned
// (k3s: containerd.go clearLabels).
func (im *Importer) ClearPins(ctx context.Context) error {
	out, err := im.ctr(ctx, nil, "images", "list", "--quiet", fmt.Sprintf("labels.%q==%s", PinnedLabel, pinnedValue))
	if err != nil {
		return err
	}
	var errs []string
	for _, name := range strings.Fields(out) {
		if _, err := im.ctr(ctx, nil, "images", "label", name, PinnedLabel+"=", CRIPinnedLabel+"="); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("clearing pinned labels: %s", strings.Join(errs, "; "))
	}
	return nil
}

// Image is an image an archive created or updated.
type Image struct{ Name, Digest string }

var unpackRE = regexp.MustCompile(`unpacking (\S+) \((sha256:[0-9a-f]{64})\)\.\.\.`)

// ParseImportOutput reads the images `ctr images import --local` reports ("unpacking NAME
// (DIGEST)...done" for each image client.Import returned).
func ParseImportOutput(out string) []Image {
	var imgs []Image
	for _, m := range unpackRE.FindAllStringSubmatch(out, -1) {
		imgs = append(imgs, Image{Name: m[1], Digest: m[2]})
	}
	return imgs
}

// open returns the archive's tar stream, decompressed by its suffix (k3s: wharfie
// tarfile.GetOpener). zstd and lz4 are decompressed by their command-line tools.
func open(path string) (io.ReadCloser, func() error, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	noop := func() error { return nil }
	switch {
	case strings.HasSuffix(path, ".tar"):
		return f, noop, nil
	case strings.HasSuffix(path, ".tar.gz"), strings.HasSuffix(path, ".tgz"):
		z, err := gzip.NewReader(f)
		if err != nil {
			f.Close()
			return nil, nil, err
		}
		return struct {
			io.Reader
			io.Closer
		}{z, f}, noop, nil
	case strings.HasSuffix(path, ".tar.bz2"), strings.HasSuffix(path, ".tbz"):
		return struct {
			io.Reader
			io.Closer
		}{bzip2.NewReader(f), f}, noop, nil
	case strings.HasSuffix(path, ".tar.zst"), strings.HasSuffix(path, ".tzst"),
		strings.HasSuffix(path, ".tar.lz4"):
		tool := "zstd"
		if strings.HasSuffix(path, ".lz4") {
			tool = "lz4"
		}
		cmd := exec.Command(tool, "-dc")
		cmd.Stdin = f
		var errb bytes.Buffer
		cmd.Stderr = &errb
		out, err := cmd.StdoutPipe()
		if err != nil {
			f.Close()
			return nil, nil, err
		}
		if err := cmd.Start(); err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("decompressing %s needs the %s tool: %w", path, tool, err)
		}
		wait := func() error {
			defer f.Close()
			if err := cmd.Wait(); err != nil {
				return fmt.Errorf("%s -dc %s: %w: %s", tool, path, err, strings.TrimSpace(errb.String()))
			}
			return nil
		}
		return out, wait, nil
	}
	f.Close()
	return nil, nil, fmt.Errorf("unhandled file type")
}

var tagRE = regexp.MustCompile(`^[\w][\w.-]{0,127}$`)

// ParseNamedTagged checks that name carries a tag, the way k3s's parseNamedTagged needs
// reference.ParseNormalizedNamed to give a NamedTagged (k3s: containerd.go parseNamedTagged):
// a digest-only or untagged name is an error naming it. It returns the repository and tag.
func ParseNamedTagged(name string) (repo, tag string, err error) {
	ref := name
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	slash := strings.LastIndex(ref, "/")
	colon := strings.LastIndex(ref, ":")
	if colon <= slash || !tagRE.MatchString(ref[colon+1:]) || ref[:colon] == "" {
		return "", "", fmt.Errorf("failed to parse tags for image %s: can't cast it to NamedTagged (a name:tag reference)", name)
	}
	return ref[:colon], ref[colon+1:], nil
}

// repoPath is the repository without its registry host (docker.Path of k3s's retagImages).
func repoPath(repo string) string {
	first, rest, ok := strings.Cut(repo, "/")
	if ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return rest
	}
	if !ok {
		return "library/" + repo
	}
	return repo
}

// ImportFile imports one archive and pins and retags what it created; a .txt pull list is
// reported, not pulled: the test bed's node has no way out (k3s: containerd.go preloadFile).
func (im *Importer) ImportFile(ctx context.Context, path string) ([]Image, error) {
	if strings.HasSuffix(path, ".txt") {
		return nil, fmt.Errorf("pulling images from %s: pull lists are not supported by the test bed (the node is offline)", path)
	}
	r, wait, err := open(path)
	if err != nil {
		return nil, err
	}
	im.Log.Printf("Importing images from %s", path)
	// --local: containerd's client.Import with all platforms, as k3s calls it, then unpacked.
	out, err := im.ctr(ctx, r, "images", "import", "--local", "--all-platforms", "-")
	r.Close()
	if werr := wait(); err == nil {
		err = werr
	}
	if err != nil {
		return nil, fmt.Errorf("failed to import images from %s: %w", path, err)
	}
	imgs := ParseImportOutput(out)
	var errs []string
	for _, img := range imgs {
		// k3s: labelImages, before retagging, so the kubelet's image GC leaves them alone.
		if _, err := im.ctr(ctx, nil, "images", "label", img.Name, PinnedLabel+"="+pinnedValue, CRIPinnedLabel+"="+pinnedValue); err != nil {
			errs = append(errs, "failed to add pinned label to images: "+err.Error())
		}
	}
	for _, img := range imgs {
		repo, tag, err := ParseNamedTagged(img.Name)
		if err != nil {
			errs = append(errs, "failed to retag images: "+err.Error())
			continue
		}
		targets := []string{}
		for _, reg := range im.ExtraRegistries {
			// k3s: retagImages, the image as if pulled from each airgap extra registry.
			if n := reg + "/" + repoPath(repo) + ":" + tag; n != img.Name {
				targets = append(targets, n)
			}
		}
		for _, t := range targets {
			if _, err := im.ctr(ctx, nil, "images", "tag", "--local", "--force", img.Name, t); err != nil {
				errs = append(errs, "failed to tag image "+t+": "+err.Error())
				continue
			}
		}
	}
	for _, img := range imgs {
		im.Log.Printf("Imported %s", img.Name)
	}
	if len(errs) > 0 {
		return imgs, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return imgs, nil
}

func (im *Importer) cachePath() string { return filepath.Join(im.Dir, CacheFile) }

// loadCache reads .cache.json if it exists; an empty file is an empty cache
// (k3s: watcher.go loadCache).
func (im *Importer) loadCache() {
	im.cache = map[string]*fileInfo{}
	data, err := os.ReadFile(im.cachePath())
	if err != nil {
		if !os.IsNotExist(err) {
			im.Log.Printf("Failed to open image import fileinfo cache: %v", err)
		}
		return
	}
	if len(data) == 0 {
		return
	}
	if err := json.Unmarshal(data, &im.cache); err != nil {
		im.Log.Printf("Failed to unmarshal image import fileinfo cache: %v", err)
	}
}

// syncCache writes .cache.json, but only if it already exists: a user opts in by creating it
// (k3s: watcher.go syncCache).
func (im *Importer) syncCache() {
	f, err := os.OpenFile(im.cachePath(), os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		if !os.IsNotExist(err) {
			im.Log.Printf("Failed to truncate image import fileinfo cache: %v", err)
		}
		return
	}
	defer f.Close()
	data, err := json.Marshal(im.cache)
	if err == nil {
		_, err = f.Write(data)
	}
	if err != nil {
		im.Log.Printf("Failed to write image import fileinfo cache: %v", err)
	}
}

// needsImport is k3s's rule: a file is imported when the cache has no entry for it, or when its
// size changed and its mtime is newer than the entry's (k3s: watcher.go processImageEvent).
func needsImport(last *fileInfo, size int64, mtime time.Time) bool {
	return last == nil || (size != last.Size && mtime.After(last.ModTime))
}

// files lists the supported files under Dir, recursively (k3s's watcher adds subdirectories).
func (im *Importer) files() ([]string, error) {
	var out []string
	err := filepath.WalkDir(im.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == im.Dir && os.IsNotExist(err) {
				return fs.SkipAll
			}
			return err
		}
		if !d.IsDir() && IsSupported(p) {
			out = append(out, p)
		}
		return nil
	})
	sort.Strings(out)
	return out, err
}

// scan imports every file the cache rule selects; it reports each failure and goes on, as k3s
// logs "Error encountered while importing" and continues. With onlyChanged, files unchanged since
// the last scan are not looked at.
func (im *Importer) scan(ctx context.Context, onlyChanged bool) {
	if im.observed == nil {
		im.observed = map[string]fileInfo{}
	}
	files, err := im.files()
	if err != nil {
		im.Log.Printf("Unable to read images in %s: %v", im.Dir, err)
	}
	for _, p := range files {
		st, err := os.Stat(p)
		if err != nil {
			continue
		}
		now := fileInfo{Size: st.Size(), ModTime: st.ModTime()}
		if prev, ok := im.observed[p]; onlyChanged && ok && prev.Size == now.Size && prev.ModTime.Equal(now.ModTime) {
			continue
		}
		im.observed[p] = now
		entry := im.cache[p]
		if !needsImport(entry, st.Size(), st.ModTime()) {
			if entry != nil {
				entry.seen = true
			}
			continue
		}
		start := time.Now()
		if _, err := im.ImportFile(ctx, p); err != nil {
			im.Log.Printf("Error encountered while importing %s: %v", p, err)
			continue
		}
		im.Log.Printf("Imported images from %s in %s", p, time.Since(start).Round(time.Millisecond))
		im.cache[p] = &fileInfo{Size: st.Size(), ModTime: st.ModTime().UTC().Truncate(time.Second), seen: true}
		im.syncCache()
	}
}

// Preload clears the pins of an earlier start and imports the directory, blocking until done,
// then prunes cache entries of files that are gone (k3s: PreloadImages, importAndWatchImages).
func (im *Importer) Preload(ctx context.Context) error {
	if err := im.ClearPins(ctx); err != nil {
		return err
	}
	im.loadCache()
	im.scan(ctx, false)
	for p, e := range im.cache {
		if !e.seen {
			delete(im.cache, p)
		}
	}
	im.syncCache()
	return nil
}

// Watch imports files that appear or change while the node runs, every interval until ctx ends
// (k3s watches with fsnotify and imports two seconds after the event; the test bed polls).
func (im *Importer) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			im.scan(ctx, true)
		}
	}
}
