package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestRejoinRecloneFromBackup: the old primary has neither data checksums
// nor wal_log_hints (no pg_rewind), and the new primary refuses it a base
// backup (the Rejoin order's DSN names a role without REPLICATION). The
// agent then restores the latest backup from its repository into a fresh
// data directory (the old one is kept aside), configures it as a standby
// of the new primary (standby.signal, primary_conninfo, restore_command =
// wal-fetch, recovery_target_timeline latest) and starts it: it recovers
// through the archive onto the new primary's timeline, with the rows the
// new primary wrote before its last archived segment and without the old
// primary's diverged ones, and it reports that it replays the archive, not
// streaming. Once the role may replicate, the node streams.
func TestRejoinRecloneFromBackup(t *testing.T) {
	testRejoinRecloneFromBackup(t, false)
}

// TestRejoinRecloneFromBackupSymlinkedWAL: the same with a node made by
// initdb -X, whose pg_wal is a link to a WAL directory elsewhere. The
// restored data directory has pg_wal as a real directory (the restore
// writes nothing outside the data directory, and the old WAL directory
// belongs to the old data kept aside, whose link still points to it,
// untouched); the output says so.
func TestRejoinRecloneFromBackupSymlinkedWAL(t *testing.T) {
	testRejoinRecloneFromBackup(t, true)
}

func testRejoinRecloneFromBackup(t *testing.T, waldir bool) {
	skipShort(t)
	l := newLab(t, labOpts{waldir: waldir}) // no --data-checksums
	for setting, want := range map[string]string{"data_checksums": "off", "wal_log_hints": "off"} {
		if got := l.pg.QueryString(t, "SHOW "+setting); got != want {
			t.Fatalf("%s = %s, want %s", setting, got, want)
		}
	}
	l.pg.Exec(t, "CREATE TABLE lease_probe(t timestamptz); CREATE TABLE rows(n int, src text); INSERT INTO rows VALUES (1, 'old primary')")
	id := l.backup(t, l.cfg)
	r1 := newReplica(t, l, 1) // archives to the same repository once promoted (its archive_command is the primary's)
	f := startFakeLeader(t, filepath.Join(l.dir, "coord"))
	f.set("pg-a1", 1)
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	cfg := l.writeConfig(t, "reclone-backup-pg-a1.yaml", []string{"file"}, l.identity, 0)
	appendFile(t, cfg, f.configLines(addr))
	logb := startDaemon(t, l, cfg)
	waitProbes(t, 30*time.Second, addr, 200, "/primary")
	oldPort := l.pg.Port

	// The replica stops receiving; the old primary writes rows it never gets.
	disconnectReplicas(t, l.pg, r1)
	l.pg.Exec(t, "INSERT INTO rows SELECT g, 'diverged' FROM generate_series(100, 199) g")

	// The old primary is stopped (fenced by order); the replica is promoted
	// onto timeline 2 and writes rows that reach the archive.
	res := f.order(t, "pg-a1", &pgdrv1.AgentCommand{Epoch: 2, Kind: &pgdrv1.AgentCommand_Fence{Fence: &pgdrv1.Fence{Reason: "test failover"}}}, 60*time.Second)
	if !res.Ok {
		t.Fatalf("fence: %v\n%s", res, tail(logb.String(), 2000))
	}
	r1.Exec(t, "SELECT pg_promote(true, 60)")
	testutil.WaitFor(t, 60*time.Second, "the promotion", func() (bool, error) {
		got := r1.QueryString(t, "SELECT pg_is_in_recovery()::text")
		return got == "false", fmt.Errorf("in recovery: %s", got)
	})
	f.set("pg-a2", 2)
	r1.Exec(t, "CREATE ROLE norepl LOGIN; INSERT INTO rows VALUES (2, 'new primary')")
	seg := r1.QueryString(t, "SELECT pg_walfile_name(pg_switch_wal())")
	if !strings.HasPrefix(seg, "00000002") {
		t.Fatalf("the new primary's segment %s is not on timeline 2", seg)
	}
	waitArchivedOn(t, r1, seg, 60*time.Second)
	r1.Exec(t, "INSERT INTO rows VALUES (3, 'not archived')") // only streaming could bring it

	// Rejoin: no pg_rewind, no pg_basebackup (norepl), so the backup.
	norepl := strings.Replace(r1.DSN(), "user=postgres", "user=norepl", 1)
	res = f.order(t, "pg-a1", &pgdrv1.AgentCommand{Epoch: 2, Kind: &pgdrv1.AgentCommand_Rejoin{Rejoin: &pgdrv1.Rejoin{Primary: "pg-a2", PrimaryDsn: norepl}}}, 5*time.Minute)
	if !res.Ok {
		t.Fatalf("rejoin: %v\nagent log:\n%s\nold primary log:\n%s", res, tail(logb.String(), 4000), tail(readFile(l.pg.PGData+".pgdr.log"), 3000))
	}
	t.Logf("rejoin: %s", res.Output)
	m := regexp.MustCompile(`(?s)restored from backup (\S+) .*old data kept at (\S+)`).FindStringSubmatch(res.Output)
	if m == nil {
		t.Fatalf("the output does not say it restored a backup: %s", res.Output)
	}
	if m[1] != id {
		t.Errorf("restored backup %s, want %s", m[1], id)
	}
	for _, want := range []string{"wal_log_hints", "pg_basebackup", "replication", "replaying from the archive"} {
		if !strings.Contains(res.Output, want) {
			t.Errorf("the output lacks %q: %s", want, res.Output)
		}
	}
	old := m[2]
	if filepath.Dir(old) != filepath.Dir(l.pg.PGData) || !strings.HasPrefix(filepath.Base(old), "pgdata.pgdr-old-") {
		t.Errorf("old data at %s, not beside %s", old, l.pg.PGData)
	}
	if fi, err := health.ReadFenced(old); fi == nil || fi.Epoch != 2 {
		t.Errorf("the old data directory (%s) is not the old node's: marker %+v %v", old, fi, err)
	}
	if _, err := os.Stat(filepath.Join(old, "global", "pg_control")); err != nil {
		t.Errorf("the old data is not kept whole: %v", err)
	}
	if fi, _ := health.ReadFenced(l.pg.PGData); fi != nil {
		t.Errorf("the marker survived the rejoin: %+v", fi)
	}
	if waldir {
		walDir := filepath.Join(l.dir, "wal")
		if !strings.Contains(res.Output, "the old pg_wal was a link to "+walDir) {
			t.Errorf("the output does not say where the old pg_wal pointed: %s", res.Output)
		}
		if fi, err := os.Lstat(filepath.Join(l.pg.PGData, "pg_wal")); err != nil || !fi.IsDir() {
			t.Errorf("the restored pg_wal is not a directory: %v %v", fi, err)
		}
		if dst, err := os.Readlink(filepath.Join(old, "pg_wal")); err != nil || dst != walDir {
			t.Errorf("the old data's pg_wal no longer links to %s: %q %v", walDir, dst, err)
		}
		if ents, err := os.ReadDir(walDir); err != nil || len(ents) < 2 {
			t.Errorf("the old WAL directory %s was emptied: %d entries, %v", walDir, len(ents), err)
		}
	}

	// In recovery on the old port, with the archived rows only.
	waitRows(t, l.pg, "the restored node to replay the archive", "old primary,new primary")
	if got := l.pg.QueryString(t, "SELECT pg_is_in_recovery()::text || ' ' || current_setting('port')"); got != fmt.Sprintf("true %d", oldPort) {
		t.Errorf("the restored node (recovery, port): %s", got)
	}
	auto := readFile(filepath.Join(l.pg.PGData, "postgresql.auto.conf"))
	for _, want := range []string{fmt.Sprintf("port=%d", r1.Port), "user=norepl", "application_name=pg-a1", "recovery_target_timeline = 'latest'", "wal-fetch --config " + cfg} {
		if !strings.Contains(auto, want) {
			t.Errorf("postgresql.auto.conf lacks %q:\n%s", want, auto)
		}
	}
	if _, err := os.Stat(filepath.Join(l.pg.PGData, "standby.signal")); err != nil {
		t.Errorf("standby.signal: %v", err)
	}
	if _, err := os.Stat(filepath.Join(l.pg.PGData, "recovery.signal")); err == nil {
		t.Error("recovery.signal left: the node would promote at the end of the archive")
	}
	// Not streaming: never a primary, and not yet a healthy replica.
	waitProbes(t, 10*time.Second, addr, 503, "/primary", "/replica")

	// Given the right to replicate, the node follows the new primary.
	r1.Exec(t, "ALTER ROLE norepl REPLICATION")
	streamsTo(t, r1, "pg-a1", 60*time.Second)
	r1.Exec(t, "INSERT INTO rows VALUES (4, 'streamed')")
	waitRows(t, l.pg, "the restored node to stream the new primary's rows", "old primary,new primary,not archived,streamed")
	waitProbes(t, 30*time.Second, addr, 200, "/replica")
	waitProbes(t, 10*time.Second, addr, 503, "/primary")
}

// waitArchivedOn waits until c reports name (or a later file) archived.
func waitArchivedOn(t *testing.T, c *pgtest.Cluster, name string, timeout time.Duration) {
	t.Helper()
	testutil.WaitFor(t, timeout, "archiving of "+name, func() (bool, error) {
		last := c.QueryString(t, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
		if len(last) >= 24 && last[:24] >= name {
			return true, nil
		}
		return false, fmt.Errorf("last archived %q; server log:\n%s", last, tail(c.Log(), 1500))
	})
}
