package helm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestArgs(t *testing.T) {
	got := strings.Join(args("/etc/rancher/k3s/k3s.yaml", "", "node1"), " ")
	want := "--kubeconfig=/etc/rancher/k3s/k3s.yaml --controller-name=helm-controller --namespace= " +
		"--job-cluster-role=cluster-admin --default-job-image=rancher/klipper-helm:v0.9.8-build20250709 --node-name=node1"
	if got != want {
		t.Errorf("args:\n%s\nwant:\n%s", got, want)
	}
	if got := args("k", "registry.local/rancher/klipper-helm:x", ""); got[len(got)-1] != "--default-job-image=registry.local/rancher/klipper-helm:x" {
		t.Errorf("job image: %v", got)
	}
	if JobImage("registry.local:5000/") != "registry.local:5000/rancher/klipper-helm:v0.9.8-build20250709" || JobImage("") != DefaultJobImage {
		t.Error("JobImage")
	}
}

// Start runs the binary with those flags and logs to logDir/helm-controller.log.
func TestStartLogs(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "fake-helm-controller")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := Start(filepath.Join(dir, "logs"), "/k.yaml", bin, "img")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("not finished")
	}
	b, err := os.ReadFile(filepath.Join(dir, "logs", "helm-controller.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "--kubeconfig=/k.yaml") || !strings.Contains(string(b), "--default-job-image=img") {
		t.Errorf("log %q", b)
	}
}
