package ctl

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// fakeCompliance: an RPO target of 1ms that the archive RPO of "local"
// breaches, a measured failover and no drill.
func fakeCompliance() *pgdrv1.Compliance {
	return &pgdrv1.Compliance{
		Targets:     &pgdrv1.RecoveryTargets{RtoMs: 900000, RpoMs: 1, FailoverMs: 300000},
		ArchiveRpo:  []*pgdrv1.RepositoryRPO{{Repository: "local", Mode: "sync", Bytes: 8192, Seconds: 12.5, Node: "pg-a1", ReadySegments: 1}},
		FailoverRpo: &pgdrv1.FailoverRPO{Known: true, Candidate: "pg-b1", LagBytes: 1536, LagSeconds: 0.5},
		Rto: []*pgdrv1.RTOMeasure{
			{Source: "failover", Recorded: true, Kind: "failover", Node: "pg-a1", At: ts("2025-01-01T10:00:08Z"), Seconds: 8.25},
			{Source: "switchover", Note: "no switchover recorded"},
			{Source: "drill", Note: "no drill recorded"},
		},
		Breaches: []*pgdrv1.Breach{{Target: "archive_rpo", Subject: "local", MeasuredSeconds: 12.5, TargetSeconds: 0.001,
			Message: "archive RPO of repository local (8192 bytes not archived): 12.5s exceeds the RPO target 1ms", Since: ts("2025-01-02T03:00:00Z")}},
		WriteAvailability: &pgdrv1.WriteAvailability{WindowSeconds: 2419200, GoodSeconds: 86370, BadSeconds: 30, UnobservedSeconds: 4,
			Ratio: 86370.0 / 86400, Target: 0.9999, BudgetRemaining: 1 - 30/241.92, GoodTotal: 86370, BadTotal: 30,
			LastHeartbeat: ts("2025-01-02T03:04:04Z"), Lag: []*pgdrv1.HeartbeatLag{{Node: "pg-a1"}, {Node: "pg-b1", Seconds: 1.5}}},
	}
}

func (f *fakeAdmin) Report(_ context.Context, r *pgdrv1.ReportRequest) (*pgdrv1.ReportResponse, error) {
	if r.GetCluster() != "" && r.GetCluster() != "main" {
		return nil, status.Errorf(codes.NotFound, "cluster %q not found", r.GetCluster())
	}
	f.mu.Lock()
	f.reportSince = r.GetSince().AsTime()
	f.mu.Unlock()
	return &pgdrv1.ReportResponse{Time: ts("2025-01-02T03:04:05Z"), Since: r.GetSince(), AnsweredBy: f.name, Clusters: []*pgdrv1.ClusterReport{{
		Name: "main", Compliance: fakeCompliance(), HistoryFrom: ts("2024-12-01T00:00:00Z"),
		Backups: []*pgdrv1.TierBackups{
			{Tier: "daily", Ok: 6, Failed: 1, LastOk: ts("2025-01-02T01:20:00Z"), LastOkBackup: "20250102T011500F", Verification: "not recorded"},
			{Tier: "hourly", Verification: "not recorded"},
		},
		Drills: &pgdrv1.DrillSummary{Note: "no drill recorded"},
		Recoveries: []*pgdrv1.RecoveryEvent{
			{Kind: "failover", Node: "pg-a1", OldPrimary: "pg-a2", Epoch: 3, Started: ts("2025-01-01T10:00:00Z"), Writable: ts("2025-01-01T10:00:08Z"),
				DurationSeconds: 8.25, Measured: true, Ok: true, Result: "done: pg-a1 is primary at epoch 3"},
			{Kind: "switchover", Node: "pg-a2", OldPrimary: "pg-a1", Epoch: 2, Started: ts("2024-12-30T09:00:00Z"), Ok: false, Result: "failed: | pipe"},
		},
	}}}, nil
}

// TestReportCommand: the read role gets the report as JSON (lists never
// null, the breach, the failover with its measured duration, no drill)
// and as Markdown (tables, the breach flagged, "None recorded" for
// drills); --since takes a duration or a time and refuses the future.
func TestReportCommand(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	f := &fakeAdmin{name: "c1"}
	addr := l.serve(t, f)
	l.env["PGDR_CERT"], l.env["PGDR_KEY"] = l.file("reader.crt"), l.file("reader.key")

	before := time.Now()
	code, out, errOut := l.run(t, "report", "--json", "--address", addr, "--since", "7d")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if strings.Contains(out, "null") {
		t.Errorf("JSON has a null:\n%s", out)
	}
	var v ReportJSON
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	since := f.reportSince
	f.mu.Unlock()
	if d := before.Sub(since); d < 7*24*time.Hour-time.Minute || d > 7*24*time.Hour+time.Minute {
		t.Errorf("--since 7d sent %s", since)
	}
	c := v.Clusters[0]
	if len(c.Compliance.Breaches) != 1 || c.Compliance.Breaches[0].Target != "archive_rpo" || c.Compliance.Targets.RPO != "1ms" ||
		len(c.Recoveries) != 2 || c.Recoveries[0].DurationSeconds != 8.25 || !c.Recoveries[0].Measured || c.Drills.Recorded ||
		c.Drills.Note != "no drill recorded" || c.Backups[0].OK != 6 ||
		c.Compliance.WriteAvailability == nil || c.Compliance.WriteAvailability.UnobservedSeconds != 4 || len(c.Compliance.WriteAvailability.Lag) != 2 {
		t.Fatalf("report %+v", c)
	}

	code, out, errOut = l.run(t, "report", "--address", addr, "--cluster", "main", "--since", "2024-12-01T00:00:00Z")
	if code != ExitOK {
		t.Fatalf("markdown: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"# pgdr compliance report", "## Cluster main", "**Open breaches: 1.**", "- BREACH archive_rpo/local:",
		"| Archive RPO, repository local (sync) | 1ms | 13s, 8.0 KiB not archived, 1 segments waiting | **BREACHED** |",
		"| Last failover (detection or request to writable primary) | 5m | 8.3s (pg-a1, 2025-01-01T10:00:08Z) | ok |",
		"RTO: last drill's restore: no drill recorded | 15m | not measured | - |",
		"| daily | 6 | 1 | 0 | 2025-01-02T01:20:00Z (20250102T011500F) | not recorded |",
		"None recorded (no drill recorded).",
		"| failover | pg-a1 | pg-a2 | 2025-01-01T10:00:00Z | 2025-01-01T10:00:08Z | 8.3s | done: pg-a1 is primary at epoch 3 |",
		"| switchover | pg-a2 | pg-a1 | 2024-12-30T09:00:00Z | - | not measured | failed: / pipe |",
		"### Write availability (28 days)",
		"99.9653% over 28d (target 99.99%), error budget left 87.6%; 30 s bad (4 s of them unobserved: no coordinator leader judged).",
		"Replication lag from the heartbeat: pg-a1 0s, pg-b1 1.5s.",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("markdown lacks %q:\n%s", want, out)
		}
	}
	if code2, out2, _ := l.run(t, "report", "--md", "--address", addr, "--cluster", "main", "--since", "2024-12-01T00:00:00Z"); code2 != ExitOK || out2 != out {
		t.Errorf("--md differs from the default output")
	}

	for _, bad := range [][]string{{"--since", "2999-01-01T00:00:00Z"}, {"--since", "-3d"}, {"--since", "soon"}, {"--json", "--md"}} {
		if code, _, errOut := l.run(t, append([]string{"report", "--address", addr}, bad...)...); code != ExitUsage {
			t.Errorf("%v: exit %d %s", bad, code, errOut)
		}
	}
	if code, _, errOut := l.run(t, "report", "--address", addr, "--cluster", "nope"); code != ExitFailure || !strings.Contains(errOut, "not found") {
		t.Errorf("unknown cluster: exit %d %s", code, errOut)
	}

	// status shows the targets, the measured values and the breach.
	code, out, errOut = l.run(t, "status", "--address", addr, "--cluster", "main")
	if code != ExitOK || !strings.Contains(out, "targets: rto 15m, rpo 1ms, failover 5m") ||
		!strings.Contains(out, "archive RPO local (sync) 13s, 8.0 KiB") || !strings.Contains(out, "last failover 8.3s") ||
		!strings.Contains(out, "no drill recorded") || !strings.Contains(out, "BREACH archive_rpo/local: archive RPO of repository local") ||
		!strings.Contains(out, "write availability: 99.9653% over 28d (target 99.99%), error budget left 87.6%; 30 s bad") ||
		!strings.Contains(out, "heartbeat lag: pg-a1 0s, pg-b1 1.5s") {
		t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = l.run(t, "status", "--json", "--address", addr, "--cluster", "main")
	var sv StatusJSON
	if err := json.Unmarshal([]byte(out), &sv); code != ExitOK || err != nil || sv.Clusters[0].Compliance == nil ||
		len(sv.Clusters[0].Compliance.Breaches) != 1 || sv.Clusters[0].Compliance.FailoverRPO.LagBytes != 1536 ||
		sv.Clusters[0].Compliance.WriteAvailability == nil || sv.Clusters[0].Compliance.WriteAvailability.BadSeconds != 30 ||
		sv.Clusters[0].Compliance.Targets.WriteAvailability != "99.99%" {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
}
