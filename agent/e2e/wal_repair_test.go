package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/testutil"
)

// TestWalPushOfTheCurrentSegmentAndRepair is issue 11's sequence on a real
// server: wal-push run by hand on the segment PostgreSQL is still writing is
// refused; forced, it stores an incomplete copy and every archive_command for
// that segment then fails on the conflict; wal-repair shows both versions,
// changes nothing without --yes, and with --yes replaces the stored copy so
// archiving goes on and the archive holds the finished segment.
func TestWalPushOfTheCurrentSegmentAndRepair(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{})
	first := l.switchWAL(t)
	l.waitArchived(t, first, 2*time.Minute)

	l.pg.Exec(t, "CREATE TABLE hand(i int); INSERT INTO hand SELECT generate_series(1, 1000)")
	cur := l.pg.QueryString(t, "SELECT pg_walfile_name(pg_current_wal_lsn())")
	path := filepath.Join(l.pg.PGData, "pg_wal", cur)
	r := runAgentPG(t, "wal-push", "--config", l.cfg, path)
	if r.code == 0 || !strings.Contains(r.stderr, cur) || !strings.Contains(r.stderr, "not marked it ready") {
		t.Fatalf("hand push of the current segment %s: exit %d, want a refusal naming it\n%s", cur, r.code, r.stderr)
	}
	if _, err := os.Stat(l.objectPath(cur)); err == nil {
		t.Fatal("the refused hand push stored the segment")
	}

	// Forced anyway: the incomplete copy blocks archiving of the segment.
	if r := runAgentPG(t, "wal-push", "--config", l.cfg, "--force", path); r.code != 0 {
		t.Fatalf("wal-push --force: exit %d\n%s", r.code, r.stderr)
	}
	stored, err := os.ReadFile(l.objectPath(cur))
	if err != nil {
		t.Fatal(err)
	}
	l.pg.Exec(t, "INSERT INTO hand SELECT generate_series(1, 1000)")
	if sw := l.switchWAL(t); sw != cur {
		t.Fatalf("switched %s, want %s", sw, cur)
	}
	testutil.WaitFor(t, 2*time.Minute, "archive_command failing on "+cur, func() (bool, error) {
		failed := l.pg.QueryString(t, "SELECT coalesce(last_failed_wal, '') FROM pg_stat_archiver")
		return failed == cur, fmt.Errorf("last failed %q; server log:\n%s", failed, tail(l.pg.Log(), 1500))
	})
	if !strings.Contains(l.pg.Log(), "wal-repair") {
		t.Fatalf("the archive_command failure does not point at wal-repair:\n%s", tail(l.pg.Log(), 3000))
	}

	r = runAgentPG(t, "wal-repair", "--config", l.cfg, cur)
	if r.code == 0 || !strings.Contains(r.stdout, "DIFFERENT") || !strings.Contains(r.stdout, "marked ready") || !strings.Contains(r.stdout, "nothing was changed") {
		t.Fatalf("wal-repair without --yes: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if after, _ := os.ReadFile(l.objectPath(cur)); !bytes.Equal(after, stored) {
		t.Fatal("wal-repair without --yes changed the stored object")
	}
	if r := runAgentPG(t, "wal-repair", "--config", l.cfg, "--yes", cur); r.code != 0 || !strings.Contains(r.stdout, "replaced") {
		t.Fatalf("wal-repair --yes: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// A new segment wakes the archiver, which archives in order: cur first.
	next := l.switchWAL(t)
	l.waitArchived(t, next, 3*time.Minute)
	dest := filepath.Join(t.TempDir(), cur)
	mustAgent(t, "wal-fetch", "--config", l.cfg, cur, dest)
	got, _ := os.ReadFile(dest)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, orig) {
		t.Fatal("after the repair the archive does not hold the finished segment")
	}
}

// TestWalFetchUsageErrorsExitFatal runs the real binary: a restore_command
// with a usage error must exit >= 126 so that PostgreSQL aborts recovery
// rather than taking it for "not in the archive" (invariant 15).
func TestWalFetchUsageErrorsExitFatal(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.yaml")
	os.WriteFile(cfg, []byte("cluster: c\nnode: {name: n}\npostgres: {pgdata: /tmp/x}\nrepos: [{url: 'file:///tmp/r'}]\nencryption: {disabled: true}\n"), 0o644)
	seg := "000000010000000000000001"
	for _, args := range [][]string{
		{"wal-fetch", "--config", cfg, seg},
		{"wal-fetch", "--config", cfg, "--nope", seg, filepath.Join(dir, "out")},
		{"wal-fetch", "--config", filepath.Join(dir, "absent.yaml"), seg, filepath.Join(dir, "out")},
	} {
		if r := runAgent(t, nil, args...); r.code < 126 {
			t.Errorf("pgdr-agent %s: exit %d, want >= 126\n%s", strings.Join(args, " "), r.code, r.stderr)
		}
	}
	// A profiling variable that cannot be honoured is not the command's
	// failure, and must not turn into exit 1 ("not in the archive").
	for _, v := range []string{"PGDR_CPUPROFILE", "PGDR_TRACE"} {
		r := runAgent(t, []string{v + "=" + filepath.Join(dir, "no-such-dir", "out")}, "wal-fetch", "--config", cfg, seg)
		if r.code < 126 || !strings.Contains(r.stderr, v) {
			t.Errorf("wal-fetch with an unwritable %s and a usage error: exit %d, want >= 126 and a warning naming %s\n%s", v, r.code, v, r.stderr)
		}
	}
}
