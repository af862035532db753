// Package control builds the control plane's command lines as k3s sets them
// (k3s: pkg/daemons/control/server.go) and waits for the API server.
//
// k3s keeps its data in kine over sqlite and runs the control plane in its own process; the test
// bed runs etcd from the parts (loopback only, data in server/db/etcd) and the upstream
// kube-apiserver, kube-controller-manager and kube-scheduler as children.
package control

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"sparkgap.dev/testbed/pkg/k3s/config"
	"sparkgap.dev/testbed/pkg/k3s/pki"
)

// EtcdClientURL is where the test bed's etcd serves its clients (loopback, plain HTTP: only
// processes of the node reach it, as kine's socket in k3s).
const EtcdClientURL = "http://127.0.0.1:2379"

// EtcdDataDir is where etcd keeps its data (k3s keeps its sqlite database in server/db too).
func EtcdDataDir(dataDir string) string { return filepath.Join(dataDir, "server", "db", "etcd") }

// EtcdArgs are the test bed's etcd flags merged with --etcd-arg.
func EtcdArgs(r *config.Resolved) []string {
	def := map[string]string{
		"name":                        "k3s",
		"data-dir":                    EtcdDataDir(r.DataDir),
		"listen-client-urls":          EtcdClientURL,
		"advertise-client-urls":       EtcdClientURL,
		"listen-peer-urls":            "http://127.0.0.1:2380",
		"initial-advertise-peer-urls": "http://127.0.0.1:2380",
		"initial-cluster":             "k3s=http://127.0.0.1:2380",
		"listen-metrics-urls":         "http://127.0.0.1:2381",
	}
	return config.GetArgs(def, r.EtcdArgs)
}

func vlevel(def map[string]string, r *config.Resolved) {
	if r.VLevel != "" && r.VLevel != "0" {
		def["v"] = r.VLevel
	}
	if r.VModule != "" {
		def["vmodule"] = r.VModule
	}
}

// AdvertiseAddress is the apiserver's advertised address: --advertise-address, else the node IP,
// so the kubernetes Service's endpoint is node-ip:6443 as on k3s.
func AdvertiseAddress(r *config.Resolved) string {
	if r.AdvertiseAddress != "" {
		return r.AdvertiseAddress
	}
	return r.NodeIPs[0].String()
}

// APIServerArgs are kube-apiserver's flags as k3s sets them (k3s: pkg/daemons/control/server.go
// apiServer), merged with --kube-apiserver-arg. Where the test bed differs:
//   - it serves on --https-listen-port (6443) on all addresses, the port k3s's supervisor takes
//     and proxies to its apiserver on 127.0.0.1:6444; so clients and the kubernetes endpoint
//     meet the apiserver itself there;
//   - storage is the test bed's etcd, not kine;
//   - no egress selector (k3s's tunnels through its supervisor); enable-aggregator-routing is
//     kept, the apiserver reaching aggregated servers' pods over the node's bridge;
//   - no --advertise-port (k3s's patched apiserver has it, upstream's does not).
func APIServerArgs(r *config.Resolved, p pki.Paths) []string {
	domain := r.ClusterDomain
	bind := "0.0.0.0"
	if r.BindAddress != "" {
		bind = r.BindAddress
	}
	def := map[string]string{
		"storage-backend":                    "etcd3",
		"etcd-servers":                       EtcdClientURL,
		"cert-dir":                           filepath.Join(r.DataDir, "server", "tls", "temporary-certs"),
		"allow-privileged":                   "true",
		"enable-bootstrap-token-auth":        "true",
		"service-account-signing-key-file":   p.ServiceKey,
		"service-cluster-ip-range":           config.JoinIPNets(r.ServiceCIDRs),
		"service-node-port-range":            r.ServiceNodePortRange,
		"advertise-address":                  AdvertiseAddress(r),
		"secure-port":                        strconv.Itoa(r.APIServerPort),
		"bind-address":                       bind,
		"enable-aggregator-routing":          "true",
		"tls-cert-file":                      p.ServingAPIServer,
		"tls-private-key-file":               p.ServingAPIServerKey,
		"service-account-key-file":           p.ServiceKey,
		"service-account-issuer":             "https://kubernetes.default.svc." + domain,
		"api-audiences":                      "https://kubernetes.default.svc." + domain + ",k3s",
		"kubelet-certificate-authority":      p.ServerCA,
		"kubelet-client-certificate":         p.ClientKubeAPI,
		"kubelet-client-key":                 p.ClientKubeAPIKey,
		"kubelet-preferred-address-types":    "InternalIP,ExternalIP,Hostname",
		"requestheader-client-ca-file":       p.RequestHeaderCA,
		"requestheader-allowed-names":        pki.RequestHeaderCN,
		"proxy-client-cert-file":             p.ClientAuthProxy,
		"proxy-client-key-file":              p.ClientAuthProxyKey,
		"requestheader-extra-headers-prefix": "X-Remote-Extra-",
		"requestheader-group-headers":        "X-Remote-Group",
		"requestheader-username-headers":     "X-Remote-User",
		"client-ca-file":                     p.ClientCA,
		"enable-admission-plugins":           "NodeRestriction",
		"profiling":                          "false",
	}
	// k3s: leaves these to a user-provided authorization/authentication config file.
	if config.ArgValue("authorization-config", r.APIServerArgs) == "" {
		def["authorization-mode"] = "Node,RBAC"
	}
	if config.ArgValue("authentication-config", r.APIServerArgs) == "" {
		def["anonymous-auth"] = "false"
	}
	vlevel(def, r)
	return config.GetArgs(def, r.APIServerArgs)
}

// ControllerManagerArgs are kube-controller-manager's flags as k3s sets them (k3s:
// pkg/daemons/control/server.go controllerManager), merged with --kube-controller-manager-arg.
// With k3s's cloud controller on (its default) the service, route and cloud-node-lifecycle
// controllers are left to it; the test bed runs no cloud controller and keeps that list, which
// changes nothing without a cloud provider.
func ControllerManagerArgs(r *config.Resolved, p pki.Paths) []string {
	def := map[string]string{
		"controllers":                      "*,tokencleaner",
		"kubeconfig":                       p.KubeconfigController,
		"authorization-kubeconfig":         p.KubeconfigController,
		"authentication-kubeconfig":        p.KubeconfigController,
		"service-account-private-key-file": p.ServiceKey,
		"allocate-node-cidrs":              "true",
		"service-cluster-ip-range":         config.JoinIPNets(r.ServiceCIDRs),
		"cluster-cidr":                     config.JoinIPNets(r.ClusterCIDRs),
		"root-ca-file":                     p.ServerCA,
		"profiling":                        "false",
		"tls-cert-file":                    p.ServingController,
		"tls-private-key-file":             p.ServingControllerKey,
		"bind-address":                     "127.0.0.1",
		"secure-port":                      "10257",
		"use-service-account-credentials":  "true",
		// One CA (see package pki): every signer is it.
		"cluster-signing-kube-apiserver-client-cert-file": p.ClientCA,
		"cluster-signing-kube-apiserver-client-key-file":  p.ClientCAKey,
		"cluster-signing-kubelet-client-cert-file":        p.ClientCA,
		"cluster-signing-kubelet-client-key-file":         p.ClientCAKey,
		"cluster-signing-kubelet-serving-cert-file":       p.ServerCA,
		"cluster-signing-kubelet-serving-key-file":        p.ServerCAKey,
		"cluster-signing-legacy-unknown-cert-file":        p.ServerCA,
		"cluster-signing-legacy-unknown-key-file":         p.ServerCAKey,
	}
	if !r.DisableCloudController {
		def["configure-cloud-routes"] = "false"
		def["controllers"] += ",-service,-route,-cloud-node-lifecycle"
	}
	vlevel(def, r)
	return config.GetArgs(def, r.ControllerManagerArgs)
}

// SchedulerArgs are kube-scheduler's flags as k3s sets them (k3s: pkg/daemons/control/server.go
// scheduler), merged with --kube-scheduler-arg.
func SchedulerArgs(r *config.Resolved, p pki.Paths) []string {
	def := map[string]string{
		"kubeconfig":                p.KubeconfigScheduler,
		"authorization-kubeconfig":  p.KubeconfigScheduler,
		"authentication-kubeconfig": p.KubeconfigScheduler,
		"bind-address":              "127.0.0.1",
		"secure-port":               "10259",
		"tls-cert-file":             p.ServingScheduler,
		"tls-private-key-file":      p.ServingSchedulerKey,
		"profiling":                 "false",
	}
	vlevel(def, r)
	return config.GetArgs(def, r.SchedulerArgs)
}

// LocalURL is how the node's own clients reach the apiserver (k3s's kubeconfigs name
// https://127.0.0.1:6443, its supervisor).
func LocalURL(r *config.Resolved) string {
	host := "127.0.0.1"
	if r.BindAddress != "" && r.BindAddress != "0.0.0.0" && r.BindAddress != "::" {
		host = r.BindAddress
	}
	return "https://" + net.JoinHostPort(host, strconv.Itoa(r.APIServerPort))
}

// WaitReady polls the apiserver's /readyz with the admin client certificate until it answers
// 200 (k3s waits the same way before it starts its controllers and notifies systemd), failing
// early when exited closes.
func WaitReady(ctx context.Context, url string, p pki.Paths, exited <-chan struct{}, progress func(string)) error {
	caPEM, err := os.ReadFile(p.ServerCA)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(p.ClientAdmin, p.ClientAdminKey)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
	}}
	last := ""
	lastReport := time.Now()
	for {
		resp, err := client.Get(url + "/readyz")
		if err == nil {
			body := make([]byte, 4096)
			n, _ := resp.Body.Read(body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body[:n])))
		} else {
			last = err.Error()
		}
		if time.Since(lastReport) > 30*time.Second {
			progress("Waiting for API server to become available: " + last)
			lastReport = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return fmt.Errorf("kube-apiserver exited before it was ready (last answer: %s)", last)
		case <-time.After(time.Second):
		}
	}
}
