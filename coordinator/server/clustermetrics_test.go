package server

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/compliance"
	"github.com/pgdr/pgdr/coordinator/failover"
	"github.com/pgdr/pgdr/pkg/testutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// catalogueRow is one metric of docs/metrics.md.
type catalogueRow struct {
	name, typ, status string
	labels            []string
}

// catalogueLabels: the label names docs/metrics.md allows (its
// conventions, and pgdr_build_info's).
var catalogueLabels = []string{"cluster", "node", "repository", "tier", "type", "result", "reason", "phase", "state", "role",
	"target", "source", "kind", "path", "version", "commit", "goversion", "program", "severity"}

// readCatalogue reads the rows of docs/metrics.md's sections whose
// heading starts with one of sections ("Both processes", "Coordinator").
func readCatalogue(t *testing.T, sections ...string) map[string]catalogueRow {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]catalogueRow{}
	in := false
	backticked := regexp.MustCompile("`([^`]+)`")
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if h, ok := strings.CutPrefix(line, "## "); ok {
			in = slices.ContainsFunc(sections, func(s string) bool { return strings.HasPrefix(h, s) })
			continue
		}
		if !in || !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) != 5 {
			t.Fatalf("docs/metrics.md: row %q has %d cells, want 5", line, len(cells))
		}
		name := strings.Trim(strings.TrimSpace(cells[0]), "`")
		// Label names are the backticked words outside parentheses
		// (inside them: the values).
		labelCell := regexp.MustCompile(`\([^)]*\)`).ReplaceAllString(cells[2], "")
		var labels []string
		for _, m := range backticked.FindAllStringSubmatch(labelCell, -1) {
			labels = append(labels, m[1])
		}
		out[name] = catalogueRow{name: name, typ: strings.TrimSpace(cells[1]), status: strings.TrimSpace(cells[4]), labels: labels}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("docs/metrics.md: no coordinator rows found")
	}
	return out
}

// served reports whether a catalogue status says the series is served.
func served(status string) bool { return status == "yes" || strings.HasPrefix(status, "yes ") }

// checkCatalogue fails unless every pgdr_* family gathered is in the
// catalogue with its type, unit suffix and labels, and every row served
// ("yes") is gathered.
func checkCatalogue(t *testing.T, mfs []*dto.MetricFamily, rows map[string]catalogueRow) {
	t.Helper()
	gathered := map[string]bool{}
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, "pgdr_") {
			continue
		}
		gathered[name] = true
		row, ok := rows[name]
		if !ok {
			t.Errorf("%s is served but not in docs/metrics.md's coordinator tables", name)
			continue
		}
		typ := strings.ToLower(mf.GetType().String())
		if typ != row.typ {
			t.Errorf("%s is a %s, docs/metrics.md says %s", name, typ, row.typ)
		}
		switch {
		case typ == "counter" && !strings.HasSuffix(name, "_total"):
			t.Errorf("counter %s does not end in _total", name)
		case typ != "counter" && strings.HasSuffix(name, "_total"):
			t.Errorf("%s %s ends in _total", typ, name)
		case typ == "histogram" && !strings.HasSuffix(name, "_seconds") && !strings.HasSuffix(name, "_bytes"):
			t.Errorf("histogram %s names no unit", name)
		}
		for _, word := range []string{"duration", "delay", "interval", "contact", "timestamp", "rpo", "rto", "lag", "age"} {
			if strings.Contains(name, "_"+word+"_") || strings.HasSuffix(name, "_"+word) {
				if !strings.HasSuffix(name, "_seconds") && !strings.HasSuffix(name, "_bytes") && !strings.HasSuffix(name, "_total") {
					t.Errorf("%s is a time or size and names no unit", name)
				}
			}
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if !slices.Contains(row.labels, lp.GetName()) {
					t.Errorf("%s has label %s, docs/metrics.md lists %v", name, lp.GetName(), row.labels)
				}
				if !slices.Contains(catalogueLabels, lp.GetName()) {
					t.Errorf("%s has label %s, not one the catalogue allows", name, lp.GetName())
				}
			}
		}
	}
	for name, row := range rows {
		if served(row.status) && !gathered[name] && name != "pgdr_build_info" {
			t.Errorf("docs/metrics.md lists %s as served (%s) but the coordinator did not serve it", name, row.status)
		}
	}
}

// series is the value of name with labels (name=value pairs), and whether
// it was gathered.
func series(mfs []*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue(), true
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue(), true
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func gather(t *testing.T, s *Server) []*dto.MetricFamily {
	t.Helper()
	mfs, err := s.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

func recordEv(t *testing.T, s *Server, kind, node string, epoch uint64, msg string, details map[string]string) {
	t.Helper()
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_RECORD_EVENT, &pgdrv1.RecordEvent{Event: &pgdrv1.HistoryEvent{
		Cluster: "main", Kind: kind, Node: node, Epoch: epoch, Message: msg, Details: details}})
}

// metricsCluster gives s (leading) cluster main with members pg-a1..3, a
// policy with two tiers and a drill, a failover (pg-a1 → pg-a2, epoch 2)
// and a switchover back (epoch 3) recorded as the leader records them,
// two ended backup runs and a passed drill.
func metricsCluster(t *testing.T, s *Server) {
	t.Helper()
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_START_TOTALS, &pgdrv1.StartTotals{}) // what the leader loop proposes once every voter knows it
	for _, n := range []string{"pg-a1", "pg-a2", "pg-a3"} {
		mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
			Name: n, Cluster: "main", Region: "r1", Dsn: "host=" + n, ApiUrl: "http://" + n + ":8008"}})
	}
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "pg-a1"})
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_SET_BACKUP_POLICY, &pgdrv1.SetBackupPolicy{Cluster: "main", Policy: &pgdrv1.BackupPolicy{
		PitrWindowSeconds: 86400,
		Tiers: []*pgdrv1.BackupTier{
			{Name: "yearly", Type: "full", Schedule: "0 3 1 1 *", Timezone: "UTC", KeepCount: 2, RunOn: "prefer-standby", TimeoutSeconds: 3600},
			{Name: "weekdays", Type: "incr", Schedule: "0 2 * * 1-5", Timezone: "UTC", KeepCount: 2, RunOn: "prefer-standby", TimeoutSeconds: 3600},
		},
		Drill: &pgdrv1.DrillPolicy{Schedule: "0 4 1 1 *", Timezone: "UTC", Node: "prefer-standby", TimeoutSeconds: 600},
	}})
	at := func(d time.Duration) string { return compliance.FormatTime(time.Now().Add(d)) }
	recordEv(t, s, kindFailoverIntent, "pg-a2", 1, "promote pg-a2 in place of pg-a1", map[string]string{
		compliance.DetailOldPrimary: "pg-a1", compliance.DetailDetectedAt: at(-12 * time.Second)})
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "pg-a2", ExpectedEpoch: 1})
	recordEv(t, s, kindFailoverResult, "pg-a2", 2, "done: pg-a2 is primary at epoch 2", map[string]string{
		compliance.DetailWritableAt: at(-2 * time.Second)})
	recordEv(t, s, kindSwitchoverIntent, "pg-a1", 2, "switch over to pg-a1", map[string]string{compliance.DetailOldPrimary: "pg-a2"})
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "pg-a1", ExpectedEpoch: 2})
	recordEv(t, s, kindSwitchoverResult, "pg-a1", 3, "done: pg-a1 is primary at epoch 3", nil)

	for _, r := range []struct{ id, tier, typ, result string }{{"b1", "yearly", "full", "ok"}, {"b2", "weekdays", "incr", "failed"}} {
		mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_RECORD_BACKUP_RUN, &pgdrv1.RecordBackupRun{Cluster: "main",
			Phase: &pgdrv1.RecordBackupRun_Intent{Intent: &pgdrv1.BackupRun{Id: r.id, Tier: r.tier, Type: r.typ, Node: "pg-a2", TimeoutMs: 60_000}}})
		mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_RECORD_BACKUP_RUN, &pgdrv1.RecordBackupRun{Cluster: "main",
			Phase: &pgdrv1.RecordBackupRun_Result{Result: &pgdrv1.BackupRunResult{Id: r.id, Result: r.result}}})
	}

	// A minute of write-availability seconds (the SLO series).
	from := time.Now().Add(-2*time.Minute).Unix() / 60 * 60
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_RECORD_WRITE_SECONDS, &pgdrv1.RecordWriteSeconds{FromUnix: from, ToUnix: from + 60,
		Clusters: []*pgdrv1.ClusterWriteSeconds{{Cluster: "main", Good: 58, Bad: 2, FirstUnix: from}}})

	ctx := context.Background()
	run := &pgdrv1.DrillRun{Id: "d1", Node: "pg-a2", TimeoutMs: 600_000, Reason: "on request"}
	if err := s.drills.record(ctx, "admin:test", &pgdrv1.RecordDrillRun{Cluster: "main", Phase: &pgdrv1.RecordDrillRun_Intent{Intent: run}}); err != nil {
		t.Fatal(err)
	}
	if err := s.drills.finish(ctx, "admin:test", "main", run, &pgdrv1.DrillRunResult{Id: "d1", Result: "ok",
		Report: &pgdrv1.DrillReport{RunId: "d1", Ok: true, Timings: &pgdrv1.DrillTimings{FetchWrite: 1, Replay: 2, Checks: 3, Total: 6}}}); err != nil {
		t.Fatal(err)
	}
}

// reportMain puts fresh reports of cluster main into the leader's view:
// pg-a1 writable (archiving to "local" 5 s behind), pg-a2 streaming and
// caught up, pg-a3 lagging beyond the failover limit.
func reportMain(s *Server) {
	now := time.Now()
	s.ingestReport(&pgdrv1.HealthReport{Cluster: "main", Node: "pg-a1", PostmasterAlive: true, Connectable: true, Timeline: 3, CurrentLsn: 50 << 20,
		Time:       timestamppb.New(now),
		ArchiveRpo: []*pgdrv1.ArchiveRPO{{Repository: "local", Mode: "sync", Bytes: 1 << 20, Seconds: 5}}}, now)
	s.view.put(&pgdrv1.HealthReport{Cluster: "main", Node: "pg-a2", PostmasterAlive: true, Connectable: true, InRecovery: true, Timeline: 3,
		Streaming: true, ReceiveLsn: 50 << 20, ReplayLsn: 50 << 20, Time: timestamppb.New(now)}, now, time.Time{})
	s.view.put(&pgdrv1.HealthReport{Cluster: "main", Node: "pg-a3", PostmasterAlive: true, Connectable: true, InRecovery: true, Timeline: 3,
		Streaming: true, ReceiveLsn: 10 << 20, ReplayLsn: 10 << 20, Time: timestamppb.New(now)}, now, time.Time{})
}

// TestMetricsCatalogue: a leading coordinator with a cluster, a policy
// with tiers and a drill, a failover, a switchover, a refused failover,
// backup runs and a drill serves exactly the pgdr_* series
// docs/metrics.md lists for the coordinator, with its types, units and
// labels, every row marked served among them, with the values of the
// state it was given.
func TestMetricsCatalogue(t *testing.T) {
	s := testServer(t, Options{})
	startInmemRaft(t, s)
	metricsCluster(t, s)
	ctx := context.Background()

	// A refused failover: the primary is down and the cluster paused.
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_SET_PAUSED, &pgdrv1.SetPaused{Cluster: "main", Paused: true, Reason: "maintenance"})
	testutil.WaitFor(t, 20*time.Second, "the paused refusal counted", func() (bool, error) {
		reportMain(s)
		now := time.Now()
		s.view.put(&pgdrv1.HealthReport{Cluster: "main", Node: "pg-a1", Time: timestamppb.New(now)}, now, time.Time{}) // postmaster gone
		v, _ := series(gather(t, s), "pgdr_coordinator_failovers_refused_total", "reason", failover.RefusedPaused)
		return v == 1, nil
	})
	var mfs []*dto.MetricFamily
	testutil.WaitFor(t, 20*time.Second, "the compliance measurement of main", func() (bool, error) {
		reportMain(s)
		s.complianceTick(ctx)
		mfs = gather(t, s)
		_, ok := series(mfs, "pgdr_cluster_failover_rpo_bytes", "cluster", "main")
		return ok, nil
	})
	checkCatalogue(t, mfs, readCatalogue(t, "Both processes", "Coordinator"))

	want := []struct {
		name   string
		labels []string
		v      float64
	}{
		{"pgdr_coordinator_raft_state", []string{"state", "leader"}, 1},
		{"pgdr_coordinator_raft_state", []string{"state", "follower"}, 0},
		{"pgdr_coordinator_raft_voters", nil, 1},
		{"pgdr_coordinator_raft_last_contact_seconds", nil, 0},
		{"pgdr_coordinator_leader_changes_total", nil, 0}, // startInmemRaft does not watch the observations
		{"pgdr_cluster_members", []string{"cluster", "main", "state", "healthy"}, 2},
		{"pgdr_cluster_members", []string{"cluster", "main", "state", "unhealthy"}, 1},
		{"pgdr_coordinator_members_healthy", nil, 2},
		{"pgdr_coordinator_members_unhealthy", nil, 1},
		{"pgdr_cluster_failover_candidates", []string{"cluster", "main"}, 1},
		{"pgdr_cluster_primary_epoch", []string{"cluster", "main"}, 3},
		{"pgdr_cluster_paused", []string{"cluster", "main"}, 1},
		{"pgdr_cluster_primary_changes_total", []string{"cluster", "main", "kind", "failover"}, 1},
		{"pgdr_cluster_primary_changes_total", []string{"cluster", "main", "kind", "switchover"}, 1},
		{"pgdr_backup_tier_interval_seconds", []string{"cluster", "main", "tier", "weekdays"}, 3 * 86400},
		{"pgdr_backup_runs_total", []string{"cluster", "main", "tier", "yearly", "result", "ok"}, 1},
		{"pgdr_backup_runs_total", []string{"cluster", "main", "tier", "yearly", "result", "failed"}, 0},
		{"pgdr_coordinator_failovers_refused_total", []string{"reason", failover.RefusedPaused}, 1},
		{"pgdr_coordinator_failovers_refused_total", []string{"reason", failover.RefusedLag}, 0},
	}
	for _, w := range want {
		if v, ok := series(mfs, w.name, w.labels...); !ok || v != w.v {
			t.Errorf("%s%v = %v (served %v), want %v", w.name, w.labels, v, ok, w.v)
		}
	}
	for _, l := range [][]string{{"pgdr_backup_tier_interval_seconds", "cluster", "main", "tier", "yearly"}, {"pgdr_drill_interval_seconds", "cluster", "main"}} {
		if v, ok := series(mfs, l[0], l[1:]...); !ok || v != 365*86400 && v != 366*86400 {
			t.Errorf("%s of a yearly schedule: %v (served %v)", l[0], v, ok)
		}
	}
	if v, ok := series(mfs, "pgdr_cluster_primary_change_duration_seconds", "cluster", "main", "kind", "failover"); !ok || v < 9 || v > 11 {
		t.Errorf("failover duration %v (served %v), want about 10 s", v, ok)
	}
	if _, ok := series(mfs, "pgdr_cluster_primary_change_duration_seconds", "cluster", "main", "kind", "switchover"); !ok {
		t.Error("no switchover duration")
	}
	if v, ok := series(mfs, "pgdr_backup_last_success_timestamp_seconds", "cluster", "main", "tier", "yearly"); !ok || time.Since(time.Unix(int64(v), 0)) > time.Minute {
		t.Errorf("yearly last success %v (served %v)", v, ok)
	}
	if _, ok := series(mfs, "pgdr_backup_last_success_timestamp_seconds", "cluster", "main", "tier", "weekdays"); ok {
		t.Error("a last success for a tier that never succeeded")
	}
	if v, ok := series(mfs, "pgdr_coordinator_raft_apply_duration_seconds"); !ok || v < 10 {
		t.Errorf("apply durations observed %v (served %v)", v, ok)
	}
	if v, _ := series(mfs, "pgdr_coordinator_raft_commit_index"); v < float64(s.fsm.LastIndex()) {
		t.Errorf("commit index %v below the applied index %d", v, s.fsm.LastIndex())
	}
	if v, _ := series(mfs, "pgdr_coordinator_raft_term"); v < 1 {
		t.Errorf("term %v", v)
	}

	// A manual failover counts as a failover; its result recorded again
	// (a resuming leader) does not count twice.
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "pg-a2", ExpectedEpoch: 3})
	for range 2 {
		recordEv(t, s, kindManualResult, "pg-a2", 4, "done: pg-a2 is primary at epoch 4", nil)
	}
	if v, _ := series(gather(t, s), "pgdr_cluster_primary_changes_total", "cluster", "main", "kind", "failover"); v != 2 {
		t.Errorf("failovers after a manual one: %v, want 2", v)
	}
}

// startInmemRaft3 makes three servers the voters of one in-memory Raft
// cluster, each watching its leadership and leader changes, and returns
// them once one leads and has caught up.
func startInmemRaft3(t *testing.T) []*Server {
	t.Helper()
	var servers []*Server
	var trans []*raft.InmemTransport
	var cfg raft.Configuration
	for i := 1; i <= 3; i++ {
		s := testServer(t, Options{})
		s.cfg.Name = fmt.Sprintf("c%d", i)
		addr, tr := raft.NewInmemTransport(raft.ServerAddress(s.cfg.Name))
		servers, trans = append(servers, s), append(trans, tr)
		cfg.Servers = append(cfg.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(s.cfg.Name), Address: addr})
	}
	for i, a := range trans {
		for j, b := range trans {
			if i != j {
				a.Connect(b.LocalAddr(), b)
			}
		}
	}
	for i, s := range servers {
		store, snaps := raft.NewInmemStore(), raft.NewInmemSnapshotStore()
		rc := raft.DefaultConfig()
		rc.LocalID = raft.ServerID(s.cfg.Name)
		rc.Logger = hclogger(s.log, "raft", "error")
		rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = 100*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond
		if err := raft.BootstrapCluster(rc, store, store, snaps, trans[i], cfg); err != nil {
			t.Fatal(err)
		}
		r, err := raft.NewRaft(rc, s.fsm, store, store, snaps, trans[i])
		if err != nil {
			t.Fatal(err)
		}
		s.raft, s.raftStarted = r, time.Now()
		ctx, cancel := context.WithCancel(context.Background())
		s.watchLeaderChanges(ctx, r)
		go s.watchLeadership(ctx)
		t.Cleanup(func() {
			cancel()
			s.endLeadership()
			_ = r.Shutdown().Error()
		})
	}
	leaderOf(t, servers)
	return servers
}

// leaderOf waits for the one server that leads and has caught up.
func leaderOf(t *testing.T, servers []*Server) *Server {
	t.Helper()
	var l *Server
	testutil.WaitFor(t, 20*time.Second, "a caught-up leader", func() (bool, error) {
		for _, s := range servers {
			if s.caughtUpLeader() {
				l = s
				return true, nil
			}
		}
		return false, nil
	})
	return l
}

// TestMetricsAcrossLeaderChange: on three coordinators, the leader serves
// raft state leader and the followers follower, all with the same term,
// 3 voters and a commit index at least the leader's applied index; only
// the leader serves the per-cluster series; after a leadership transfer
// the new leader serves the same primary change and backup run totals
// (from the replicated state, never lower), and every coordinator counted
// the leader change.
func TestMetricsAcrossLeaderChange(t *testing.T) {
	servers := startInmemRaft3(t)
	old := leaderOf(t, servers)
	metricsCluster(t, old)
	totals := [][]string{
		{"pgdr_cluster_primary_changes_total", "cluster", "main", "kind", "failover"},
		{"pgdr_cluster_primary_changes_total", "cluster", "main", "kind", "switchover"},
		{"pgdr_backup_runs_total", "cluster", "main", "tier", "yearly", "result", "ok"},
		{"pgdr_backup_runs_total", "cluster", "main", "tier", "weekdays", "result", "failed"},
	}
	check := func(l *Server, when string) {
		t.Helper()
		var term float64
		testutil.WaitFor(t, 20*time.Second, when+": every coordinator's raft metrics", func() (bool, error) {
			applied := float64(l.fsm.LastIndex())
			for i, s := range servers {
				mfs := gather(t, s)
				state := "follower"
				if s == l {
					state = "leader"
				}
				v, _ := series(mfs, "pgdr_coordinator_raft_state", "state", state)
				voters, _ := series(mfs, "pgdr_coordinator_raft_voters")
				commit, _ := series(mfs, "pgdr_coordinator_raft_commit_index")
				tm, _ := series(mfs, "pgdr_coordinator_raft_term")
				contact, _ := series(mfs, "pgdr_coordinator_raft_last_contact_seconds")
				if i == 0 {
					term = tm
				}
				if v != 1 || voters != 3 || commit < applied || tm != term || tm < 1 || contact > 2 {
					return false, fmt.Errorf("%s: %s %v, voters %v, commit %v (leader applied %v), term %v (first %v), last contact %v",
						s.cfg.Name, state, v, voters, commit, applied, tm, term, contact)
				}
				_, perCluster := series(mfs, "pgdr_cluster_primary_epoch", "cluster", "main")
				if perCluster != (s == l) {
					return false, fmt.Errorf("%s (%s) serves the per-cluster series: %v", s.cfg.Name, state, perCluster)
				}
				if s == l {
					for _, tl := range totals {
						if v, _ := series(mfs, tl[0], tl[1:]...); v != 1 {
							return false, fmt.Errorf("%s: %v = %v, want 1", s.cfg.Name, tl, v)
						}
					}
				}
			}
			return true, nil
		})
	}
	check(old, "before the transfer")
	if err := old.raft.LeadershipTransfer().Error(); err != nil {
		t.Fatal(err)
	}
	var l *Server
	testutil.WaitFor(t, 20*time.Second, "a new caught-up leader", func() (bool, error) {
		for _, s := range servers {
			if s != old && s.caughtUpLeader() {
				l = s
				return true, nil
			}
		}
		return false, nil
	})
	check(l, "after the transfer")
	for _, s := range servers {
		if v, _ := series(gather(t, s), "pgdr_coordinator_leader_changes_total"); v < 2 {
			t.Errorf("%s counted %v leader changes, want at least 2", s.cfg.Name, v)
		}
	}
}

// TestFailoverRefusedReasons: a refusal is counted under its reason, one
// outside the fixed set under "other", and every reason is served from 0.
func TestFailoverRefusedReasons(t *testing.T) {
	s := testServer(t, Options{})
	s.metrics.failoverRefused(failover.RefusedLag)
	s.metrics.failoverRefused(refusedUnsettled)
	s.metrics.failoverRefused("primary %s is unhealthy")
	(*metrics)(nil).failoverRefused(failover.RefusedLag) // a server built by hand has none
	mfs := gather(t, s)
	for _, r := range refusedReasons {
		want := 0.0
		if r == failover.RefusedLag || r == refusedUnsettled || r == refusedOther {
			want = 1
		}
		if v, ok := series(mfs, "pgdr_coordinator_failovers_refused_total", "reason", r); !ok || v != want {
			t.Errorf("reason %s: %v (served %v), want %v", r, v, ok, want)
		}
	}
	if n := len(refusedReasons); n != 8 {
		t.Errorf("%d reasons, want the 8 docs/metrics.md lists", n)
	}
}
