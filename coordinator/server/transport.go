package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pgdr/pgdr/pkg/tlsutil"
)

// tlsStream is Raft's stream layer over mutual TLS: both sides present a
// certificate of role "coordinator" signed by the pgdr CA.
type tlsStream struct {
	net.Listener
	advertise net.Addr
	client    *tls.Config
}

func requireCoordinator(_ [][]byte, chains [][]*x509.Certificate) error {
	if len(chains) == 0 || len(chains[0]) == 0 {
		return errors.New("no verified certificate")
	}
	if r := tlsutil.Role(chains[0][0]); r != tlsutil.RoleCoordinator {
		return fmt.Errorf("certificate %q has role %q; raft peers need role coordinator", chains[0][0].Subject.CommonName, r)
	}
	return nil
}

func newTLSStream(bind, advertise string, files tlsutil.Files) (*tlsStream, error) {
	srv, err := tlsutil.ServerConfig(files, true)
	if err != nil {
		return nil, err
	}
	srv.VerifyPeerCertificate = requireCoordinator
	cli, err := tlsutil.ClientConfig(files)
	if err != nil {
		return nil, err
	}
	cli.VerifyPeerCertificate = requireCoordinator
	adv, err := net.ResolveTCPAddr("tcp", advertise)
	if err != nil {
		return nil, fmt.Errorf("raft.advertise %q: %w", advertise, err)
	}
	ln, err := tls.Listen("tcp", bind, srv)
	if err != nil {
		return nil, fmt.Errorf("raft: listen on %s: %w", bind, err)
	}
	return &tlsStream{Listener: ln, advertise: adv, client: cli}, nil
}

// Addr is the address peers dial, which may differ from the bind address.
func (s *tlsStream) Addr() net.Addr { return s.advertise }

// Dial opens a TLS connection to a peer and completes the handshake, so a
// peer with a wrong certificate fails here rather than mid-RPC.
func (s *tlsStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	host, _, err := net.SplitHostPort(string(addr))
	if err != nil {
		return nil, err
	}
	cfg := s.client.Clone()
	cfg.ServerName = host
	d := &net.Dialer{Timeout: timeout}
	conn, err := tls.DialWithDialer(d, "tcp", string(addr), cfg)
	if err != nil {
		return nil, err
	}
	return conn, nil
}
