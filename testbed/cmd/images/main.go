// Command images assembles the live test node's container images and pushes them to a loopback
// registry (or writes them to an OCI layout), so sparkgap's lock can pin them by digest under
// their canonical docker.io names (`--mirror docker.io=127.0.0.1:PORT --insecure-registry
// 127.0.0.1:PORT`).
//
// Usage:
//
//	images --parts DIR --own DIR [--helm PATH] --push 127.0.0.1:PORT [--images-txt FILE]
//	       [--only NAME,...] [--layout-dir DIR] [--busybox PATH] [--registry-bin PATH]
//	       --out FILE.json
//
//	--parts DIR        scripts/testbed's parts directory (`scripts/testbed --dir`): bin/pause,
//	                   bin/coredns, bin/metrics-server
//	--own DIR          the test bed's own programs (`scripts/testbed --own-dir`):
//	                   bin/local-path-provisioner
//	--helm PATH        helm for klipper-helm (`scripts/helm --path`)
//	--push HOST:PORT   the registry to push to, plain HTTP; each image goes to the repository
//	                   path of its docker.io name: 127.0.0.1:PORT/rancher/mirrored-pause:3.6,
//	                   127.0.0.1:PORT/library/busybox:1.37.0
//	--images-txt FILE  k3s's image list to build (default: k3s v1.33.5's, the eight names of
//	                   tests/fixtures/k3s-images-v1.33.5.txt); every name must be one images
//	                   knows. The test images are built besides it.
//	--only NAME,...    build only these (docker.io/rancher/mirrored-pause:3.6,
//	                   rancher/mirrored-pause:3.6 and busybox:1.37.0 spellings all work)
//	--layout-dir DIR   write docker.io/sparkgap-testbed/hello:1 to the OCI layout at DIR instead
//	                   of pushing it (skopeo reads it as oci:DIR:docker.io/sparkgap-testbed/hello:1);
//	                   without --push every selected image goes there
//	--busybox PATH     Debian's busybox-static (default /bin/busybox)
//	--registry-bin P   Debian's docker-registry (default /usr/bin/docker-registry)
//	--out FILE         the JSON report below
//
// Only the inputs of the selected images are needed: --only docker.io/library/busybox:1.37.0
// needs none of --parts, --own, --helm.
//
// The images (each linux/amd64, one OCI image index holding one OCI manifest, labelled
// dev.sparkgap.testbed=<what it is built from>; sorted tar entries, uid/gid 0, mtime 0, gzip
// level 6: the same inputs give the same digests):
//
//	docker.io/rancher/mirrored-pause:3.6                 /pause; entrypoint /pause, user 65535:65535
//	docker.io/rancher/mirrored-coredns-coredns:1.12.3    distroless-like base, /coredns with
//	                                                     cap_net_bind_service=+ep; entrypoint
//	                                                     /coredns, user nonroot:nonroot (65532)
//	docker.io/rancher/mirrored-metrics-server:v0.8.0     distroless-like base, /metrics-server;
//	                                                     entrypoint /metrics-server, user 65534
//	docker.io/rancher/local-path-provisioner:v0.0.31     /usr/bin/local-path-provisioner (the
//	                                                     stand-in); cmd local-path-provisioner
//	docker.io/rancher/mirrored-library-busybox:1.36.1    busybox: /bin/busybox, applet links in
//	docker.io/library/busybox:1.37.0                     /bin, /bin/wget wrapper (-T), /etc, /tmp; cmd sh
//	docker.io/rancher/klipper-helm:v0.9.8-build20250709  busybox + /usr/bin/helm + /usr/bin/entry
//	                                                     (pkg/images/klipper); entrypoint entry,
//	                                                     user 1000, workdir /home/klipper-helm
//	docker.io/rancher/klipper-lb:v0.4.13                 placeholders (busybox and an entry that
//	docker.io/rancher/mirrored-library-traefik:3.3.6     exits 1): the test node never runs them
//	docker.io/library/registry:2.8.3                     Debian's docker-registry at /bin/registry
//	                                                     with its libc and ELF interpreter,
//	                                                     /etc/docker/registry/config.yml (storage
//	                                                     /var/lib/registry, :5000); entrypoint
//	                                                     registry serve, cmd the config
//	docker.io/sparkgap-testbed/hello:1                   busybox + /www/index.html; httpd -f -v -p
//	                                                     8080 -h /www as 65534, serving
//	                                                     "sparkgap-testbed hello 1\n"
//
// The --out JSON:
//
//	{
//	  "registry": "127.0.0.1:PORT",          // "" without --push
//	  "layout": "DIR",                       // "" without --layout-dir
//	  "images": [
//	    {
//	      "name": "docker.io/rancher/mirrored-pause:3.6",
//	      "reference": "127.0.0.1:PORT/rancher/mirrored-pause:3.6",  // or "oci:DIR:<name>"
//	      "destination": "registry",                                 // or "layout"
//	      "indexDigest": "sha256:...",
//	      "manifestDigest": "sha256:...",
//	      "size": 123456,     // index + manifest + config + compressed layers, in bytes
//	      "builtFrom": "...", // the dev.sparkgap.testbed label
//	      "k3s": true         // on k3s's list, not one of the test's images
//	    }
//	  ]
//	}
//
// Errors name the image and the file at fault, and the exit status is 1 (2 for usage errors).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"

	"sparkgap.dev/testbed/pkg/images"
)

type report struct {
	Registry string          `json:"registry"`
	Layout   string          `json:"layout"`
	Images   []images.Result `json:"images"`
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func usage(format string, a ...any) error {
	fmt.Fprintf(os.Stderr, "images: "+format+"\n", a...)
	os.Exit(2)
	return nil
}

func run(args []string) error {
	fs := flag.NewFlagSet("images", flag.ExitOnError)
	var in images.Inputs
	fs.StringVar(&in.Parts, "parts", "", "scripts/testbed's parts directory (holds bin/)")
	fs.StringVar(&in.Own, "own", "", "the test bed's own programs directory (holds bin/)")
	fs.StringVar(&in.Helm, "helm", "", "the helm binary for klipper-helm")
	fs.StringVar(&in.Busybox, "busybox", "/bin/busybox", "Debian's busybox-static")
	fs.StringVar(&in.Registry, "registry-bin", "/usr/bin/docker-registry", "Debian's docker-registry")
	push := fs.String("push", "", "registry HOST:PORT to push to (plain HTTP)")
	imagesTxt := fs.String("images-txt", "", "k3s's image list (default: k3s v1.33.5's)")
	only := fs.String("only", "", "comma-separated names to build")
	layoutDir := fs.String("layout-dir", "", "OCI layout for the app image (for every image without --push)")
	out := fs.String("out", "", "the JSON report to write")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usage("unexpected argument %q", fs.Arg(0))
	}
	if *out == "" {
		return usage("--out is required")
	}
	if *push == "" && *layoutDir == "" {
		return usage("give --push HOST:PORT or --layout-dir DIR (or both)")
	}

	k3s := images.K3sImages
	if *imagesTxt != "" {
		var err error
		if k3s, err = images.ReadImagesTxt(*imagesTxt); err != nil {
			return err
		}
	}
	isK3s := map[string]bool{}
	for _, n := range k3s {
		isK3s[n] = true
	}
	names := append(append([]string{}, k3s...), images.TestImages...)
	if *only != "" {
		want := map[string]bool{}
		for _, n := range strings.Split(*only, ",") {
			if n = strings.TrimSpace(n); n == "" {
				continue
			}
			c := images.Canonical(n)
			found := false
			for _, k := range images.Known() {
				found = found || k == c
			}
			if !found {
				return fmt.Errorf("--only: no recipe for image %s (known: %s)", n, strings.Join(images.Known(), ", "))
			}
			want[c] = true
		}
		var sel []string
		for _, n := range names {
			if want[n] {
				sel = append(sel, n)
				delete(want, n)
			}
		}
		for n := range want { // known but not on the list given by --images-txt
			sel = append(sel, n)
		}
		names = sel
	}

	rep := report{Registry: *push, Layout: *layoutDir, Images: []images.Result{}}
	for _, n := range names {
		b, err := images.Build(n, &in)
		if err != nil {
			return err
		}
		var r images.Result
		if *push == "" || (n == images.HelloImage && *layoutDir != "") {
			r, err = b.WriteLayout(*layoutDir)
		} else {
			r, err = b.Push(*push)
		}
		if err != nil {
			return err
		}
		r.K3s = isK3s[n]
		fmt.Fprintf(os.Stderr, "images: %s -> %s (%s, %d bytes)\n", r.Name, r.Reference, r.IndexDigest, r.Size)
		rep.Images = append(rep.Images, r)
	}
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	return nil
}
