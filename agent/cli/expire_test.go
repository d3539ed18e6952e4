package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage/filestore"
	"github.com/pgdr/pgdr/pkg/wal"
)

func agentRun(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := Main(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// TestExpireUsage: bad flags get a clear error, exit 2, and touch nothing
// (no configuration is even read).
func TestExpireUsage(t *testing.T) {
	t.Setenv("PGDR_CONFIG", "")
	cfg := filepath.Join(t.TempDir(), "missing.yaml")
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"expire", "--config", cfg}, "no retention rule"},
		{[]string{"expire", "--config", cfg, "--keep-full", "-1"}, "--keep-full -1"},
		{[]string{"expire", "--config", cfg, "--keep-age", "soon"}, `duration "soon"`},
		{[]string{"expire", "--config", cfg, "--keep-full", "1", "--pitr-window", "-3d"}, `duration "-3d"`},
		{[]string{"expire", "--config", cfg, "--keep-tier", "Daily=7"}, "a tier name is lower-case"},
		{[]string{"expire", "--config", cfg, "--keep-tier", "daily=0"}, "want one count of at least 1"},
		{[]string{"expire", "--config", cfg, "--keep-tier", "daily=7,8"}, "want one count"},
		{[]string{"expire", "--config", cfg, "--keep-tier", "daily=7", "--keep-tier", "daily=3"}, "tier daily given twice"},
		{[]string{"expire", "--config", cfg, "--keep-full", "1", "--parallel", "0"}, "--parallel 0"},
		{[]string{"expire", "--config", cfg, "--keep-full", "1", "--grace", "1m"}, "--grace 1m: at least 6h"},
		{[]string{"expire", "--config", cfg, "--keep-full", "1", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"expire", "--config", cfg, "--keep-full", "1", "extra"}, "expected 0 argument(s)"},
		{[]string{"backup-pin", "--config", cfg, "20261201T000000F"}, "--note TEXT is required"},
		{[]string{"backup-pin", "--config", cfg, "--note", "x", "nope"}, `"nope" is not a backup ID`},
		{[]string{"backup-unpin", "--config", cfg}, "expected 1 argument(s)"},
		{[]string{"backup", "--config", cfg, "--tier", "Bad Tier"}, `--tier "Bad Tier"`},
	} {
		code, _, stderr := agentRun(tc.args...)
		if code != ExitUsage || !strings.Contains(stderr, tc.says) {
			t.Errorf("%v: exit %d, want %d saying %q:\n%s", tc.args, code, ExitUsage, tc.says, stderr)
		}
	}
	code, _, stderr := agentRun("expire", "--help")
	if code != 0 || !strings.Contains(stderr, "--keep-tier") || !strings.Contains(stderr, "pinned backups") {
		t.Errorf("expire --help: exit %d\n%s", code, stderr)
	}
}

// TestExpireCommand drives expire, backup-pin, backup-unpin and
// backup-list on a file repository holding synthetic backups.
func TestExpireCommand(t *testing.T) {
	cfg, _ := walFetchConfig(t)
	t.Setenv("PGDR_CONFIG", "")
	st, err := filestore.New(filepath.Join(filepath.Dir(cfg), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	r := repo.Repo{Name: "r1", Store: st}
	ctx := context.Background()
	if err := repo.EnsureClusterInfo(ctx, r, "c1", 7300000000000000042); err != nil {
		t.Fatal(err)
	}
	const seg = wal.DefaultSegmentSize
	for i, id := range []string{"20261201T000000F", "20261202T000000F", "20261203T000000F"} {
		start := time.Now().Add(-time.Duration(3-i) * 24 * time.Hour).UTC()
		m := &backup.Manifest{Format: backup.ManifestFormat, ID: id, Type: backup.TypeFull, Cluster: "c1", StartTime: start, StopTime: start.Add(time.Minute),
			StartLSN: wal.LSN(uint64(2+3*i)*seg + 40), StopLSN: wal.LSN(uint64(2+3*i)*seg + 100), Timeline: 1, SegmentSize: seg}
		if err := backup.SaveManifest(ctx, r, m, nil); err != nil {
			t.Fatal(err)
		}
	}
	for s := uint64(1); s <= 9; s++ {
		n := wal.SegmentName(1, s, seg)
		if err := st.Put(ctx, repo.WALKey("c1", n), strings.NewReader(n), int64(len(n))); err != nil {
			t.Fatal(err)
		}
	}
	type result struct {
		Results []struct {
			Plan struct {
				Delete []struct{ ID, Reason string }
				Keep   []struct{ ID, Reason string }
			}
			Deleted    []string `json:"deleted_backups"`
			WALDeleted int      `json:"wal_deleted"`
		}
	}
	expire := func(args ...string) result {
		t.Helper()
		code, stdout, stderr := agentRun(append([]string{"expire", "--config", cfg, "--json", "--pitr-window", "0"}, args...)...)
		if code != 0 {
			t.Fatalf("expire %v: exit %d\n%s", args, code, stderr)
		}
		var res result
		if err := json.Unmarshal([]byte(stdout), &res); err != nil {
			t.Fatalf("%v\n%s", err, stdout)
		}
		return res
	}
	res := expire("--keep-full", "1", "--dry-run")
	if d := res.Results[0].Plan.Delete; len(d) != 2 || d[0].ID != "20261201T000000F" || !strings.Contains(d[0].Reason, "keep count 1") {
		t.Fatalf("dry run: %+v", res)
	}
	if code, stdout, stderr := agentRun("backup-pin", "--config", cfg, "--note", "legal hold", "20261201T000000F"); code != 0 || !strings.Contains(stdout, "pinned in r1") {
		t.Fatalf("backup-pin: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, _, stderr := agentRun("backup-pin", "--config", cfg, "--note", "x", "20261130T000000F"); code != ExitFailure || !strings.Contains(stderr, "no such backup") {
		t.Fatalf("backup-pin of a missing backup: exit %d\n%s", code, stderr)
	}
	code, stdout, stderr := agentRun("backup-list", "--config", cfg, "--json")
	if code != 0 || !strings.Contains(stdout, `"pin_note": "legal hold"`) {
		t.Fatalf("backup-list: exit %d\n%s%s", code, stdout, stderr)
	}
	// Without signing configured, a run that deletes needs --trust-unsigned.
	if code, _, stderr := agentRun("expire", "--config", cfg, "--keep-full", "1", "--pitr-window", "0"); code != ExitFailure || !strings.Contains(stderr, "--trust-unsigned") {
		t.Fatalf("expire without signing nor --trust-unsigned: exit %d\n%s", code, stderr)
	}
	if _, err := st.Stat(ctx, backup.ManifestKey("c1", "20261202T000000F")); err != nil {
		t.Fatalf("the refused run deleted: %v", err)
	}
	res = expire("--keep-full", "1", "--trust-unsigned")
	if got := res.Results[0].Deleted; len(got) != 1 || got[0] != "20261202T000000F" || res.Results[0].WALDeleted != 6 { // segments 1 and 3-7: the pinned one keeps 2
		t.Fatalf("expire with a pin: %+v", res)
	}
	if _, err := st.Stat(ctx, backup.ManifestKey("c1", "20261201T000000F")); err != nil {
		t.Fatalf("the pinned backup is gone: %v", err)
	}
	if code, stdout, stderr := agentRun("backup-unpin", "--config", cfg, "20261201T000000F"); code != 0 || !strings.Contains(stdout, "unpinned") {
		t.Fatalf("backup-unpin: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, _, stderr := agentRun("backup-unpin", "--config", cfg, "20261201T000000F"); code != ExitFailure || !strings.Contains(stderr, "is not pinned") {
		t.Fatalf("second backup-unpin: exit %d\n%s", code, stderr)
	}
	code, stdout, _ = agentRun("expire", "--config", cfg, "--keep-full", "1", "--pitr-window", "0", "--trust-unsigned")
	if code != 0 || !strings.Contains(stdout, "deleted 1 of 2 backups") || !strings.Contains(stdout, "DELETE  20261201T000000F") {
		t.Fatalf("expire after unpin: exit %d\n%s", code, stdout)
	}
	if code, _, stderr := agentRun("expire", "--config", cfg, "--keep-full", "1", "--repo", "nope"); code != ExitUsage || !strings.Contains(stderr, "no such repository (configured: r1)") {
		t.Fatalf("--repo nope: exit %d\n%s", code, stderr)
	}
}
