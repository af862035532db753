package containerd

import (
	"bufio"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// Registry is /etc/rancher/k3s/registries.yaml (k3s reads it with rancher/wharfie's
// pkg/registries: mirrors with endpoints and rewrites, configs with auth and tls).
type Registry struct {
	Mirrors map[string]Mirror         `json:"mirrors"`
	Configs map[string]RegistryConfig `json:"configs"`
}

// Mirror lists a registry's endpoints.
type Mirror struct {
	Endpoints []string          `json:"endpoint"`
	Rewrites  map[string]string `json:"rewrite"`
}

// RegistryConfig is the credentials and TLS settings of a registry host.
type RegistryConfig struct {
	Auth *AuthConfig `json:"auth"`
	TLS  *TLSConfig  `json:"tls"`
}

// AuthConfig holds registry credentials.
type AuthConfig struct {
	Username      string `json:"username"`
	Password      string `json:"password"`
	Auth          string `json:"auth"`
	IdentityToken string `json:"identitytoken"`
}

// TLSConfig holds a registry's TLS settings.
type TLSConfig struct {
	CAFile             string `json:"ca_file"`
	CertFile           string `json:"cert_file"`
	KeyFile            string `json:"key_file"`
	InsecureSkipVerify bool   `json:"insecure_skip_verify"`
}

// ReadRegistries reads registries.yaml; a missing file is an empty configuration
// (k3s: wharfie registries.GetPrivateRegistries).
func ReadRegistries(path string) (*Registry, error) {
	r := &Registry{}
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return r, nil
	} else if err != nil {
		return nil, err
	}
	if err := yaml.Unmarshal(data, r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// Endpoint is one registry endpoint of a hosts.toml (k3s: pkg/agent/templates RegistryEndpoint).
type Endpoint struct {
	URL          *url.URL
	OverridePath bool
	Config       RegistryConfig
	Rewrites     map[string]string
}

// HostConfig is the content of one hosts.toml (k3s: pkg/agent/templates HostConfig).
type HostConfig struct {
	Default   *Endpoint
	Endpoints []Endpoint
}

// defaultHost mirrors containerd's docker.DefaultHost: Docker Hub's registry host.
func defaultHost(host string) string {
	if host == "docker.io" {
		return "registry-1.docker.io"
	}
	return host
}

// isLocalhost mirrors containerd's docker.IsLocalhost: localhost or a loopback address.
func isLocalhost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// normalizeEndpoint gives an endpoint a scheme (https, or http for localhost on a port other than
// 443) and the /v2 path; any other path means override_path. It returns the registry name the
// endpoint stands for (docker.io for Docker Hub's host) to look its config up with
// (k3s: pkg/agent/containerd/config.go normalizeEndpointAddress).
func normalizeEndpoint(endpoint string) (string, *url.URL, bool, error) {
	if !strings.Contains(endpoint, "://") {
		endpoint = "//" + endpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", nil, false, err
	}
	if u.Host == "" {
		return "", nil, false, fmt.Errorf("no host in %q", endpoint)
	}
	port := u.Port()
	if u.Scheme == "" {
		if isLocalhost(u.Host) && port != "" && port != "443" {
			u.Scheme = "http"
		} else {
			u.Scheme = "https"
		}
	}
	registry := u.Host
	u.Host = defaultHost(registry)
	if u.Host == "registry-1.docker.io" {
		registry = "docker.io"
	}
	switch u.Path {
	case "", "/", "/v2":
		u.Path = "/v2"
		return registry, u, false, nil
	}
	return registry, u, true, nil
}

func configForHost(configs map[string]RegistryConfig, host string) RegistryConfig {
	if h := defaultHost(host); h != host {
		if c, ok := configs[h]; ok {
			return c
		}
	}
	return configs[host]
}

func defaultHostConfig(host string, c RegistryConfig) (*HostConfig, error) {
	_, u, _, err := normalizeEndpoint(host)
	if err != nil {
		return nil, fmt.Errorf("invalid endpoint URL %s for %s: %w", host, host, err)
	}
	if host == "*" {
		u = nil
	}
	return &HostConfig{Default: &Endpoint{URL: u, Config: c}}, nil
}

func urlString(e *Endpoint) string {
	if e == nil || e.URL == nil {
		return ""
	}
	return e.URL.String()
}

func hasConfig(e *Endpoint) bool {
	return e != nil && (e.OverridePath || e.Config.Auth != nil || e.Config.TLS != nil || len(e.Rewrites) > 0)
}

// HostConfigs merges mirrors and configs into one HostConfig per registry host directory
// (k3s: pkg/agent/containerd/config.go getHostConfigs):
//   - every configs entry gets its host's default endpoint with that config;
//   - every mirror gets its endpoints, normalized, deduplicated, each with the config of its own
//     host and the mirror's rewrites; a last endpoint equal to the default becomes the default;
//   - "*" is written as _default, without a default endpoint;
//   - with noDefaultEndpoint (--disable-default-registry-endpoint) mirrors have no default;
//   - hosts left with only a bare default are dropped.
//
// warn reports endpoints k3s would skip, with k3s's words.
func HostConfigs(r *Registry, noDefaultEndpoint bool, warn func(string)) map[string]HostConfig {
	hosts := map[string]HostConfig{}
	for _, host := range sortedKeys(r.Configs) {
		c, err := defaultHostConfig(host, r.Configs[host])
		if err != nil {
			warn(fmt.Sprintf("Failed to generate config for registry %s: %v", host, err))
			continue
		}
		if host == "*" {
			host = "_default"
		}
		hosts[host] = *c
	}
	for _, host := range sortedKeys(r.Mirrors) {
		mirror := r.Mirrors[host]
		cfg, ok := hosts[host]
		if !ok {
			c, err := defaultHostConfig(host, configForHost(r.Configs, host))
			if err != nil {
				warn(fmt.Sprintf("Failed to generate config for registry %s: %v", host, err))
				continue
			}
			if noDefaultEndpoint {
				c.Default = nil
			} else if host == "*" {
				c.Default = &Endpoint{URL: &url.URL{}}
			}
			cfg = *c
		}
		seen := map[string]bool{}
		for i, endpoint := range mirror.Endpoints {
			registry, u, override, err := normalizeEndpoint(endpoint)
			switch {
			case err != nil:
				warn(fmt.Sprintf("Ignoring invalid endpoint URL %d=%s for %s: %v", i, endpoint, host, err))
				continue
			case seen[u.String()]:
				warn(fmt.Sprintf("Skipping duplicate endpoint URL %d=%s for %s", i, endpoint, host))
				continue
			}
			seen[u.String()] = true
			ep := Endpoint{URL: u, OverridePath: override, Config: configForHost(r.Configs, registry), Rewrites: mirror.Rewrites}
			if i+1 == len(mirror.Endpoints) && urlString(cfg.Default) == urlString(&ep) {
				cfg.Default = &ep
			} else {
				cfg.Endpoints = append(cfg.Endpoints, ep)
			}
		}
		if host == "*" {
			host = "_default"
		}
		hosts[host] = cfg
	}
	for host, cfg := range hosts {
		if len(cfg.Endpoints) == 0 && !hasConfig(cfg.Default) {
			delete(hosts, host)
		}
	}
	return hosts
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// HostsTomlHeader is the first line of every hosts.toml k3s writes; a directory whose hosts.toml
// starts with it is k3s's to remove (k3s: pkg/agent/templates HostsTomlHeader).
const HostsTomlHeader = "# File generated by k3s. DO NOT EDIT.\n"

func tlsLines(c RegistryConfig, indent string) string {
	var b strings.Builder
	if t := c.TLS; t != nil {
		if t.CAFile != "" {
			fmt.Fprintf(&b, "%sca = [%q]\n", indent, t.CAFile)
		}
		if t.CertFile != "" || t.KeyFile != "" {
			fmt.Fprintf(&b, "%sclient = [[%q, %q]]\n", indent, t.CertFile, t.KeyFile)
		}
		if t.InsecureSkipVerify {
			fmt.Fprintf(&b, "%sskip_verify = true\n", indent)
		}
	}
	return b.String()
}

// RenderHostsToml renders one hosts.toml as k3s's HostsTomlTemplate does: the default endpoint as
// `server` with pull, resolve and push, then every mirror endpoint as a [host."url"] table with
// pull and resolve (k3s: pkg/agent/templates/templates.go HostsTomlTemplate).
func RenderHostsToml(h HostConfig) string {
	var b strings.Builder
	b.WriteString(HostsTomlHeader)
	if e := h.Default; e != nil {
		b.WriteString("\n")
		if e.URL != nil && e.URL.String() != "" {
			fmt.Fprintf(&b, "server = %q\n", e.URL.String())
			b.WriteString("capabilities = [\"pull\", \"resolve\", \"push\"]\n")
		}
		b.WriteString(tlsLines(e.Config, ""))
	}
	b.WriteString("\n[host]\n")
	for _, e := range h.Endpoints {
		fmt.Fprintf(&b, "[host.%q]\n", e.URL.String())
		b.WriteString("  capabilities = [\"pull\", \"resolve\"]\n")
		if e.OverridePath {
			b.WriteString("  override_path = true\n")
		}
		b.WriteString(tlsLines(e.Config, "  "))
		if len(e.Rewrites) > 0 {
			fmt.Fprintf(&b, "  [host.%q.rewrite]\n", e.URL.String())
			for _, k := range sortedKeys(e.Rewrites) {
				fmt.Fprintf(&b, "    %q = %q\n", k, e.Rewrites[k])
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// WriteHosts regenerates the certs.d directory: it removes the directories of the hosts it is
// about to write and every directory whose hosts.toml begins with k3s's header, then writes one
// hosts.toml per host (k3s: pkg/agent/containerd/config.go writeContainerdHosts and
// cleanContainerdHosts). Directories someone else made are left alone.
func WriteHosts(dir string, hosts map[string]HostConfig) error {
	for host := range hosts {
		if err := os.RemoveAll(filepath.Join(dir, host)); err != nil {
			return err
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name(), "hosts.toml"))
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return err
		}
		line, err := bufio.NewReader(f).ReadString('\n')
		f.Close()
		if err == nil && line == HostsTomlHeader {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	for host, cfg := range hosts {
		hostDir := filepath.Join(dir, host)
		if err := os.MkdirAll(hostDir, 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(hostDir, "hosts.toml"), []byte(RenderHostsToml(cfg)), 0o600); err != nil {
			return err
		}
	}
	return nil
}
