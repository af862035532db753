// Command k3s plays k3s on the test bed's node: `k3s server` starts the node from the upstream
// parts (package server), and like k3s's multicall binary it is also kubectl, ctr and crictl by
// the name it is called under, or as `k3s kubectl|ctr|crictl ...` (k3s: cmd/server/main.go).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"sparkgap.dev/testbed/pkg/k3s/config"
	"sparkgap.dev/testbed/pkg/k3s/server"
)

// envFile is the unit's EnvironmentFile=-/etc/default/%N, where the test sets the parts'
// directory; kubectl and ctr read it when they are run outside the service.
const envFile = "/etc/default/k3s"

func parts() string {
	if p := os.Getenv("K3S_TESTBED_PARTS"); p != "" {
		return p
	}
	return server.ReadEnvFile(envFile)["K3S_TESTBED_PARTS"]
}

func die(format string, a ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", a...)
	os.Exit(1)
}

// execPart replaces the process with a part, as k3s's multicall runs the embedded command.
func execPart(name string, args []string, env []string) {
	p := parts()
	if p == "" {
		die("%s: the test bed's parts directory is unknown (K3S_TESTBED_PARTS, or in %s)", name, envFile)
	}
	bin := filepath.Join(p, "bin", name)
	if err := syscall.Exec(bin, append([]string{name}, args...), env); err != nil {
		die("%s: %s: %v", name, bin, err)
	}
}

// kubectl defaults KUBECONFIG to the admin kubeconfig when neither it nor --kubeconfig is given
// (k3s: pkg/kubectl/main.go, server.HomeKubeConfig(false, ...)).
func kubectl(args []string) {
	env := os.Environ()
	given := os.Getenv("KUBECONFIG") != ""
	for _, a := range args {
		if a == "--kubeconfig" || len(a) > 13 && a[:13] == "--kubeconfig=" {
			given = true
		}
	}
	if !given {
		if _, err := os.Stat(config.GlobalKubeconfig); err == nil {
			env = append(env, "KUBECONFIG="+config.GlobalKubeconfig)
		}
	}
	execPart("kubectl", args, env)
}

// ctr defaults to k3s's containerd socket and the CRI namespace, as k3s's ctr does by changing
// the flags' defaults (k3s: pkg/ctr/main.go); ctr reads the same defaults from these variables.
func ctr(args []string) {
	env := os.Environ()
	if os.Getenv("CONTAINERD_ADDRESS") == "" {
		env = append(env, "CONTAINERD_ADDRESS=/run/k3s/containerd/containerd.sock")
	}
	if os.Getenv("CONTAINERD_NAMESPACE") == "" {
		env = append(env, "CONTAINERD_NAMESPACE=k8s.io")
	}
	execPart("ctr", args, env)
}

func crictl() {
	die("crictl: not available on the sparkgap test bed (no crictl among the parts); use `k3s ctr` or `k3s kubectl`")
}

func version() {
	fmt.Printf("k3s version %s (sparkgap test bed: upstream Kubernetes v1.33.5 parts, not k3s)\n", server.Version)
	fmt.Printf("go version %s\n", runtime.Version())
}

const usage = `NAME:
   k3s - the sparkgap test bed's stand-in for k3s

USAGE:
   k3s [global options] command [command options]

COMMANDS:
   server   Run management server (the node, from the test bed's parts)
   kubectl  Run kubectl
   crictl   Run crictl (not available on the test bed)
   ctr      Run ctr

GLOBAL OPTIONS:
   --version, -v  print the version
   --help, -h     show help
`

func serve(argv []string) {
	log := server.NewLogger(os.Stderr)
	args, err := config.ExpandArgs(argv, os.Getenv, config.IsServerFlag, func(w string) { log.Warn.Print(w) })
	if err != nil {
		log.Error.Print(err)
		os.Exit(1)
	}
	at := 0
	for i, a := range args {
		if a == "server" {
			at = i
			break
		}
	}
	// Run by hand rather than by the service manager, the knobs come from the unit's
	// environment file all the same.
	file := server.ReadEnvFile(envFile)
	for _, k := range []string{"K3S_TESTBED_PARTS", "K3S_TESTBED_HELM_CONTROLLER", "K3S_TESTBED_CGROUP_ROOT", "K3S_TESTBED_LOG_DIR"} {
		if os.Getenv(k) == "" && file[k] != "" {
			os.Setenv(k, file[k])
		}
	}
	env := server.EnvFromOS()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := server.Run(ctx, args[at+1:], env, log); err != nil {
		var ue *config.UsageError
		if errors.As(err, &ue) {
			fmt.Fprintln(os.Stderr, ue.Error())
		} else if !errors.Is(err, server.ErrFailed) {
			// One log line per line of the error: a component's log tail stays readable.
			for _, line := range strings.Split(err.Error(), "\n") {
				log.Error.Print(line)
			}
		}
		os.Exit(1)
	}
}

func main() {
	switch filepath.Base(os.Args[0]) {
	case "kubectl":
		kubectl(os.Args[1:])
	case "ctr":
		ctr(os.Args[1:])
	case "crictl":
		crictl()
	}
	if len(os.Args) < 2 {
		fmt.Print(usage)
		return
	}
	switch os.Args[1] {
	case "server":
		serve(os.Args)
	case "kubectl":
		kubectl(os.Args[2:])
	case "ctr":
		ctr(os.Args[2:])
	case "crictl":
		crictl()
	case "--version", "-v", "version":
		version()
	case "--help", "-h", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "Incorrect Usage. No help topic for '%s'\n\n%s", os.Args[1], usage)
		os.Exit(1)
	}
}
