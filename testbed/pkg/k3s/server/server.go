// Package server is `k3s server` of the test bed: it starts the node from the upstream parts in
// the order k3s does and keeps them running (k3s: pkg/cli/server/server.go, pkg/server/server.go,
// pkg/agent/run.go).
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"sparkgap.dev/testbed/pkg/k3s/agent"
	"sparkgap.dev/testbed/pkg/k3s/config"
	"sparkgap.dev/testbed/pkg/k3s/containerd"
	"sparkgap.dev/testbed/pkg/k3s/control"
	"sparkgap.dev/testbed/pkg/k3s/deploy"
	"sparkgap.dev/testbed/pkg/k3s/helm"
	"sparkgap.dev/testbed/pkg/k3s/images"
	"sparkgap.dev/testbed/pkg/k3s/nodectl"
	"sparkgap.dev/testbed/pkg/k3s/pki"
)

// Version is what `k3s --version` reports: the k3s release the test bed stands in for.
const Version = "v1.33.5+k3s1"

// Env are the test bed's knobs, from /etc/default/k3s (testbed/README.md).
type Env struct {
	Parts          string // K3S_TESTBED_PARTS: bin/ and bin/cni/ of scripts/testbed
	HelmController string // K3S_TESTBED_HELM_CONTROLLER: helm-controller's binary
	CgroupRoot     string // K3S_TESTBED_CGROUP_ROOT: the kubelet's cgroupRoot
	LogDir         string // K3S_TESTBED_LOG_DIR: one log per component
	NotifySocket   string // NOTIFY_SOCKET of the service manager
}

// EnvFromOS reads the knobs and takes NOTIFY_SOCKET out of the environment, so no child (the
// apiserver and containerd notify too) can tell the service manager it is ready in k3s's stead
// (k3s: pkg/cli/server/server.go unsets NOTIFY_SOCKET; containerd.go elides it for containerd).
func EnvFromOS() Env {
	e := Env{
		Parts:          os.Getenv("K3S_TESTBED_PARTS"),
		HelmController: os.Getenv("K3S_TESTBED_HELM_CONTROLLER"),
		CgroupRoot:     os.Getenv("K3S_TESTBED_CGROUP_ROOT"),
		LogDir:         os.Getenv("K3S_TESTBED_LOG_DIR"),
		NotifySocket:   os.Getenv("NOTIFY_SOCKET"),
	}
	os.Unsetenv("NOTIFY_SOCKET")
	return e
}

type node struct {
	env   Env
	cfg   *config.Resolved
	log   *Logger
	pki   pki.Paths
	ctrd  containerd.Paths
	agent agent.Paths
	sup   *supervisor
}

func (n *node) bin(name string) string { return filepath.Join(n.env.Parts, "bin", name) }

// Run is `k3s server` with args (the flags after the subcommand, config file already merged in).
// It returns when ctx ends (after stopping every component) or when a component fails.
func Run(ctx context.Context, args []string, env Env, log *Logger) error {
	s, err := config.ParseServer(args, os.Getenv)
	if err != nil {
		return err
	}
	for _, f := range s.Unimplemented {
		log.Warn.Printf("k3s flag --%s is accepted but not implemented by the test bed; ignoring it", f)
	}
	hostname, _ := os.Hostname()
	r, err := config.Resolve(s, hostname, func() (net.IP, error) { return DefaultRouteIP("/proc/net/route") })
	if err != nil {
		return err
	}
	if env.Parts == "" {
		return errors.New("K3S_TESTBED_PARTS is not set (/etc/default/k3s names the test bed's parts directory)")
	}
	if env.LogDir == "" {
		env.LogDir = filepath.Join(r.DataDir, "agent", "logs")
	}
	n := &node{env: env, cfg: r, log: log, ctrd: containerd.Layout(r.DataDir), agent: agent.Layout(r.DataDir), sup: newSupervisor(env.LogDir)}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "containerd", "containerd-shim-runc-v2", "ctr", "runc", "kube-router", "cni/bridge", "cni/host-local", "cni/portmap", "cni/bandwidth", "cni/loopback"} {
		if _, err := os.Stat(n.bin(b)); err != nil {
			return fmt.Errorf("K3S_TESTBED_PARTS=%s: missing part bin/%s", env.Parts, b)
		}
	}
	// k3s puts its own bin directory first on PATH for its children (containerd finds its shim,
	// the CNI plugins find iptables); the parts play that directory.
	os.Setenv("PATH", n.bin("")+string(os.PathListSeparator)+os.Getenv("PATH")+":/usr/local/sbin:/usr/sbin:/sbin")
	// k3s sets NODE_NAME for itself; helm-controller names its events' host by it.
	os.Setenv("NODE_NAME", r.NodeName)
	log.Info.Printf("Starting k3s %s (sparkgap test bed: upstream parts from %s)", Version, env.Parts)

	err = n.run(ctx)
	failed := err != nil && ctx.Err() == nil
	if failed {
		// Said before the shutdown, so the cause leads the log; one line per line of it, so a
		// component's log tail stays readable.
		for _, line := range strings.Split(err.Error(), "\n") {
			log.Error.Print(line)
		}
	}
	n.sup.killed = func(name string) { log.Info.Printf("%s did not stop within the grace period; killed", name) }
	n.sup.stopAll(5 * time.Second)
	if failed {
		return ErrFailed
	}
	log.Info.Printf("k3s stopped; containers keep running in their shims")
	return nil
}

// ErrFailed is returned by Run when a component failed; the cause is already logged.
var ErrFailed = errors.New("k3s failed")

func (n *node) run(ctx context.Context) error {
	r, log := n.cfg, n.log
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fatal := make(chan error, 8)
	report := func(name string, err error) {
		if err != nil && ctx.Err() == nil {
			fatal <- fmt.Errorf("%s: %w", name, err)
		}
	}

	// k3s: pids are required; without the cpu controller CFS quota is turned off
	// (pkg/daemons/agent/agent_linux.go kubeletArgsAndConfig).
	cgroups := agent.CgroupControllers("/proc/self/cgroup")
	if !cgroups["pids"] {
		return errors.New("pids cgroup controller not found")
	}
	if !cgroups["cpu"] {
		log.Warn.Printf("Disabling CPU quotas due to missing cpu controller or cpu.cfs_period_us")
	}

	var err error
	n.pki, err = pki.Ensure(r.DataDir, pki.Request{
		NodeName:      r.NodeName,
		NodeIPs:       r.NodeIPs,
		ServiceIP:     config.IndexedIP(r.ServiceCIDRs[0], 1),
		ClusterDomain: r.ClusterDomain,
		ExtraSANs:     append(append([]string{}, r.TLSSAN...), r.AdvertiseAddress),
		APIServerURL:  control.LocalURL(r),
	}, time.Now())
	if err != nil {
		return err
	}

	// k3s: pkg/agent/syssetup Configure, in the node's own network namespace.
	if err := agent.SetSysctls("/proc/sys", agent.Sysctls(r.NodeIPs[0].To4() == nil), log.Info.Printf); err != nil {
		return err
	}

	// The agent's runtime comes up beside the control plane, as k3s starts its agent
	// concurrently with its server: containerd, then the image import the kubelet waits for.
	runtimeReady := make(chan error, 1)
	var importer *images.Importer
	go func() {
		var err error
		importer, err = n.startRuntime(ctx)
		runtimeReady <- err
	}()

	if err := n.startControlPlane(ctx); err != nil {
		return err
	}
	if err := n.writeAdminKubeconfig(); err != nil {
		return err
	}
	// k3s: pkg/cli/server/server.go, READY=1 once the apiserver is ready.
	log.Info.Printf("k3s is up and running")
	if err := Notify(n.env.NotifySocket, "READY=1\n"); err != nil {
		log.Warn.Printf("Failed to notify the service manager at %s: %v", n.env.NotifySocket, err)
	}

	if !r.DisableScheduler {
		log.Info.Printf("Running kube-scheduler %s", strings.Join(control.SchedulerArgs(r, n.pki), " "))
		if _, err := n.sup.start("kube-scheduler", n.bin("kube-scheduler"), control.SchedulerArgs(r, n.pki), nil); err != nil {
			return err
		}
	}
	log.Info.Printf("Running kube-controller-manager %s", strings.Join(control.ControllerManagerArgs(r, n.pki), " "))
	if _, err := n.sup.start("kube-controller-manager", n.bin("kube-controller-manager"), control.ControllerManagerArgs(r, n.pki), nil); err != nil {
		return err
	}

	// k3s: pkg/server/server.go runControllers, stageFiles (deploy.Stage, deploy.WatchFiles),
	// coreControllers (the node controller, helm-controller).
	dcfg := deploy.Config{DataDir: r.DataDir, Disabled: r.Disabled, Vars: r.Vars, Kubeconfig: n.pki.KubeconfigAdmin, Log: log.Info}
	if err := deploy.Stage(dcfg); err != nil {
		return fmt.Errorf("staging k3s's manifests in %s: %w", dcfg.ManifestsDir(), err)
	}
	go func() { report("deploy controller", deploy.Run(ctx, dcfg)) }()
	go func() { report("node controller", nodectl.Run(ctx, n.pki.KubeconfigAdmin, r.NodeName, log.Info)) }()
	if !r.DisableHelmController {
		if n.env.HelmController == "" {
			return errors.New("K3S_TESTBED_HELM_CONTROLLER is not set and --disable-helm-controller is not given")
		}
		p, err := helm.Start(n.env.LogDir, n.pki.KubeconfigAdmin, n.env.HelmController, r.HelmJobImage)
		if err != nil {
			return err
		}
		n.sup.watch(p, filepath.Join(n.env.LogDir, "helm-controller.log"), true)
	}

	select {
	case err := <-runtimeReady:
		if err != nil {
			return err
		}
	case err := <-n.sup.exits:
		return err
	case err := <-fatal:
		return err
	case <-ctx.Done():
		return nil
	}
	go importer.Watch(ctx, 5*time.Second)

	if err := n.startKubelet(); err != nil {
		return err
	}
	if !r.DisableKubeProxy {
		args := agent.KubeProxyArgs(r, n.pki)
		log.Info.Printf("Running kube-proxy %s", strings.Join(args, " "))
		if _, err := n.sup.start("kube-proxy", n.bin("kube-proxy"), args, nil); err != nil {
			return err
		}
	}
	go func() { report("network", n.startNetwork(ctx)) }()

	select {
	case err := <-n.sup.exits:
		return err
	case err := <-fatal:
		return err
	case <-ctx.Done():
		return nil
	}
}

func (n *node) startRuntime(ctx context.Context) (*images.Importer, error) {
	r, log := n.cfg, n.log
	reg, err := containerd.ReadRegistries(r.PrivateRegistry)
	if err != nil {
		return nil, fmt.Errorf("--private-registry: %w", err)
	}
	hosts := containerd.HostConfigs(reg, r.DisableDefaultRegistryEndpoint, func(w string) { log.Warn.Print(w) })
	if err := containerd.WriteHosts(n.ctrd.Registry, hosts); err != nil {
		return nil, fmt.Errorf("writing %s: %w", n.ctrd.Registry, err)
	}
	toml := containerd.Render(containerd.Config{
		Paths:       n.ctrd,
		PauseImage:  r.PauseImage,
		Snapshotter: r.Snapshotter,
		CNIBinDir:   n.bin("cni"),
		CNIConfDir:  n.agent.CNIConfDir,
		RuncBinary:  n.bin("runc"),
		Registries:  reg,
	})
	if err := pki.WriteFile(n.ctrd.Config, []byte(toml), 0o600); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(n.agent.CNIConfDir, 0o755); err != nil {
		return nil, err
	}
	log.Info.Printf("Logging containerd to %s", filepath.Join(n.env.LogDir, "containerd.log"))
	log.Info.Printf("Running containerd %s", strings.Join(containerd.Args(n.ctrd), " "))
	p, logFile, err := containerd.Start(ctx, n.bin("containerd"), n.ctrd, n.env.LogDir)
	if p != nil {
		n.sup.watch(p, logFile, false)
	}
	if err != nil {
		return nil, fmt.Errorf("containerd: %w", err)
	}
	log.Info.Printf("containerd is now running")
	im := &images.Importer{
		Ctr:             n.bin("ctr"),
		Address:         n.ctrd.Address,
		Dir:             filepath.Join(r.DataDir, "agent", "images"),
		ExtraRegistries: r.AirgapExtraRegistry,
		Log:             log.Info,
	}
	if err := im.Preload(ctx); err != nil {
		return nil, fmt.Errorf("importing images: %w", err)
	}
	return im, nil
}

func (n *node) startControlPlane(ctx context.Context) error {
	r, log := n.cfg, n.log
	if err := os.MkdirAll(control.EtcdDataDir(r.DataDir), 0o700); err != nil {
		return err
	}
	etcd, err := n.sup.start("etcd", n.bin("etcd"), control.EtcdArgs(r), nil)
	if err != nil {
		return err
	}
	args := control.APIServerArgs(r, n.pki)
	log.Info.Printf("Running kube-apiserver %s", strings.Join(args, " "))
	api, err := n.sup.start("kube-apiserver", n.bin("kube-apiserver"), args, nil)
	if err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		select {
		case <-etcd.Done():
		case <-api.Done():
		}
		close(exited)
	}()
	log.Info.Printf("Waiting for API server to become available")
	if err := control.WaitReady(ctx, control.LocalURL(r), n.pki, exited, func(s string) { log.Info.Print(s) }); err != nil {
		select {
		case e := <-n.sup.exits:
			return e
		default:
		}
		return err
	}
	log.Info.Printf("Kube API server is now running")
	return nil
}

// writeAdminKubeconfig writes /etc/rancher/k3s/k3s.yaml (or --write-kubeconfig) with the admin
// certificate embedded, server https://127.0.0.1:6443, mode --write-kubeconfig-mode or 0600
// (k3s: pkg/server/server.go writeKubeConfig). k3s writes it at start; the test bed waits until the
// apiserver is ready, so a client that waits for the file finds the API answering.
func (n *node) writeAdminKubeconfig() error {
	r := n.cfg
	data, err := pki.KubeconfigEmbedded(control.LocalURL(r), n.pki.ServerCA, n.pki.ClientAdmin, n.pki.ClientAdminKey)
	if err != nil {
		return err
	}
	if err := pki.WriteFile(r.KubeconfigPath, data, r.KubeconfigMode); err != nil {
		return fmt.Errorf("--write-kubeconfig %s: %w", r.KubeconfigPath, err)
	}
	n.log.Info.Printf("Wrote kubeconfig %s", r.KubeconfigPath)
	n.log.Info.Printf("Run: k3s kubectl")
	return nil
}

func (n *node) startKubelet() error {
	r, log := n.cfg, n.log
	resolv, err := agent.ResolvConf(r, n.agent, func(w string) { log.Warn.Print(w) })
	if err != nil {
		return err
	}
	cgroupRoot := n.env.CgroupRoot
	if cgroupRoot != "" && !strings.HasPrefix(cgroupRoot, "/") {
		cgroupRoot = "/" + cgroupRoot
	}
	conf, err := agent.KubeletConfig(agent.KubeletSettings{
		Cfg: r, PKI: n.pki, Paths: n.agent, RuntimeSock: n.ctrd.Address, ResolvConf: resolv,
		CgroupRoot: cgroupRoot, NoCPUController: !agent.CgroupControllers("/proc/self/cgroup")["cpu"],
	})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(n.agent.PodManifests, 0o750); err != nil {
		return err
	}
	if err := pki.WriteFile(filepath.Join(n.agent.KubeletConfigDir, agent.KubeletConfigFile), conf, 0o600); err != nil {
		return err
	}
	args := agent.KubeletArgs(r, n.pki, n.agent)
	log.Info.Printf("Running kubelet %s", strings.Join(args, " "))
	_, err = n.sup.start("kubelet", n.bin("kubelet"), args, nil)
	return err
}

// startNetwork waits until the controller manager has given the node its podCIDR, then writes
// the CNI configuration flannel would (k3s: pkg/agent/flannel/setup.go, which also waits for the
// node's podCIDR) and starts the network policy controller (k3s: pkg/agent/netpol/netpol.go,
// which waits for the node too).
func (n *node) startNetwork(ctx context.Context) error {
	r, log := n.cfg, n.log
	rc, err := clientcmd.BuildConfigFromFlags("", n.pki.KubeconfigAdmin)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	var podCIDR string
	for podCIDR == "" {
		node, err := cs.CoreV1().Nodes().Get(ctx, r.NodeName, metav1.GetOptions{})
		if err == nil {
			podCIDR = node.Spec.PodCIDR
		}
		if podCIDR == "" {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
		}
	}
	if r.FlannelBackend == "none" {
		log.Info.Printf("Flannel is disabled (--flannel-backend=none); no CNI configuration written")
	} else {
		log.Info.Printf("Node %s has podCIDR %s; writing %s (bridge cni0, flannel's data path on one node)", r.NodeName, podCIDR, agent.CNIConfFile)
		if err := agent.WriteCNIConf(n.agent.CNIConfDir, podCIDR); err != nil {
			return err
		}
	}
	if r.DisableNetworkPolicy {
		return nil
	}
	// k3s: netpol.Run skips the controller with a warning when ipset cannot be used.
	if out, err := exec.Command("ipset", "save").CombinedOutput(); err != nil {
		log.Warn.Printf("Skipping network policy controller start, ipset unavailable: %v: %s", err, strings.TrimSpace(string(out)))
		return nil
	}
	// k3s runs the controller in-process as system:k3s-controller; kube-router's binary also
	// watches nodes, services and endpoints, which that role does not grant, so it runs as admin.
	args := agent.KubeRouterArgs(r, n.pki.KubeconfigAdmin)
	log.Info.Printf("Starting network policy controller: kube-router %s", strings.Join(args, " "))
	_, err = n.sup.start("kube-router", n.bin("kube-router"), args, nil)
	return err
}
