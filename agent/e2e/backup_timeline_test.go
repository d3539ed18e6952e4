package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/testutil"
)

// TestIncrAfterPromotionParentOnOldTimeline: a standby stops at X; the old
// primary goes on writing (transactions the failover loses) and takes a
// full backup P ending past X; the standby is promoted (timeline 2 from X)
// and an incremental is taken on it at once, while its last checkpoint is
// still on timeline 1. P must not be its parent (its pages hold the lost
// transactions, with LSNs below P's start); an older full P0 that ended
// before X may be; without one, the incremental becomes a full backup and
// says why. The restore holds the new primary's data.
func TestIncrAfterPromotionParentOnOldTimeline(t *testing.T) {
	skipShort(t)
	t.Run("older parent", func(t *testing.T) { incrAfterPromotion(t, true) })
	t.Run("full", func(t *testing.T) { incrAfterPromotion(t, false) })
}

func incrAfterPromotion(t *testing.T, withP0 bool) {
	l := newLab(t, labOpts{})
	l.pg.Exec(t, "CREATE TABLE acct(id int PRIMARY KEY, v int) WITH (autovacuum_enabled = off)")
	l.pg.Exec(t, "INSERT INTO acct SELECT g, 0 FROM generate_series(1, 2000) g")
	l.pg.Exec(t, "VACUUM acct")
	p0 := ""
	if withP0 {
		p0 = l.backup(t, l.cfg)
	}
	sb := l.newStandby(t, nil)
	lsn := l.pg.QueryString(t, "SELECT pg_current_wal_lsn()::text")
	testutil.WaitFor(t, 60*time.Second, "the standby to replay "+lsn, func() (bool, error) {
		ok := sb.QueryString(t, fmt.Sprintf("SELECT (pg_last_wal_replay_lsn() >= '%s'::pg_lsn)::text", lsn))
		return ok == "t" || ok == "true", fmt.Errorf("replayed: %s", ok)
	})
	// Buffers the standby's replay dirties again after an immediate stop
	// make the checkpoint that follows the promotion a long, spread one:
	// meanwhile pg_control_checkpoint() says timeline 1.
	l.pg.Exec(t, "CREATE TABLE bulk AS SELECT g, repeat('y', 100) AS pad FROM generate_series(1, 100000) g")
	lsn = l.pg.QueryString(t, "SELECT pg_current_wal_lsn()::text")
	testutil.WaitFor(t, 60*time.Second, "the standby to replay "+lsn, func() (bool, error) {
		ok := sb.QueryString(t, fmt.Sprintf("SELECT (pg_last_wal_replay_lsn() >= '%s'::pg_lsn)::text", lsn))
		return ok == "true", fmt.Errorf("replayed: %s", ok)
	})
	sb.Stop(t, "immediate")

	// Lost in the failover: committed on timeline 1 after X.
	l.pg.Exec(t, "UPDATE acct SET v = 1")
	p := l.backup(t, l.cfg)
	l.pg.Stop(t, "fast")

	f, err := os.OpenFile(filepath.Join(sb.PGData, "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("primary_conninfo = ''\nrestore_command = ''\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	sb.Start(t)
	sb.Run(t, "pg_ctl", "-D", sb.PGData, "-w", "-t", "120", "promote")
	sb.Exec(t, "CREATE TABLE after_promotion AS SELECT g FROM generate_series(1, 500) g")
	// Past P's stop LSN (in the segment after X's): two segment switches.
	sb.Exec(t, "SELECT pg_switch_wal()")
	sb.Exec(t, "INSERT INTO after_promotion VALUES (0)")
	sb.Exec(t, "SELECT pg_switch_wal()")
	if past := sb.QueryString(t, fmt.Sprintf("SELECT (pg_current_wal_lsn() > '%s'::pg_lsn)::text", loadManifest(t, l.cfg, p).StopLSN)); past != "true" {
		t.Fatalf("the promoted standby's WAL is not past %s's stop LSN", p)
	}
	ckpt := sb.QueryString(t, "SELECT pg_is_in_recovery()::text || '|' || timeline_id || '|' || pg_walfile_name(pg_current_wal_lsn()) FROM pg_control_checkpoint()")
	t.Logf("promoted standby before the incremental: in recovery|checkpoint timeline|current WAL file = %s", ckpt)

	sbcfg := l.writeNodeConfig(t, "promoted.yaml", sb, []string{"file"})
	id, stderr := l.backupOut(t, sbcfg, "--type", "incr")
	m := loadManifest(t, sbcfg, id)
	if m.Timeline != 2 {
		t.Fatalf("the backup of the promoted standby records timeline %d, want 2", m.Timeline)
	}
	if m.Parent == p {
		t.Fatalf("the incremental %s builds on %s, a backup of timeline 1 ending after timeline 2 branched off (checkpoint state %s)\n%s", id, p, ckpt, tail(stderr, 2000))
	}
	switch {
	case withP0 && (m.Type != "incr" || m.Parent != p0):
		t.Fatalf("the incremental %s: type %s, parent %q (reason %q); want an incr on %s, the full that ended before the branch", id, m.Type, m.Parent, m.TypeReason, p0)
	case !withP0 && (m.Type != "full" || !strings.Contains(m.TypeReason, p) || !strings.Contains(m.TypeReason, "branched off")):
		t.Fatalf("the incremental %s with only %s to build on: type %s, parent %q, reason %q; want a full backup saying %s ends after the branch", id, p, m.Type, m.Parent, m.TypeReason, p)
	}
	if !strings.Contains(stderr, p) {
		t.Fatalf("the backup does not say why %s was passed over:\n%s", p, tail(stderr, 2000))
	}

	want := sb.QueryString(t, "SELECT coalesce(sum(v), 0)::text || '/' || (SELECT count(*) FROM after_promotion)::text FROM acct")
	c := l.restoreTo(t, sbcfg, "--backup", id, "--target-immediate")
	if got := c.QueryString(t, "SELECT coalesce(sum(v), 0)::text || '/' || (SELECT count(*) FROM after_promotion)::text FROM acct"); got != want {
		t.Fatalf("restored %s: sum(v)/rows after promotion = %s, want %s (the new primary's data; 2000 means the lost timeline-1 update came back)", id, got, want)
	}
	c.Stop(t, "fast")

}
