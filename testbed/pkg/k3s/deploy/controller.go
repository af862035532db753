package deploy

// The deploy controller (k3s: pkg/deploy/controller.go, read at 0301210; the 43bde46 the
// research note cites has the same selection rules). What it mirrors:
//
//   - one pass walks server/manifests recursively, in sorted path order;
//   - X is ignored when a file named X.skip is seen anywhere in the walk (k3s keys .skip files by
//     base name), unless X is disabled: disabling comes first;
//   - a file whose base name without its extension, or one of whose parent directories (relative
//     to the manifests directory), is in --disable is deleted together with the objects it
//     created, and so is its Addon;
//   - dotfiles and anything not .yaml, .yml or .json are ignored;
//   - every other file is applied and tracked by an Addon (k3s.cattle.io/v1, kube-system, named
//     after the file's base name up to its first dot) holding spec.source, spec.checksum (sha256
//     of the content) and the addon.k3s.cattle.io/gvks annotation (the kinds it applied);
//   - the first pass is forced: every file is applied whatever its checksum, which is what reverts
//     edits to packaged objects at each k3s start. It stays forced until a pass succeeds. Later
//     passes, every 15 s, look only at files whose mtime changed (or is the epoch), and apply
//     only when the content's checksum differs from the Addon's;
//   - objects are marked as wrangler's apply marks them for their owner Addon (the
//     objectset.rio.cattle.io labels and annotations), and objects so marked that a file no
//     longer declares are deleted (the kinds searched are the file's and those the Addon
//     recorded). Removing a file from the directory deletes nothing, as in k3s.
//
// Where it differs: objects are applied with server-side apply (field manager deploy@<node>,
// forced) instead of wrangler's three-way merge with its objectset.rio.cattle.io/applied
// annotation; no Events are recorded on the Addons; a namespaced object without a namespace goes
// to "default".

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	// GVKAnnotation on an Addon lists the kinds its file applied (k3s: pkg/deploy/controller.go).
	GVKAnnotation = "addon.k3s.cattle.io/gvks"
	gvkSep        = ";"
	interval      = 15 * time.Second

	// The marks wrangler's apply puts on the objects of an owner (rancher/wrangler
	// pkg/apply/desiredset.go, read in the copy rancher/fleet keeps): the hash label selects
	// them, the annotations name the owner.
	labelHash      = "objectset.rio.cattle.io/hash"
	labelID        = "objectset.rio.cattle.io/id"
	labelGVK       = "objectset.rio.cattle.io/owner-gvk"
	labelName      = "objectset.rio.cattle.io/owner-name"
	labelNamespace = "objectset.rio.cattle.io/owner-namespace"
	labelPrune     = "objectset.rio.cattle.io/prune"
)

var (
	addonGVK = schema.GroupVersionKind{Group: "k3s.cattle.io", Version: "v1", Kind: "Addon"}
	addonGVR = schema.GroupVersionResource{Group: "k3s.cattle.io", Version: "v1", Resource: "addons"}
	crdGVR   = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	cmGVR    = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	crdGK    = schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}
	nsGK     = schema.GroupKind{Kind: "Namespace"}
	// Files with this modification time (immutable stores such as /nix/store pin it) are
	// always compared by checksum.
	epoch = time.Unix(0, 0)
)

type controller struct {
	cfg      Config
	dyn      dynamic.Interface
	mapper   meta.RESTMapper
	reset    func() // forget cached discovery (a CRD was just added)
	manager  string
	disabled map[string]bool
	modTime  map[string]time.Time
	crdWait  time.Duration
}

func newController(cfg Config, dyn dynamic.Interface, mapper meta.RESTMapper, reset func(), manager string) *controller {
	if reset == nil {
		reset = func() {}
	}
	return &controller{cfg: cfg, dyn: dyn, mapper: mapper, reset: reset, manager: manager,
		disabled: cfg.disabled(), modTime: map[string]time.Time{}, crdWait: 30 * time.Second}
}

// Run is the deploy controller: it registers the Addon CRD, creates kube-system/cluster-dns,
// then applies the manifests directory, forced, and again every 15 s, until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("deploy: %w", err)
	}
	// k3s's deploy client identifies as deploy@<node> (k3s: pkg/util GetUserAgent), the
	// field manager its changes appear under.
	host, _ := os.Hostname()
	manager := "deploy@" + host
	rc.UserAgent = manager + "/sparkgap-testbed"
	rc.QPS = -1 // no client-side rate limit: a forced pass applies every object at once
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("deploy: %w", err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		return fmt.Errorf("deploy: %w", err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
	c := newController(cfg, dyn, mapper, mapper.Reset, manager)
	if err := c.ensureAddonCRD(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	go c.clusterDNSConfig(ctx)
	// k3s: watcher.start.
	force := true
	for {
		if err := c.pass(ctx, force); err == nil {
			force = false
		} else {
			cfg.logf("Failed to process config: %v", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

// pass is one walk of the manifests directory (k3s: listFilesIn).
func (c *controller) pass(ctx context.Context, force bool) error {
	base := c.cfg.ManifestsDir()
	files, err := walkFiles(base)
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range plan(base, files, c.disabled) {
		switch s.action {
		case actDelete:
			if err := c.delete(ctx, s.path, s.file.removeOnDisable); err != nil {
				errs = append(errs, fmt.Errorf("failed to delete %s: %w", s.path, err))
			}
		case actApply:
			mt := s.file.ModTime()
			if !force && !mt.Equal(epoch) && mt.Equal(c.modTime[s.path]) {
				continue
			}
			if err := c.deploy(ctx, s.path, !force); err != nil {
				errs = append(errs, fmt.Errorf("failed to process %s: %w", s.path, err))
			} else {
				c.modTime[s.path] = mt
			}
		}
	}
	return errors.Join(errs...)
}

type watchedFile struct {
	os.FileInfo
	removeOnDisable bool
}

// walkFiles lists base recursively; a symlinked directory at any level is descended into, its
// files recorded under the link's path and never removed on disable (k3s: walkFiles).
func walkFiles(base string) (map[string]watchedFile, error) {
	files := map[string]watchedFile{}
	err := filepath.Walk(base, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.Mode()&os.ModeSymlink != 0 {
			target, err := os.Stat(path)
			if err != nil {
				return err
			}
			if target.IsDir() {
				real, err := filepath.EvalSymlinks(path)
				if err != nil {
					return err
				}
				return filepath.Walk(real, func(p string, i os.FileInfo, err error) error {
					if err != nil {
						return err
					}
					rel, err := filepath.Rel(real, p)
					if err != nil {
						return err
					}
					files[filepath.Join(path, rel)] = watchedFile{FileInfo: i}
					return nil
				})
			}
		}
		files[path] = watchedFile{FileInfo: info, removeOnDisable: true}
		return nil
	})
	return files, err
}

type action int

const (
	actApply action = iota
	actDelete
)

type step struct {
	path   string
	file   watchedFile
	action action
}

// plan decides, in sorted path order, what a pass does with each file (k3s: listFilesIn,
// shouldDisableFile, shouldSkipFile). Files it leaves out are ignored.
func plan(base string, files map[string]watchedFile, disabled map[string]bool) []step {
	skips := map[string]bool{}
	paths := make([]string, 0, len(files))
	for p, f := range files {
		if strings.HasSuffix(f.Name(), ".skip") {
			skips[strings.TrimSuffix(f.Name(), ".skip")] = true
		}
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var out []step
	for _, p := range paths {
		f := files[p]
		if f.IsDir() {
			continue
		}
		switch {
		case shouldDisable(base, p, disabled):
			out = append(out, step{path: p, file: f, action: actDelete})
		case shouldSkip(f.Name(), skips):
		default:
			out = append(out, step{path: p, file: f, action: actApply})
		}
	}
	return out
}

func isManifest(name string) bool {
	lower := strings.ToLower(name)
	return strings.HasSuffix(lower, ".yaml") || strings.HasSuffix(lower, ".yml") || strings.HasSuffix(lower, ".json")
}

func shouldSkip(name string, skips map[string]bool) bool {
	return strings.HasPrefix(name, ".") || skips[name] || !isManifest(name)
}

// shouldDisable: a parent directory (relative to base, at any depth: a, a/b, ...) is disabled,
// whatever the file; or a manifest's name without its last extension is.
func shouldDisable(base, path string, disabled map[string]bool) bool {
	rel, err := filepath.Rel(base, path)
	if err != nil {
		return false
	}
	parts := strings.Split(filepath.ToSlash(rel), "/")
	for i := 1; i < len(parts); i++ {
		if disabled[filepath.Join(parts[:i]...)] {
			return true
		}
	}
	name := filepath.Base(path)
	if !isManifest(name) {
		return false
	}
	return disabled[strings.TrimSuffix(name, filepath.Ext(name))]
}

// addonName is a file's base name up to its first dot (k3s: basename).
func addonName(path string) string {
	return strings.SplitN(filepath.Base(path), ".", 2)[0]
}

func checksum(b []byte) string {
	d := sha256.Sum256(b)
	return hex.EncodeToString(d[:])
}

// deploy applies one file and records it on its Addon (k3s: watcher.deploy).
func (c *controller) deploy(ctx context.Context, path string, compareChecksum bool) error {
	name := addonName(path)
	addon, err := c.getOrCreateAddon(ctx, name, path)
	if err != nil {
		return err
	}
	content, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	sum := checksum(content)
	if have, _, _ := unstructured.NestedString(addon.Object, "spec", "checksum"); compareChecksum && have == sum {
		return nil
	}
	objs, err := parseManifest(content)
	if err != nil {
		return err
	}
	gvks := append(gvksOf(objs), parseGVKs(addon.GetAnnotations()[GVKAnnotation])...)
	c.cfg.logf("Applying manifest at %q", path)
	if err := c.applySet(ctx, name, objs, gvks); err != nil {
		return err
	}
	c.cfg.logf("Applied manifest at %q", path)
	if err := unstructured.SetNestedField(addon.Object, sum, "spec", "checksum"); err != nil {
		return err
	}
	ann := addon.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[GVKAnnotation] = gvkString(gvksOf(objs))
	addon.SetAnnotations(ann)
	_, err = c.dyn.Resource(addonGVR).Namespace(kubeSystem).Update(ctx, addon, metav1.UpdateOptions{FieldManager: c.manager})
	return err
}

// getOrCreateAddon returns the file's Addon, created now when missing, with spec.source set.
func (c *controller) getOrCreateAddon(ctx context.Context, name, path string) (*unstructured.Unstructured, error) {
	api := c.dyn.Resource(addonGVR).Namespace(kubeSystem)
	addon, err := api.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		addon = &unstructured.Unstructured{}
		addon.SetGroupVersionKind(addonGVK)
		addon.SetNamespace(kubeSystem)
		addon.SetName(name)
		if err := unstructured.SetNestedField(addon.Object, path, "spec", "source"); err != nil {
			return nil, err
		}
		return api.Create(ctx, addon, metav1.CreateOptions{FieldManager: c.manager})
	}
	if err != nil {
		return nil, err
	}
	if err := unstructured.SetNestedField(addon.Object, path, "spec", "source"); err != nil {
		return nil, err
	}
	return addon, nil
}

// delete removes the objects a disabled file created (found by the kinds its Addon recorded and
// those the file declares), the file itself when it is not reached through a symlinked
// directory, and its Addon (k3s: watcher.delete).
func (c *controller) delete(ctx context.Context, path string, removeFile bool) error {
	name := addonName(path)
	var gvks []schema.GroupVersionKind
	addon, err := c.dyn.Resource(addonGVR).Namespace(kubeSystem).Get(ctx, name, metav1.GetOptions{})
	switch {
	case err == nil:
		gvks = parseGVKs(addon.GetAnnotations()[GVKAnnotation])
	case !apierrors.IsNotFound(err):
		return err
	}
	if content, err := os.ReadFile(path); err == nil {
		if objs, err := parseManifest(content); err == nil {
			gvks = append(gvks, gvksOf(objs)...)
		}
	}
	if err := c.applySet(ctx, name, nil, gvks); err != nil {
		return err
	}
	if removeFile {
		if err := os.Remove(path); err != nil {
			return err
		}
	}
	c.cfg.logf("Deleting manifest at %q", path)
	err = c.dyn.Resource(addonGVR).Namespace(kubeSystem).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// ownerMarks are the labels and annotations wrangler gives the objects of owner Addon
// kube-system/<name>: the hash is sha1 of the set id (empty for k3s's deploy controller), the
// owner's GVK, name and namespace, concatenated in that order.
func ownerMarks(name string) (labels, annotations map[string]string) {
	annotations = map[string]string{
		labelID:        "",
		labelGVK:       addonGVK.String(),
		labelName:      name,
		labelNamespace: kubeSystem,
	}
	h := sha1.New()
	for _, k := range []string{labelID, labelGVK, labelName, labelNamespace} {
		h.Write([]byte(annotations[k]))
	}
	return map[string]string{labelHash: hex.EncodeToString(h.Sum(nil))}, annotations
}

type objKey struct {
	gk        schema.GroupKind
	namespace string
	name      string
}

// applySet makes the objects of owner Addon <name> exactly objs: each is applied with the
// owner's marks, then every object carrying those marks, of the kinds in gvks the server serves,
// that objs does not hold is deleted (unless annotated objectset.rio.cattle.io/prune: "false").
// With objs empty, everything the owner created goes.
func (c *controller) applySet(ctx context.Context, name string, objs []*unstructured.Unstructured, gvks []schema.GroupVersionKind) error {
	labels, annotations := ownerMarks(name)
	desired := map[objKey]bool{}
	var errs []error
	crds := 0
	for _, o := range ordered(objs) {
		if o.GroupVersionKind().GroupKind() == crdGK {
			crds++
		} else if crds > 0 {
			// CRDs come first: before the first other object, let them be established so that
			// kinds they define can be applied in the same pass.
			c.waitCRDs(ctx, objs)
			crds = 0
		}
		o = o.DeepCopy()
		mergeStrings(o, labels, (*unstructured.Unstructured).GetLabels, (*unstructured.Unstructured).SetLabels)
		mergeStrings(o, annotations, (*unstructured.Unstructured).GetAnnotations, (*unstructured.Unstructured).SetAnnotations)
		mapping, err := c.mapping(o.GroupVersionKind())
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", o.GetKind(), o.GetName(), err))
			continue
		}
		ri := dynamic.ResourceInterface(c.dyn.Resource(mapping.Resource))
		if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
			if o.GetNamespace() == "" {
				o.SetNamespace(metav1.NamespaceDefault)
			}
			ri = c.dyn.Resource(mapping.Resource).Namespace(o.GetNamespace())
		} else {
			o.SetNamespace("")
		}
		desired[objKey{o.GroupVersionKind().GroupKind(), o.GetNamespace(), o.GetName()}] = true
		if _, err := ri.Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: c.manager, Force: true}); err != nil {
			errs = append(errs, fmt.Errorf("apply %s %s/%s: %w", o.GetKind(), o.GetNamespace(), o.GetName(), err))
		}
	}
	if len(errs) > 0 {
		// Nothing is pruned after a failed apply; the file is retried on the next pass.
		return errors.Join(errs...)
	}
	selector := labelHash + "=" + labels[labelHash]
	seen := map[schema.GroupVersionKind]bool{}
	for _, gvk := range pruneOrder(gvks) {
		if seen[gvk] {
			continue
		}
		seen[gvk] = true
		mapping, err := c.mapping(gvk)
		if meta.IsNoMatchError(err) {
			continue // a kind the server no longer serves (k3s: validateGVKs)
		}
		if err != nil {
			return err
		}
		list, err := c.dyn.Resource(mapping.Resource).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if apierrors.IsNotFound(err) {
			continue // its CRD went moments ago (discovery is cached)
		}
		if err != nil {
			return err
		}
		for i := range list.Items {
			item := &list.Items[i]
			if desired[objKey{gvk.GroupKind(), item.GetNamespace(), item.GetName()}] || item.GetAnnotations()[labelPrune] == "false" {
				continue
			}
			ri := dynamic.ResourceInterface(c.dyn.Resource(mapping.Resource))
			if item.GetNamespace() != "" {
				ri = c.dyn.Resource(mapping.Resource).Namespace(item.GetNamespace())
			}
			background := metav1.DeletePropagationBackground
			err := ri.Delete(ctx, item.GetName(), metav1.DeleteOptions{PropagationPolicy: &background})
			if err != nil && !apierrors.IsNotFound(err) {
				return err
			}
			c.cfg.logf("Deleted %s %s/%s of %s", gvk.Kind, item.GetNamespace(), item.GetName(), name)
		}
	}
	return nil
}

func mergeStrings(o *unstructured.Unstructured, add map[string]string,
	get func(*unstructured.Unstructured) map[string]string, set func(*unstructured.Unstructured, map[string]string)) {
	m := get(o)
	if m == nil {
		m = map[string]string{}
	}
	for k, v := range add {
		m[k] = v
	}
	set(o, m)
}

// ordered puts CustomResourceDefinitions, then Namespaces, before the rest, which keeps the
// file's order.
func ordered(objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	rank := func(o *unstructured.Unstructured) int {
		switch o.GroupVersionKind().GroupKind() {
		case crdGK:
			return 0
		case nsGK:
			return 1
		}
		return 2
	}
	out := append([]*unstructured.Unstructured(nil), objs...)
	sort.SliceStable(out, func(i, j int) bool { return rank(out[i]) < rank(out[j]) })
	return out
}

// pruneOrder is the reverse of the apply order: the objects of a kind go before the CRD that
// defines it, and before the Namespaces holding them.
func pruneOrder(gvks []schema.GroupVersionKind) []schema.GroupVersionKind {
	rank := func(g schema.GroupVersionKind) int {
		switch g.GroupKind() {
		case crdGK:
			return 2
		case nsGK:
			return 1
		}
		return 0
	}
	out := append([]schema.GroupVersionKind(nil), gvks...)
	sort.SliceStable(out, func(i, j int) bool { return rank(out[i]) < rank(out[j]) })
	return out
}

// mapping resolves a kind, asking discovery again once when the kind is unknown (a CRD applied
// moments ago). Still unknown, the file fails and the next pass retries it.
func (c *controller) mapping(gvk schema.GroupVersionKind) (*meta.RESTMapping, error) {
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		c.reset()
		m, err = c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	return m, err
}

// waitCRDs waits (bounded) until the CRDs among objs are established, then forgets discovery.
func (c *controller) waitCRDs(ctx context.Context, objs []*unstructured.Unstructured) {
	deadline := time.Now().Add(c.crdWait)
	for _, o := range objs {
		if o.GroupVersionKind().GroupKind() != crdGK {
			continue
		}
		for !c.established(ctx, o.GetName()) && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(500 * time.Millisecond)
		}
	}
	c.reset()
}

func (c *controller) established(ctx context.Context, name string) bool {
	crd, err := c.dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false
	}
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, cond := range conds {
		m, _ := cond.(map[string]interface{})
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// addonCRD is k3s's Addon CRD (k3s-io/api pkg/crds/yaml/generated/k3s.cattle.io_addons.yaml).
func addonCRD() *unstructured.Unstructured {
	str := map[string]interface{}{"type": "string"}
	return &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   map[string]interface{}{"name": "addons.k3s.cattle.io"},
		"spec": map[string]interface{}{
			"group": "k3s.cattle.io",
			"names": map[string]interface{}{"kind": "Addon", "listKind": "AddonList", "plural": "addons", "singular": "addon"},
			"scope": "Namespaced",
			"versions": []interface{}{map[string]interface{}{
				"name": "v1", "served": true, "storage": true,
				"additionalPrinterColumns": []interface{}{
					map[string]interface{}{"name": "Source", "type": "string", "jsonPath": ".spec.source"},
					map[string]interface{}{"name": "Checksum", "type": "string", "jsonPath": ".spec.checksum"},
				},
				"schema": map[string]interface{}{"openAPIV3Schema": map[string]interface{}{
					"type": "object",
					"properties": map[string]interface{}{
						"spec": map[string]interface{}{"type": "object", "properties": map[string]interface{}{
							"source": str, "checksum": str,
						}},
					},
				}},
			}},
		},
	}}
}

// ensureAddonCRD registers the Addon CRD, as k3s does with its CRDs before its controllers
// start, and waits until it is served; it retries until ctx ends.
func (c *controller) ensureAddonCRD(ctx context.Context) error {
	crd := addonCRD()
	for attempt := 0; ; attempt++ {
		_, err := c.dyn.Resource(crdGVR).Apply(ctx, crd.GetName(), crd, metav1.ApplyOptions{FieldManager: c.manager, Force: true})
		if err == nil && c.established(ctx, crd.GetName()) {
			c.reset()
			return nil
		}
		if err != nil && attempt%15 == 0 {
			c.cfg.logf("Waiting to register the Addon CRD: %v", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// clusterDNSConfig creates ConfigMap kube-system/cluster-dns (clusterDNS, clusterDomain) unless
// it exists, retrying until it can (k3s: pkg/server/server.go setClusterDNSConfig).
func (c *controller) clusterDNSConfig(ctx context.Context) {
	vars := templateVars(c.cfg.Vars)
	dns, domain := vars["%{CLUSTER_DNS}%"], vars["%{CLUSTER_DOMAIN}%"]
	if dns == "" {
		return
	}
	api := c.dyn.Resource(cmGVR).Namespace(kubeSystem)
	cm := &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]interface{}{"name": "cluster-dns", "namespace": kubeSystem},
		"data":     map[string]interface{}{"clusterDNS": dns, "clusterDomain": domain},
	}}
	for {
		if _, err := api.Get(ctx, "cluster-dns", metav1.GetOptions{}); err == nil {
			return
		}
		_, err := api.Create(ctx, cm, metav1.CreateOptions{FieldManager: c.manager})
		if err == nil || apierrors.IsAlreadyExists(err) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// parseManifest reads every object of a YAML (or JSON) file: several documents, and the items
// of a `kind: List` (k3s: yamlToObjects, toObjects).
func parseManifest(content []byte) ([]*unstructured.Unstructured, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReaderSize(bytes.NewReader(content), 4096))
	var out []*unstructured.Unstructured
	for {
		raw, err := reader.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if isEmptyYAML(raw) {
			continue
		}
		j, err := utilyaml.ToJSON(raw)
		if err != nil {
			return nil, err
		}
		obj, _, err := unstructured.UnstructuredJSONScheme.Decode(j, nil, nil)
		if err != nil {
			return nil, err
		}
		switch o := obj.(type) {
		case *unstructured.UnstructuredList:
			for i := range o.Items {
				out = append(out, &o.Items[i])
			}
		case *unstructured.Unstructured:
			out = append(out, o)
		}
	}
	return out, nil
}

// isEmptyYAML: nothing but blank lines, comments and document separators.
func isEmptyYAML(raw []byte) bool {
	for _, l := range bytes.Split(raw, []byte("\n")) {
		s := bytes.TrimSpace(l)
		if len(s) > 0 && string(s) != "---" && !bytes.HasPrefix(s, []byte("#")) {
			return false
		}
	}
	return true
}

func gvksOf(objs []*unstructured.Unstructured) []schema.GroupVersionKind {
	seen := map[schema.GroupVersionKind]bool{}
	var out []schema.GroupVersionKind
	for _, o := range objs {
		if gvk := o.GroupVersionKind(); !seen[gvk] {
			seen[gvk] = true
			out = append(out, gvk)
		}
	}
	return out
}

// gvkString and parseGVKs write and read the Addon's GVK annotation in k3s's form
// ("apps/v1, Kind=Deployment;v1, Kind=Service").
func gvkString(gvks []schema.GroupVersionKind) string {
	s := make([]string, len(gvks))
	for i, g := range gvks {
		s[i] = g.String()
	}
	return strings.Join(s, gvkSep)
}

func parseGVKs(s string) []schema.GroupVersionKind {
	var out []schema.GroupVersionKind
	for _, part := range strings.Split(s, gvkSep) {
		gv, kind, ok := strings.Cut(part, ", Kind=")
		if !ok {
			continue
		}
		group, version, found := strings.Cut(gv, "/")
		if !found {
			group, version = "", gv
		}
		out = append(out, schema.GroupVersionKind{Group: group, Version: version, Kind: kind})
	}
	return out
}
