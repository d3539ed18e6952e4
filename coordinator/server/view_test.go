package server

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

func TestClusterStatusJudgesMembers(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	state := func(primary string) *pgdrv1.State {
		return &pgdrv1.State{Clusters: map[string]*pgdrv1.Cluster{"main": {
			Name: "main", Primary: primary, Epoch: 3, Policy: &pgdrv1.Policy{},
			Members: map[string]*pgdrv1.Member{
				"a": {Name: "a", Cluster: "main", Region: "r1"},
				"b": {Name: "b", Cluster: "main", Region: "r1"},
			},
		}}}
	}
	primaryReport := &pgdrv1.HealthReport{Cluster: "main", Node: "a", PostmasterAlive: true, Connectable: true, Timeline: 2, CurrentLsn: 5000}
	replica := func(mut func(r *pgdrv1.HealthReport)) *pgdrv1.HealthReport {
		r := &pgdrv1.HealthReport{Cluster: "main", Node: "b", PostmasterAlive: true, Connectable: true, InRecovery: true,
			Streaming: true, Timeline: 2, ReceiveLsn: 4000, ReplayLsn: 3900, CurrentLsn: 3900, LagBytes: 100}
		if mut != nil {
			mut(r)
		}
		return r
	}
	fresh := func(rs ...*pgdrv1.HealthReport) map[memberKey]sample {
		m := map[memberKey]sample{}
		for _, r := range rs {
			m[memberKey{r.Cluster, r.Node}] = sample{report: r, at: now.Add(-500 * time.Millisecond)}
		}
		return m
	}
	cases := []struct {
		name        string
		primary     string
		samples     map[memberKey]sample
		role        string
		healthy     bool
		lag         int64
		problemPart string
	}{
		{"#1 healthy streaming replica: lag measured against the primary's LSN", "a", fresh(primaryReport, replica(nil)), RoleReplica, true, 1000, ""},
		{"#2 replica without a report", "a", fresh(primaryReport), RoleUnknown, false, 0, "no report"},
		{"#3 replica whose last report is stale", "a", map[memberKey]sample{{"main", "b"}: {report: replica(nil), at: now.Add(-10 * time.Second)}}, RoleUnknown, false, 0, "old"},
		{"#4 postmaster gone", "a", fresh(primaryReport, replica(func(r *pgdrv1.HealthReport) { r.PostmasterAlive, r.Connectable = false, false })), RoleStopped, false, 0, "not running"},
		{"#5 running but refusing connections", "a", fresh(primaryReport, replica(func(r *pgdrv1.HealthReport) { r.Connectable, r.Error = false, "too many clients" })), RoleUnknown, false, 0, "too many clients"},
		{"#6 replica not streaming", "a", fresh(primaryReport, replica(func(r *pgdrv1.HealthReport) { r.Streaming = false })), RoleReplica, false, 1000, "not streaming"},
		{"#7 replica lagging over the limit", "a", fresh(&pgdrv1.HealthReport{Cluster: "main", Node: "a", PostmasterAlive: true, Connectable: true, CurrentLsn: 4000 + 2<<20}, replica(nil)), RoleReplica, false, 2 << 20, "lags"},
		{"#8 fenced", "a", fresh(primaryReport, replica(func(r *pgdrv1.HealthReport) { r.Fenced = true })), RoleFenced, false, 0, "fenced"},
		{"#9 second writable node: split-brain signal", "a", fresh(primaryReport, replica(func(r *pgdrv1.HealthReport) { r.InRecovery = false })), RolePrimary, false, 0, "coordinators' primary is a"},
		{"#10 no primary recorded yet, lag from the replica's own report", "", fresh(replica(nil)), RoleReplica, true, 100, ""},
		{"#11 primary's report is stale: replica's own lag is used", "a", map[memberKey]sample{{"main", "a"}: {report: primaryReport, at: now.Add(-time.Minute)}, {"main", "b"}: {report: replica(nil), at: now}}, RoleReplica, true, 100, ""},
		{"#12 recent archive failure", "a", fresh(primaryReport, replica(func(r *pgdrv1.HealthReport) {
			r.ArchiveFailedCount, r.ArchiveLastFailedWal = 1, "000000020000000000000003"
			r.Time, r.ArchiveLastFailedTime = timestamppb.New(now), timestamppb.New(now.Add(-10*time.Second))
		})), RoleReplica, false, 1000, "archiving failed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := clusterStatus(statusInput{state: state(tc.primary), samples: tc.samples, gossip: map[string]string{"agent/main/b": "alive"}, now: now, staleAfter: 3 * time.Second}, "")
			if len(out) != 1 || len(out[0].Members) != 2 {
				t.Fatalf("unexpected shape: %v", out)
			}
			b := out[0].Members[1]
			if b.Name != "b" || b.Role != tc.role || b.Healthy != tc.healthy {
				t.Fatalf("b: role %s healthy %v problems %v; want role %s healthy %v", b.Role, b.Healthy, b.Problems, tc.role, tc.healthy)
			}
			if tc.role == RoleReplica && b.LagBytes != tc.lag {
				t.Fatalf("lag %d, want %d", b.LagBytes, tc.lag)
			}
			if tc.problemPart != "" && !strings.Contains(strings.Join(b.Problems, "; "), tc.problemPart) {
				t.Fatalf("problems %v do not mention %q", b.Problems, tc.problemPart)
			}
			if b.Problems == nil {
				t.Fatal("problems is nil; want an empty list")
			}
			if b.Gossip != "alive" {
				t.Fatalf("gossip %q", b.Gossip)
			}
		})
	}
	// A cluster filter returns only that cluster.
	if out := clusterStatus(statusInput{state: state("a"), now: now}, "other"); len(out) != 0 {
		t.Fatalf("filter returned %d clusters", len(out))
	}
}

func TestRolesFor(t *testing.T) {
	cases := map[string][]string{
		"/pgdr.v1.AdminService/Status":          {"read", "admin"},
		"/pgdr.v1.AdminService/History":         {"read", "admin"},
		"/pgdr.v1.AdminService/Pause":           {"admin"},
		"/pgdr.v1.AdminService/AddCoordinator":  {"admin"},
		"/pgdr.v1.AgentService/Report":          {"agent"},
		"/pgdr.v1.CoordinatorService/Apply":     nil,
		"/grpc.reflection.v1.ServerReflection/": nil,
	}
	for m, want := range cases {
		got := rolesFor(m)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s: %v, want %v", m, got, want)
		}
	}
}
