package localpath

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v11/controller"
)

// sparkgapConfig is config.json as sparkgap's storage stage renders it: a top-level map and one
// entry per local-path class (src/stages/storage.rs, local_path_config).
const sparkgapConfig = `{
  "nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["/var/lib/rancher/k3s/storage"]}],
  "storageClassConfigs": {
    "local-path": {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["/var/lib/rancher/k3s/storage"]}]},
    "fast": {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["/mnt/fast"]}]}
  }
}`

// The helperPod.yaml sparkgap renders.
const sparkgapHelper = `apiVersion: v1
kind: Pod
metadata:
  name: helper-pod
spec:
  containers:
  - name: helper-pod
    image: "docker.io/rancher/mirrored-library-busybox:1.36.1"
    imagePullPolicy: IfNotPresent
`

func TestPathPerClassFromStorageClassConfigs(t *testing.T) {
	c, err := ParseConfig([]byte(sparkgapConfig))
	if err != nil {
		t.Fatal(err)
	}
	for class, want := range map[string]string{"local-path": "/var/lib/rancher/k3s/storage", "fast": "/mnt/fast"} {
		cl, err := c.ClassConfig(class)
		if err != nil {
			t.Fatal(err)
		}
		got, err := cl.BasePath("node1", "")
		if err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", class, got, err, want)
		}
	}
	// nodePath must be one of the class's paths.
	fast, _ := c.ClassConfig("fast")
	if got, err := fast.BasePath("node1", "/mnt/fast"); err != nil || got != "/mnt/fast" {
		t.Errorf("nodePath /mnt/fast: %q %v", got, err)
	}
	if _, err := fast.BasePath("node1", "/var/lib/rancher/k3s/storage"); err == nil ||
		err.Error() != "config doesn't contain path /var/lib/rancher/k3s/storage on node node1" {
		t.Errorf("nodePath outside the class: %v", err)
	}
}

func TestUnexpectedStorageClass(t *testing.T) {
	c, err := ParseConfig([]byte(sparkgapConfig))
	if err != nil {
		t.Fatal(err)
	}
	// The top-level map is ignored once storageClassConfigs is non-empty.
	if _, err := c.ClassConfig("other"); err == nil || err.Error() != "BUG: Got request for unexpected storage class other" {
		t.Fatalf("error %v", err)
	}
	// Without storageClassConfigs, every class takes the top level.
	top, err := ParseConfig([]byte(`{"nodePathMap":[{"node":"DEFAULT_PATH_FOR_NON_LISTED_NODES","paths":["/opt/lpp"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := top.ClassConfig("anything")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := cl.BasePath("n", ""); got != "/opt/lpp" {
		t.Fatalf("top level: %q", got)
	}
}

func TestNodeEntriesAndChecks(t *testing.T) {
	c, err := ParseConfig([]byte(`{"nodePathMap":[
		{"node":"DEFAULT_PATH_FOR_NON_LISTED_NODES","paths":["/d"]},
		{"node":"n1","paths":["/b/","/a"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.CmdTimeoutSeconds != DefaultCmdTimeoutSeconds {
		t.Errorf("timeout %d", c.CmdTimeoutSeconds)
	}
	if got, _ := c.Default.BasePath("n1", ""); got != "/a" {
		t.Errorf("n1: %q", got)
	}
	if got, _ := c.Default.BasePath("n1", "/b"); got != "/b" {
		t.Errorf("n1 /b: %q", got)
	}
	if got, _ := c.Default.BasePath("n2", ""); got != "/d" {
		t.Errorf("n2: %q", got)
	}
	for cfg, want := range map[string]string{
		`{"nodePathMap":[{"node":"n","paths":["rel"]}]}`:                             "path must start with / for path rel on node n",
		`{"nodePathMap":[{"node":"n","paths":["/"]}]}`:                               "cannot use root ('/') as path on node n",
		`{"nodePathMap":[{"node":"n","paths":["/a","/a/"]}]}`:                        "duplicate path /a/ on node n",
		`{"nodePathMap":[{"node":"n","paths":["/a"]},{"node":"n","paths":[]}]}`:      "duplicate node n",
		`{"storageClassConfigs":{"x":{"nodePathMap":[{"node":"n","paths":["r"]}]}}}`: "config for class x is invalid: path must start with / for path r on node n",
	} {
		if _, err := ParseConfig([]byte(cfg)); err == nil || err.Error() != want {
			t.Errorf("%s: %v, want %q", cfg, err, want)
		}
	}
	none, _ := ParseConfig([]byte(`{"nodePathMap":[{"node":"n","paths":["/a"]}]}`))
	if _, err := none.Default.BasePath("m", ""); err == nil || !strings.Contains(err.Error(), "config doesn't contain node m") {
		t.Errorf("unlisted node: %v", err)
	}
}

func claim(ns, name string) *corev1.PersistentVolumeClaim {
	fs := corev1.PersistentVolumeFilesystem
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: "u1"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			VolumeMode:  &fs,
			Resources: corev1.VolumeResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Mi")},
			},
		},
	}
}

func TestVolumeDirName(t *testing.T) {
	got, err := VolumeDirName("", "pvc-123", claim("apps", "data"))
	if err != nil || got != "pvc-123_apps_data" {
		t.Fatalf("%q %v", got, err)
	}
	got, err = VolumeDirName("{{ .PVC.Namespace }}/{{ .PVC.Name }}", "pvc-123", claim("apps", "data"))
	if err != nil || got != "apps/data" {
		t.Fatalf("pattern: %q %v", got, err)
	}
}

func newProvisioner(t *testing.T, client *fake.Clientset) *Provisioner {
	t.Helper()
	p, err := New(client, "kube-system", "local-path-provisioner-service-account", "local-path-config", []byte(sparkgapConfig), []byte(sparkgapHelper))
	if err != nil {
		t.Fatal(err)
	}
	p.PollInterval = time.Millisecond
	return p
}

func TestHelperPodRendering(t *testing.T) {
	p := newProvisioner(t, fake.NewClientset())
	pod, err := p.HelperPod(p.Config(), ActionCreate, []string{"/bin/sh", "/script/setup"},
		Volume{Name: "pvc-123", Path: "/mnt/fast/pvc-123_apps_data", Mode: corev1.PersistentVolumeFilesystem, SizeInBytes: 1048576, Node: "node1"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if pod.Name != "helper-pod-create-pvc-123" || pod.Namespace != "kube-system" || pod.Spec.NodeName != "node1" ||
		pod.Spec.ServiceAccountName != "local-path-provisioner-service-account" || pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Fatalf("pod meta/spec: %s/%s node %q sa %q restart %q", pod.Namespace, pod.Name, pod.Spec.NodeName, pod.Spec.ServiceAccountName, pod.Spec.RestartPolicy)
	}
	c := pod.Spec.Containers[0]
	if c.Image != "docker.io/rancher/mirrored-library-busybox:1.36.1" || strings.Join(c.Command, " ") != "/bin/sh /script/setup" {
		t.Errorf("container %s %q", c.Image, c.Command)
	}
	if got := strings.Join(c.Args, " "); got != "-p /mnt/fast/pvc-123_apps_data -s 1048576 -m Filesystem -a create" {
		t.Errorf("args %q", got)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if env["VOL_DIR"] != "/mnt/fast/pvc-123_apps_data" || env["VOL_MODE"] != "Filesystem" || env["VOL_SIZE_BYTES"] != "1048576" {
		t.Errorf("env %v", env)
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	if mounts["data"] != "/mnt/fast/" || mounts["script"] != "/script" {
		t.Errorf("mounts %v", mounts)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = v
	}
	if hp := vols["data"].HostPath; hp == nil || hp.Path != "/mnt/fast/" || *hp.Type != corev1.HostPathDirectoryOrCreate {
		t.Errorf("data volume %+v", vols["data"])
	}
	if cm := vols["script"].ConfigMap; cm == nil || cm.Name != "local-path-config" || len(cm.Items) != 2 ||
		cm.Items[0].Key != "setup" || cm.Items[1].Key != "teardown" {
		t.Errorf("script volume %+v", vols["script"])
	}
	if len(pod.Spec.Tolerations) != 1 || pod.Spec.Tolerations[0].Operator != corev1.TolerationOpExists {
		t.Errorf("tolerations %+v", pod.Spec.Tolerations)
	}
	if _, err := p.HelperPod(p.Config(), ActionCreate, nil, Volume{Name: "v", Path: "/", Node: "n"}, false); err == nil {
		t.Error("a volume at / was accepted")
	}
}

// completeHelpers makes every created pod report phase (the kubelet's part).
func completeHelpers(client *fake.Clientset, phase corev1.PodPhase, created *[]*corev1.Pod) {
	client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pod := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod).DeepCopy()
		*created = append(*created, pod.DeepCopy())
		pod.Status.Phase = phase
		return false, nil, client.Tracker().Create(corev1.SchemeGroupVersion.WithResource("pods"), pod, pod.Namespace)
	})
}

func TestProvisionAndDelete(t *testing.T) {
	client := fake.NewClientset()
	var created []*corev1.Pod
	completeHelpers(client, corev1.PodSucceeded, &created)
	p := newProvisioner(t, client)
	del := corev1.PersistentVolumeReclaimDelete
	sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "fast"}, Provisioner: Name, ReclaimPolicy: &del,
		Parameters: map[string]string{"nodePath": "/mnt/fast"}}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1", Labels: map[string]string{KeyNode: "node1"}}}
	pv, state, err := p.Provision(context.Background(), controller.ProvisionOptions{
		StorageClass: sc, PVName: "pvc-123", PVC: claim("apps", "data"), SelectedNode: node,
	})
	if err != nil || state != controller.ProvisioningFinished {
		t.Fatalf("provision: %v %v", state, err)
	}
	if pv.Name != "pvc-123" || pv.Spec.HostPath == nil || pv.Spec.HostPath.Path != "/mnt/fast/pvc-123_apps_data" ||
		pv.Spec.PersistentVolumeReclaimPolicy != del || pv.Annotations[SelectedNodeAnnotation] != "node1" {
		t.Fatalf("pv %+v", pv)
	}
	req := pv.Spec.NodeAffinity.Required.NodeSelectorTerms[0].MatchExpressions[0]
	if req.Key != KeyNode || req.Operator != corev1.NodeSelectorOpIn || len(req.Values) != 1 || req.Values[0] != "node1" {
		t.Fatalf("affinity %+v", req)
	}
	if q := pv.Spec.Capacity[corev1.ResourceStorage]; q.String() != "1Mi" {
		t.Fatalf("capacity %s", q.String())
	}
	if len(created) != 1 || created[0].Name != "helper-pod-create-pvc-123" {
		t.Fatalf("helper pods %d", len(created))
	}
	// The helper pod is gone once done.
	if pods, _ := client.CoreV1().Pods("kube-system").List(context.Background(), metav1.ListOptions{}); len(pods.Items) != 0 {
		t.Fatalf("%d helper pods left", len(pods.Items))
	}

	pv.Spec.StorageClassName = "fast"
	if err := p.Delete(context.Background(), pv); err != nil {
		t.Fatal(err)
	}
	if len(created) != 2 || created[1].Name != "helper-pod-delete-pvc-123" || strings.Join(created[1].Spec.Containers[0].Command, " ") != "/bin/sh /script/teardown" {
		t.Fatalf("teardown pod %+v", created[len(created)-1].Name)
	}

	// A class the config does not list fails provisioning with v0.0.31's message.
	sc.Name = "unknown"
	if _, _, err := p.Provision(context.Background(), controller.ProvisionOptions{
		StorageClass: sc, PVName: "pvc-9", PVC: claim("apps", "x"), SelectedNode: node,
	}); err == nil || err.Error() != "BUG: Got request for unexpected storage class unknown" {
		t.Fatalf("unknown class: %v", err)
	}
}

func TestFailedHelperFailsProvisioning(t *testing.T) {
	client := fake.NewClientset()
	var created []*corev1.Pod
	completeHelpers(client, corev1.PodFailed, &created)
	p := newProvisioner(t, client)
	sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "local-path"}, Provisioner: Name}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}}
	_, _, err := p.Provision(context.Background(), controller.ProvisionOptions{
		StorageClass: sc, PVName: "pvc-1", PVC: claim("apps", "data"), SelectedNode: node,
	})
	if err == nil || !strings.Contains(err.Error(), "failed to create volume pvc-1: helper pod helper-pod-create-pvc-1 failed") {
		t.Fatalf("error %v", err)
	}
	// Immediate binding gives no node: refused, as v0.0.31 refuses it.
	_, _, err = p.Provision(context.Background(), controller.ProvisionOptions{StorageClass: sc, PVName: "pvc-2", PVC: claim("apps", "d")})
	if err == nil || err.Error() != "configuration error, no node was specified" {
		t.Fatalf("no node: %v", err)
	}
}

func TestConfigSwapKeepsTheLastValid(t *testing.T) {
	p := newProvisioner(t, fake.NewClientset())
	if err := p.SetConfig([]byte(`{"nodePathMap":[{"node":"n","paths":["rel"]}]}`)); err == nil {
		t.Fatal("invalid config accepted")
	}
	if _, err := p.Config().ClassConfig("fast"); err != nil {
		t.Fatalf("old config lost: %v", err)
	}
	if err := p.SetConfig([]byte(`{"storageClassConfigs":{"slow":{"nodePathMap":[{"node":"DEFAULT_PATH_FOR_NON_LISTED_NODES","paths":["/slow"]}]}}}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Config().ClassConfig("fast"); err == nil {
		t.Fatal("fast still configured")
	}
}

func TestWatchConfigFollowsTheFile(t *testing.T) {
	p := newProvisioner(t, fake.NewClientset())
	path := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(path, []byte(sparkgapConfig), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.WatchConfig(ctx, path, "", 5*time.Millisecond)
	os.WriteFile(path, []byte(`{"storageClassConfigs":{"slow":{"nodePathMap":[{"node":"DEFAULT_PATH_FOR_NON_LISTED_NODES","paths":["/slow"]}]}}}`), 0o644)
	for i := 0; i < 400; i++ {
		if _, err := p.Config().ClassConfig("slow"); err == nil {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("the new config.json was not taken")
}
