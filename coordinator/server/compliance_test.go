package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/compliance"
	"github.com/pgdr/pgdr/coordinator/config"
	"github.com/pgdr/pgdr/pkg/testutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// countKind counts cluster main's history events of kind.
func countKind(s *Server, kind string) int {
	n := 0
	for _, ev := range s.clusterEvents("main") {
		if ev.GetKind() == kind {
			n++
		}
	}
	return n
}

// gauge reads one sample of a gauge from s's registry (-1: absent).
func gauge(t *testing.T, s *Server, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := s.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			return gaugeValue(m)
		}
	}
	return -1
}

func gaugeValue(m *dto.Metric) float64 { return m.GetGauge().GetValue() }

// TestComplianceStatusMetricsReport: with an RPO target of 1s, a primary
// reporting 30s of WAL not in repository "local" is a breach: in status
// (with its start), in the metrics, and recorded in history once however
// many ticks it lasts; once back within the target it is cleared, once. A
// new leader (its memory reset) rebuilds the open breaches from history
// and announces nothing again. The report (role read) lists the targets,
// the breach, the tiers, "no drill recorded" and a failover from history
// with its measured duration.
func TestComplianceStatusMetricsReport(t *testing.T) {
	recv := &receiver{}
	hook := httptest.NewServer(recv)
	defer hook.Close()
	s, client := adminAPIServerWith(t, func(s *Server) {
		s.notify = testNotifier(t, config.Webhook{URL: hook.URL})
		s.notify.run(t.Context())
	})
	ctx := context.Background()
	reader, admin := client("read-secret"), client("admin-secret")
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
		Name: "pg-a2", Cluster: "main", Region: "r1", Dsn: "host=pg-a2", ApiUrl: "http://pg-a2:8008", GossipAddress: "pg-a2:7946"}})
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "pg-a1"})
	bp := backupTiers()
	bp.Targets = &pgdrv1.RecoveryTargets{RpoMs: 1000}
	if _, err := admin.SetBackupPolicy(ctx, &pgdrv1.SetBackupPolicyRequest{Cluster: "main", Policy: bp}); err != nil {
		t.Fatal(err)
	}
	bad := &pgdrv1.BackupPolicy{Tiers: bp.Tiers, Targets: &pgdrv1.RecoveryTargets{FailoverMs: -5}}
	if _, err := admin.SetBackupPolicy(ctx, &pgdrv1.SetBackupPolicyRequest{Cluster: "main", Policy: bad}); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(err.Error(), "targets.failover") {
		t.Fatalf("a negative failover target: %v", err)
	}
	report := func(archiveSeconds float64) {
		now := time.Now()
		s.view.put(&pgdrv1.HealthReport{Cluster: "main", Node: "pg-a1", PostmasterAlive: true, Connectable: true, CurrentLsn: 5000,
			ArchiveRpo: []*pgdrv1.ArchiveRPO{{Repository: "local", Mode: "sync", Bytes: 4000, Seconds: archiveSeconds, ReadySegments: 2}}}, now, time.Time{})
		s.view.put(&pgdrv1.HealthReport{Cluster: "main", Node: "pg-a2", PostmasterAlive: true, Connectable: true, InRecovery: true,
			Streaming: true, ReceiveLsn: 5000, ReplayLsn: 4096}, now, time.Time{})
	}
	waitKind := func(kind string, n int) {
		t.Helper()
		testutil.WaitFor(t, 20*time.Second, kind, func() (bool, error) {
			report(map[bool]float64{true: 30, false: 0.5}[kind == compliance.KindBreached])
			return countKind(s, kind) >= n, nil
		})
	}
	// stays: the count of kind holds for three compliance intervals.
	stays := func(kind string, n int, seconds float64) {
		t.Helper()
		deadline := time.Now().Add(3 * complianceInterval)
		for time.Now().Before(deadline) {
			report(seconds)
			if got := countKind(s, kind); got != n {
				t.Fatalf("%d %s events, want %d", got, kind, n)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	waitKind(compliance.KindBreached, 1)
	stays(compliance.KindBreached, 1, 30)
	st, err := reader.Status(ctx, &pgdrv1.StatusRequest{Cluster: "main"})
	if err != nil {
		t.Fatal(err)
	}
	cp := st.GetClusters()[0].GetCompliance()
	if cp.GetTargets().GetRpoMs() != 1000 || cp.GetTargets().GetRtoMs() != 15*60*1000 || cp.GetTargets().GetFailoverMs() != 5*60*1000 {
		t.Fatalf("targets %v", cp.GetTargets())
	}
	if len(cp.GetBreaches()) != 1 || cp.GetBreaches()[0].GetTarget() != compliance.TargetArchiveRPO || cp.GetBreaches()[0].GetSubject() != "local" ||
		cp.GetBreaches()[0].GetSince() == nil || cp.GetBreaches()[0].GetMeasuredSeconds() != 30 {
		t.Fatalf("breaches %v", cp.GetBreaches())
	}
	if f := cp.GetFailoverRpo(); !f.GetKnown() || f.GetCandidate() != "pg-a2" || f.GetLagBytes() != 0 {
		t.Fatalf("failover RPO %v", f)
	}
	if r := cp.GetRto(); len(r) != 3 || r[2].GetSource() != "drill" || r[2].GetRecorded() || r[2].GetNote() != "no drill recorded" {
		t.Fatalf("rto %v", r)
	}
	if v := gauge(t, s, "pgdr_cluster_archive_rpo_seconds", map[string]string{"cluster": "main", "repository": "local"}); v != 30 {
		t.Fatalf("pgdr_cluster_archive_rpo_seconds = %v", v)
	}
	if v := gauge(t, s, "pgdr_cluster_target_breached", map[string]string{"cluster": "main", "target": "archive_rpo"}); v != 1 {
		t.Fatalf("pgdr_cluster_target_breached{archive_rpo} = %v", v)
	}
	if v := gauge(t, s, "pgdr_cluster_target_breached", map[string]string{"cluster": "main", "target": "rto"}); v != 0 {
		t.Fatalf("pgdr_cluster_target_breached{rto} = %v", v)
	}
	if v := gauge(t, s, "pgdr_cluster_failover_rpo_bytes", map[string]string{"cluster": "main"}); v != 0 {
		t.Fatalf("pgdr_cluster_failover_rpo_bytes = %v", v)
	}

	waitKind(compliance.KindRestored, 1)
	stays(compliance.KindRestored, 1, 0.5)
	if v := gauge(t, s, "pgdr_cluster_target_breached", map[string]string{"cluster": "main", "target": "archive_rpo"}); v != 0 {
		t.Fatalf("pgdr_cluster_target_breached{archive_rpo} after the clear = %v", v)
	}

	// Breached again, then a new leader's memory: no second announcement.
	waitKind(compliance.KindBreached, 2)
	s.comp.reset()
	stays(compliance.KindBreached, 2, 30)
	if n := countKind(s, compliance.KindRestored); n != 1 {
		t.Fatalf("%d restored events after the reset", n)
	}

	// The webhook got each start and each clear once, as history has them.
	notified := func(kind string) int {
		n := 0
		for _, r := range recv.got() {
			var nt Notification
			if json.Unmarshal(r.body, &nt) == nil && nt.Kind == kind {
				n++
			}
		}
		return n
	}
	testutil.WaitFor(t, 10*time.Second, "the webhook deliveries", func() (bool, error) {
		b, r := notified(compliance.KindBreached), notified(compliance.KindRestored)
		return b == 2 && r == 1, fmt.Errorf("%d breached, %d restored notifications", b, r)
	})

	// A failover in history, measured from detection to writable.
	t0 := time.Now()
	for _, ev := range []*pgdrv1.HistoryEvent{
		{Cluster: "main", Kind: "failover-intent", Node: "pg-a2", Epoch: 2, Message: "promote pg-a2",
			Details: map[string]string{"old_primary": "pg-a1", compliance.DetailDetectedAt: compliance.FormatTime(t0.Add(-3 * time.Second))}},
		{Cluster: "main", Kind: "failover-result", Node: "pg-a2", Epoch: 3, Message: "done: pg-a2 is primary at epoch 3",
			Details: map[string]string{compliance.DetailWritableAt: compliance.FormatTime(t0.Add(-time.Second))}},
	} {
		mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_RECORD_EVENT, &pgdrv1.RecordEvent{Event: ev})
	}
	if _, err := reader.Report(ctx, &pgdrv1.ReportRequest{Since: timestamppb.New(time.Now().Add(time.Hour))}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a report since the future: %v", err)
	}
	rep, err := reader.Report(ctx, &pgdrv1.ReportRequest{Cluster: "main", Since: timestamppb.New(t0.Add(-time.Minute))})
	if err != nil {
		t.Fatal(err)
	}
	cr := rep.GetClusters()[0]
	if len(cr.GetRecoveries()) != 1 || cr.GetRecoveries()[0].GetDurationSeconds() != 2 || !cr.GetRecoveries()[0].GetOk() || cr.GetRecoveries()[0].GetOldPrimary() != "pg-a1" {
		t.Fatalf("recoveries %v", cr.GetRecoveries())
	}
	if len(cr.GetBackups()) != 2 || cr.GetBackups()[0].GetTier() != "weekly" || cr.GetDrills().GetRecorded() || cr.GetDrills().GetNote() != "no drill recorded" {
		t.Fatalf("backups %v drills %v", cr.GetBackups(), cr.GetDrills())
	}
	if b := cr.GetCompliance().GetBreaches(); len(b) != 1 || b[0].GetSubject() != "local" {
		t.Fatalf("report breaches %v", b)
	}
	if r := cr.GetCompliance().GetRto(); !r[0].GetRecorded() || r[0].GetSeconds() != 2 {
		t.Fatalf("report rto %v", r)
	}
}

// TestFailoverRPOAge: the age of what the best candidate lacks is the
// time the primary was first seen past the candidate's received LSN.
func TestFailoverRPOAge(t *testing.T) {
	c := newComplianceState()
	t0 := time.Unix(1000, 0)
	for i, lsn := range []uint64{100, 100, 200, 300, 300, 400} {
		c.noteLSN("main", lsn, t0.Add(time.Duration(i)*time.Second))
	}
	now := t0.Add(10 * time.Second)
	for _, tc := range []struct {
		recv uint64
		want float64
	}{{400, 0}, {500, 0}, {300, 5}, {250, 7}, {100, 8}, {50, 10}} {
		if got := c.lagAge("main", tc.recv, now); got != tc.want {
			t.Errorf("received %d: age %v, want %v", tc.recv, got, tc.want)
		}
	}
	c.noteLSN("main", 10, now) // a new primary's lower LSN starts the trail again
	if got := c.lagAge("main", 5, now.Add(time.Second)); got != 1 {
		t.Errorf("after a restart of the trail: %v", got)
	}
	for i := range lsnTrailLen * 2 {
		c.noteLSN("main", uint64(100+i), now)
	}
	if n := len(c.trail["main"]); n != lsnTrailLen {
		t.Errorf("trail of %d points, want %d", n, lsnTrailLen)
	}
}
