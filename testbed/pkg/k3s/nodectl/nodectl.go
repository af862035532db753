package nodectl

import (
	"context"
	"fmt"
	"log"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	kubeSystem = "kube-system"
	coreDNS    = "coredns"

	// The role labels k3s gives a server's own node (k3s: pkg/util MasterRoleLabelKey,
	// ControlPlaneRoleLabelKey).
	ControlPlaneRoleLabel = "node-role.kubernetes.io/control-plane"
	MasterRoleLabel       = "node-role.kubernetes.io/master"

	resync = 30 * time.Second
)

// Run keeps NodeHosts of kube-system/coredns in step with the nodes (every node's InternalIPs
// and names, rewritten only when it differs, other keys untouched) and labels nodeName as a
// control-plane node, until ctx ends.
//
// Like k3s it never creates the ConfigMap (the deploy controller applies it from coredns.yaml):
// until it exists there is nothing to write, and its appearance triggers the write. k3s reacts
// to node events only; this also reacts to the ConfigMap, so the order of the two does not
// matter, and rechecks every 30 s.
func Run(ctx context.Context, kubeconfig, nodeName string, log *log.Logger) error {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("nodectl: %w", err)
	}
	rc.UserAgent = "k3s-node-controller/sparkgap-testbed"
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("nodectl: %w", err)
	}
	c := &controller{cs: cs, log: log, removed: map[string]nodeAddresses{}}
	go c.labelServer(ctx, nodeName)

	kick := make(chan struct{}, 1)
	poke := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	nodes := informers.NewSharedInformerFactory(cs, resync)
	_, err = nodes.Core().V1().Nodes().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(interface{}) { poke() },
		UpdateFunc: func(interface{}, interface{}) { poke() },
		DeleteFunc: func(obj interface{}) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if n, ok := obj.(*corev1.Node); ok {
				c.mu.Lock()
				c.removed[n.Name] = addressesOf(n)
				c.mu.Unlock()
			}
			poke()
		},
	})
	if err != nil {
		return err
	}
	configMaps := informers.NewSharedInformerFactoryWithOptions(cs, resync, informers.WithNamespace(kubeSystem),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = "metadata.name=" + coreDNS }))
	_, err = configMaps.Core().V1().ConfigMaps().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(interface{}) { poke() },
		UpdateFunc: func(interface{}, interface{}) { poke() },
	})
	if err != nil {
		return err
	}
	nodes.Start(ctx.Done())
	configMaps.Start(ctx.Done())
	defer nodes.Shutdown()
	defer configMaps.Shutdown()

	retry := time.NewTimer(resync)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
		case <-retry.C:
		}
		wait := resync
		if err := c.syncNodeHosts(ctx); err != nil {
			c.logf("Failed to sync coredns NodeHosts: %v", err)
			wait = 2 * time.Second
		}
		if !retry.Stop() {
			select {
			case <-retry.C:
			default:
			}
		}
		retry.Reset(wait)
	}
}

type controller struct {
	cs      kubernetes.Interface
	log     *log.Logger
	mu      sync.Mutex
	removed map[string]nodeAddresses // deleted nodes whose lines still have to go
}

func (c *controller) logf(format string, args ...interface{}) {
	if c.log != nil {
		c.log.Printf(format, args...)
	}
}

// syncNodeHosts applies every node (and every node deleted since the last success) to
// NodeHosts, and updates the ConfigMap when the result differs.
func (c *controller) syncNodeHosts(ctx context.Context) error {
	cm, err := c.cs.CoreV1().ConfigMaps(kubeSystem).Get(ctx, coreDNS, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil // not applied yet (or CoreDNS is disabled): its creation triggers a new sync
	}
	if err != nil {
		return err
	}
	list, err := c.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	c.mu.Lock()
	removed := make(map[string]nodeAddresses, len(c.removed))
	for k, v := range c.removed {
		removed[k] = v
	}
	c.mu.Unlock()

	current := cm.Data[NodeHostsKey]
	hosts := current
	names := make([]string, 0, len(removed))
	for name := range removed {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		hosts, _ = syncNodeHosts(hosts, removed[name], true)
	}
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
	for i := range list.Items {
		n := &list.Items[i]
		delete(removed, n.Name) // a node back under the same name is not removed
		hosts, _ = syncNodeHosts(hosts, addressesOf(n), n.DeletionTimestamp != nil)
	}
	if hosts != current {
		cm = cm.DeepCopy()
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[NodeHostsKey] = hosts
		if _, err := c.cs.CoreV1().ConfigMaps(kubeSystem).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			return err
		}
		c.logf("Synced coredns NodeHosts: %q", hosts)
	}
	c.mu.Lock()
	for name := range removed {
		delete(c.removed, name)
	}
	c.mu.Unlock()
	return nil
}

// roleLabels returns labels with k3s's server role labels: when the control-plane label is not
// "true", both it and the legacy master label are set (k3s: setNodeLabelsAndAnnotations).
func roleLabels(labels map[string]string) (map[string]string, bool) {
	if labels[ControlPlaneRoleLabel] == "true" {
		return labels, false
	}
	out := make(map[string]string, len(labels)+2)
	for k, v := range labels {
		out[k] = v
	}
	out[ControlPlaneRoleLabel] = "true"
	out[MasterRoleLabel] = "true"
	return out, true
}

// labelServer labels the server's own node once it has registered, retrying every second.
func (c *controller) labelServer(ctx context.Context, nodeName string) {
	for attempt := 0; ; attempt++ {
		node, err := c.cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err == nil {
			labels, changed := roleLabels(node.Labels)
			if !changed {
				return
			}
			node = node.DeepCopy()
			node.Labels = labels
			if _, err = c.cs.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err == nil {
				c.logf("Labels and annotations have been set successfully on node: %s", nodeName)
				return
			}
		}
		if attempt%30 == 0 {
			c.logf("Waiting for control-plane node %s startup: %v", nodeName, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}
