package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
	"github.com/pgdr/pgdr/pkg/wal"
)

// TestRestoreNameTargetPicksBackup: a named restore point target picks,
// without --backup, the newest backup from which recovery reaches the
// restore point once consistent (found in the archived WAL), reports the
// restore point, and recovers exactly the rows committed before it; an
// unknown name, or a restore point before the end of the backup given, is
// refused before anything is written.
func TestRestoreNameTargetPicksBackup(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{})
	l.pg.Exec(t, "CREATE TABLE batches(batch int, n int)")
	now := func() time.Time {
		tt, err := time.Parse(time.RFC3339Nano, utcNow(t, l.pg))
		if err != nil {
			t.Fatal(err)
		}
		return tt
	}
	began := now()
	insertBatch(t, l, 1)
	first := l.backup(t, l.cfg)
	insertBatch(t, l, 2)
	rpA := l.pg.QueryString(t, "SELECT pg_create_restore_point('rp_a')::text")
	insertBatch(t, l, 3)
	second := l.backup(t, l.cfg)
	if first == second {
		t.Fatalf("two backups got the same ID %s", first)
	}
	insertBatch(t, l, 4)
	rpB := l.pg.QueryString(t, "SELECT pg_create_restore_point('rp_b')::text")
	insertBatch(t, l, 5)
	ended := now()
	l.waitArchived(t, l.switchWAL(t), 2*time.Minute)

	for _, tc := range []struct {
		name, lsn, backup, batches string
	}{
		{"rp_a", rpA, first, "1,2"},
		{"rp_b", rpB, second, "1,2,3,4"},
	} {
		c, out := l.restoreJSON(t, l.cfg, "--target-name", tc.name, "--target-action", "promote")
		if out.Restore.Backup != tc.backup || out.Reached.State != "promoted" {
			t.Fatalf("--target-name %s: restored %s, reached %+v; want backup %s promoted", tc.name, out.Restore.Backup, out.Reached, tc.backup)
		}
		rp := out.Restore.RestorePoint
		if rp == nil || rp.Name != tc.name || rp.EndLSN != tc.lsn || !lsnBefore(t, rp.LSN, rp.EndLSN) ||
			rp.Timeline != 1 || rp.Time.Before(began) || rp.Time.After(ended) {
			t.Fatalf("--target-name %s: restore reports restore point %+v; want it ending at %s (what pg_create_restore_point returned), timeline 1, made between %s and %s",
				tc.name, rp, tc.lsn, began.Format(time.RFC3339Nano), ended.Format(time.RFC3339Nano))
		}
		if got := batchesIn(t, c); got != tc.batches {
			t.Fatalf("--target-name %s from %s: batches %s, want %s", tc.name, tc.backup, got, tc.batches)
		}
		if n := c.QueryString(t, "SELECT count(*)::text FROM batches"); n != strconv.Itoa(100*(strings.Count(tc.batches, ",")+1)) {
			t.Fatalf("--target-name %s: %s rows, want 100 per batch %s", tc.name, n, tc.batches)
		}
		c.Stop(t, "fast")
	}

	// Refused before anything is written: the directory is not created,
	// and an existing one keeps its contents even with --force.
	c := pgtest.Empty(t, pgtest.Options{})
	for _, tc := range []struct {
		what string
		args []string
		want []string
	}{
		{"an unknown name", []string{"--target-name", "rp_nope"}, []string{`no restore point named "rp_nope"`, first}},
		{"an unknown name from a given backup", []string{"--backup", second, "--target-name", "rp_nope"}, []string{`"rp_nope"`, "backup " + second}},
		{"a restore point before the backup given", []string{"--backup", second, "--target-name", "rp_a"}, []string{`"rp_a"`, "backup " + second, "choose an earlier backup"}},
		{"a name PostgreSQL refuses", []string{"--target-name", strings.Repeat("n", 64)}, []string{"at most 63 bytes"}},
	} {
		r := restoreFails(t, l.cfg, c, tc.args...)
		msg := parseRestore(t, r).Error
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: the error does not say %q: %s", tc.what, w, msg)
			}
		}
		if !strings.Contains(r.stderr, "restore failed") {
			t.Errorf("%s: the log does not report the failure:\n%s", tc.what, tail(r.stderr, 2000))
		}
		wantDirState(t, tc.what, c.PGData, true)
	}
	if err := os.Mkdir(c.PGData, 0o700); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(c.PGData, "keep-me")
	if err := os.WriteFile(marker, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := restoreFails(t, l.cfg, c, "--force", "--backup", second, "--target-name", "rp_a")
	if msg := parseRestore(t, r).Error; !strings.Contains(msg, `"rp_a"`) {
		t.Fatalf("restore --force --backup %s --target-name rp_a: the error does not name the restore point: %s", second, msg)
	}
	wantDirState(t, "a refused name target with --force", c.PGData, false, "keep-me")
	if got := readFile(marker); got != "precious\n" {
		t.Fatalf("the marker file now holds %q", got)
	}
}

// lsnBefore reports whether LSN a is before LSN b (both X/Y).
func lsnBefore(t *testing.T, a, b string) bool {
	t.Helper()
	la, err1 := wal.ParseLSN(a)
	lb, err2 := wal.ParseLSN(b)
	return err1 == nil && err2 == nil && la < lb
}

// TestRestoreNameTargetFollowsTimeline: after a standby is promoted
// (timeline 2) while the old primary goes on writing on timeline 1, both
// archiving into the repository, the archive forks: a restore without
// --target-timeline refuses to choose. With --target-timeline 2, a restore
// point name used on both branches is looked up along timeline 2's
// history: the restore finds and reaches the one on timeline 2; with
// current, the one on timeline 1.
func TestRestoreNameTargetFollowsTimeline(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{})
	l.pg.Exec(t, "CREATE TABLE batches(batch int, n int)")
	insertBatch(t, l, 1)
	id := l.backup(t, l.cfg)
	insertBatch(t, l, 2)
	sb := l.newStandby(t, nil)
	testutil.WaitFor(t, 60*time.Second, "the standby to replay batch 2", func() (bool, error) {
		got := batchesIn(t, sb)
		return got == "1,2", fmt.Errorf("standby has batches %q", got)
	})
	sb.Run(t, "pg_ctl", "-D", sb.PGData, "-w", "-t", "120", "promote")
	history := filepath.Join(l.repoDir, "main", "wal", "00000002", "00000002.history")
	testutil.WaitFor(t, 2*time.Minute, "the promoted standby to archive 00000002.history", func() (bool, error) {
		_, err := os.Stat(history)
		return err == nil, fmt.Errorf("%v; standby log:\n%s", err, tail(sb.Log(), 1500))
	})

	// The old primary goes on on timeline 1 and makes the restore point
	// first; then the new primary makes its own.
	insertBatch(t, l, 98)
	l.pg.Exec(t, "SELECT pg_create_restore_point('after_split')")
	l.waitArchived(t, l.switchWAL(t), 2*time.Minute)
	sb.Exec(t, "INSERT INTO batches SELECT 3, g FROM generate_series(1, 100) g")
	rp := sb.QueryString(t, "SELECT pg_create_restore_point('after_split')::text")
	sb.Exec(t, "INSERT INTO batches SELECT 4, g FROM generate_series(1, 100) g")
	seg := sb.QueryString(t, "SELECT pg_walfile_name(pg_switch_wal())")
	if !strings.HasPrefix(seg, "00000002") {
		t.Fatalf("the promoted standby switched segment %s, want one on timeline 2", seg)
	}
	testutil.WaitFor(t, 2*time.Minute, "the promoted standby to archive "+seg, func() (bool, error) {
		last := sb.QueryString(t, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
		return len(last) >= 24 && last[:24] >= seg, fmt.Errorf("last archived %q; standby log:\n%s", last, tail(sb.Log(), 1500))
	})

	r := restoreFails(t, l.cfg, pgtest.Empty(t, pgtest.Options{}), "--target-name", "after_split", "--target-action", "promote")
	if e := parseRestore(t, r).Error; !strings.Contains(e, "--target-timeline") || !strings.Contains(e, "timeline 2 branches off timeline 1") {
		t.Fatalf("restore to a name with the archive forked: error %q, want a refusal naming the branches", e)
	}
	c, out := l.restoreJSON(t, l.cfg, "--target-name", "after_split", "--target-action", "promote", "--target-timeline", "2")
	got := out.Restore.RestorePoint
	if out.Restore.Backup != id || got == nil || got.Timeline != 2 || got.EndLSN != rp {
		t.Fatalf("restore found restore point %+v in backup %s; want the one on timeline 2 ending at %s, from %s", got, out.Restore.Backup, rp, id)
	}
	if b := batchesIn(t, c); b != "1,2,3" {
		t.Fatalf("restored to after_split: batches %s, want 1,2,3 (timeline 2's restore point)", b)
	}
	c.Stop(t, "fast")
	c, out = l.restoreJSON(t, l.cfg, "--target-name", "after_split", "--target-action", "promote", "--target-timeline", "current")
	if got := out.Restore.RestorePoint; got == nil || got.Timeline != 1 {
		t.Fatalf("--target-timeline current: restore point %+v, want the one on timeline 1", got)
	}
	if b := batchesIn(t, c); b != "1,2,98" {
		t.Fatalf("restored to after_split along timeline 1: batches %s, want 1,2,98", b)
	}
	c.Stop(t, "fast")
}
