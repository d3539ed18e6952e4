package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/pgdr/pgdr/coordinator/config"
	"github.com/pgdr/pgdr/coordinator/fsm"
	"github.com/pgdr/pgdr/coordinator/policy"
	"github.com/pgdr/pgdr/pkg/tlsutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// adminAPIServer makes s the leader of an in-memory Raft with cluster
// "main" registered, serves its admin API over TLS with the production
// interceptors and a tokens file holding a read and an admin token, and
// returns a client for a token.
func adminAPIServer(t *testing.T) (s *Server, client func(token string) pgdrv1.AdminServiceClient) {
	t.Helper()
	return adminAPIServerWith(t, nil)
}

// adminAPIServerWith is adminAPIServer with setup run on the server
// before it starts leading (nil: none).
func adminAPIServerWith(t *testing.T, setup func(*Server)) (s *Server, client func(token string) pgdrv1.AdminServiceClient) {
	t.Helper()
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "tokens.yaml")
	if err := os.WriteFile(tokFile, []byte(fmt.Sprintf("- {name: reader, role: read, sha256: %s}\n- {name: alice, role: admin, sha256: %s}\n",
		config.HashToken("read-secret"), config.HashToken("admin-secret"))), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens, err := config.LoadTokens(tokFile)
	if err != nil {
		t.Fatal(err)
	}
	s, err = newServer(testConfig(), slog.New(slog.DiscardHandler), Options{}, tokens, &tls.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(s)
	}
	startInmemRaft(t, s)
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
		Name: "pg-a1", Cluster: "main", Region: "r1", Dsn: "host=pg-a1", ApiUrl: "http://pg-a1:8008", GossipAddress: "pg-a1:7946"}})

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
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(srvTLS)), grpc.ChainUnaryInterceptor(s.unaryAuth))
	pgdrv1.RegisterAdminServiceServer(gs, &adminAPI{s: s})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	client = func(token string) pgdrv1.AdminServiceClient {
		t.Helper()
		tc, err := tlsutil.ClientConfig(tlsutil.Files{CA: files.CA})
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(tc)),
			grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, o ...grpc.CallOption) error {
				return inv(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), method, req, reply, cc, o...)
			}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return pgdrv1.NewAdminServiceClient(conn)
	}
	return s, client
}

func backupTiers() *pgdrv1.BackupPolicy {
	return &pgdrv1.BackupPolicy{PitrWindowSeconds: 3 * 86400, Tiers: []*pgdrv1.BackupTier{
		{Name: "weekly", Type: "full", Schedule: "CRON_TZ=Europe/Berlin 0 2 * * 0", KeepCount: 4},
		{Name: "nightly", Type: "incr", Schedule: "0 3 * * *", KeepAgeSeconds: 8 * 86400, Repos: []string{"local", "s3-eu"}, RunOn: "standby-only"},
	}}
}

// TestBackupPolicyAdminAPI: the read token reads the (default) policy but
// cannot set one; the admin token sets it, normalized (zone out of the
// schedule, defaults filled), recorded with the admin as actor; invalid
// policies are refused naming the field and change nothing; reset brings
// the defaults back.
func TestBackupPolicyAdminAPI(t *testing.T) {
	s, client := adminAPIServer(t)
	ctx := context.Background()
	reader, admin := client("read-secret"), client("admin-secret")

	got, err := reader.GetBackupPolicy(ctx, &pgdrv1.GetBackupPolicyRequest{Cluster: "main"})
	if err != nil {
		t.Fatal(err)
	}
	if !got.GetIsDefault() || !proto.Equal(got.GetPolicy(), policy.ToProto(policy.Default())) {
		t.Fatalf("a cluster without a policy reads %v", got)
	}
	_, err = reader.SetBackupPolicy(ctx, &pgdrv1.SetBackupPolicyRequest{Cluster: "main", Policy: backupTiers()})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("the read token set a backup policy: %v", err)
	}
	if _, err := reader.GetBackupPolicy(ctx, &pgdrv1.GetBackupPolicyRequest{Cluster: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown cluster: %v", err)
	}

	set, err := admin.SetBackupPolicy(ctx, &pgdrv1.SetBackupPolicyRequest{Cluster: "main", Policy: backupTiers()})
	if err != nil {
		t.Fatal(err)
	}
	w := set.GetPolicy().GetTiers()
	if !set.GetChanged() || set.GetIsDefault() || len(w) != 2 || w[0].GetSchedule() != "0 2 * * 0" || w[0].GetTimezone() != "Europe/Berlin" ||
		w[0].GetRunOn() != "prefer-standby" || w[0].GetTimeoutSeconds() != 12*3600 || w[1].GetTimezone() != "UTC" ||
		set.GetPolicy().GetUpdatedBy() != "admin:alice" {
		t.Fatalf("set returned %v", set)
	}
	ev := s.fsm.History("main", 0, 1)[0]
	if ev.GetKind() != fsm.KindBackupPolicySet || ev.GetActor() != "admin:alice" {
		t.Fatalf("history: %v", ev)
	}
	again, err := admin.SetBackupPolicy(ctx, &pgdrv1.SetBackupPolicyRequest{Cluster: "main", Policy: backupTiers()})
	if err != nil || again.GetChanged() {
		t.Fatalf("the same policy again: changed=%v err=%v", again.GetChanged(), err)
	}

	waitTotalsStarted(t, s)
	before := s.fsm.State()
	for _, c := range []struct {
		name string
		req  *pgdrv1.SetBackupPolicyRequest
		want string
	}{
		{"bad cron", &pgdrv1.SetBackupPolicyRequest{Cluster: "main", Policy: with(func(p *pgdrv1.BackupPolicy) { p.Tiers[1].Schedule = "0 3 * *" })}, "tiers[1].schedule: "},
		{"retention shorter than the interval", &pgdrv1.SetBackupPolicyRequest{Cluster: "main", Policy: with(func(p *pgdrv1.BackupPolicy) { p.Tiers[0].KeepCount, p.Tiers[0].KeepAgeSeconds = 0, 86400 })}, "tiers[0].keep_age: 1d is shorter"},
		{"incr without full", &pgdrv1.SetBackupPolicyRequest{Cluster: "main", Policy: with(func(p *pgdrv1.BackupPolicy) { p.Tiers = p.Tiers[1:] })}, "tiers[0].type: incr tier \"nightly\" needs a full tier"},
		{"bad timezone", &pgdrv1.SetBackupPolicyRequest{Cluster: "main", Policy: with(func(p *pgdrv1.BackupPolicy) { p.Tiers[1].Timezone = "Europe/Atlantis" })}, "tiers[1].timezone: "},
		{"negative keep_count", &pgdrv1.SetBackupPolicyRequest{Cluster: "main", Policy: with(func(p *pgdrv1.BackupPolicy) { p.Tiers[0].KeepCount = -2 })}, "tiers[0].keep_count: -2 is negative"},
		{"duplicate tier", &pgdrv1.SetBackupPolicyRequest{Cluster: "main", Policy: with(func(p *pgdrv1.BackupPolicy) { p.Tiers[1].Name = "weekly" })}, "tiers[1].name: "},
		{"no policy", &pgdrv1.SetBackupPolicyRequest{Cluster: "main"}, "policy: required"},
		{"policy and reset", &pgdrv1.SetBackupPolicyRequest{Cluster: "main", Policy: backupTiers(), ResetToDefaults: true}, "not both"},
		{"bad cluster name", &pgdrv1.SetBackupPolicyRequest{Cluster: "../x", Policy: backupTiers()}, "cluster: "},
	} {
		_, err := admin.SetBackupPolicy(ctx, c.req)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: want InvalidArgument %q, got %v", c.name, c.want, err)
		}
	}
	if _, err := admin.SetBackupPolicy(ctx, &pgdrv1.SetBackupPolicyRequest{Cluster: "nope", Policy: backupTiers()}); status.Code(err) != codes.NotFound {
		t.Errorf("unknown cluster: %v", err)
	}
	if after := s.fsm.State(); !proto.Equal(before, after) {
		t.Fatal("a refused backup policy changed the state")
	}

	reset, err := admin.SetBackupPolicy(ctx, &pgdrv1.SetBackupPolicyRequest{Cluster: "main", ResetToDefaults: true})
	if err != nil || !reset.GetIsDefault() || !reset.GetChanged() {
		t.Fatalf("reset: %v %v", reset, err)
	}
	if got, _ := reader.GetBackupPolicy(ctx, &pgdrv1.GetBackupPolicyRequest{Cluster: "main"}); !got.GetIsDefault() {
		t.Fatalf("after reset: %v", got)
	}
}

func with(fn func(p *pgdrv1.BackupPolicy)) *pgdrv1.BackupPolicy {
	p := backupTiers()
	fn(p)
	return p
}
