package pki

import (
	"encoding/base64"
	"os"

	"sigs.k8s.io/yaml"
)

type kubeconfig struct {
	APIVersion     string         `json:"apiVersion"`
	Kind           string         `json:"kind"`
	Clusters       []namedCluster `json:"clusters"`
	Contexts       []namedContext `json:"contexts"`
	CurrentContext string         `json:"current-context"`
	Preferences    struct{}       `json:"preferences"`
	Users          []namedUser    `json:"users"`
}

type namedCluster struct {
	Name    string `json:"name"`
	Cluster struct {
		Server                   string `json:"server"`
		CertificateAuthority     string `json:"certificate-authority,omitempty"`
		CertificateAuthorityData string `json:"certificate-authority-data,omitempty"`
	} `json:"cluster"`
}

type namedContext struct {
	Name    string `json:"name"`
	Context struct {
		Cluster string `json:"cluster"`
		User    string `json:"user"`
	} `json:"context"`
}

type namedUser struct {
	Name string `json:"name"`
	User struct {
		ClientCertificate     string `json:"client-certificate,omitempty"`
		ClientKey             string `json:"client-key,omitempty"`
		ClientCertificateData string `json:"client-certificate-data,omitempty"`
		ClientKeyData         string `json:"client-key-data,omitempty"`
	} `json:"user"`
}

func newKubeconfig(server string) (*kubeconfig, *namedCluster, *namedUser) {
	k := &kubeconfig{APIVersion: "v1", Kind: "Config", CurrentContext: "default"}
	k.Clusters = []namedCluster{{Name: "default"}}
	k.Clusters[0].Cluster.Server = server
	k.Contexts = []namedContext{{Name: "default"}}
	k.Contexts[0].Context.Cluster = "default"
	k.Contexts[0].Context.User = "default"
	k.Users = []namedUser{{Name: "default"}}
	return k, &k.Clusters[0], &k.Users[0]
}

// KubeconfigFiles is a kubeconfig naming its certificate files, as k3s's own component
// kubeconfigs under server/cred and agent/ do (k3s: pkg/daemons/control/deps/deps.go
// genClientCerts, KubeConfig with file paths).
func KubeconfigFiles(server, caFile, certFile, keyFile string) ([]byte, error) {
	k, c, u := newKubeconfig(server)
	c.Cluster.CertificateAuthority = caFile
	u.User.ClientCertificate = certFile
	u.User.ClientKey = keyFile
	return yaml.Marshal(k)
}

// KubeconfigEmbedded is a kubeconfig carrying the certificates themselves, as the admin
// kubeconfig k3s writes to /etc/rancher/k3s/k3s.yaml (k3s: pkg/clientaccess/kubeconfig.go
// WriteClientKubeConfig).
func KubeconfigEmbedded(server, caFile, certFile, keyFile string) ([]byte, error) {
	read := func(p string) (string, error) {
		b, err := os.ReadFile(p)
		return base64.StdEncoding.EncodeToString(b), err
	}
	k, c, u := newKubeconfig(server)
	var err error
	if c.Cluster.CertificateAuthorityData, err = read(caFile); err != nil {
		return nil, err
	}
	if u.User.ClientCertificateData, err = read(certFile); err != nil {
		return nil, err
	}
	if u.User.ClientKeyData, err = read(keyFile); err != nil {
		return nil, err
	}
	return yaml.Marshal(k)
}
