// Command systemctl is the test bed's stand-in for systemd's systemctl, installed in the node
// at /usr/local/sbin/systemctl (first on PATH): it runs the k3s unit `sparkgap install` writes
// with systemd's semantics (package systemd).
package main

import (
	"os"

	"sparkgap.dev/testbed/pkg/systemd"
)

func main() {
	os.Exit(systemd.Main(os.Args[1:], os.Stdout, os.Stderr))
}
