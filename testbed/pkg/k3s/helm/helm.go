// Package helm runs k3s's helm-controller (github.com/k3s-io/helm-controller, built by
// scripts/helm-controller) the way k3s embeds it: k3s registers the chart controller in its own
// process for all namespaces, named helm-controller, its install Jobs bound to cluster-admin and
// run with k3s's klipper-helm image (k3s: pkg/server/server.go coreControllers). The standalone
// binary takes the same settings as flags (helm-controller v0.16.10 main.go, pkg/cmd/cmd.go).
package helm

import (
	"os"
	"strings"

	"sparkgap.dev/testbed/pkg/proc"
)

// DefaultJobImage is the job image of k3s v1.33.5 (its k3s-images.txt; the helm-controller it
// vendors defaults to it). The standalone v0.16.10 defaults to an older klipper-helm, so the
// image is always passed.
const DefaultJobImage = "rancher/klipper-helm:v0.9.8-build20250709"

// JobImage is the job image k3s uses for a --system-default-registry (k3s prefixes the default
// with the registry; a --helm-job-image would replace it whole).
func JobImage(systemDefaultRegistry string) string {
	if systemDefaultRegistry == "" {
		return DefaultJobImage
	}
	return strings.TrimSuffix(systemDefaultRegistry, "/") + "/" + DefaultJobImage
}

// args are helm-controller's flags. Every setting is a flag, not left to its environment
// variables (NAMESPACE, CONTROLLER_NAME, JOB_CLUSTER_ROLE, ...): the k3s role's environment is
// the site's, and a NAMESPACE there must not narrow the controller to one namespace.
func args(kubeconfig, jobImage, nodeName string) []string {
	a := []string{
		"--kubeconfig=" + kubeconfig,
		"--controller-name=helm-controller",
		"--namespace=", // all namespaces; its leader lock lives in kube-system
		"--job-cluster-role=cluster-admin",
	}
	if jobImage == "" {
		jobImage = DefaultJobImage
	}
	a = append(a, "--default-job-image="+jobImage)
	if nodeName != "" {
		a = append(a, "--node-name="+nodeName) // the host of its Events, as k3s records them
	}
	return a
}

// nodeName is the node k3s's events name: NODE_NAME, which k3s sets for itself, else the
// hostname.
func nodeName() string {
	if n := os.Getenv("NODE_NAME"); n != "" {
		return n
	}
	n, _ := os.Hostname()
	return n
}

// Start runs binary (helm-controller) against kubeconfig, logging to logDir/helm-controller.log,
// with jobImage as the default image of its install Jobs (DefaultJobImage when empty). It
// creates the HelmChart and HelmChartConfig CRDs itself at start, as k3s does before starting
// the embedded controller.
func Start(logDir, kubeconfig, binary, jobImage string) (*proc.Process, error) {
	return proc.Start(logDir, "helm-controller", binary, args(kubeconfig, jobImage, nodeName()), nil)
}
