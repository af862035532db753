// Package pki makes the certificates and kubeconfigs of the k3s role with crypto/x509, under the
// paths k3s uses (k3s: pkg/daemons/control/deps/deps.go CreateRuntimeCertFiles and
// GenServerDeps; pkg/agent/config for the agent's copies). Keys are made once and kept: a later
// start reuses every key, and re-issues a certificate only when it no longer fits (other names,
// another signer, close to expiry), as k3s does on restart.
//
// One CA signs server and client certificates alike (k3s keeps a server CA and a client CA). The
// service account token's ca.crt (the controller manager's root-ca-file) then also verifies the
// kubelet's serving certificate, which metrics-server needs. The request-header CA is separate, as
// in k3s, for API aggregation.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

const (
	caValidity   = 10 * 365 * 24 * time.Hour
	certValidity = 365 * 24 * time.Hour
	// renewBefore: k3s rotates certificates that expire within 90 days at start
	// (k3s docs, "Certificate Rotation").
	renewBefore = 90 * 24 * time.Hour
)

// CA is a signing certificate and its key.
type CA struct {
	Cert     *x509.Certificate
	Key      crypto.Signer
	CertFile string
	KeyFile  string
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// WriteFile writes data to path atomically with mode (the kubeconfigs and configuration files of
// the k3s role are written this way, so a reader never sees half a file).
func WriteFile(path string, data []byte, mode os.FileMode) error {
	return writeFileAtomic(path, data, mode)
}

func encodeKey(k crypto.Signer) ([]byte, error) {
	switch key := k.(type) {
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
	case *rsa.PrivateKey:
		return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), nil
	}
	return nil, fmt.Errorf("unsupported key type %T", k)
}

func parseKey(path string, data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	switch block.Type {
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
	}
	return nil, fmt.Errorf("%s: unsupported key %q", path, block.Type)
}

// loadOrCreateKey returns the key in path, or makes one (ECDSA P-256, or RSA 2048 when rsaKey)
// and writes it with mode 0600 (k3s: pkg/daemons/control/deps/deps.go, which uses
// certutil/keyutil the same way: an existing key file is always reused).
func loadOrCreateKey(path string, rsaKey bool) (crypto.Signer, bool, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		k, err := parseKey(path, data)
		return k, false, err
	}
	if !os.IsNotExist(err) {
		return nil, false, err
	}
	var k crypto.Signer
	if rsaKey {
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	} else {
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		return nil, false, err
	}
	pemKey, err := encodeKey(k)
	if err != nil {
		return nil, false, err
	}
	if err := writeFileAtomic(path, pemKey, 0o600); err != nil {
		return nil, false, err
	}
	return k, true, nil
}

func readCert(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no certificate", path)
	}
	return x509.ParseCertificate(block.Bytes)
}

func encodeCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func samePublicKey(a, b crypto.PublicKey) bool {
	type eq interface{ Equal(crypto.PublicKey) bool }
	if e, ok := a.(eq); ok {
		return e.Equal(b)
	}
	return false
}

// LoadOrCreateCA returns the CA in certFile/keyFile, making it when missing. commonName is used
// with the creation time, as k3s names its CAs ("k3s-server-ca@1700000000").
func LoadOrCreateCA(certFile, keyFile, commonName string, now time.Time) (*CA, error) {
	key, created, err := loadOrCreateKey(keyFile, false)
	if err != nil {
		return nil, err
	}
	if !created {
		if c, err := readCert(certFile); err == nil && c.IsCA && samePublicKey(c.PublicKey, key.Public()) && now.Before(c.NotAfter) {
			return &CA{Cert: c, Key: key, CertFile: certFile, KeyFile: keyFile}, nil
		}
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: fmt.Sprintf("%s@%d", commonName, now.Unix())},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(certFile, encodeCert(c), 0o644); err != nil {
		return nil, err
	}
	return &CA{Cert: c, Key: key, CertFile: certFile, KeyFile: keyFile}, nil
}

// Leaf describes a certificate signed by a CA.
type Leaf struct {
	CertFile, KeyFile string
	CommonName        string
	Organization      []string
	DNSNames          []string
	IPs               []net.IP
	Server            bool // server auth (else client auth)
}

func (l Leaf) fits(c *x509.Certificate, ca *CA, key crypto.Signer, now time.Time) bool {
	if !samePublicKey(c.PublicKey, key.Public()) || c.Subject.CommonName != l.CommonName ||
		!slices.Equal(c.Subject.Organization, l.Organization) || now.Add(renewBefore).After(c.NotAfter) {
		return false
	}
	if !bytes.Equal(c.RawIssuer, ca.Cert.RawSubject) || c.CheckSignatureFrom(ca.Cert) != nil {
		return false
	}
	for _, d := range l.DNSNames {
		if !slices.Contains(c.DNSNames, d) {
			return false
		}
	}
	for _, ip := range l.IPs {
		if !slices.ContainsFunc(c.IPAddresses, ip.Equal) {
			return false
		}
	}
	return true
}

// Issue makes or keeps the certificate l describes, signed by ca; its key is made once.
func Issue(ca *CA, l Leaf, now time.Time) error {
	key, created, err := loadOrCreateKey(l.KeyFile, false)
	if err != nil {
		return err
	}
	if !created {
		if c, err := readCert(l.CertFile); err == nil && l.fits(c, ca, key, now) {
			return nil
		}
	}
	sn, err := serial()
	if err != nil {
		return err
	}
	usage := x509.ExtKeyUsageClientAuth
	if l.Server {
		usage = x509.ExtKeyUsageServerAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: l.CommonName, Organization: l.Organization},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     l.DNSNames,
		IPAddresses:  l.IPs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return fmt.Errorf("signing %s: %w", l.CertFile, err)
	}
	// The chain, leaf then CA, as k3s writes its certificates.
	data := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), encodeCert(ca.Cert)...)
	return writeFileAtomic(l.CertFile, data, 0o644)
}

// ServiceAccountKey keeps or makes the RSA key that signs service account tokens
// (k3s: server/tls/service.key, pkg/daemons/control/deps/deps.go genServiceAccount).
func ServiceAccountKey(path string) error {
	_, _, err := loadOrCreateKey(path, true)
	return err
}

// copyFile makes dst hold src's bytes (for the agent's copies of the CA certificates).
func copyFile(src, dst string, mode os.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if old, err := os.ReadFile(dst); err == nil && bytes.Equal(old, data) {
		return nil
	}
	return writeFileAtomic(dst, data, mode)
}
