// Command local-path-provisioner is the test bed's stand-in for rancher/local-path-provisioner
// v0.0.31 (not served by the Go module proxy), shipped in the image
// docker.io/rancher/local-path-provisioner:v0.0.31 at /usr/bin/local-path-provisioner. It takes
// v0.0.31's command line, so k3s's and sparkgap's Deployment runs it unchanged:
//
//	local-path-provisioner [--debug] start --config /etc/config/config.json
//	    [--provisioner-name rancher.io/local-path]   (env PROVISIONER_NAME)
//	    [--namespace local-path-storage]             (env POD_NAMESPACE)
//	    [--helper-image rancher/library-busybox:1.32.1] (env HELPER_IMAGE; unused, as in v0.0.31:
//	                                                  the image is helperPod.yaml's)
//	    [--service-account-name local-path-provisioner-service-account] (env SERVICE_ACCOUNT_NAME)
//	    [--configmap-name local-path-config] [--helper-pod-file FILE] [--kubeconfig FILE]
//	    [--worker-threads 4] [--provisioning-retry-count 15] [--deletion-retry-count 15]
//
// Without --config, config.json is read from the ConfigMap; without --helper-pod-file,
// helperPod.yaml is read from the ConfigMap (both once, at start, as v0.0.31 does). With
// --config the file is read again every 30 s; with env CONFIG_MOUNT_PATH, helperPod.yaml there
// too. What it does is in package sparkgap.dev/testbed/pkg/localpath.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v11/controller"

	"sparkgap.dev/testbed/pkg/localpath"
)

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func main() {
	args := os.Args[1:]
	for len(args) > 0 && (args[0] == "--debug" || args[0] == "-d") {
		args = args[1:]
	}
	if len(args) == 0 || args[0] != "start" {
		fmt.Fprintln(os.Stderr, "usage: local-path-provisioner [--debug] start --config FILE [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("start", flag.ExitOnError)
	configFile := fs.String("config", "", "provisioner configuration file (config.json)")
	name := fs.String("provisioner-name", env("PROVISIONER_NAME", localpath.Name), "provisioner name")
	namespace := fs.String("namespace", env("POD_NAMESPACE", "local-path-storage"), "the namespace the provisioner runs in (helper pods go there)")
	_ = fs.String("helper-image", env("HELPER_IMAGE", "rancher/library-busybox:1.32.1"), "unused: the helper image is helperPod.yaml's")
	serviceAccount := fs.String("service-account-name", env("SERVICE_ACCOUNT_NAME", "local-path-provisioner-service-account"), "service account of the helper pods")
	configMap := fs.String("configmap-name", "local-path-config", "the ConfigMap holding setup, teardown (and config.json, helperPod.yaml)")
	helperPodFile := fs.String("helper-pod-file", "", "helper pod manifest (default: helperPod.yaml of the ConfigMap)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig, when out of the cluster")
	threads := fs.Int("worker-threads", controller.DefaultThreadiness, "provisioner worker threads")
	provisionRetries := fs.Int("provisioning-retry-count", controller.DefaultFailedProvisionThreshold, "retries of a failed provisioning (0: forever)")
	deleteRetries := fs.Int("deletion-retry-count", controller.DefaultFailedDeleteThreshold, "retries of a failed deletion (0: forever)")
	_ = fs.Parse(args[1:])
	if err := start(*configFile, *name, *namespace, *serviceAccount, *configMap, *helperPodFile, *kubeconfig, *threads, *provisionRetries, *deleteRetries); err != nil {
		klog.Errorf("Error starting daemon: %v", err)
		os.Exit(1)
	}
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	for _, f := range filepath.SplitList(os.Getenv(clientcmd.RecommendedConfigPathEnvVar)) {
		if _, err := os.Stat(f); err == nil {
			return clientcmd.BuildConfigFromFlags("", f)
		}
	}
	if c, err := rest.InClusterConfig(); err == nil {
		return c, nil
	}
	return clientcmd.BuildConfigFromFlags("", clientcmd.RecommendedHomeFile)
}

func start(configFile, name, namespace, serviceAccount, configMap, helperPodFile, kubeconfig string, threads, provisionRetries, deleteRetries int) error {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	rc, err := restConfig(kubeconfig)
	if err != nil {
		return fmt.Errorf("unable to get client config: %w", err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("unable to get k8s client: %w", err)
	}
	switch {
	case name == "":
		return fmt.Errorf("invalid empty flag provisioner-name")
	case namespace == "":
		return fmt.Errorf("invalid empty flag namespace")
	case configMap == "":
		return fmt.Errorf("invalid empty flag configmap-name")
	case serviceAccount == "":
		return fmt.Errorf("invalid empty flag service-account-name")
	case threads <= 0:
		return fmt.Errorf("invalid zero or negative integer flag worker-threads")
	case provisionRetries < 0 || deleteRetries < 0:
		return fmt.Errorf("invalid negative retry count")
	}
	fromConfigMap := func(key string) ([]byte, error) {
		cm, err := client.CoreV1().ConfigMaps(namespace).Get(ctx, configMap, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		v, ok := cm.Data[key]
		if !ok {
			return nil, fmt.Errorf("%v is not exist in %s ConfigMap", key, configMap)
		}
		return []byte(v), nil
	}
	var configJSON, helperPod []byte
	if configFile != "" {
		if configJSON, err = os.ReadFile(configFile); err != nil {
			return fmt.Errorf("fail to load config file %v: %w", configFile, err)
		}
	} else if configJSON, err = fromConfigMap(localpath.ConfigFileKey); err != nil {
		return fmt.Errorf("invalid empty flag config and it also does not exist at ConfigMap %v/%v with err: %w", namespace, configMap, err)
	}
	if helperPodFile != "" {
		if helperPod, err = os.ReadFile(helperPodFile); err != nil {
			return fmt.Errorf("could not open file %v with err: %w", helperPodFile, err)
		}
	} else if helperPod, err = fromConfigMap(localpath.HelperPodFile); err != nil {
		return fmt.Errorf("invalid empty flag helper-pod-file and it also does not exist at ConfigMap %v/%v with err: %w", namespace, configMap, err)
	}
	p, err := localpath.New(client, namespace, serviceAccount, configMap, configJSON, helperPod)
	if err != nil {
		return err
	}
	if configFile != "" {
		reload := ""
		if dir := os.Getenv("CONFIG_MOUNT_PATH"); dir != "" {
			reload = filepath.Join(dir, localpath.HelperPodFile)
		}
		go p.WatchConfig(ctx, configFile, reload, localpath.ConfigFileCheckInterval)
	}
	pc := controller.NewProvisionController(ctx, client, name, p,
		controller.LeaderElection(false),
		controller.FailedProvisionThreshold(provisionRetries),
		controller.FailedDeleteThreshold(deleteRetries),
		controller.Threadiness(threads),
	)
	klog.Infof("Provisioner %s started (namespace %s)", name, namespace)
	pc.Run(ctx)
	klog.Info("Provisioner stopped")
	return nil
}
