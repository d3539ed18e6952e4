package session

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/tlsutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// bearer sends the agent's token with every call. It refuses to travel
// over a connection without TLS.
type bearer struct{ token string }

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

// dialOptions loads TLS material and the token afresh for every session,
// so rotated files are picked up without a restart.
func dialOptions(cfg config.Coordinator) ([]grpc.DialOption, error) {
	tc, err := tlsutil.ClientConfig(tlsutil.Files{CA: cfg.CAFile, Cert: cfg.CertFile, Key: cfg.KeyFile})
	if err != nil {
		return nil, err
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tc))}
	if cfg.TokenFile != "" {
		tok, err := config.ReadSecretFile(cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("coordinator.token_file: %w", err)
		}
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{token: tok}))
	}
	return opts, nil
}

func askLeader(ctx context.Context, addr string, opts []grpc.DialOption) (*pgdrv1.LeaderResponse, error) {
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	return pgdrv1.NewAgentServiceClient(conn).Leader(ctx, &pgdrv1.LeaderRequest{})
}

// APIURL is where other agents and the coordinators reach this agent's
// HTTP server: health.advertise, else health.listen.
func APIURL(cfg *config.Config) string {
	a := cfg.Health.Advertise
	if a == "" {
		a = cfg.Health.Listen
	}
	if a == "" {
		return ""
	}
	return "http://" + a
}

// leaderDialAddress is where to dial the leader: coordinator.leader_addresses
// overrides its advertised address.
func leaderDialAddress(cfg *config.Config, resp *pgdrv1.LeaderResponse) string {
	if a := cfg.Coordinator.LeaderAddresses[resp.GetName()]; a != "" {
		return a
	}
	return resp.GetApiAddress()
}

// Dialer connects the lease loop to the leader while no session is up,
// found by asking the configured coordinators in turn, beginning with the
// one that named a leader last. Only the lease loop uses it (Dial is not
// safe for concurrent use).
type Dialer struct {
	cfg  *config.Config
	next int
}

// NewDialer is the leader discovery of cfg's coordinator.* settings.
func NewDialer(cfg *config.Config) *Dialer { return &Dialer{cfg: cfg} }

// Dial finds the coordinator leader and connects to it.
func (ld *Dialer) Dial(ctx context.Context) (*grpc.ClientConn, error) {
	cfg := ld.cfg.Coordinator
	opts, err := dialOptions(cfg)
	if err != nil {
		return nil, err
	}
	var errs []error
	for i := range cfg.Addresses {
		idx := (ld.next + i) % len(cfg.Addresses)
		resp, err := askLeader(ctx, cfg.Addresses[idx], opts)
		if err == nil && resp.GetKnown() && resp.GetApiAddress() != "" {
			conn, err := grpc.NewClient(leaderDialAddress(ld.cfg, resp), opts...)
			if err != nil {
				return nil, err
			}
			ld.next = idx
			return conn, nil
		}
		if err == nil {
			err = errors.New("no leader elected yet")
		}
		errs = append(errs, fmt.Errorf("%s: %w", cfg.Addresses[idx], err))
		if ctx.Err() != nil {
			break
		}
	}
	ld.next = (ld.next + 1) % len(cfg.Addresses)
	return nil, fmt.Errorf("no coordinator named a leader: %w", errors.Join(errs...))
}
