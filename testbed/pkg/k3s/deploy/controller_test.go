package deploy

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"
)

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestPlanSelectsLikeK3s(t *testing.T) {
	base := t.TempDir()
	for _, name := range []string{
		"coredns.yaml",
		"local-storage.yaml", "local-storage.yaml.skip", // skipped by its .skip
		"metrics-server/metrics-server-deployment.yaml", "metrics-server/notes.txt", // disabled directory: all go
		"traefik.yaml",              // disabled by name
		"traefik.txt",               // not a manifest: never disabled by name
		".hidden.yaml", "README.md", // ignored
		"sparkgap-tanka-app.yaml",        // sparkgap's, applied
		"extra/deep/thing.yml", "x.JSON", // nested and upper-case extensions are manifests
		"other/coredns.yaml.skip", "other/coredns.yaml", // a .skip anywhere skips that name everywhere
	} {
		write(t, filepath.Join(base, name), "")
	}
	files, err := walkFiles(base)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range plan(base, files, map[string]bool{"metrics-server": true, "traefik": true}) {
		rel, _ := filepath.Rel(base, s.path)
		verb := "apply"
		if s.action == actDelete {
			verb = "delete"
		}
		got = append(got, verb+" "+filepath.ToSlash(rel))
	}
	want := []string{
		"delete metrics-server/metrics-server-deployment.yaml",
		"delete metrics-server/notes.txt",
		"apply sparkgap-tanka-app.yaml",
		"delete traefik.yaml",
		"apply x.JSON",
		"apply extra/deep/thing.yml",
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestDisabledByNestedDirectory(t *testing.T) {
	base := "/m"
	if !shouldDisable(base, "/m/a/b/c.yaml", map[string]bool{"a/b": true}) {
		t.Error("a/b disables a/b/c.yaml")
	}
	if shouldDisable(base, "/m/b/c.yaml", map[string]bool{"a/b": true}) {
		t.Error("a/b does not disable b/c.yaml")
	}
	if !shouldDisable(base, "/m/x/local-storage.yaml", map[string]bool{"local-storage": true}) {
		t.Error("a disabled name is disabled in any directory")
	}
	if addonName("/m/metrics-server/metrics-server-deployment.yaml") != "metrics-server-deployment" ||
		addonName("/m/sparkgap-a.b.yaml") != "sparkgap-a" {
		t.Error("addon names are the base name up to the first dot")
	}
}

// The label wrangler puts on the coredns objects of a real k3s (the value sparkgap's tests
// carry, tests/apply.rs).
func TestOwnerMarksAreWranglers(t *testing.T) {
	labels, ann := ownerMarks("coredns")
	if labels[labelHash] != "bce283298811743a0386ab510f2f67ef74240c57" {
		t.Errorf("hash %s", labels[labelHash])
	}
	if ann[labelGVK] != "k3s.cattle.io/v1, Kind=Addon" || ann[labelName] != "coredns" || ann[labelNamespace] != "kube-system" {
		t.Errorf("annotations %v", ann)
	}
}

func TestGVKAnnotationRoundTrip(t *testing.T) {
	gvks := []schema.GroupVersionKind{{Version: "v1", Kind: "Service"}, {Group: "apps", Version: "v1", Kind: "Deployment"}}
	s := gvkString(gvks)
	if s != "/v1, Kind=Service;apps/v1, Kind=Deployment" {
		t.Errorf("annotation %q", s)
	}
	back := parseGVKs(s + ";garbage")
	if len(back) != 2 || back[0] != gvks[0] || back[1] != gvks[1] {
		t.Errorf("parsed %v", back)
	}
}

func TestParseManifest(t *testing.T) {
	objs, err := parseManifest([]byte(`# a comment
---
apiVersion: v1
kind: ConfigMap
metadata: {name: a}
---
---
# only a comment
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: b}
- apiVersion: v1
  kind: Service
  metadata: {name: c}
`))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range objs {
		names = append(names, o.GetKind()+"/"+o.GetName())
	}
	if strings.Join(names, " ") != "ConfigMap/a ConfigMap/b Service/c" {
		t.Errorf("objects %v", names)
	}
	objs, err = parseManifest([]byte(`{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "j"}}`))
	if err != nil || len(objs) != 1 || objs[0].GetName() != "j" {
		t.Errorf("json: %v %v", objs, err)
	}
	if _, err := parseManifest([]byte("kind: [")); err == nil {
		t.Error("bad YAML parsed")
	}
}

var (
	cmGVK     = schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}
	svcGVK    = schema.GroupVersionKind{Version: "v1", Kind: "Service"}
	roleGVK   = schema.GroupVersionKind{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRole"}
	roleGVR   = schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"}
	svcGVR    = schema.GroupVersionResource{Version: "v1", Resource: "services"}
	widgetGVR = schema.GroupVersionResource{Group: "example.com", Version: "v1", Resource: "widgets"}
)

type fakeCluster struct {
	*dynamicfake.FakeDynamicClient
	c *controller
}

// newFake: a dynamic client whose server-side apply creates or replaces (client-go's fake needs
// the object to exist), and a mapper knowing a few kinds.
func newFake(t *testing.T, cfg Config) *fakeCluster {
	t.Helper()
	fake := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		cmGVR: "ConfigMapList", svcGVR: "ServiceList", roleGVR: "ClusterRoleList", addonGVR: "AddonList",
		widgetGVR: "WidgetList",
	})
	fake.PrependReactor("patch", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pa := a.(k8stesting.PatchAction)
		if pa.GetPatchType() != types.ApplyPatchType {
			return false, nil, nil
		}
		obj := &unstructured.Unstructured{}
		if err := json.Unmarshal(pa.GetPatch(), &obj.Object); err != nil {
			return true, nil, err
		}
		tr, gvr, ns := fake.Tracker(), pa.GetResource(), pa.GetNamespace()
		var err error
		if _, gerr := tr.Get(gvr, ns, pa.GetName()); apierrors.IsNotFound(gerr) {
			err = tr.Create(gvr, obj, ns)
		} else {
			err = tr.Update(gvr, obj, ns)
		}
		if err != nil {
			return true, nil, err
		}
		ret, err := tr.Get(gvr, ns, pa.GetName())
		return true, ret, err
	})
	mapper := meta.NewDefaultRESTMapper(nil)
	mapper.Add(cmGVK, meta.RESTScopeNamespace)
	mapper.Add(svcGVK, meta.RESTScopeNamespace)
	mapper.Add(roleGVK, meta.RESTScopeRoot)
	mapper.Add(addonGVK, meta.RESTScopeNamespace)
	return &fakeCluster{FakeDynamicClient: fake, c: newController(cfg, fake, mapper, nil, "deploy@test")}
}

func (f *fakeCluster) get(t *testing.T, gvr schema.GroupVersionResource, ns, name string) *unstructured.Unstructured {
	t.Helper()
	o, err := f.Resource(gvr).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func (f *fakeCluster) applies() int {
	n := 0
	for _, a := range f.Actions() {
		if pa, ok := a.(k8stesting.PatchAction); ok && pa.GetPatchType() == types.ApplyPatchType {
			n++
		}
	}
	return n
}

const appV1 = `apiVersion: v1
kind: ConfigMap
metadata: {name: a, namespace: kube-system}
data: {k: v1}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: r, namespace: ignored-for-cluster-scope}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: b}
`

func TestDeployAppliesTracksPrunesAndDeletes(t *testing.T) {
	ctx := context.Background()
	cfg := Config{DataDir: t.TempDir()}
	file := filepath.Join(cfg.ManifestsDir(), "sparkgap-app.yaml")
	write(t, file, appV1)
	f := newFake(t, cfg)
	// An object of the same kind that is not the file's: never touched.
	foreign := &unstructured.Unstructured{}
	foreign.SetGroupVersionKind(cmGVK)
	foreign.SetNamespace("kube-system")
	foreign.SetName("foreign")
	if _, err := f.Resource(cmGVR).Namespace("kube-system").Create(ctx, foreign, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Forced first pass: everything applied, marked for its Addon, the Addon recorded.
	if err := f.c.pass(ctx, true); err != nil {
		t.Fatal(err)
	}
	a := f.get(t, cmGVR, "kube-system", "a")
	b := f.get(t, cmGVR, "default", "b")
	r := f.get(t, roleGVR, "", "r")
	if a == nil || b == nil || r == nil {
		t.Fatalf("not applied: a=%v b=%v r=%v", a, b, r)
	}
	hash, _ := ownerMarks("sparkgap-app")
	if a.GetLabels()[labelHash] != hash[labelHash] || a.GetAnnotations()[labelName] != "sparkgap-app" {
		t.Errorf("a is not marked for its Addon: %v %v", a.GetLabels(), a.GetAnnotations())
	}
	addon := f.get(t, addonGVR, "kube-system", "sparkgap-app")
	if addon == nil {
		t.Fatal("no Addon")
	}
	content, _ := os.ReadFile(file)
	if sum, _, _ := unstructured.NestedString(addon.Object, "spec", "checksum"); sum != checksum(content) {
		t.Errorf("Addon checksum %q", sum)
	}
	if src, _, _ := unstructured.NestedString(addon.Object, "spec", "source"); src != file {
		t.Errorf("Addon source %q", src)
	}
	if g := addon.GetAnnotations()[GVKAnnotation]; g != "/v1, Kind=ConfigMap;rbac.authorization.k8s.io/v1, Kind=ClusterRole" {
		t.Errorf("Addon GVKs %q", g)
	}

	// Unchanged file, unforced pass: nothing applied.
	before := f.applies()
	if err := f.c.pass(ctx, false); err != nil {
		t.Fatal(err)
	}
	if f.applies() != before {
		t.Error("an unchanged file was applied again")
	}
	// Forced pass (a restart): applied again although unchanged.
	if err := f.c.pass(ctx, true); err != nil {
		t.Fatal(err)
	}
	if f.applies() == before {
		t.Error("the forced pass did not apply")
	}

	// The file loses b and the Service kind appears: b is pruned, the rest stays.
	write(t, file, strings.SplitN(appV1, "---\napiVersion: v1\nkind: List", 2)[0]+
		"---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: kube-system}\n")
	future := time.Now().Add(time.Hour)
	if err := os.Chtimes(file, future, future); err != nil {
		t.Fatal(err)
	}
	if err := f.c.pass(ctx, false); err != nil {
		t.Fatal(err)
	}
	if f.get(t, cmGVR, "default", "b") != nil {
		t.Error("b left the file but not the cluster")
	}
	if f.get(t, cmGVR, "kube-system", "a") == nil || f.get(t, svcGVR, "kube-system", "s") == nil {
		t.Error("objects still in the file are gone")
	}

	// An object marked prune: "false" survives leaving the file.
	s := f.get(t, svcGVR, "kube-system", "s")
	s.SetAnnotations(map[string]string{labelPrune: "false"})
	if _, err := f.Resource(svcGVR).Namespace("kube-system").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Disabled: its objects, its file and its Addon go; the foreign object stays.
	cfg.Disabled = []string{"sparkgap-app"}
	f.c = newController(cfg, f.FakeDynamicClient, f.c.mapper, nil, "deploy@test")
	if err := f.c.pass(ctx, false); err != nil {
		t.Fatal(err)
	}
	if f.get(t, cmGVR, "kube-system", "a") != nil || f.get(t, roleGVR, "", "r") != nil {
		t.Error("a disabled file's objects remain")
	}
	if f.get(t, svcGVR, "kube-system", "s") == nil {
		t.Error("prune: false was not honoured")
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Error("the disabled file remains")
	}
	if f.get(t, addonGVR, "kube-system", "sparkgap-app") != nil {
		t.Error("the disabled file's Addon remains")
	}
	if f.get(t, cmGVR, "kube-system", "foreign") == nil {
		t.Error("an object that was not the file's was deleted")
	}
}

func TestSkippedFileIsNeverApplied(t *testing.T) {
	ctx := context.Background()
	cfg := Config{DataDir: t.TempDir(), Vars: testVars}
	if err := Stage(cfg); err != nil {
		t.Fatal(err)
	}
	dir := cfg.ManifestsDir()
	write(t, filepath.Join(dir, "local-storage.yaml.skip"), "")
	// Only the local-storage file is looked at here.
	for _, name := range []string{"coredns.yaml", "rolebindings.yaml", "runtimes.yaml", "ccm.yaml", "metrics-server"} {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	f := newFake(t, cfg)
	if err := f.c.pass(ctx, true); err != nil {
		t.Fatal(err)
	}
	if f.applies() != 0 || f.get(t, addonGVR, "kube-system", "local-storage") != nil {
		t.Error("local-storage.yaml was applied beside its .skip")
	}
}

func TestUnknownKindFailsTheFileAndIsRetried(t *testing.T) {
	ctx := context.Background()
	cfg := Config{DataDir: t.TempDir()}
	file := filepath.Join(cfg.ManifestsDir(), "crs.yaml")
	write(t, file, "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, namespace: default}\n")
	f := newFake(t, cfg)
	if err := f.c.pass(ctx, true); err == nil || !strings.Contains(err.Error(), "Widget") {
		t.Fatalf("want an error naming the unknown kind, got %v", err)
	}
	if _, ok := f.c.modTime[file]; ok {
		t.Error("a failed file was recorded as done")
	}
	// Its kind becomes known (its CRD is served): the next unforced pass applies it.
	f.c.mapper.(*meta.DefaultRESTMapper).Add(schema.GroupVersionKind{Group: "example.com", Version: "v1", Kind: "Widget"}, meta.RESTScopeNamespace)
	if err := f.c.pass(ctx, false); err != nil {
		t.Fatal(err)
	}
	if f.get(t, widgetGVR, "default", "w") == nil {
		t.Error("not applied once its kind was served")
	}
}

func TestPruneOrderDeletesObjectsBeforeTheirCRDAndNamespace(t *testing.T) {
	crd := schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"}
	ns := schema.GroupVersionKind{Version: "v1", Kind: "Namespace"}
	widget := schema.GroupVersionKind{Group: "example.com", Version: "v1", Kind: "Widget"}
	got := pruneOrder([]schema.GroupVersionKind{crd, ns, widget, cmGVK})
	if got[0] != widget || got[1] != cmGVK || got[2] != ns || got[3] != crd {
		t.Errorf("prune order %v", got)
	}
}
