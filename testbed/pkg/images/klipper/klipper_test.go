package klipper

import (
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// run executes the entry script under busybox sh (the image's shell; /bin/sh otherwise) with a
// fake helm that logs its arguments and answers `helm list` with listJSON. It returns the
// logged helm calls (one per line) and the exit status.
func run(t *testing.T, listJSON string, env map[string]string, files map[string]string, args ...string) ([]string, int, string) {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"config", "chart", "auth", "ca-files", "tmp"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	for p, c := range files {
		os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644)
	}
	entry := filepath.Join(dir, "entry")
	os.WriteFile(entry, Entry, 0o755)
	calls := filepath.Join(dir, "calls")
	os.WriteFile(filepath.Join(dir, "list.json"), []byte(listJSON), 0o644)
	helm := filepath.Join(dir, "helm")
	os.WriteFile(helm, []byte(`#!/bin/sh
echo "$*" >> `+calls+`
case $1 in
list) cat `+filepath.Join(dir, "list.json")+` ;;
install) [ -z "$FAIL_INSTALL" ] || exit 3 ;;
esac
`), 0o755)
	shell := "/bin/sh"
	argv := []string{entry}
	if _, err := os.Stat("/bin/busybox"); err == nil {
		shell = "/bin/busybox"
		argv = []string{"sh", entry}
	}
	cmd := exec.Command(shell, append(argv, args...)...)
	cmd.Env = []string{
		"PATH=/usr/bin:/bin", "HELM=" + helm, "TERM_LOG=" + filepath.Join(dir, "termlog"),
		"CONFIG_DIR=" + filepath.Join(dir, "config"), "CHART_DIR=" + filepath.Join(dir, "chart"),
		"AUTH_DIR=" + filepath.Join(dir, "auth"), "CA_DIR=" + filepath.Join(dir, "ca-files"),
		"WORK_DIR=" + filepath.Join(dir, "tmp"),
		"NAME=app", "TARGET_NAMESPACE=apps", "CHART_NAMESPACE=kube-system", "HELM_DRIVER=secret",
		"KUBERNETES_SERVICE_HOST=10.43.0.1", "KUBERNETES_SERVICE_PORT=443",
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, _ := cmd.CombinedOutput()
	code := cmd.ProcessState.ExitCode()
	data, _ := os.ReadFile(calls)
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if l != "" {
			lines = append(lines, strings.ReplaceAll(l, dir, "D"))
		}
	}
	return lines, code, string(out)
}

func TestInstallsAChartFromItsContentWithValues(t *testing.T) {
	content := base64.StdEncoding.EncodeToString([]byte("not really a tgz"))
	calls, code, out := run(t, "[]", map[string]string{"CHART": "app", "TIMEOUT": "5m0s"},
		map[string]string{
			"chart/app.tgz.base64":                             content,
			"config/values-0-000-HelmChart-ValuesContent.yaml": "a: 1\n",
		},
		"install", "--namespace", "apps", "--create-namespace", "--set-string", "greeting=hello world")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	want := []string{
		"list --all --namespace apps --filter ^app$ --output json",
		"install --namespace apps --create-namespace --set-string greeting=hello world app D/tmp/app.tgz --timeout 5m0s --values D/config/values-0-000-HelmChart-ValuesContent.yaml",
	}
	if strings.Join(calls, "\n") != strings.Join(want, "\n") {
		t.Fatalf("helm calls:\n%s\nwant:\n%s\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"), out)
	}
}

func TestUpgradesADeployedRelease(t *testing.T) {
	list := `[{"name":"app","namespace":"apps","revision":"2","updated":"x","status":"deployed","chart":"app-1.0.0","app_version":"1.0"}]`
	calls, code, out := run(t, list, map[string]string{"CHART": "app/app", "REPO": "http://203.0.113.1:8080/charts", "VERSION": "1.0.0"}, nil,
		"install", "--namespace", "apps", "--version", "1.0.0")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	want := []string{
		"repo add app http://203.0.113.1:8080/charts",
		"repo update",
		"list --all --namespace apps --filter ^app$ --output json",
		"upgrade --namespace apps --version 1.0.0 app app/app",
	}
	if strings.Join(calls, "\n") != strings.Join(want, "\n") {
		t.Fatalf("helm calls:\n%s\nwant:\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"))
	}
}

func TestReinstallsAFailedRelease(t *testing.T) {
	list := `[{"name":"app","namespace":"apps","revision":"1","status":"failed"}]`
	calls, code, out := run(t, list, map[string]string{"CHART": "http://%{KUBERNETES_API}%/static/app.tgz"}, nil, "install")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	want := []string{
		"repo remove stable",
		"list --all --namespace apps --filter ^app$ --output json",
		"uninstall app --namespace apps --wait",
		"install app http://10.43.0.1:443/static/app.tgz",
	}
	if strings.Join(calls, "\n") != strings.Join(want, "\n") {
		t.Fatalf("helm calls:\n%s\nwant:\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"))
	}
	_, code, _ = run(t, list, map[string]string{"CHART": "app", "FAILURE_POLICY": "abort"}, nil, "install")
	if code != 1 {
		t.Fatalf("abort policy: exit %d", code)
	}
}

func TestDeleteUninstallsOnlyAnExistingRelease(t *testing.T) {
	list := `[{"name":"app","namespace":"apps","revision":"3","status":"deployed"}]`
	calls, code, _ := run(t, list, map[string]string{"CHART": "app"}, nil, "delete")
	if code != 0 || strings.Join(calls, "\n") != "list --all --namespace apps --filter ^app$ --output json\nuninstall app --namespace apps --wait" {
		t.Fatalf("exit %d, calls %q", code, calls)
	}
	calls, code, _ = run(t, "[]", map[string]string{"CHART": "app"}, nil, "delete")
	if code != 0 || len(calls) != 1 {
		t.Fatalf("exit %d, calls %q", code, calls)
	}
}

func TestHelmFailureFailsTheJob(t *testing.T) {
	_, code, out := run(t, "[]", map[string]string{"CHART": "app", "FAIL_INSTALL": "1"}, nil, "install")
	if code != 3 {
		t.Fatalf("failing helm install: exit %d, want helm's 3\n%s", code, out)
	}
	_, code, _ = run(t, "[]", map[string]string{"CHART": "app", "HELM_VERSION": "v2"}, nil, "install")
	if code != 64 {
		t.Fatalf("helm v2: exit %d, want 64", code)
	}
}
