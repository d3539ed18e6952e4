package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/ctl"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// labBackup is one entry of `pgdr-agent backup-list --json`.
type labBackup struct {
	ID          string `json:"id"`
	Type        string `json:"type"`
	Tier        string `json:"tier"`
	Repo        string `json:"repo"`
	FromStandby bool   `json:"from_standby"`
}

// backupList runs `pgdr-agent backup-list --json` with node's agent.yaml,
// as the postgres user (the agent's user, owner of the repository).
func (l *lab) backupList(t *testing.T, node string) []labBackup {
	t.Helper()
	cmd := exec.Command(filepath.Join(l.dir, "bin", "pgdr-agent"), "backup-list", "--config", filepath.Join(l.dir, node, "agent.yaml"), "--json")
	if cred := pgtest.Credential(t); cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	cmd.Dir = filepath.Join(l.dir, node)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("backup-list on %s: %v\n%s", node, err, out)
	}
	var v struct {
		Backups []labBackup `json:"backups"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("backup-list --json on %s: %v\n%s", node, err, out)
	}
	return v.Backups
}

// labBackupRuns reads `pgdrctl backups --json` for the main cluster.
func (l *lab) labBackupRuns() ([]ctl.BackupRunJSON, error) {
	out, err := l.ctl("backups", "--cluster", "main", "--json")
	if err != nil {
		return nil, err
	}
	var v ctl.BackupsJSON
	if err := json.Unmarshal(out, &v); err != nil {
		return nil, fmt.Errorf("backups --json: %v\n%s", err, out)
	}
	for _, c := range v.Clusters {
		if c.Cluster == "main" {
			return c.Runs, nil
		}
	}
	return nil, fmt.Errorf("no cluster main in backups --json:\n%s", out)
}

func parseRFC3339(t *testing.T, what, s string) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("%s: %q: %v", what, s, err)
	}
	return ts
}

// TestBackupRunRealAgents: the backup scheduler with real coordinators,
// real agents and real PostgreSQL 15 (the lab, WAL archived into a file
// repository). `pgdrctl backup run --tier daily --wait` (a full tier of
// the default policy) ends ok on a replica (prefer-standby), and the
// backup is in the repository with tier daily; then a policy with
// second-level full, diff and incr tiers makes scheduled runs of each that
// end ok on a replica as their types, each followed by an expiry without
// error, their backups in the repository, and no two runs of the cluster
// overlap (invariant 9).
func TestBackupRunRealAgents(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	l := startLab(t)
	l.wantPrimary(t, "pg-a1")
	for _, n := range []string{"pg-a2", "pg-b1"} {
		l.waitHealthyReplica(t, n, 60*time.Second)
	}

	// 1. A manual run of a full tier of the default policy.
	out, err := l.ctl("backup", "run", "--cluster", "main", "--tier", "daily", "--wait", "--json")
	if err != nil {
		t.Fatalf("backup run --tier daily --wait: %v\n%s", err, out)
	}
	var res ctl.BackupRunResultJSON
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("backup run --json: %v\n%s", err, out)
	}
	run := res.Run
	if run.Result != "ok" || run.Tier != "daily" || run.Type != "full" || run.BackupID == "" {
		t.Fatalf("backup run answered %+v", run)
	}
	if run.Node != "pg-a2" && run.Node != "pg-b1" {
		t.Fatalf("the daily run ran on %q, want a replica (prefer-standby)", run.Node)
	}
	t.Logf("daily run %s on %s: backup %s, %d bytes read, %d stored, %.1fs", run.ID, run.Node, run.BackupID,
		run.SizeBytes, run.StoredBytes, run.DurationSeconds)
	var found *labBackup
	for _, b := range l.backupList(t, run.Node) {
		if b.ID == run.BackupID {
			found = &b
		}
	}
	if found == nil || found.Tier != "daily" || found.Type != "full" || !found.FromStandby {
		t.Fatalf("backup %s in the repository: %+v, want a full of tier daily taken from a standby", run.BackupID, found)
	}

	// 2. Second-level schedules of a full, a diff and an incr tier: each
	// runs on a replica and ends ok as the type it names (the diff and the
	// incr find a usable full), with the expiry after it done without error.
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policy, []byte(`cluster: main
pitr_window: 1d
tiers:
  - name: often
    type: full
    schedule: "0,30 * * * * *"
    keep_count: 3
    timeout: 2m
  - name: oftendiff
    type: diff
    schedule: "10,40 * * * * *"
    keep_count: 3
    timeout: 2m
  - name: oftenincr
    type: incr
    schedule: "20,50 * * * * *"
    keep_count: 3
    timeout: 2m
`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := l.ctl("policy", "apply", "-f", policy); err != nil {
		t.Fatalf("policy apply: %v\n%s", err, out)
	}
	wantType := map[string]string{"often": "full", "oftendiff": "diff", "oftenincr": "incr"}
	var runs []ctl.BackupRunJSON
	okRuns := map[string][]ctl.BackupRunJSON{} // by tier: scheduled runs that ended ok
	testutil.WaitFor(t, 240*time.Second, "scheduled runs of tiers often (2), oftendiff and oftenincr ended ok as their types", func() (bool, error) {
		var err error
		if runs, err = l.labBackupRuns(); err != nil {
			return false, err
		}
		clear(okRuns)
		last := map[string]ctl.BackupRunJSON{}
		for _, r := range runs {
			if _, ok := wantType[r.Tier]; !ok {
				continue
			}
			last[r.Tier] = r
			if r.Result == "ok" && strings.HasPrefix(r.RequestedBy, "coordinator:") && r.Type == wantType[r.Tier] {
				okRuns[r.Tier] = append(okRuns[r.Tier], r)
			}
		}
		return len(okRuns["often"]) >= 2 && len(okRuns["oftendiff"]) >= 1 && len(okRuns["oftenincr"]) >= 1,
			fmt.Errorf("%d runs; ok: often %d, oftendiff %d, oftenincr %d; last of each tier: %+v",
				len(runs), len(okRuns["often"]), len(okRuns["oftendiff"]), len(okRuns["oftenincr"]), last)
	})
	inRepo := map[string]labBackup{}
	for _, b := range l.backupList(t, "pg-a2") {
		inRepo[b.ID] = b
	}
	for tier, rs := range okRuns {
		for _, r := range rs {
			if r.Node != "pg-a2" && r.Node != "pg-b1" {
				t.Errorf("scheduled run %s ran on %q, want a replica (prefer-standby)", r.ID, r.Node)
			}
			if r.Expiry == nil || r.Expiry.Error != "" {
				t.Errorf("scheduled run %s of tier %s: expiry %+v, want run without error", r.ID, tier, r.Expiry)
			}
			b, ok := inRepo[r.BackupID]
			if !ok && r.Expiry != nil && tier == "often" {
				continue // a full expired since (keep_count 3) by a later run's expiry
			}
			if !ok || b.Tier != tier || b.Type != wantType[tier] {
				t.Errorf("scheduled run %s: backup %q in the repository: %+v, want a %s of tier %s", r.ID, r.BackupID, b, wantType[tier], tier)
			}
		}
	}

	// Invariant 9: never two runs of the cluster at once.
	for i, r := range runs {
		t.Logf("run %s tier %s node %s started %s finished %s result %s %s (by %s)", r.ID, r.Tier, r.Node, r.Started, r.Finished,
			r.Result, r.Error, r.RequestedBy)
		if i == 0 || r.Result == "skipped" {
			continue
		}
		prev := runs[i-1]
		if prev.Finished == "" {
			t.Errorf("run %s started while run %s had not ended", r.ID, prev.ID)
			continue
		}
		if parseRFC3339(t, "started", r.Started).Before(parseRFC3339(t, "finished", prev.Finished)) {
			t.Errorf("run %s started at %s, before run %s ended at %s", r.ID, r.Started, prev.ID, prev.Finished)
		}
	}
}
