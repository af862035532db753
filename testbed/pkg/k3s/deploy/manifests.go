package deploy

// k3s's packaged manifests, written here as typed objects from their documented behaviour (none of
// k3s's YAML is copied). k3s embeds manifests/*.yaml and manifests/metrics-server/*.yaml and
// stages them, templated, into server/manifests at every start (k3s: pkg/deploy/stage.go,
// manifests/embed.go). Read: k3s-io/k3s manifests/coredns.yaml at 66c487b, local-storage.yaml at
// d804db3, runtimes.yaml at c77d0b8, rolebindings.yaml at bad2213, ccm.yaml at 13d451f,
// metrics-server/*.yaml at 4de6d2d, 5302152, bad2213, cbd7652 and 63f2211; the v1.33 image tags
// are those of k3s v1.33.5's k3s-images.txt (tests/fixtures/k3s-images-v1.33.5.txt).
//
// Values k3s fills in at staging are written as its placeholders (%{CLUSTER_DNS}% and so on) and
// replaced by Stage, as k3s does with the text of its files.

import (
	"fmt"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

const (
	kubeSystem = "kube-system"
	registry   = "%{SYSTEM_DEFAULT_REGISTRY}%"

	// The images of k3s v1.33.5's packaged manifests (its k3s-images.txt).
	CoreDNSImage     = "rancher/mirrored-coredns-coredns:1.12.3"
	LocalPathImage   = "rancher/local-path-provisioner:v0.0.31"
	HelperImage      = "rancher/mirrored-library-busybox:1.36.1"
	MetricsServerImg = "rancher/mirrored-metrics-server:v0.8.0"
)

// Corefile is k3s's CoreDNS configuration (k3s: manifests/coredns.yaml): the cluster domain, the
// node names of NodeHosts (written by the node controller, see package nodectl), forwarding to the
// pod's resolv.conf (dnsPolicy Default: the node's), and the two import points of the optional
// coredns-custom ConfigMap, `*.override` inside the default block and `*.server` after it, which
// sparkgap's network stage fills.
const Corefile = `.:53 {
    errors
    health {
      lameduck 5s
    }
    ready
    kubernetes %{CLUSTER_DOMAIN}% in-addr.arpa ip6.arpa {
      pods insecure
      fallthrough in-addr.arpa ip6.arpa
    }
    hosts /etc/coredns/NodeHosts {
      ttl 60
      reload 15s
      fallthrough
    }
    prometheus :9153
    forward . /etc/resolv.conf
    cache 30
    loop
    reload
    loadbalance
    import /etc/coredns/custom/*.override
}
import /etc/coredns/custom/*.server
`

// Packaged returns k3s's packaged manifests by their path under server/manifests, untemplated.
func Packaged() (map[string][]byte, error) {
	files := map[string][]runtime.Object{
		"coredns.yaml":       coreDNS(),
		"local-storage.yaml": localStorage(),
		"rolebindings.yaml":  roleBindings(),
		"runtimes.yaml":      runtimes(),
		"ccm.yaml":           ccm(),
		// k3s splits metrics-server into one file per concern (manifests/metrics-server/).
		"metrics-server/aggregated-metrics-reader.yaml": {aggregatedMetricsReader()},
		"metrics-server/auth-delegator.yaml":            {metricsAuthDelegator()},
		"metrics-server/auth-reader.yaml":               {metricsAuthReader()},
		"metrics-server/metrics-apiservice.yaml":        {metricsAPIService()},
		"metrics-server/metrics-server-deployment.yaml": metricsServerDeployment(),
		"metrics-server/metrics-server-service.yaml":    {metricsServerService()},
		"metrics-server/resource-reader.yaml":           metricsResourceReader(),
	}
	out := make(map[string][]byte, len(files))
	for name, objs := range files {
		text, err := toYAML(objs)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out[name] = text
	}
	return out, nil
}

// PackagedNames lists Packaged's paths, sorted (as k3s's manifests.List).
func PackagedNames() []string {
	files, _ := Packaged()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// toYAML writes objects as one multi-document YAML text, leaving out the empty fields typed
// objects carry (creationTimestamp: null, an empty status).
func toYAML(objs []runtime.Object) ([]byte, error) {
	var docs []string
	for _, o := range objs {
		j, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			return nil, err
		}
		dropNulls(j)
		if hollow(j["status"]) {
			delete(j, "status")
		}
		y, err := yaml.Marshal(j)
		if err != nil {
			return nil, err
		}
		docs = append(docs, string(y))
	}
	return []byte(strings.Join(docs, "---\n")), nil
}

// hollow: maps holding nothing but hollow maps (a Service's status: {loadBalancer: {}}).
func hollow(v interface{}) bool {
	m, ok := v.(map[string]interface{})
	if !ok {
		return false
	}
	for _, e := range m {
		if !hollow(e) {
			return false
		}
	}
	return true
}

func dropNulls(m map[string]interface{}) {
	for k, v := range m {
		switch v := v.(type) {
		case nil:
			delete(m, k)
		case map[string]interface{}:
			dropNulls(v)
		case []interface{}:
			for _, e := range v {
				if em, ok := e.(map[string]interface{}); ok {
					dropNulls(em)
				}
			}
		}
	}
}

// Small constructors, so that each manifest below reads as what it declares.

func tm(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}

func om(name, namespace string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: namespace}
}

func rule(groups, resources, verbs []string) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{APIGroups: groups, Resources: resources, Verbs: verbs}
}

func list(s ...string) []string { return s }

func serviceAccount(name string) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{TypeMeta: tm("v1", "ServiceAccount"), ObjectMeta: om(name, kubeSystem)}
}

func clusterRole(name string, rules ...rbacv1.PolicyRule) *rbacv1.ClusterRole {
	return &rbacv1.ClusterRole{TypeMeta: tm("rbac.authorization.k8s.io/v1", "ClusterRole"), ObjectMeta: om(name, ""), Rules: rules}
}

func saSubject(name string) rbacv1.Subject {
	return rbacv1.Subject{Kind: "ServiceAccount", Name: name, Namespace: kubeSystem}
}

func userSubject(name string) rbacv1.Subject {
	return rbacv1.Subject{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: name}
}

func clusterRoleBinding(name, role string, subjects ...rbacv1.Subject) *rbacv1.ClusterRoleBinding {
	return &rbacv1.ClusterRoleBinding{
		TypeMeta:   tm("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
		ObjectMeta: om(name, ""),
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role},
		Subjects:   subjects,
	}
}

func toleration(key string, effect corev1.TaintEffect) corev1.Toleration {
	return corev1.Toleration{Key: key, Operator: corev1.TolerationOpExists, Effect: effect}
}

// systemTolerations: k3s's system pods run on a control plane tainted for critical add-ons only.
func systemTolerations() []corev1.Toleration {
	return []corev1.Toleration{
		toleration("CriticalAddonsOnly", ""),
		toleration("node-role.kubernetes.io/control-plane", corev1.TaintEffectNoSchedule),
		toleration("node-role.kubernetes.io/master", corev1.TaintEffectNoSchedule),
	}
}

func ptr[T any](v T) *T { return &v }

func qty(s string) resource.Quantity { return resource.MustParse(s) }

func httpProbe(path string, port intstr.IntOrString, scheme corev1.URIScheme, initial, period int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: port, Scheme: scheme}},
		InitialDelaySeconds: initial,
		PeriodSeconds:       period,
		TimeoutSeconds:      1,
		SuccessThreshold:    1,
		FailureThreshold:    3,
	}
}

// coreDNS: k3s: manifests/coredns.yaml.
func coreDNS() []runtime.Object {
	labels := map[string]string{"k8s-app": "kube-dns"}
	bootstrapping := map[string]string{"kubernetes.io/bootstrapping": "rbac-defaults"}
	role := clusterRole("system:coredns",
		rule(list(""), list("endpoints", "services", "pods", "namespaces"), list("list", "watch")),
		rule(list("discovery.k8s.io"), list("endpointslices"), list("list", "watch")),
	)
	role.Labels = bootstrapping
	binding := clusterRoleBinding("system:coredns", "system:coredns", saSubject("coredns"))
	binding.Labels = bootstrapping
	binding.Annotations = map[string]string{"rbac.authorization.kubernetes.io/autoupdate": "true"}

	config := &corev1.ConfigMap{
		TypeMeta:   tm("v1", "ConfigMap"),
		ObjectMeta: om("coredns", kubeSystem),
		// NodeHosts is not here: the node controller owns that key.
		Data: map[string]string{"Corefile": Corefile},
	}

	container := corev1.Container{
		Name:            "coredns",
		Image:           registry + CoreDNSImage,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Args:            list("-conf", "/etc/coredns/Corefile"),
		Resources: corev1.ResourceRequirements{
			Limits:   corev1.ResourceList{corev1.ResourceMemory: qty("170Mi")},
			Requests: corev1.ResourceList{corev1.ResourceCPU: qty("100m"), corev1.ResourceMemory: qty("70Mi")},
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: "config-volume", MountPath: "/etc/coredns", ReadOnly: true},
			{Name: "custom-config-volume", MountPath: "/etc/coredns/custom", ReadOnly: true},
		},
		Ports: []corev1.ContainerPort{
			{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
			{Name: "dns-tcp", ContainerPort: 53, Protocol: corev1.ProtocolTCP},
			{Name: "metrics", ContainerPort: 9153, Protocol: corev1.ProtocolTCP},
		},
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr(false),
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_BIND_SERVICE"},
				Drop: []corev1.Capability{"all"},
			},
			ReadOnlyRootFilesystem: ptr(true),
		},
		LivenessProbe:  httpProbe("/health", intstr.FromInt32(8080), corev1.URISchemeHTTP, 60, 10),
		ReadinessProbe: httpProbe("/ready", intstr.FromInt32(8181), corev1.URISchemeHTTP, 0, 2),
	}
	deployment := &appsv1.Deployment{
		TypeMeta: tm("apps/v1", "Deployment"),
		ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: kubeSystem,
			Labels: map[string]string{"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
		Spec: appsv1.DeploymentSpec{
			RevisionHistoryLimit: ptr(int32(0)),
			Strategy: appsv1.DeploymentStrategy{
				Type:          appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: ptr(intstr.FromInt32(1))},
			},
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					PriorityClassName:  "system-cluster-critical",
					ServiceAccountName: "coredns",
					Tolerations:        systemTolerations(),
					NodeSelector:       map[string]string{"kubernetes.io/os": "linux"},
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
						MaxSkew:           1,
						TopologyKey:       "kubernetes.io/hostname",
						WhenUnsatisfiable: corev1.DoNotSchedule,
						LabelSelector:     &metav1.LabelSelector{MatchLabels: labels},
					}},
					Containers: []corev1.Container{container},
					DNSPolicy:  corev1.DNSDefault,
					Volumes: []corev1.Volume{
						{Name: "config-volume", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
							LocalObjectReference: corev1.LocalObjectReference{Name: "coredns"},
							// NodeHosts is a required item: CoreDNS cannot start before the node
							// controller has written it.
							Items: []corev1.KeyToPath{{Key: "Corefile", Path: "Corefile"}, {Key: "NodeHosts", Path: "NodeHosts"}},
						}}},
						{Name: "custom-config-volume", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
							LocalObjectReference: corev1.LocalObjectReference{Name: "coredns-custom"},
							Optional:             ptr(true),
						}}},
					},
				},
			},
		},
	}
	service := &corev1.Service{
		TypeMeta: tm("v1", "Service"),
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: kubeSystem,
			Annotations: map[string]string{"prometheus.io/port": "9153", "prometheus.io/scrape": "true"},
			Labels: map[string]string{"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
				"kubernetes.io/name": "CoreDNS"}},
		Spec: corev1.ServiceSpec{
			Selector:  labels,
			ClusterIP: "%{CLUSTER_DNS}%",
			// k3s writes %{CLUSTER_DNS_LIST}% here (every cluster DNS address of a dual-stack
			// cluster); the test bed is single-stack.
			ClusterIPs:     list("%{CLUSTER_DNS}%"),
			IPFamilyPolicy: ptr(corev1.IPFamilyPolicy("%{CLUSTER_DNS_IPFAMILYPOLICY}%")),
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)},
				{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(53)},
				{Name: "metrics", Port: 9153, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(9153)},
			},
		},
	}
	return []runtime.Object{serviceAccount("coredns"), role, binding, config, deployment, service}
}

// localStorage: k3s: manifests/local-storage.yaml (local-path-provisioner, its configuration
// and the default StorageClass). sparkgap owns these objects itself and writes
// local-storage.yaml.skip, so with sparkgap installed this file is staged but never applied.
func localStorage() []runtime.Object {
	const sa, roleName = "local-path-provisioner-service-account", "local-path-provisioner-role"
	labels := map[string]string{"app": "local-path-provisioner"}
	role := clusterRole(roleName,
		rule(list(""), list("nodes", "persistentvolumeclaims", "configmaps", "pods/log"), list("get", "list", "watch")),
		rule(list(""), list("endpoints", "persistentvolumes", "pods"), list("*")),
		rule(list(""), list("events"), list("create", "patch")),
		rule(list("storage.k8s.io"), list("storageclasses"), list("get", "list", "watch")),
	)
	binding := clusterRoleBinding("local-path-provisioner-bind", roleName, saSubject(sa))
	deployment := &appsv1.Deployment{
		TypeMeta:   tm("apps/v1", "Deployment"),
		ObjectMeta: om("local-path-provisioner", kubeSystem),
		Spec: appsv1.DeploymentSpec{
			RevisionHistoryLimit: ptr(int32(0)),
			Selector:             &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					PriorityClassName:  "system-node-critical",
					ServiceAccountName: sa,
					Tolerations:        systemTolerations(),
					Containers: []corev1.Container{{
						Name:            "local-path-provisioner",
						Image:           registry + LocalPathImage,
						ImagePullPolicy: corev1.PullIfNotPresent,
						Command:         list("local-path-provisioner", "start", "--config", "/etc/config/config.json"),
						VolumeMounts:    []corev1.VolumeMount{{Name: "config-volume", MountPath: "/etc/config/"}},
						Env: []corev1.EnvVar{{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{
							FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}},
					}},
					Volumes: []corev1.Volume{{Name: "config-volume", VolumeSource: corev1.VolumeSource{
						ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "local-path-config"}}}}},
				},
			},
		},
	}
	class := &storagev1.StorageClass{
		TypeMeta: tm("storage.k8s.io/v1", "StorageClass"),
		ObjectMeta: metav1.ObjectMeta{Name: "local-path",
			Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"}},
		Provisioner:       "rancher.io/local-path",
		VolumeBindingMode: ptr(storagev1.VolumeBindingWaitForFirstConsumer),
		ReclaimPolicy:     ptr(corev1.PersistentVolumeReclaimDelete),
	}
	config := &corev1.ConfigMap{
		TypeMeta:   tm("v1", "ConfigMap"),
		ObjectMeta: om("local-path-config", kubeSystem),
		Data: map[string]string{
			// One base directory for every node.
			"config.json": `{"nodePathMap":[{"node":"DEFAULT_PATH_FOR_NON_LISTED_NODES","paths":["%{DEFAULT_LOCAL_STORAGE_PATH}%"]}]}` + "\n",
			// The helper pod creates and removes the volume directory the provisioner passes in
			// VOL_DIR.
			"setup":    "#!/bin/sh\nset -eu\nmkdir -m 0777 -p \"${VOL_DIR}\"\nchmod 700 \"${VOL_DIR}/..\"\n",
			"teardown": "#!/bin/sh\nset -eu\nrm -rf \"${VOL_DIR}\"\n",
			"helperPod.yaml": "apiVersion: v1\nkind: Pod\nmetadata:\n  name: helper-pod\nspec:\n  containers:\n  - name: helper-pod\n" +
				"    image: \"" + registry + HelperImage + "\"\n    imagePullPolicy: IfNotPresent\n",
		},
	}
	return []runtime.Object{serviceAccount(sa), role, binding, deployment, class, config}
}

// roleBindings: k3s: manifests/rolebindings.yaml. The API server's kubelet client (user
// kube-apiserver) may use the kubelet API (logs, exec, port-forward), and k3s's own controllers
// (user system:k3s-controller: its agent's netpol and tunnel) read what they watch.
func roleBindings() []runtime.Object {
	return []runtime.Object{
		clusterRoleBinding("kube-apiserver-kubelet-admin", "system:kubelet-api-admin", userSubject("kube-apiserver")),
		clusterRole("system:k3s-controller",
			rule(list(""), list("nodes"), list("get")),
			rule(list(""), list("namespaces"), list("list", "watch")),
			rule(list("networking.k8s.io"), list("networkpolicies"), list("list", "watch")),
			rule(list(""), list("endpoints", "pods"), list("list", "get", "watch")),
		),
		clusterRoleBinding("system:k3s-controller", "system:k3s-controller", userSubject("system:k3s-controller")),
	}
}

// RuntimeClasses: k3s: manifests/runtimes.yaml. One per runtime k3s's containerd config may
// register (handler = name), created on every node whether or not the runtime is installed.
var RuntimeClasses = []string{"nvidia", "nvidia-experimental", "crun", "lunatic", "slight", "spin", "wws", "wasmedge", "wasmer", "wasmtime"}

func runtimes() []runtime.Object {
	var out []runtime.Object
	for _, name := range RuntimeClasses {
		out = append(out, &nodev1.RuntimeClass{TypeMeta: tm("node.k8s.io/v1", "RuntimeClass"), ObjectMeta: om(name, ""), Handler: name})
	}
	return out
}

// ccm: k3s: manifests/ccm.yaml, the RBAC of k3s's embedded cloud controller (user
// k3s-cloud-controller-manager). The test bed runs no cloud controller; the role is staged and
// applied as k3s does, so the same objects exist and `--disable` of `ccm` behaves the same.
func ccm() []runtime.Object {
	const name = "k3s-cloud-controller-manager"
	b := clusterRoleBinding(name, name, rbacv1.Subject{Kind: "User", Name: name, Namespace: kubeSystem})
	return []runtime.Object{
		clusterRole(name,
			rule(list("coordination.k8s.io"), list("leases"), list("get", "create", "update")),
			rule(list(""), list("events"), list("create", "patch", "update")),
			rule(list(""), list("nodes"), list("*")),
			rule(list(""), list("nodes/status"), list("patch")),
			rule(list(""), list("services"), list("list", "patch", "update", "watch")),
			rule(list(""), list("serviceaccounts"), list("create")),
			rule(list(""), list("persistentvolumes"), list("get", "list", "update", "watch")),
			rule(list(""), list("endpoints"), list("create", "get", "list", "watch", "update")),
		),
		b,
	}
}

// metrics-server: k3s: manifests/metrics-server/.

func aggregatedMetricsReader() runtime.Object {
	r := clusterRole("system:aggregated-metrics-reader",
		rule(list("metrics.k8s.io"), list("pods", "nodes"), list("get", "list", "watch")))
	// Folded into the built-in view, edit and admin roles.
	r.Labels = map[string]string{
		"rbac.authorization.k8s.io/aggregate-to-view":  "true",
		"rbac.authorization.k8s.io/aggregate-to-edit":  "true",
		"rbac.authorization.k8s.io/aggregate-to-admin": "true",
	}
	return r
}

func metricsAuthDelegator() runtime.Object {
	return clusterRoleBinding("metrics-server:system:auth-delegator", "system:auth-delegator", saSubject("metrics-server"))
}

// metricsAuthReader lets metrics-server read the API server's request-header CA
// (extension-apiserver-authentication in kube-system), which aggregation needs.
func metricsAuthReader() runtime.Object {
	return &rbacv1.RoleBinding{
		TypeMeta:   tm("rbac.authorization.k8s.io/v1", "RoleBinding"),
		ObjectMeta: om("metrics-server-auth-reader", kubeSystem),
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "extension-apiserver-authentication-reader"},
		Subjects:   []rbacv1.Subject{saSubject("metrics-server")},
	}
}

// metricsAPIService registers metrics.k8s.io/v1beta1 with the aggregator, served by the
// metrics-server Service (its self-signed certificate is not verified, as in k3s).
func metricsAPIService() runtime.Object {
	return &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "apiregistration.k8s.io/v1",
		"kind":       "APIService",
		"metadata":   map[string]interface{}{"name": "v1beta1.metrics.k8s.io"},
		"spec": map[string]interface{}{
			"service":               map[string]interface{}{"name": "metrics-server", "namespace": kubeSystem},
			"group":                 "metrics.k8s.io",
			"version":               "v1beta1",
			"insecureSkipTLSVerify": true,
			"groupPriorityMinimum":  int64(100),
			"versionPriority":       int64(100),
		},
	}}
}

// metricsTLSCipherSuites: the TLS 1.2 suites k3s allows its components (ECDHE with AES-GCM or
// ChaCha20-Poly1305), which k3s passes to metrics-server too.
const metricsTLSCipherSuites = "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384," +
	"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256," +
	"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"

func metricsServerDeployment() []runtime.Object {
	labels := map[string]string{"k8s-app": "metrics-server"}
	https := intstr.FromString("https")
	deployment := &appsv1.Deployment{
		TypeMeta:   tm("apps/v1", "Deployment"),
		ObjectMeta: metav1.ObjectMeta{Name: "metrics-server", Namespace: kubeSystem, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			RevisionHistoryLimit: ptr(int32(0)),
			Strategy: appsv1.DeploymentStrategy{
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: ptr(intstr.FromInt32(0))},
			},
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Name: "metrics-server", Labels: labels},
				Spec: corev1.PodSpec{
					PriorityClassName:  "system-node-critical",
					ServiceAccountName: "metrics-server",
					Tolerations:        systemTolerations(),
					NodeSelector:       map[string]string{"kubernetes.io/os": "linux"},
					// A writable /tmp for its self-signed serving certificate on a read-only root.
					Volumes: []corev1.Volume{{Name: "tmp-dir", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
					Containers: []corev1.Container{{
						Name:            "metrics-server",
						Image:           registry + MetricsServerImg,
						ImagePullPolicy: corev1.PullIfNotPresent,
						Args: list(
							"--cert-dir=/tmp",
							"--secure-port=10250",
							"--kubelet-preferred-address-types=%{PREFERRED_ADDRESS_TYPES}%",
							"--kubelet-use-node-status-port",
							"--metric-resolution=15s",
							"--tls-cipher-suites="+metricsTLSCipherSuites,
						),
						Resources: corev1.ResourceRequirements{
							Requests: corev1.ResourceList{corev1.ResourceCPU: qty("100m"), corev1.ResourceMemory: qty("70Mi")},
						},
						Ports:          []corev1.ContainerPort{{Name: "https", ContainerPort: 10250, Protocol: corev1.ProtocolTCP}},
						ReadinessProbe: httpProbe("/readyz", https, corev1.URISchemeHTTPS, 0, 2),
						LivenessProbe:  httpProbe("/livez", https, corev1.URISchemeHTTPS, 0, 10),
						SecurityContext: &corev1.SecurityContext{
							ReadOnlyRootFilesystem:   ptr(true),
							RunAsNonRoot:             ptr(true),
							RunAsUser:                ptr(int64(1000)),
							AllowPrivilegeEscalation: ptr(false),
						},
						VolumeMounts: []corev1.VolumeMount{{Name: "tmp-dir", MountPath: "/tmp"}},
					}},
				},
			},
		},
	}
	return []runtime.Object{serviceAccount("metrics-server"), deployment}
}

func metricsServerService() runtime.Object {
	return &corev1.Service{
		TypeMeta: tm("v1", "Service"),
		ObjectMeta: metav1.ObjectMeta{Name: "metrics-server", Namespace: kubeSystem,
			Labels: map[string]string{"kubernetes.io/name": "Metrics-server", "kubernetes.io/cluster-service": "true"}},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"k8s-app": "metrics-server"},
			Ports:    []corev1.ServicePort{{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("https")}},
		},
	}
}

// metricsResourceReader: what metrics-server reads, the kubelets' resource metrics
// (nodes/metrics) among it.
func metricsResourceReader() []runtime.Object {
	return []runtime.Object{
		clusterRole("system:metrics-server",
			rule(list(""), list("nodes/metrics"), list("get")),
			rule(list(""), list("pods", "nodes", "nodes/stats", "namespaces", "configmaps"), list("get", "list", "watch")),
		),
		clusterRoleBinding("system:metrics-server", "system:metrics-server", saSubject("metrics-server")),
	}
}
