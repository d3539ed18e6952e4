package server

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/pgdr/pgdr/coordinator/failover"
	"github.com/pgdr/pgdr/coordinator/fsm"
	"github.com/pgdr/pgdr/pkg/testutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

const mib = 1 << 20

// applyDirect applies commands to s's FSM as if Raft had committed them.
func applyDirect(t testing.TB, s *Server, typ pgdrv1.CommandType, payload proto.Message) {
	t.Helper()
	c, err := fsm.NewCommand(typ, payload, "admin:test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b, err := fsm.Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	if res := s.fsm.Apply(&raft.Log{Index: s.fsm.LastIndex() + 1, Data: b}).(*pgdrv1.ApplyResult); !res.Ok {
		t.Fatalf("apply %s: %s", typ, res.Error)
	}
}

// lagCluster is cluster main: primary a at epoch 1, replica b.
func lagCluster(t *testing.T, s *Server) {
	t.Helper()
	for _, n := range []string{"a", "b"} {
		applyDirect(t, s, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
			Cluster: "main", Name: n, Region: "eu-west-1"}})
	}
	applyDirect(t, s, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "a", ExpectedEpoch: 0})
}

func writable(node string, lsn uint64) *pgdrv1.HealthReport {
	return &pgdrv1.HealthReport{Cluster: "main", Node: node, PostmasterAlive: true, Connectable: true, CurrentLsn: lsn, Timeline: 1}
}

func standby(node string, lsn uint64) *pgdrv1.HealthReport {
	return &pgdrv1.HealthReport{Cluster: "main", Node: node, PostmasterAlive: true, Connectable: true, InRecovery: true,
		Streaming: true, CurrentLsn: lsn, ReceiveLsn: lsn, ReplayLsn: lsn, Timeline: 1}
}

// pgDown is the report of an agent whose PostgreSQL is gone: no LSN.
func pgDown(node string) *pgdrv1.HealthReport {
	return &pgdrv1.HealthReport{Cluster: "main", Node: node, Error: "postmaster: not running (no postmaster.pid)"}
}

func decide(t *testing.T, s *Server, now time.Time) (failover.Input, failover.Decision) {
	t.Helper()
	c, _ := s.fsm.Cluster("main")
	s.leases.assumeHeld(&pgdrv1.State{Clusters: map[string]*pgdrv1.Cluster{"main": c}}, now.Add(-time.Minute), time.Second)
	in := s.failoverInput(c, s.view.snapshot(), now)
	return in, failover.Decide(in)
}

// TestPrimaryLSNSurvivesPostgresDeath: asynchronous mode, the primary at
// 600 MB, the replica at 100 MB; the primary's PostgreSQL crashes while its
// agent keeps reporting (no LSN). The leader's input keeps 600 MB and the
// decision refuses for the lag; a new leader, its view empty, judges
// against the LSN recorded in Raft; and at a new epoch the old epoch's LSN
// no longer counts (unknown: refused unless forced).
func TestPrimaryLSNSurvivesPostgresDeath(t *testing.T) {
	s := testServer(t, Options{})
	lagCluster(t, s)
	now := time.Now()
	s.ingestReport(writable("a", 600*mib), now.Add(-3*time.Second))
	s.ingestReport(standby("b", 100*mib), now)
	s.ingestReport(writable("b", 900*mib), now.Add(-2*time.Second)) // not the primary: ignored
	s.ingestReport(standby("b", 100*mib), now)
	s.ingestReport(pgDown("a"), now.Add(-time.Second))
	s.ingestReport(pgDown("a"), now)

	in, d := decide(t, s, now)
	if in.PrimaryLastLSN != 600*mib {
		t.Fatalf("the primary's last LSN is %d after its PostgreSQL died, want %d (the highest it reported)", in.PrimaryLastLSN, 600*mib)
	}
	if d.Action != failover.ActionNone || !strings.Contains(d.Reason, "b: lags 524288000 bytes") {
		t.Fatalf("decided %s %s: %s; want none for the lag", d.Action, d.Candidate, d.Reason)
	}

	for _, m := range s.clusterStatus("main")[0].Members {
		if m.Name == "b" && m.LagBytes != 500*mib {
			t.Fatalf("status: b lags %d bytes, want %d (against the primary's last known LSN)", m.LagBytes, 500*mib)
		}
	}

	// The leader writes what it saw to Raft; a new leader starts empty.
	c, _ := s.fsm.Cluster("main")
	lsn := s.primaryLSN.due(c, 0, failover.DefaultMaxLag, now)
	if lsn != 600*mib {
		t.Fatalf("due to record %d, want %d", lsn, 600*mib)
	}
	applyDirect(t, s, pgdrv1.CommandType_COMMAND_TYPE_RECORD_PRIMARY_LSN, &pgdrv1.RecordPrimaryLSN{Cluster: "main", Primary: "a", Epoch: 1, Lsn: lsn})
	next := testServer(t, Options{})
	next.fsm = s.fsm
	next.ingestReport(standby("b", 100*mib), now)
	next.ingestReport(pgDown("a"), now)
	if in, d := decide(t, next, now); in.PrimaryLastLSN != 600*mib || d.Action != failover.ActionNone || !strings.Contains(d.Reason, "lags") {
		t.Fatalf("new leader: primary LSN %d, decided %s %s: %s; want %d and none for the lag", in.PrimaryLastLSN, d.Action, d.Candidate, d.Reason, 600*mib)
	}

	// A new epoch (b promoted, then gone before it reported writable): the
	// old epoch's LSN says nothing about b's; unknown refuses.
	applyDirect(t, s, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "b", ExpectedEpoch: 1})
	s.ingestReport(pgDown("b"), now)
	s.ingestReport(standby("a", 600*mib), now)
	if in, d := decide(t, s, now); in.PrimaryLastLSN != 0 || d.Action != failover.ActionNone || !strings.Contains(d.Reason, "lag unknown") {
		t.Fatalf("new epoch: primary LSN %d, decided %s %s: %s; want unknown and none", in.PrimaryLastLSN, d.Action, d.Candidate, d.Reason)
	}
}

// TestPrimaryLSNRecordingIsBounded: the first LSN of an epoch is due at
// once, a small advance only after primaryLSNInterval, a large one (half
// the lag limit) after primaryLSNMinInterval, and nothing not above what
// Raft holds.
func TestPrimaryLSNRecordingIsBounded(t *testing.T) {
	p := newPrimaryLSNs()
	c := &pgdrv1.Cluster{Name: "main", Primary: "a", Epoch: 3}
	t0 := time.Now()
	const limit = 16 * mib
	p.observe("main", "a", 3, 100*mib)
	p.observe("main", "a", 3, 0) // a report without an LSN changes nothing
	steps := []struct {
		what     string
		observe  uint64
		recorded uint64
		at       time.Duration
		want     uint64
	}{
		{"the epoch's first", 0, 0, 0, 100 * mib},
		{"nothing new", 0, 100 * mib, 2 * time.Second, 0},
		{"a small advance before the interval", 101 * mib, 100 * mib, 2 * time.Second, 0},
		{"a small advance after the interval", 0, 100 * mib, primaryLSNInterval, 101 * mib},
		{"half the limit, before the minimum interval", 101*mib + limit/2, 101 * mib, primaryLSNInterval + 500*time.Millisecond, 0},
		{"half the limit, after the minimum interval", 0, 101 * mib, primaryLSNInterval + primaryLSNMinInterval, 101*mib + limit/2},
		{"Raft already holds more (another leader's)", 0, 200 * mib, 30 * time.Second, 0},
	}
	for _, st := range steps {
		if st.observe > 0 {
			p.observe("main", "a", 3, st.observe)
		}
		got := p.due(c, st.recorded, limit, t0.Add(st.at))
		if got != st.want {
			t.Fatalf("%s: due %d, want %d", st.what, got, st.want)
		}
		if got > 0 {
			p.wrote("main", got, t0.Add(st.at))
		}
	}
	// Another primary or epoch: what was seen no longer counts.
	if got := p.get("main", "a", 4); got != 0 {
		t.Fatalf("epoch 4: %d", got)
	}
	if got := p.due(&pgdrv1.Cluster{Name: "main", Primary: "b", Epoch: 4}, 0, limit, t0.Add(time.Hour)); got != 0 {
		t.Fatalf("due for primary b at epoch 4: %d", got)
	}
}

// TestIncompleteReportIsNotWritable: a report whose recovery state could
// not be read (the identity query timed out after SELECT 1) is neither a
// writable primary's position nor a writable node the leader would rejoin.
func TestIncompleteReportIsNotWritable(t *testing.T) {
	s := testServer(t, Options{})
	lagCluster(t, s)
	now := time.Now()
	r := &pgdrv1.HealthReport{Cluster: "main", Node: "b", PostmasterAlive: true, Connectable: true, RecoveryUnknown: true,
		Error: "server identity: timeout: context deadline exceeded"}
	s.ingestReport(r, now)
	sm, _ := s.view.get(memberKey{"main", "b"})
	if sm.report.Connectable {
		t.Fatal("an incomplete report is kept as connectable (and so as not in recovery: writable)")
	}
	st := clusterStatus(statusInput{state: &pgdrv1.State{Clusters: s.fsm.Clusters()}, samples: s.view.snapshot(), now: now,
		staleAfter: time.Minute}, "main")
	for _, m := range st[0].Members {
		if m.Name == "b" && (m.Role == RolePrimary || !strings.Contains(strings.Join(m.Problems, "; "), "recovery state")) {
			t.Fatalf("status of b: role %s problems %v", m.Role, m.Problems)
		}
	}
}

// TestPromotedCandidateSeedsPrimaryLSN: right after a failover records the
// candidate as primary, the new epoch's last known LSN is what the
// candidate had received, not unknown: should it die before its first
// report as a primary, the lag of the others is still judged.
func TestPromotedCandidateSeedsPrimaryLSN(t *testing.T) {
	s := testServer(t, Options{})
	s.cfg.Failover.CommandTimeout.Duration = 200 * time.Millisecond
	startInmemRaft(t, s)
	for _, n := range []string{"a", "b"} {
		mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
			Cluster: "main", Name: n, Region: "eu-west-1"}})
	}
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "a", ExpectedEpoch: 0})
	now := time.Now()
	s.ingestReport(standby("b", 300*mib), now)
	c, _ := s.fsm.Cluster("main")
	s.leases.assumeHeld(&pgdrv1.State{Clusters: map[string]*pgdrv1.Cluster{"main": c}}, now.Add(-time.Minute), time.Second)
	s.executeFailover(s.currentLeaderCtx(), c, failover.Decision{Action: failover.ActionPromote, Candidate: "b", Reason: "test"})
	c, _ = s.fsm.Cluster("main")
	if c.Primary != "b" || c.Epoch != 2 {
		t.Fatalf("primary %s at epoch %d, want b at 2", c.Primary, c.Epoch)
	}
	if got := s.primaryLastLSN(c); got != 300*mib {
		t.Fatalf("the new epoch's last known LSN is %d, want the candidate's received %d", got, 300*mib)
	}
}

// TestPrimaryLSNRecordedInRaft: the leader loop writes the primary's
// highest LSN seen to Raft, where a later leader finds it.
func TestPrimaryLSNRecordedInRaft(t *testing.T) {
	s := testServer(t, Options{})
	startInmemRaft(t, s)
	for _, n := range []string{"a", "b"} {
		mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
			Cluster: "main", Name: n, Region: "eu-west-1"}})
	}
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "a", ExpectedEpoch: 0})
	s.ingestReport(writable("a", 600*mib), time.Now())
	s.ingestReport(pgDown("a"), time.Now())
	testutil.WaitFor(t, 10*time.Second, "the primary's LSN in Raft", func() (bool, error) {
		c, _ := s.fsm.Cluster("main")
		return c.PrimaryLastLsn == 600*mib && c.PrimaryLastLsnEpoch == 1,
			fmt.Errorf("recorded %d at epoch %d", c.PrimaryLastLsn, c.PrimaryLastLsnEpoch)
	})
}

// TestPrimaryLSNSeedSurvivesLeaderChange: review D9. The new epoch's LSN
// floor (the higher of the candidate's position and the old epoch's
// floor) is replicated with the new primary, not kept in the leader's
// memory: a leader that takes over right after the failover, before the
// new primary's first report, still judges the lag against it.
func TestPrimaryLSNSeedSurvivesLeaderChange(t *testing.T) {
	for _, c := range []struct {
		what             string
		oldFloor, candAt uint64
		want             uint64
	}{
		{"old floor above the candidate", 600 * mib, 300 * mib, 600 * mib},
		{"candidate above the old floor", 100 * mib, 300 * mib, 300 * mib},
	} {
		t.Run(c.what, func(t *testing.T) {
			s := testServer(t, Options{})
			s.cfg.Failover.CommandTimeout.Duration = 200 * time.Millisecond
			startInmemRaft(t, s)
			for _, n := range []string{"a", "b"} {
				mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
					Cluster: "main", Name: n, Region: "eu-west-1"}})
			}
			mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "a", ExpectedEpoch: 0})
			mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_RECORD_PRIMARY_LSN, &pgdrv1.RecordPrimaryLSN{Cluster: "main", Primary: "a", Epoch: 1, Lsn: c.oldFloor})
			now := time.Now()
			s.ingestReport(standby("b", c.candAt), now)
			cl, _ := s.fsm.Cluster("main")
			s.leases.assumeHeld(&pgdrv1.State{Clusters: map[string]*pgdrv1.Cluster{"main": cl}}, now.Add(-time.Minute), time.Second)
			s.executeFailover(s.currentLeaderCtx(), cl, failover.Decision{Action: failover.ActionPromote, Candidate: "b", Reason: "test"})
			cl, _ = s.fsm.Cluster("main")
			if cl.Primary != "b" || cl.Epoch != 2 {
				t.Fatalf("primary %s at epoch %d, want b at 2", cl.Primary, cl.Epoch)
			}
			// A new leader: its memory holds nothing of the failover.
			s.primaryLSN = newPrimaryLSNs()
			if got := s.primaryLastLSN(cl); got != c.want {
				t.Fatalf("a new leader's last known LSN of b at epoch 2 is %d, want %d (state: %d at epoch %d)",
					got, c.want, cl.PrimaryLastLsn, cl.PrimaryLastLsnEpoch)
			}
		})
	}
}
