// Package klipper holds the entry script of the test bed's klipper-helm stand-in
// (docker.io/rancher/klipper-helm:v0.9.8-build20250709): the program helm-controller's install
// and delete Jobs run. See the script's header for the contract it honours.
package klipper

import _ "embed"

// Entry is the script, installed at /usr/bin/entry (the image's entrypoint "entry").
//
//go:embed entry
var Entry []byte
