package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/pgdr/pgdr/coordinator/config"
	"github.com/pgdr/pgdr/pkg/tlsutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// issueTestCert signs a client certificate for cn with role (OU) and
// URI SANs, as an operator's own PKI would.
func issueTestCert(t *testing.T, ca *tlsutil.CA, cn, role string, uris ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"pgdr"}, OrganizationalUnit: []string{role}},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// agentAPIServer serves s's agent API over TLS on a loopback port, with
// the production interceptors, and returns a dialer for client
// certificates and bearer tokens.
func agentAPIServer(t *testing.T, s *Server) (ca *tlsutil.CA, dial func(cert *tls.Certificate, token string) pgdrv1.AgentServiceClient) {
	t.Helper()
	dir := t.TempDir()
	ca, err := tlsutil.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Write(dir); err != nil {
		t.Fatal(err)
	}
	if err := ca.Issue(dir, "coord", tlsutil.RoleCoordinator, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	files := tlsutil.Files{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, "coord.crt"), Key: filepath.Join(dir, "coord.key")}
	srvTLS, err := tlsutil.ServerConfig(files, false)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(srvTLS)),
		grpc.ChainUnaryInterceptor(s.unaryAuth), grpc.ChainStreamInterceptor(s.streamAuth))
	pgdrv1.RegisterAgentServiceServer(gs, &agentAPI{s: s})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	dial = func(cert *tls.Certificate, token string) pgdrv1.AgentServiceClient {
		t.Helper()
		tc, err := tlsutil.ClientConfig(tlsutil.Files{CA: files.CA})
		if err != nil {
			t.Fatal(err)
		}
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tc))}
		if token != "" {
			opts = append(opts, grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, o ...grpc.CallOption) error {
				return inv(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), method, req, reply, cc, o...)
			}), grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, str grpc.Streamer, o ...grpc.CallOption) (grpc.ClientStream, error) {
				return str(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), desc, cc, method, o...)
			}))
		}
		conn, err := grpc.NewClient(ln.Addr().String(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return pgdrv1.NewAgentServiceClient(conn)
	}
	return ca, dial
}

// agentCalls makes every AgentService call that names a member, for
// cluster/node, and returns each call's error by method name.
func agentCalls(ctx context.Context, c pgdrv1.AgentServiceClient, cluster, node string) map[string]error {
	out := map[string]error{}
	_, out["Register"] = c.Register(ctx, &pgdrv1.RegisterRequest{Member: &pgdrv1.Member{Cluster: cluster, Name: node, Region: "eu-west-1",
		Dsn: "host=attacker.example port=5432"}})
	rs, err := c.Report(ctx)
	if err == nil {
		err = rs.Send(&pgdrv1.HealthReport{Cluster: cluster, Node: node})
		if err == nil {
			_, err = rs.CloseAndRecv()
		}
	}
	out["Report"] = err
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cs, err := c.Commands(cctx, &pgdrv1.CommandsRequest{Cluster: cluster, Node: node})
	if err == nil {
		_, err = cs.Recv() // the opening ping, or the refusal
	}
	out["Commands"] = err
	_, out["CompleteCommand"] = c.CompleteCommand(ctx, &pgdrv1.CommandResult{Id: "x", Cluster: cluster, Node: node, Ok: true})
	_, out["RenewLease"] = c.RenewLease(ctx, &pgdrv1.RenewLeaseRequest{Cluster: cluster, Node: node, Epoch: 1})
	return out
}

// TestAgentIdentityBoundToNodeAndCluster: an agent token or certificate
// acts only for its own node of its own cluster. Every AgentService call
// naming another node, or the same node name in another cluster, is
// refused with PermissionDenied naming the identity and the target, and
// changes nothing; the same calls for its own member are accepted.
func TestAgentIdentityBoundToNodeAndCluster(t *testing.T) {
	s := testServer(t, Options{Barrier: func(time.Duration) error { return nil }})
	dir := t.TempDir()
	const secretA = "token-of-pg-a-in-main"
	tokFile := filepath.Join(dir, "tokens.yaml")
	if err := os.WriteFile(tokFile, []byte(fmt.Sprintf("- {name: agent-a, role: agent, cluster: main, node: pg-a, sha256: %s}\n",
		config.HashToken(secretA))), 0o600); err != nil {
		t.Fatal(err)
	}
	if tokens, err := config.LoadTokens(tokFile); err != nil {
		t.Errorf("tokens file with a node and cluster binding: %v", err)
	} else {
		s.tokens = tokens
	}
	startInmemRaft(t, s)
	for _, m := range []struct{ cluster, node string }{{"main", "pg-a"}, {"main", "pg-b"}, {"other", "pg-a"}} {
		mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
			Cluster: m.cluster, Name: m.node, Region: "eu-west-1", Dsn: "host=" + m.node + "." + m.cluster}})
	}
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "pg-a"})
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "other", Name: "pg-a"})
	ca, dial := agentAPIServer(t, s)
	certA := issueTestCert(t, ca, "pg-a", tlsutil.RoleAgent, "urn:pgdr:cluster:main")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	for _, id := range []struct {
		name   string
		client pgdrv1.AgentServiceClient
	}{
		{"token", dial(nil, secretA)},
		{"certificate", dial(&certA, "")},
	} {
		t.Run(id.name, func(t *testing.T) {
			for _, target := range []struct{ cluster, node string }{{"main", "pg-b"}, {"other", "pg-a"}} {
				for method, err := range agentCalls(ctx, id.client, target.cluster, target.node) {
					if status.Code(err) != codes.PermissionDenied {
						t.Errorf("%s for node %s of cluster %s with pg-a's (cluster main) %s: %v; want PermissionDenied",
							method, target.node, target.cluster, id.name, err)
						continue
					}
					msg := status.Convert(err).Message()
					if !strings.Contains(msg, "pg-a") || !strings.Contains(msg, target.node) || !strings.Contains(msg, target.cluster) {
						t.Errorf("%s refusal %q does not name the identity and node %s of cluster %s", method, msg, target.node, target.cluster)
					}
				}
			}
			for _, m := range []struct{ cluster, node string }{{"main", "pg-b"}, {"other", "pg-a"}} {
				s.fsm.Read(func(st *pgdrv1.State) {
					if dsn := st.Clusters[m.cluster].GetMembers()[m.node].GetDsn(); dsn != "host="+m.node+"."+m.cluster {
						t.Errorf("node %s of cluster %s now has DSN %q", m.node, m.cluster, dsn)
					}
				})
			}
			for method, err := range agentCalls(ctx, id.client, "main", "pg-a") {
				if status.Code(err) == codes.PermissionDenied || status.Code(err) == codes.Unauthenticated {
					t.Errorf("%s for its own node: %v", method, err)
				}
			}
		})
	}
	t.Run("certificate without a cluster", func(t *testing.T) {
		legacy := issueTestCert(t, ca, "pg-a", tlsutil.RoleAgent)
		for method, err := range agentCalls(ctx, dial(&legacy, ""), "main", "pg-a") {
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "bound to no cluster") {
				t.Errorf("%s with an agent certificate naming no cluster: %v; want PermissionDenied (bound to no cluster)", method, err)
			}
		}
	})
}
