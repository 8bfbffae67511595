package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki is the set of files the control plane is started with. The certificates are reused when the
// state directory already holds them, so a restarted cluster keeps trusting its own clients.
type pki struct {
	dir                     string
	caCert, caKey           string
	servingCert, servingKey string
	adminCert, adminKey     string
	// Controllers and the scheduler authenticate as themselves, as in a real cluster, so that
	// admission sees who writes: controllers act under their own service accounts.
	controllerManagerCert, controllerManagerKey string
	schedulerCert, schedulerKey                 string
	serviceAccountKey, saPublic                 string
}

func newPKI(dir string) *pki {
	return &pki{
		dir:                   dir,
		caCert:                filepath.Join(dir, "ca.crt"),
		caKey:                 filepath.Join(dir, "ca.key"),
		servingCert:           filepath.Join(dir, "apiserver.crt"),
		servingKey:            filepath.Join(dir, "apiserver.key"),
		adminCert:             filepath.Join(dir, "admin.crt"),
		adminKey:              filepath.Join(dir, "admin.key"),
		controllerManagerCert: filepath.Join(dir, "controller-manager.crt"),
		controllerManagerKey:  filepath.Join(dir, "controller-manager.key"),
		schedulerCert:         filepath.Join(dir, "scheduler.crt"),
		schedulerKey:          filepath.Join(dir, "scheduler.key"),
		serviceAccountKey:     filepath.Join(dir, "sa.key"),
		saPublic:              filepath.Join(dir, "sa.pub"),
	}
}

func (p *pki) ensure() error {
	if fileExists(p.caCert) && fileExists(p.adminKey) && fileExists(p.serviceAccountKey) &&
		fileExists(p.servingKey) && fileExists(p.saPublic) &&
		fileExists(p.controllerManagerKey) && fileExists(p.schedulerKey) {
		return nil
	}
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTemplate := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "localcluster-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	if err := writeCert(p.caCert, caDER); err != nil {
		return err
	}
	if err := writeKey(p.caKey, caKey); err != nil {
		return err
	}

	serving := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
		// hostAddress: real nodes and their pods reach the apiserver there (realnode.go).
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(serviceIP), net.ParseIP(hostAddress)},
	}
	if err := issue(serving, ca, caKey, p.servingCert, p.servingKey); err != nil {
		return err
	}

	admin := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "localcluster-admin", Organization: []string{"system:masters"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if err := issue(admin, ca, caKey, p.adminCert, p.adminKey); err != nil {
		return err
	}
	for _, c := range []struct{ user, cert, key string }{
		{"system:kube-controller-manager", p.controllerManagerCert, p.controllerManagerKey},
		{"system:kube-scheduler", p.schedulerCert, p.schedulerKey},
	} {
		client := &x509.Certificate{
			SerialNumber: serial(),
			Subject:      pkix.Name{CommonName: c.user},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().AddDate(10, 0, 0),
			KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		if err := issue(client, ca, caKey, c.cert, c.key); err != nil {
			return err
		}
	}

	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(p.saPublic, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600); err != nil {
		return err
	}
	return writeKey(p.serviceAccountKey, saKey)
}

// kubeconfig renders an admin kubeconfig for the apiserver at server.
func (p *pki) kubeconfig(server string) ([]byte, error) {
	return p.kubeconfigFor(server, p.adminCert, p.adminKey)
}

// kubeconfigFor renders a kubeconfig that authenticates with the given client certificate.
func (p *pki) kubeconfigFor(server, certPath, keyPath string) ([]byte, error) {
	ca, err := os.ReadFile(p.caCert)
	if err != nil {
		return nil, err
	}
	cert, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	key, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	b64 := base64.StdEncoding.EncodeToString
	return []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: localcluster
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: localcluster-admin
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: localcluster
  context:
    cluster: localcluster
    user: localcluster-admin
current-context: localcluster
`, server, b64(ca), b64(cert), b64(key))), nil
}

func issue(template, ca *x509.Certificate, caKey crypto.Signer, certPath, keyPath string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	if err := writeCert(certPath, der); err != nil {
		return err
	}
	return writeKey(keyPath, key)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(fmt.Sprintf("the system random source failed: %v", err))
	}
	return n
}

func writeCert(path string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
}

func writeKey(path string, key any) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
