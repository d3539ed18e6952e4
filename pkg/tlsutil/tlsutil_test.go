package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"path/filepath"
	"testing"
)

func TestDevInitHandshakeAndRole(t *testing.T) {
	dir := t.TempDir()
	if err := DevInit(dir, []string{"c1"}, []string{"pg-a1"}, "main", false); err != nil {
		t.Fatal(err)
	}
	if err := DevInit(dir, nil, nil, "", false); err == nil {
		t.Fatal("DevInit over an existing CA succeeded without overwrite")
	}
	f := func(n string) Files {
		return Files{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, n+".crt"), Key: filepath.Join(dir, n+".key")}
	}
	srv, err := ServerConfig(f("c1"), false)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	roles := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			roles <- "accept: " + err.Error()
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			roles <- "handshake: " + err.Error()
			return
		}
		var cert *x509.Certificate
		if pc := tc.ConnectionState().PeerCertificates; len(pc) > 0 {
			cert = pc[0]
		}
		roles <- Role(cert)
	}()
	cli, err := ClientConfig(f("admin"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", ln.Addr().String(), cli)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := <-roles; got != RoleAdmin {
		t.Fatalf("server saw role %q, want admin", got)
	}
	if _, _, err := net.SplitHostPort(ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
}

func TestBadFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := ServerConfig(Files{CA: filepath.Join(dir, "nope.crt"), Cert: "x", Key: "y"}, false); err == nil {
		t.Fatal("missing CA accepted")
	}
	if _, err := ClientConfig(Files{}); err == nil {
		t.Fatal("empty client config accepted")
	}
	ca, err := NewCA("t")
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Issue(dir, "x", "root", nil); err == nil {
		t.Fatal("unknown role accepted")
	}
}

// TestAgentCertificateNamesItsCluster: agent certificates carry their
// cluster as a URI SAN; Issue refuses an agent certificate without one.
func TestAgentCertificateNamesItsCluster(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA("t")
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Issue(dir, "pg-a", RoleAgent, nil); err == nil {
		t.Fatal("an agent certificate without a cluster was issued")
	}
	if err := ca.IssueAgent(dir, "pg-a", "", nil); err == nil {
		t.Fatal("an agent certificate with an empty cluster was issued")
	}
	if err := ca.IssueAgent(dir, "pg-a", "main", nil); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "pg-a.crt"), filepath.Join(dir, "pg-a.key"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if Role(cert) != RoleAgent || Cluster(cert) != "main" || cert.Subject.CommonName != "pg-a" {
		t.Fatalf("role %q cluster %q CN %q; want agent, main, pg-a", Role(cert), Cluster(cert), cert.Subject.CommonName)
	}
	if err := ca.Issue(dir, "adm", RoleAdmin, nil); err != nil {
		t.Fatal(err)
	}
	if DevInit(t.TempDir(), nil, []string{"pg-b"}, "", false) == nil {
		t.Fatal("DevInit issued agent certificates without a cluster")
	}
}
