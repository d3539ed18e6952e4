package server

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/pgdr/pgdr/coordinator/config"
	"github.com/pgdr/pgdr/pkg/tlsutil"
)

// identity is an authenticated caller.
type identity struct {
	Name string
	Role string
	// ViaCert: the identity comes from a client certificate (its CN).
	ViaCert bool
	// Cluster and Node: the only member an agent identity may act for
	// (certificate: its cluster URI SAN and CN; token: its cluster and
	// node fields). Empty for other roles.
	Cluster, Node string
}

func (id identity) actor() string { return id.Role + ":" + id.Name }

type identityKey struct{}

func identityFrom(ctx context.Context) identity {
	id, _ := ctx.Value(identityKey{}).(identity)
	return id
}

// authenticate finds who is calling: a verified client certificate with a
// role wins; otherwise a bearer token from the tokens file.
func authenticate(ctx context.Context, tokens *config.Tokens) (identity, error) {
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 && len(ti.State.VerifiedChains[0]) > 0 {
			leaf := ti.State.VerifiedChains[0][0]
			if r := tlsutil.Role(leaf); r != "" {
				id := identity{Name: leaf.Subject.CommonName, Role: r, ViaCert: true}
				if r == tlsutil.RoleAgent {
					id.Cluster, id.Node = tlsutil.Cluster(leaf), leaf.Subject.CommonName
				}
				return id, nil
			}
		}
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		secret, ok := strings.CutPrefix(v, "Bearer ")
		if !ok {
			return identity{}, status.Error(codes.Unauthenticated, "authorization metadata must be \"Bearer <token>\"")
		}
		tok, ok := tokens.Lookup(strings.TrimSpace(secret))
		if !ok {
			return identity{}, status.Error(codes.Unauthenticated, "bearer token not recognised")
		}
		return identity{Name: tok.Name, Role: tok.Role, Cluster: tok.Cluster, Node: tok.Node}, nil
	}
	return identity{}, status.Error(codes.Unauthenticated,
		"no credentials: present a client certificate signed by the pgdr CA or an \"authorization: Bearer <token>\" header")
}

// rolesFor lists the roles that may call a full method name. Role
// "coordinator" may call everything (followers forward requests).
func rolesFor(method string) []string {
	switch {
	case strings.HasPrefix(method, "/pgdr.v1.AdminService/Status"),
		strings.HasPrefix(method, "/pgdr.v1.AdminService/Members"),
		strings.HasPrefix(method, "/pgdr.v1.AdminService/History"),
		method == "/pgdr.v1.AdminService/GetBackupPolicy",
		method == "/pgdr.v1.AdminService/ListBackupRuns",
		method == "/pgdr.v1.AdminService/Report",
		method == "/pgdr.v1.AdminService/ListDrillRuns",
		method == "/pgdr.v1.AdminService/ListIncidents",
		method == "/pgdr.v1.AdminService/ListRunbooks",
		method == "/pgdr.v1.AdminService/ListRunbookRuns",
		method == "/pgdr.v1.AdminService/ListGameDays":
		return []string{tlsutil.RoleRead, tlsutil.RoleAdmin}
	case strings.HasPrefix(method, "/pgdr.v1.AdminService/"):
		return []string{tlsutil.RoleAdmin}
	case strings.HasPrefix(method, "/pgdr.v1.AgentService/"):
		return []string{tlsutil.RoleAgent}
	}
	return nil // CoordinatorService and anything unknown: coordinators only
}

func authorize(ctx context.Context, tokens *config.Tokens, method string) (context.Context, error) {
	id, err := authenticate(ctx, tokens)
	if err != nil {
		return nil, err
	}
	allowed := rolesFor(method)
	ok := id.Role == tlsutil.RoleCoordinator
	for _, r := range allowed {
		ok = ok || r == id.Role
	}
	if !ok {
		need := "coordinator"
		if len(allowed) > 0 {
			need = strings.Join(allowed, " or ")
		}
		return nil, status.Error(codes.PermissionDenied, fmt.Sprintf("%s needs role %s; %s has role %s", method, need, id.Name, id.Role))
	}
	return context.WithValue(ctx, identityKey{}, id), nil
}

func (s *Server) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, err := authorize(ctx, s.tokens, info.FullMethod)
	if err != nil {
		s.metrics.authFailures.Inc()
		return nil, err
	}
	return h(ctx, req)
}

type authedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (a *authedStream) Context() context.Context { return a.ctx }

func (s *Server) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, err := authorize(ss.Context(), s.tokens, info.FullMethod)
	if err != nil {
		s.metrics.authFailures.Inc()
		return err
	}
	return h(srv, &authedStream{ServerStream: ss, ctx: ctx})
}
