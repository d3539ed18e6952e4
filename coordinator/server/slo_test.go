package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/config"
	"github.com/pgdr/pgdr/coordinator/fsm"
	"github.com/pgdr/pgdr/coordinator/slo"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestHeartbeatsObserve: only heartbeat writers' reports move a cluster's
// newest heartbeat, placed at arrival minus its age; an older one never
// replaces a newer one; a writable server with the heartbeat off stops
// the cluster's judgement.
func TestHeartbeatsObserve(t *testing.T) {
	h := newHeartbeats()
	now := time.Now()
	hb := timestamppb.New(now.Add(-time.Hour)) // the writer's clock is an hour off: only the age counts
	h.observe(&pgdrv1.HealthReport{Cluster: "main", Node: "pg-a2", InRecovery: true, Connectable: true, HeartbeatTime: hb, HeartbeatAgeMs: 10}, now)
	if len(h.snapshot()) != 0 {
		t.Fatal("a replica's replayed heartbeat was judged")
	}
	h.observe(&pgdrv1.HealthReport{Cluster: "main", Node: "pg-a1", Connectable: true, HeartbeatTime: hb, HeartbeatAgeMs: 300, HeartbeatIntervalMs: 1000,
		HeartbeatRunMs: 60000}, now)
	got := h.snapshot()["main"]
	if want := now.Add(-300 * time.Millisecond); !got.at.Equal(want) || got.interval != time.Second || !got.runSince.Equal(want.Add(-time.Minute)) {
		t.Fatalf("newest %+v, want at %s every 1s, run since a minute before", got, want)
	}
	h.observe(&pgdrv1.HealthReport{Cluster: "main", Node: "pg-a1", Connectable: true, HeartbeatTime: hb, HeartbeatAgeMs: 5000, HeartbeatIntervalMs: 1000}, now)
	if h.snapshot()["main"].at != got.at {
		t.Fatal("an older heartbeat replaced a newer one")
	}
	h.observe(&pgdrv1.HealthReport{Cluster: "main", Node: "pg-a1", Connectable: true}, now)
	if _, ok := h.snapshot()["main"]; ok {
		t.Fatal("a primary with the heartbeat off left its cluster judged")
	}
}

// TestSLOTickAndBatch: a tick judges each second since the last one (at
// most sloCatchUp), and a batch becomes a command whose counts fit the
// seconds each cluster was judged.
func TestSLOTickAndBatch(t *testing.T) {
	s := &Server{heartbeats: newHeartbeats()}
	base := time.Unix(1_800_000_000-1_800_000_000%60, 0) // a minute boundary
	j := &sloJudge{trackers: map[string]slo.Tracker{}, last: base.Unix() - 1}
	s.heartbeats.observe(&pgdrv1.HealthReport{Cluster: "main", Connectable: true, HeartbeatTime: timestamppb.New(base), HeartbeatIntervalMs: 1000,
		HeartbeatRunMs: 30500}, base.Add(2*time.Second))
	ctx := context.Background()
	s.sloTick(ctx, j, base.Add(3*time.Second+time.Millisecond)) // seconds 0, 1, 2
	if c := j.batch.clusters["main"]; c == nil || c.good != 3 || c.bad != 0 || c.first != base.Unix() || j.batch.to != base.Unix()+3 {
		t.Fatalf("after 3 s: %+v %+v", j.batch, c)
	}
	s.sloTick(ctx, j, base.Add(3*time.Second+500*time.Millisecond)) // same second: nothing
	s.sloTick(ctx, j, base.Add(30*time.Second))                     // late: only the last 5 s judged, heartbeat stale
	if c := j.batch.clusters["main"]; c.good+c.bad != 8 || c.bad != 5 || j.batch.to != base.Unix()+30 {
		t.Fatalf("after a late tick: %+v, to %d", c, j.batch.to)
	}
	cmd := writeSecondsCommand(j.batch)
	if cmd.FromUnix != base.Unix() || cmd.ToUnix != base.Unix()+30 || len(cmd.Clusters) != 1 || cmd.Clusters[0].Good != 3 || cmd.Clusters[0].Bad != 5 ||
		cmd.Clusters[0].RunSinceUnix != base.Unix()-28 {
		t.Fatalf("command %v", cmd)
	}
	// A correction larger than the batch is clamped to the seconds judged in it.
	b := &sloBatch{minute: base.Unix() / 60, to: base.Unix() + 2, clusters: map[string]*sloCount{"main": {good: -4, bad: 6, first: base.Unix()}}}
	if c := writeSecondsCommand(b).Clusters[0]; c.Good != 0 || c.Bad != 2 {
		t.Fatalf("clamped to %v", c)
	}
}

// TestWriteAvailabilityLag: the lag is the newest heartbeat minus each
// member's, from fresh samples only (a dead member's last report is left
// out), the primary's left out (its report may hold an older heartbeat
// than a replica sampled later).
func TestWriteAvailabilityLag(t *testing.T) {
	cfg := &config.Config{}
	cfg.Health.StaleAfter.Duration = 10 * time.Second
	s := &Server{cfg: cfg, fsm: fsm.New(nil, fsm.Options{})}
	now := time.Now()
	hb := now.Add(-time.Second)
	samples := map[memberKey]sample{
		{"main", "pg-a2"}: {report: &pgdrv1.HealthReport{HeartbeatTime: timestamppb.New(hb)}, at: now},
		{"main", "pg-b1"}: {report: &pgdrv1.HealthReport{HeartbeatTime: timestamppb.New(hb.Add(-1500 * time.Millisecond))}, at: now},
		{"main", "pg-a1"}: {report: &pgdrv1.HealthReport{HeartbeatTime: timestamppb.New(hb.Add(-time.Minute))}, at: now.Add(-time.Minute)},
		{"other", "pg-x"}: {report: &pgdrv1.HealthReport{HeartbeatTime: timestamppb.New(hb.Add(time.Hour))}, at: now},
	}
	samples[memberKey{"main", "pg-c1"}] = sample{report: &pgdrv1.HealthReport{HeartbeatTime: timestamppb.New(hb.Add(-time.Second))}, at: now}
	wa := s.writeAvailability(&pgdrv1.Cluster{Name: "main", Primary: "pg-c1"}, samples, now)
	if len(wa.Lag) != 2 || wa.Lag[0].Node != "pg-a2" || wa.Lag[0].Seconds != 0 || wa.Lag[1].Node != "pg-b1" || wa.Lag[1].Seconds != 1.5 {
		t.Fatalf("lag %v", wa.Lag)
	}
	if !wa.LastHeartbeat.AsTime().Equal(hb) || wa.Ratio != 1 || wa.BudgetRemaining != 1 || wa.Target != 0.9999 {
		t.Fatalf("write availability %v", wa)
	}
}

// BenchmarkHeartbeatsObserve is the per-report cost of the SLO: 5,000
// agents of 1,700 clusters, a third of them writers.
func BenchmarkHeartbeatsObserve(b *testing.B) {
	h := newHeartbeats()
	now := time.Now()
	reports := make([]*pgdrv1.HealthReport, 5000)
	for i := range reports {
		r := &pgdrv1.HealthReport{Cluster: fmt.Sprintf("c%d", i/3), Node: fmt.Sprintf("n%d", i), Connectable: true, InRecovery: i%3 != 0,
			HeartbeatTime: timestamppb.New(now), HeartbeatAgeMs: 200}
		if i%3 == 0 {
			r.HeartbeatIntervalMs = 1000
		}
		reports[i] = r
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		h.observe(reports[i%len(reports)], now.Add(time.Duration(i)))
	}
}

// BenchmarkSLOTick is the leader's once-a-second judgement of 1,700
// clusters.
func BenchmarkSLOTick(b *testing.B) {
	s := &Server{heartbeats: newHeartbeats()}
	now := time.Now()
	for i := 0; i < 1700; i++ {
		s.heartbeats.observe(&pgdrv1.HealthReport{Cluster: fmt.Sprintf("c%d", i), Connectable: true, HeartbeatTime: timestamppb.New(now), HeartbeatIntervalMs: 1000}, now)
	}
	j := &sloJudge{trackers: map[string]slo.Tracker{}, last: now.Unix() - 1}
	base := now.Truncate(time.Minute) // ticks stay within one minute: no Raft
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		j.last, j.batch = base.Unix()-1, nil
		s.sloTick(context.Background(), j, base.Add(time.Second+time.Duration(i%50)*time.Millisecond))
	}
}
