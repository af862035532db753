package nodectl

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func node(name string, addrs ...corev1.NodeAddress) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{Addresses: addrs}}
}

func internal(ip string) corev1.NodeAddress {
	return corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip}
}

func TestSyncNodeHosts(t *testing.T) {
	n := addressesOf(node("node1", internal("203.0.113.10"), corev1.NodeAddress{Type: corev1.NodeHostName, Address: "node1"}))
	for _, c := range []struct {
		name, hosts, want string
		node              nodeAddresses
		removed           bool
	}{
		{name: "first line", hosts: "", node: n, want: "203.0.113.10 node1\n"},
		{name: "in sync", hosts: "203.0.113.10 node1\n", node: n, want: "203.0.113.10 node1\n"},
		{name: "address changed", hosts: "203.0.113.9 node1\n", node: n, want: "203.0.113.10 node1\n"},
		{name: "others kept, sorted by address, comments dropped",
			hosts: "# written by hand\n10.0.0.5 other alias\n9.1.1.1 nine\n", node: n,
			want: "9.1.1.1 nine\n10.0.0.5 other alias\n203.0.113.10 node1\n"},
		{name: "hostname differs", hosts: "", node: nodeAddresses{name: "node1", hostName: "host1", ipv4: "203.0.113.10"},
			want: "203.0.113.10 node1 host1\n"},
		{name: "dual stack", hosts: "", node: nodeAddresses{name: "node1", ipv4: "203.0.113.10", ipv6: "2001:db8::10"},
			want: "203.0.113.10 node1\n2001:db8::10 node1\n"},
		{name: "removed", hosts: "10.0.0.5 other\n203.0.113.10 node1\n", node: n, removed: true, want: "10.0.0.5 other\n"},
	} {
		got, ok := syncNodeHosts(c.hosts, c.node, c.removed)
		if !ok || got != c.want {
			t.Errorf("%s: got %q (%v), want %q", c.name, got, ok, c.want)
		}
	}
	if got, ok := syncNodeHosts("10.0.0.5 other\n", nodeAddresses{name: "new"}, false); ok || got != "10.0.0.5 other\n" {
		t.Errorf("a node without an InternalIP changed NodeHosts: %q", got)
	}
}

func updates(cs *fake.Clientset) int {
	n := 0
	for _, a := range cs.Actions() {
		if a.GetVerb() == "update" && a.GetResource().Resource == "configmaps" {
			n++
		}
	}
	return n
}

func TestControllerWritesNodeHostsOnlyWhenItDiffers(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset(node("node1", internal("203.0.113.10")))
	c := &controller{cs: cs, removed: map[string]nodeAddresses{}}

	// No ConfigMap yet: nothing to do, and nothing created.
	if err := c.syncNodeHosts(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ConfigMaps(kubeSystem).Get(ctx, coreDNS, metav1.GetOptions{}); err == nil {
		t.Fatal("the ConfigMap was created")
	}

	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: coreDNS, Namespace: kubeSystem},
		Data: map[string]string{"Corefile": ".:53 {}\n"}}
	if _, err := cs.CoreV1().ConfigMaps(kubeSystem).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.syncNodeHosts(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ := cs.CoreV1().ConfigMaps(kubeSystem).Get(ctx, coreDNS, metav1.GetOptions{})
	if got.Data[NodeHostsKey] != "203.0.113.10 node1\n" || got.Data["Corefile"] != ".:53 {}\n" {
		t.Fatalf("data %v", got.Data)
	}
	before := updates(cs)
	if err := c.syncNodeHosts(ctx); err != nil {
		t.Fatal(err)
	}
	if updates(cs) != before {
		t.Error("an unchanged NodeHosts was written again")
	}

	// A deleted node's line goes.
	if _, err := cs.CoreV1().Nodes().Create(ctx, node("node2", internal("203.0.113.11")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.syncNodeHosts(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cs.CoreV1().Nodes().Delete(ctx, "node2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.removed["node2"] = nodeAddresses{name: "node2", ipv4: "203.0.113.11"}
	if err := c.syncNodeHosts(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ = cs.CoreV1().ConfigMaps(kubeSystem).Get(ctx, coreDNS, metav1.GetOptions{})
	if got.Data[NodeHostsKey] != "203.0.113.10 node1\n" || len(c.removed) != 0 {
		t.Errorf("after delete: %q, pending %v", got.Data[NodeHostsKey], c.removed)
	}
}

func TestServerRoleLabels(t *testing.T) {
	labels, changed := roleLabels(map[string]string{"kubernetes.io/hostname": "node1"})
	if !changed || labels[ControlPlaneRoleLabel] != "true" || labels[MasterRoleLabel] != "true" || labels["kubernetes.io/hostname"] != "node1" {
		t.Errorf("labels %v", labels)
	}
	if _, changed := roleLabels(labels); changed {
		t.Error("labelled twice")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs := fake.NewClientset(node("node1", internal("203.0.113.10")))
	(&controller{cs: cs}).labelServer(ctx, "node1")
	n, _ := cs.CoreV1().Nodes().Get(ctx, "node1", metav1.GetOptions{})
	if n.Labels[ControlPlaneRoleLabel] != "true" || n.Labels[MasterRoleLabel] != "true" {
		t.Errorf("node labels %v", n.Labels)
	}
}
