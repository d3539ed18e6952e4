package ctl

import (
	"bytes"
	"context"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/pkg/tlsutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// testToken is the bearer token the fake server accepts (as role admin).
const testToken = "s3cret-t0ken-value"

// fakeAdmin is a test double of the coordinator's admin API for the CLI's
// client side: canned answers, the real TLS and an authentication check
// that mirrors the contract (certificate OU or bearer token; read vs admin).
type fakeAdmin struct {
	pgdrv1.UnimplementedAdminServiceServer
	name string
	// failWith, when set, is returned by every call (after it is recorded).
	failWith error

	mu     sync.Mutex
	calls  []string
	pause  *pgdrv1.PauseRequest
	add    *pgdrv1.AddCoordinatorRequest
	remove *pgdrv1.RemoveCoordinatorRequest
	// reportSince: the since of the last Report request.
	reportSince time.Time
	// history, when set, answers History.
	history func(*pgdrv1.HistoryRequest) []*pgdrv1.HistoryEvent
}

func (f *fakeAdmin) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeAdmin) authorize(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	method := path.Base(info.FullMethod)
	f.mu.Lock()
	f.calls = append(f.calls, method)
	f.mu.Unlock()
	role := ""
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
			role = tlsutil.Role(ti.State.VerifiedChains[0][0])
		}
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		for _, v := range md.Get("authorization") {
			if v != "Bearer "+testToken {
				return nil, status.Error(codes.Unauthenticated, "invalid bearer token")
			}
			role = tlsutil.RoleAdmin
		}
	}
	if role == "" {
		return nil, status.Error(codes.Unauthenticated, "no client certificate or bearer token")
	}
	need := roleFor(method)
	if need == tlsutil.RoleAdmin && role != tlsutil.RoleAdmin || role != tlsutil.RoleAdmin && role != tlsutil.RoleRead {
		return nil, status.Errorf(codes.PermissionDenied, "%s needs role %s, caller has role %s", method, need, role)
	}
	if f.failWith != nil {
		return nil, f.failWith
	}
	return h(ctx, req)
}

func ts(s string) *timestamppb.Timestamp {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return timestamppb.New(t)
}

func (f *fakeAdmin) coordinators() []*pgdrv1.CoordinatorStatus {
	return []*pgdrv1.CoordinatorStatus{
		{Name: "c2", Address: "127.0.0.1:7002", Region: "us-west-2", RaftAddress: "127.0.0.1:8002", Gossip: "alive", Voter: true},
		{Name: "c1", Address: "127.0.0.1:7001", Leader: true, Region: "us-east-1", RaftAddress: "127.0.0.1:8001", Gossip: "alive", Voter: true},
	}
}

func (f *fakeAdmin) Status(_ context.Context, r *pgdrv1.StatusRequest) (*pgdrv1.StatusResponse, error) {
	main := &pgdrv1.ClusterStatus{
		Name: "main", Primary: "pg-a1", Epoch: 3, Paused: true, PausedReason: "kernel upgrade",
		Members: []*pgdrv1.MemberStatus{
			{Name: "pg-b1", Region: "us-west-2", Role: "replica", Healthy: true, Dsn: "host=127.0.0.1 port=5434", Timeline: 1,
				Lsn: 0x3000060, LagBytes: 1536, LagSeconds: 0.5, LastReportAgeSeconds: 0.4, Streaming: true, Tags: []string{"no-failover"}},
			{Name: "pg-a2", Region: "us-east-1", Role: "stopped", Healthy: false, Dsn: "host=127.0.0.1 port=5433",
				LastReportAgeSeconds: -1, Problems: []string{"postmaster not running", "no report for 9s"}},
			{Name: "pg-a1", Region: "us-east-1", Role: "primary", Healthy: true, Dsn: "host=127.0.0.1 port=5432", Timeline: 2,
				Lsn: 0x1_0000_0060, LastReportAgeSeconds: 0.2, Priority: 10, ApiUrl: "http://127.0.0.1:9001"},
		},
	}
	main.Compliance = fakeCompliance()
	empty := &pgdrv1.ClusterStatus{Name: "empty", Epoch: 0}
	resp := &pgdrv1.StatusResponse{Coordinators: f.coordinators(), AnsweredBy: f.name, Time: ts("2025-01-02T03:04:05Z")}
	for _, c := range []*pgdrv1.ClusterStatus{main, empty} {
		if r.GetCluster() == "" || r.GetCluster() == c.Name {
			resp.Clusters = append(resp.Clusters, c)
		}
	}
	if len(resp.Clusters) == 0 {
		return nil, status.Errorf(codes.NotFound, "cluster %q not found", r.GetCluster())
	}
	return resp, nil
}

func (f *fakeAdmin) Members(context.Context, *pgdrv1.MembersRequest) (*pgdrv1.MembersResponse, error) {
	return &pgdrv1.MembersResponse{Members: []*pgdrv1.Member{
		{Name: "pg-b1", Cluster: "main", Region: "us-west-2", Dsn: "host=127.0.0.1 port=5434", Tags: []string{"no-failover"}, RegisteredAt: ts("2025-01-01T00:00:02Z")},
		{Name: "pg-a1", Cluster: "main", Region: "us-east-1", Dsn: "host=127.0.0.1 port=5432", Priority: 10, RegisteredAt: ts("2025-01-01T00:00:01Z")},
	}}, nil
}

func (f *fakeAdmin) History(_ context.Context, r *pgdrv1.HistoryRequest) (*pgdrv1.HistoryResponse, error) {
	if f.history != nil {
		return &pgdrv1.HistoryResponse{Events: f.history(r)}, nil
	}
	// Newest first, as a server may well answer "the newest N".
	return &pgdrv1.HistoryResponse{Events: []*pgdrv1.HistoryEvent{
		{Seq: 3, Time: ts("2025-01-01T00:00:03Z"), Cluster: "main", Kind: "paused", Actor: "admin", Message: "kernel upgrade", Epoch: 3},
		{Seq: 1, Time: ts("2025-01-01T00:00:01Z"), Cluster: "main", Kind: "member-registered", Node: "pg-a1", Actor: "pg-a1", Message: "registered"},
		{Seq: 2, Time: ts("2025-01-01T00:00:02Z"), Cluster: "main", Kind: "primary-set", Node: "pg-a1", Epoch: 3, Message: "primary pg-a1"},
	}}, nil
}

func (f *fakeAdmin) Pause(_ context.Context, r *pgdrv1.PauseRequest) (*pgdrv1.PauseResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	// As the state machine does: a repeated pause keeps the first reason.
	if f.pause == nil {
		f.pause = r
	}
	return &pgdrv1.PauseResponse{Policy: &pgdrv1.Policy{Paused: true, PausedReason: f.pause.GetReason(), PausedBy: "admin", PausedAt: ts("2025-01-01T00:00:03Z")}}, nil
}

func (f *fakeAdmin) Resume(context.Context, *pgdrv1.ResumeRequest) (*pgdrv1.ResumeResponse, error) {
	f.mu.Lock()
	f.pause = nil
	f.mu.Unlock()
	return &pgdrv1.ResumeResponse{Policy: &pgdrv1.Policy{}}, nil
}

func (f *fakeAdmin) AddCoordinator(_ context.Context, r *pgdrv1.AddCoordinatorRequest) (*pgdrv1.AddCoordinatorResponse, error) {
	f.mu.Lock()
	f.add = r
	f.mu.Unlock()
	cs := append(f.coordinators(), &pgdrv1.CoordinatorStatus{Name: r.GetName(), Address: r.GetApiAddress(), RaftAddress: r.GetRaftAddress(), Region: r.GetRegion(), Voter: true})
	return &pgdrv1.AddCoordinatorResponse{Coordinators: cs}, nil
}

func (f *fakeAdmin) RemoveCoordinator(_ context.Context, r *pgdrv1.RemoveCoordinatorRequest) (*pgdrv1.RemoveCoordinatorResponse, error) {
	f.mu.Lock()
	f.remove = r
	f.mu.Unlock()
	var cs []*pgdrv1.CoordinatorStatus
	for _, c := range f.coordinators() {
		if c.GetName() != r.GetName() {
			cs = append(cs, c)
		}
	}
	return &pgdrv1.RemoveCoordinatorResponse{Coordinators: cs}, nil
}

// lab is one test's PKI plus the environment pgdrctl sees.
type lab struct {
	dir string
	env map[string]string
}

func newLab(t *testing.T) *lab {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if err := tlsutil.DevInit(dir, []string{"c1"}, nil, "", false); err != nil {
		t.Fatal(err)
	}
	return &lab{dir: dir, env: map[string]string{"PGDR_CA": filepath.Join(dir, "ca.crt")}}
}

func (l *lab) file(name string) string { return filepath.Join(l.dir, name) }

// serve starts f on 127.0.0.1 with the coordinator's certificate and
// returns its address.
func (l *lab) serve(t *testing.T, f *fakeAdmin) string {
	t.Helper()
	cfg, err := tlsutil.ServerConfig(tlsutil.Files{CA: l.file("ca.crt"), Cert: l.file("c1.crt"), Key: l.file("c1.key")}, false)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)), grpc.UnaryInterceptor(f.authorize))
	pgdrv1.RegisterAdminServiceServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// tokenFile writes the valid token to a file and returns its path.
func (l *lab) tokenFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// run runs pgdrctl with l's environment and returns its exit status,
// stdout and stderr.
func (l *lab) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	e := env{stdout: &out, stderr: &errOut, getenv: func(k string) string { return l.env[k] }}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := run(ctx, e, args)
	return code, out.String(), errOut.String()
}
