package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

type backupListing struct {
	Backups []struct {
		ID     string `json:"id"`
		Type   string `json:"type"`
		Parent string `json:"parent"`
	} `json:"backups"`
}

func (l *lab) backup(t *testing.T, cfg string, args ...string) string {
	t.Helper()
	id, _ := l.backupOut(t, cfg, args...)
	return id
}

// backupOut is backup, also returning what the backup wrote on stderr.
func (l *lab) backupOut(t *testing.T, cfg string, args ...string) (id, stderr string) {
	t.Helper()
	r := runAgentPG(t, append([]string{"backup", "--config", cfg, "--json", "--wal-timeout", "2m"}, args...)...)
	if r.code != 0 {
		t.Fatalf("backup %v: exit %d\n%s\nserver log:\n%s", args, r.code, tail(r.stderr, 3000), tail(l.pg.Log(), 3000))
	}
	var s struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil || s.ID == "" {
		t.Fatalf("backup --json: %v\n%s\n%s", err, r.stdout, r.stderr)
	}
	return s.ID, r.stderr
}

// insertBatch commits one batch of rows and returns the commit's time as
// the server saw it just after the commit.
func insertBatch(t *testing.T, l *lab, batch int) string {
	t.Helper()
	l.pg.Exec(t, fmt.Sprintf("INSERT INTO batches SELECT %d, g FROM generate_series(1, 100) g", batch))
	return l.pg.QueryString(t, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
}

// restoreTo restores with args into a fresh directory, starts it and
// returns the restored cluster.
func (l *lab) restoreTo(t *testing.T, cfg string, args ...string) *pgtest.Cluster {
	t.Helper()
	c := pgtest.Empty(t, pgtest.Options{})
	base := []string{"restore", "--config", cfg, "--pgdata", c.PGData, "--no-archive", "--start",
		"--port", fmt.Sprint(c.Port), "--socket-dir", c.Dir, "--wait-timeout", "3m", "--json"}
	r := runAgent(t, nil, append(base, args...)...)
	if r.code != 0 {
		t.Fatalf("restore %v: exit %d\n%s\n%s\nrestore log:\n%s", args, r.code, r.stdout, r.stderr, tail(readFile(restoreLog(c.PGData)), 3000))
	}
	return c
}

func TestPITRFileRepo(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{})
	l.pg.Exec(t, "CREATE TABLE batches(batch int, n int)")
	insertBatch(t, l, 1)
	id := l.backup(t, l.cfg)
	var times []string
	for b := 2; b <= 4; b++ {
		times = append(times, insertBatch(t, l, b))
		time.Sleep(20 * time.Millisecond) // distinct commit times between batches
	}
	l.pg.Exec(t, "SELECT pg_create_restore_point('after_batch_4')")
	insertBatch(t, l, 5)
	lsn := l.pg.QueryString(t, "SELECT pg_current_wal_lsn()::text")
	insertBatch(t, l, 6)
	last := l.switchWAL(t)
	l.waitArchived(t, last, 2*time.Minute)

	// Time target just after batch 3's commit: batches 1..3.
	c := l.restoreTo(t, l.cfg, "--target-time", times[1], "--target-action", "promote")
	if got := c.QueryString(t, "SELECT string_agg(DISTINCT batch::text, ',' ORDER BY batch::text) FROM batches"); got != "1,2,3" {
		t.Fatalf("time target: batches %s, want 1,2,3 (backup %s)", got, id)
	}
	c.Stop(t, "fast")
	// Named restore point: batches 1..4.
	c = l.restoreTo(t, l.cfg, "--target-name", "after_batch_4", "--target-action", "promote")
	if got := c.QueryString(t, "SELECT string_agg(DISTINCT batch::text, ',' ORDER BY batch::text) FROM batches"); got != "1,2,3,4" {
		t.Fatalf("name target: batches %s, want 1,2,3,4", got)
	}
	c.Stop(t, "fast")
	// LSN target taken after batch 5: batches 1..5.
	c = l.restoreTo(t, l.cfg, "--target-lsn", lsn, "--target-action", "promote")
	if got := c.QueryString(t, "SELECT string_agg(DISTINCT batch::text, ',' ORDER BY batch::text) FROM batches"); got != "1,2,3,4,5" {
		t.Fatalf("LSN target: batches %s, want 1,2,3,4,5", got)
	}
	c.Stop(t, "fast")
	_ = strings.Contains
	_ = filepath.Join
}
