package tlsutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Roles a certificate or token can carry.
const (
	RoleRead        = "read"
	RoleAdmin       = "admin"
	RoleAgent       = "agent"
	RoleCoordinator = "coordinator"
)

// ValidRole reports whether r is one of the known roles.
func ValidRole(r string) bool {
	switch r {
	case RoleRead, RoleAdmin, RoleAgent, RoleCoordinator:
		return true
	}
	return false
}

// Files names a CA bundle and an optional certificate and key.
type Files struct {
	CA   string `yaml:"ca_file"`
	Cert string `yaml:"cert_file"`
	Key  string `yaml:"key_file"`
}

func loadPool(caFile string) (*x509.CertPool, error) {
	pemData, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("tls: CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		return nil, fmt.Errorf("tls: CA %s: no PEM certificate in it", caFile)
	}
	return pool, nil
}

func loadPair(f Files) (tls.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tls: certificate %s / key %s: %w", f.Cert, f.Key, err)
	}
	return pair, nil
}

// ServerConfig is a server's TLS configuration: its own certificate, and
// client certificates verified against the CA when presented. With
// requireClientCert, a client without a certificate is refused at the
// handshake (used for Raft traffic between coordinators).
func ServerConfig(f Files, requireClientCert bool) (*tls.Config, error) {
	if f.CA == "" || f.Cert == "" || f.Key == "" {
		return nil, errors.New("tls: ca_file, cert_file and key_file are all required for a server")
	}
	pool, err := loadPool(f.CA)
	if err != nil {
		return nil, err
	}
	pair, err := loadPair(f)
	if err != nil {
		return nil, err
	}
	auth := tls.VerifyClientCertIfGiven
	if requireClientCert {
		auth = tls.RequireAndVerifyClientCert
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		ClientCAs:    pool,
		ClientAuth:   auth,
	}, nil
}

// ClientConfig is a client's TLS configuration: servers verified against
// the CA, and the client's own certificate when f names one.
func ClientConfig(f Files) (*tls.Config, error) {
	if f.CA == "" {
		return nil, errors.New("tls: ca_file is required")
	}
	pool, err := loadPool(f.CA)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	if f.Cert != "" || f.Key != "" {
		pair, err := loadPair(f)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// Role returns the role a verified certificate carries ("" if none).
func Role(cert *x509.Certificate) string {
	if cert == nil || len(cert.Subject.OrganizationalUnit) == 0 {
		return ""
	}
	r := cert.Subject.OrganizationalUnit[0]
	if !ValidRole(r) {
		return ""
	}
	return r
}

// ClusterURIPrefix starts the URI SAN that binds an agent certificate to
// its cluster: "urn:pgdr:cluster:<cluster>". An agent certificate acts
// only for the node in its CN of the cluster in this SAN; one without it
// acts for nothing.
const ClusterURIPrefix = "urn:pgdr:cluster:"

// Cluster returns the cluster a verified certificate is bound to (its
// first "urn:pgdr:cluster:" URI SAN), or "" if none.
func Cluster(cert *x509.Certificate) string {
	if cert == nil {
		return ""
	}
	for _, u := range cert.URIs {
		if c, ok := strings.CutPrefix(u.String(), ClusterURIPrefix); ok && c != "" {
			return c
		}
	}
	return ""
}

// CA is a certificate authority loaded in memory, for issuing certificates.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA creates a self-signed CA valid for ten years.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"pgdr"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LoadCA reads a CA certificate and key written by WriteCA.
func LoadCA(certFile, keyFile string) (*CA, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: CA %s: %w", certFile, err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, err
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || !cert.IsCA {
		return nil, fmt.Errorf("tls: %s is not a pgdr CA (ECDSA CA certificate expected)", certFile)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Write stores the CA as ca.crt and ca.key (0600) in dir.
func (ca *CA) Write(dir string) error {
	if err := writePEM(filepath.Join(dir, "ca.crt"), "CERTIFICATE", ca.Cert.Raw, 0o644); err != nil {
		return err
	}
	der, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, "ca.key"), "EC PRIVATE KEY", der, 0o600)
}

// Issue creates a certificate for name with role (as OU), usable both as a
// server and a client certificate, valid for hosts (IP addresses or DNS
// names), and writes <name>.crt and <name>.key (0600) in dir. Agent
// certificates are made by IssueAgent: they name their cluster.
func (ca *CA) Issue(dir, name, role string, hosts []string) error {
	if role == RoleAgent {
		return fmt.Errorf("tls: an agent certificate for %q must name its cluster (IssueAgent)", name)
	}
	return ca.issue(dir, name, role, "", hosts)
}

// IssueAgent creates the certificate of the agent of node name in cluster
// (role agent, the cluster as a "urn:pgdr:cluster:" URI SAN), as Issue.
func (ca *CA) IssueAgent(dir, name, cluster string, hosts []string) error {
	if cluster == "" || strings.ContainsAny(cluster, "/?#% ") {
		return fmt.Errorf("tls: agent certificate %q: cluster %q is empty or not a plain name", name, cluster)
	}
	return ca.issue(dir, name, RoleAgent, cluster, hosts)
}

func (ca *CA) issue(dir, name, role, cluster string, hosts []string) error {
	if !ValidRole(role) {
		return fmt.Errorf("tls: unknown role %q (read, admin, agent or coordinator)", role)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name, Organization: []string{"pgdr"}, OrganizationalUnit: []string{role}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(2, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if cluster != "" {
		u, err := url.Parse(ClusterURIPrefix + cluster)
		if err != nil {
			return fmt.Errorf("tls: agent certificate %q: cluster %q: %w", name, cluster, err)
		}
		tmpl.URIs = []*url.URL{u}
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, name+".crt"), "CERTIFICATE", der, 0o644); err != nil {
		return err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, name+".key"), "EC PRIVATE KEY", kder, 0o600)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return n
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	data := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	return nil
}

// DevInit creates in dir a CA and certificates for a lab: one per
// coordinator (role coordinator) and per agent (role agent, bound to
// cluster), plus "admin" (role admin) and "reader" (role read), all valid
// for 127.0.0.1 and localhost. Existing files are kept unless overwrite is
// set.
func DevInit(dir string, coordinators, agents []string, cluster string, overwrite bool) error {
	if len(agents) > 0 && cluster == "" {
		return errors.New("tls: agent certificates need the cluster their agents belong to")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ca.crt")); err == nil && !overwrite {
		return fmt.Errorf("tls: %s already holds a CA (ca.crt); pass --force to replace it", dir)
	}
	ca, err := NewCA("pgdr dev CA")
	if err != nil {
		return err
	}
	if err := ca.Write(dir); err != nil {
		return err
	}
	hosts := []string{"127.0.0.1", "localhost"}
	issue := func(names []string, role string) error {
		for _, n := range names {
			if err := ca.Issue(dir, n, role, hosts); err != nil {
				return err
			}
		}
		return nil
	}
	if err := issue(coordinators, RoleCoordinator); err != nil {
		return err
	}
	for _, n := range agents {
		if err := ca.IssueAgent(dir, n, cluster, hosts); err != nil {
			return err
		}
	}
	if err := ca.Issue(dir, "admin", RoleAdmin, hosts); err != nil {
		return err
	}
	return ca.Issue(dir, "reader", RoleRead, hosts)
}
