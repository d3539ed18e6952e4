package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/pgdr/pgdr/coordinator/coordtest"
	"github.com/pgdr/pgdr/pkg/gossip"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/tlsutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// wantCode checks err has the gRPC code and, when given, mentions text.
func wantCode(t *testing.T, what string, err error, code codes.Code, text string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: got %v, want code %s", what, err, code)
	}
	if text != "" && !strings.Contains(status.Convert(err).Message(), text) {
		t.Fatalf("%s: message %q does not mention %q", what, status.Convert(err).Message(), text)
	}
}

// TestAPIAuthValidationGossipAndMembership: callers without credentials or
// with the wrong role are refused, malformed requests get InvalidArgument
// naming the field and change nothing, a coordinator with a wrong gossip
// key cannot join the pool, and voters are added and removed through the
// admin API.
func TestAPIAuthValidationGossipAndMembership(t *testing.T) {
	if testing.Short() {
		t.Skip("starts coordinator processes")
	}
	c := coordtest.Start(t, coordtest.Options{Agents: []string{"pg-x"}})
	leader := c.WaitLeader(60 * time.Second)
	ctx := ctxT(t)

	if err := register(t, c, leader, "main", "pg-seed"); err != nil {
		t.Fatal(err)
	}
	before := localHistory(t, c, leader)

	t.Run("authentication and roles", func(t *testing.T) {
		anon := pgdrv1.NewAdminServiceClient(c.Conn(leader, ""))
		_, err := anon.Status(ctx, &pgdrv1.StatusRequest{})
		wantCode(t, "no credentials", err, codes.Unauthenticated, "no credentials")
		_, err = anon.Status(coordtest.WithToken(ctx, "not-a-token"), &pgdrv1.StatusRequest{})
		wantCode(t, "unknown token", err, codes.Unauthenticated, "not recognised")

		// Read role: status yes, pause no.
		if _, err := anon.Status(coordtest.WithToken(ctx, c.Tokens[tlsutil.RoleRead]), &pgdrv1.StatusRequest{}); err != nil {
			t.Fatalf("status with read token: %v", err)
		}
		_, err = anon.Pause(coordtest.WithToken(ctx, c.Tokens[tlsutil.RoleRead]), &pgdrv1.PauseRequest{Cluster: "main"})
		wantCode(t, "pause with read token", err, codes.PermissionDenied, "admin")
		reader := pgdrv1.NewAdminServiceClient(c.Conn(leader, "reader"))
		if _, err := reader.Status(ctx, &pgdrv1.StatusRequest{}); err != nil {
			t.Fatalf("status with reader certificate: %v", err)
		}
		_, err = reader.Pause(ctx, &pgdrv1.PauseRequest{Cluster: "main"})
		wantCode(t, "pause with reader certificate", err, codes.PermissionDenied, "admin")

		// Agent role: only the agent API, and only for its own node.
		agentConn := c.Conn(leader, "pg-x")
		_, err = pgdrv1.NewAdminServiceClient(agentConn).Status(ctx, &pgdrv1.StatusRequest{})
		wantCode(t, "status with agent certificate", err, codes.PermissionDenied, "")
		_, err = pgdrv1.NewAgentServiceClient(agentConn).Register(ctx, &pgdrv1.RegisterRequest{Member: &pgdrv1.Member{Cluster: "main", Name: "pg-y", Region: "r"}})
		wantCode(t, "agent registering another node", err, codes.PermissionDenied, "pg-y")
		// ... nor for its own node name in another cluster, by certificate
		// or by its bound token.
		_, err = pgdrv1.NewAgentServiceClient(agentConn).Register(ctx, &pgdrv1.RegisterRequest{Member: &pgdrv1.Member{Cluster: "other", Name: "pg-x", Region: "r"}})
		wantCode(t, "agent registering in another cluster", err, codes.PermissionDenied, "other")
		anonAgent := pgdrv1.NewAgentServiceClient(c.Conn(leader, ""))
		tokCtx := coordtest.WithToken(ctx, c.AgentTokens["pg-x"])
		_, err = anonAgent.Register(tokCtx, &pgdrv1.RegisterRequest{Member: &pgdrv1.Member{Cluster: "main", Name: "pg-seed", Region: "r", Dsn: "host=attacker"}})
		wantCode(t, "agent token registering another node", err, codes.PermissionDenied, "pg-seed")
		_, err = anonAgent.RenewLease(tokCtx, &pgdrv1.RenewLeaseRequest{Cluster: "main", Node: "pg-seed", Epoch: 1})
		wantCode(t, "agent token renewing another node's lease", err, codes.PermissionDenied, "pg-seed")
		// Admin role may not pose as an agent.
		_, err = pgdrv1.NewAgentServiceClient(c.Conn(leader, "admin")).Register(ctx, &pgdrv1.RegisterRequest{Member: &pgdrv1.Member{Cluster: "main", Name: "pg-x", Region: "r"}})
		wantCode(t, "admin calling the agent API", err, codes.PermissionDenied, "agent")

		// No TLS at all, and a certificate from another CA: refused.
		plain, err := grpc.NewClient(leader.APIAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer plain.Close()
		_, err = pgdrv1.NewAdminServiceClient(plain).Status(ctx, &pgdrv1.StatusRequest{})
		if err == nil {
			t.Fatal("plaintext call succeeded")
		}
		otherCA := t.TempDir()
		if err := tlsutil.DevInit(otherCA, nil, nil, "", false); err != nil {
			t.Fatal(err)
		}
		tc, err := tlsutil.ClientConfig(tlsutil.Files{CA: filepath.Join(c.CertDir, "ca.crt"),
			Cert: filepath.Join(otherCA, "admin.crt"), Key: filepath.Join(otherCA, "admin.key")})
		if err != nil {
			t.Fatal(err)
		}
		forged, err := grpc.NewClient(leader.APIAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			t.Fatal(err)
		}
		defer forged.Close()
		if _, err := pgdrv1.NewAdminServiceClient(forged).Pause(ctx, &pgdrv1.PauseRequest{Cluster: "main"}); err == nil {
			t.Fatal("an admin certificate from another CA was accepted")
		}
	})

	t.Run("malformed requests", func(t *testing.T) {
		admin := c.Admin(leader)
		agent := pgdrv1.NewAgentServiceClient(c.Conn(leader, "pg-x"))
		_, err := admin.Pause(ctx, &pgdrv1.PauseRequest{})
		wantCode(t, "pause without cluster", err, codes.InvalidArgument, "cluster")
		_, err = admin.Pause(ctx, &pgdrv1.PauseRequest{Cluster: "no such/cluster"})
		wantCode(t, "pause with a bad name", err, codes.InvalidArgument, "cluster")
		_, err = admin.Pause(ctx, &pgdrv1.PauseRequest{Cluster: "ghost"})
		wantCode(t, "pause of an unknown cluster", err, codes.NotFound, "ghost")
		_, err = admin.History(ctx, &pgdrv1.HistoryRequest{Limit: 1_000_000})
		wantCode(t, "history limit", err, codes.InvalidArgument, "limit")
		_, err = admin.AddCoordinator(ctx, &pgdrv1.AddCoordinatorRequest{Name: "c9", RaftAddress: "nowhere", ApiAddress: "127.0.0.1:1"})
		wantCode(t, "add coordinator bad address", err, codes.InvalidArgument, "raft_address")
		_, err = admin.RemoveCoordinator(ctx, &pgdrv1.RemoveCoordinatorRequest{Name: ""})
		wantCode(t, "remove coordinator without name", err, codes.InvalidArgument, "name")
		_, err = agent.Register(ctx, &pgdrv1.RegisterRequest{})
		wantCode(t, "register without member", err, codes.InvalidArgument, "member")
		_, err = agent.Register(ctx, &pgdrv1.RegisterRequest{Member: &pgdrv1.Member{Cluster: "main", Name: "pg-x"}})
		wantCode(t, "register without region", err, codes.InvalidArgument, "member.region")
		tags := make([]string, 60000)
		for i := range tags {
			tags[i] = fmt.Sprint("t", i)
		}
		_, err = agent.Register(ctx, &pgdrv1.RegisterRequest{Member: &pgdrv1.Member{Cluster: "main", Name: "pg-x", Region: "r", Tags: tags}})
		wantCode(t, "register with 60,000 tags", err, codes.InvalidArgument, "member.tags")
		stream, err := agent.Report(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = stream.Send(&pgdrv1.HealthReport{Cluster: "main", Node: "pg-x"})
		_, err = stream.CloseAndRecv()
		wantCode(t, "report from an unregistered member", err, codes.FailedPrecondition, "Register")
		// Nothing above changed the replicated state.
		// (coordinator-* events are the coordinators' own: a leader change
		// on a loaded machine records them.)
		if err := sameHistory(clusterEvents(localHistory(t, c, leader)), clusterEvents(before), false); err != nil {
			t.Fatalf("a refused request changed the history: %v", err)
		}
	})

	t.Run("wrong gossip key cannot join", func(t *testing.T) {
		k, err := gossip.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		badKey := filepath.Join(c.Dir, "bad-gossip.key")
		if err := os.WriteFile(badKey, []byte(k), 0o600); err != nil {
			t.Fatal(err)
		}
		bad := c.AddNode("c-bad", badKey)
		t.Cleanup(func() { c.Kill(bad) })
		testutil.WaitFor(t, 60*time.Second, "c-bad records its failed join", func() (bool, error) {
			h, err := c.Health(bad)
			if err != nil {
				return false, err
			}
			return h.GossipJoined != nil && !*h.GossipJoined && h.GossipError != "", nil
		})
		for _, n := range c.Nodes {
			h, err := c.Health(n)
			if err != nil {
				t.Fatal(err)
			}
			if h.GossipAlive != 3 {
				t.Fatalf("%s sees %d alive gossip members, want the 3 good coordinators", n.Name, h.GossipAlive)
			}
		}
	})

	t.Run("add and remove a voter", func(t *testing.T) {
		extra := c.AddNode("c-extra", c.KeyFile)
		t.Cleanup(func() { c.Kill(extra) })
		// The same kind of node with the right key joins the pool (the
		// contrast that makes the wrong-key subtest meaningful).
		testutil.WaitFor(t, 60*time.Second, "c-extra joins the gossip pool", func() (bool, error) {
			h, err := c.Health(extra)
			if err != nil {
				return false, err
			}
			return h.GossipJoined != nil && *h.GossipJoined && h.GossipAlive == 4, fmt.Errorf("%+v", h)
		})
		admin := c.Admin(other(c, leader)) // through a follower: forwarded
		resp, err := admin.AddCoordinator(ctx, &pgdrv1.AddCoordinatorRequest{Name: "c-extra", RaftAddress: extra.RaftAddr, ApiAddress: extra.APIAddr, Region: "ap-south-1"})
		if err != nil {
			t.Fatalf("add coordinator: %v", err)
		}
		if !hasCoordinator(resp.Coordinators, "c-extra") {
			t.Fatalf("c-extra missing after add: %v", resp.Coordinators)
		}
		want := localHistory(t, c, leader)
		waitHistory(t, c, extra, want, false) // the new voter replicates the state
		st, err := c.Admin(extra).Status(ctx, &pgdrv1.StatusRequest{})
		if err != nil {
			t.Fatalf("status through the new voter: %v", err)
		}
		if len(st.Coordinators) != 4 {
			t.Fatalf("%d coordinators, want 4", len(st.Coordinators))
		}
		rr, err := admin.RemoveCoordinator(ctx, &pgdrv1.RemoveCoordinatorRequest{Name: "c-extra"})
		if err != nil {
			t.Fatalf("remove coordinator: %v", err)
		}
		if hasCoordinator(rr.Coordinators, "c-extra") {
			t.Fatalf("c-extra still listed after remove: %v", rr.Coordinators)
		}
		_, err = admin.RemoveCoordinator(ctx, &pgdrv1.RemoveCoordinatorRequest{Name: "c-extra"})
		wantCode(t, "removing it twice", err, codes.NotFound, "c-extra")
	})
}

func hasCoordinator(list []*pgdrv1.CoordinatorStatus, name string) bool {
	for _, c := range list {
		if c.Name == name {
			return true
		}
	}
	return false
}

// clusterEvents drops the coordinators' own events (coordinator-added,
// -updated, -removed) from h.
func clusterEvents(h []*pgdrv1.HistoryEvent) []*pgdrv1.HistoryEvent {
	var out []*pgdrv1.HistoryEvent
	for _, ev := range h {
		if !strings.HasPrefix(ev.GetKind(), "coordinator-") {
			out = append(out, ev)
		}
	}
	return out
}
