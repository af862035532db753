// Package nodectl plays what k3s's server does for its node: the NodeHosts key of ConfigMap
// kube-system/coredns, which k3s's Corefile serves through its `hosts` plugin and its CoreDNS
// Deployment mounts as a required item (k3s: pkg/node/controller.go), and the control-plane role
// labels of a server node (k3s: pkg/server/server.go setNodeLabelsAndAnnotations).
package nodectl

import (
	"bytes"
	"net"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// NodeHostsKey is the coredns ConfigMap key holding one `<address> <names>` line per node.
const NodeHostsKey = "NodeHosts"

// nodeAddresses is what a node contributes to NodeHosts: its InternalIPs by family and its
// Hostname address (k3s: updateHosts).
type nodeAddresses struct {
	name, hostName, ipv4, ipv6 string
}

func addressesOf(node *corev1.Node) nodeAddresses {
	a := nodeAddresses{name: node.Name}
	for _, addr := range node.Status.Addresses {
		switch addr.Type {
		case corev1.NodeInternalIP:
			if strings.Contains(addr.Address, ":") {
				a.ipv6 = addr.Address
			} else {
				a.ipv4 = addr.Address
			}
		case corev1.NodeHostName:
			a.hostName = addr.Address
		}
	}
	return a
}

// syncNodeHosts returns hosts with node's entries brought up to date, or removed when the node
// is going away, as k3s's updateCoreDNSConfigMap does: lines are keyed by address; a line naming
// this node with an address it no longer has is dropped; the node's names are its name, and its
// hostname when that differs; every other line is kept (comments and unparsable lines are
// dropped); the result is sorted by address. ok is false when the node has no InternalIP yet
// (nothing to write).
func syncNodeHosts(hosts string, node nodeAddresses, removed bool) (out string, ok bool) {
	if removed {
		node.ipv4, node.ipv6 = "", ""
	} else if node.ipv4 == "" && node.ipv6 == "" {
		return hosts, false
	}
	names := node.name
	if node.hostName != "" && node.hostName != node.name {
		names += " " + node.hostName
	}
	byAddress := map[string]string{}
	for _, line := range strings.Split(hosts, "\n") {
		line, _, _ = strings.Cut(line, "#")
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		ip := fields[0]
		if fields[1] == node.name {
			if strings.Contains(ip, ":") && ip != node.ipv6 || !strings.Contains(ip, ":") && ip != node.ipv4 {
				continue
			}
		}
		byAddress[ip] = strings.Join(fields[1:], " ")
	}
	if node.ipv4 != "" {
		byAddress[node.ipv4] = names
	}
	if node.ipv6 != "" {
		byAddress[node.ipv6] = names
	}
	addresses := make([]string, 0, len(byAddress))
	for ip := range byAddress {
		addresses = append(addresses, ip)
	}
	sort.Slice(addresses, func(i, j int) bool {
		return bytes.Compare(net.ParseIP(addresses[i]), net.ParseIP(addresses[j])) < 0
	})
	var b strings.Builder
	for _, ip := range addresses {
		b.WriteString(ip + " " + byAddress[ip] + "\n")
	}
	return b.String(), true
}
