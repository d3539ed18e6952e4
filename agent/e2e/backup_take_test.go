package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// backupResult is backup --json's output, with what the run printed.
type backupResult struct {
	ID         string `json:"id"`
	Type       string `json:"type"`
	Parent     string `json:"parent"`
	TypeReason string `json:"type_reason"`
	StartLSN   string `json:"start_lsn"`
	StopLSN    string `json:"stop_lsn"`
}

func parseBackup(t *testing.T, r result) backupResult {
	t.Helper()
	var b backupResult
	if err := json.Unmarshal([]byte(r.stdout), &b); err != nil || b.ID == "" {
		t.Fatalf("backup --json: %v\nstdout: %s\nstderr: %s", err, r.stdout, tail(r.stderr, 3000))
	}
	return b
}

// TestBackupIncrFromLaggingStandby: an incremental taken on a standby
// whose replay is paused before the stop LSN of the last backup (a full on
// the primary) must not build on it: the pages the standby has not
// replayed carry LSNs below the parent's start, and restore would write
// the parent's newer copies (issue 11 item 1). The backup becomes a full
// one saying why; restored to its consistency point it holds no page from
// after it and exactly the standby's data.
func TestBackupIncrFromLaggingStandby(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{})
	l.pg.Exec(t, "CREATE TABLE batches(batch int, n int)")
	insertBatch(t, l, 1)
	sb := l.newStandby(t, nil)
	sbcfg := l.writeNodeConfig(t, "standby.yaml", sb, []string{"file"})
	testutil.WaitFor(t, 60*time.Second, "the standby to replay batch 1", func() (bool, error) {
		got := batchesIn(t, sb)
		return got == "1", fmt.Errorf("standby has batches %q", got)
	})
	sb.Exec(t, "SELECT pg_wal_replay_pause()")
	testutil.WaitFor(t, 60*time.Second, "replay to pause on the standby", func() (bool, error) {
		st := sb.QueryString(t, "SELECT pg_get_wal_replay_pause_state()")
		return st == "paused", fmt.Errorf("pause state %q", st)
	})
	// Batch 2 lands on the pages batch 1 is on: the standby keeps them
	// unchanged, the primary's full backup holds them with batch 2.
	insertBatch(t, l, 2)
	full := l.backup(t, l.cfg)
	insertBatch(t, l, 3)
	want := batchesIn(t, sb)
	if want != "1" {
		t.Fatalf("the paused standby shows batches %q, want 1", want)
	}

	r := runAgentPG(t, "backup", "--config", sbcfg, "--json", "--wal-timeout", "2m", "--type", "incr", "--from-standby", "--primary-dsn", l.pg.DSN())
	if r.code != 0 {
		t.Fatalf("incr on the paused standby: exit %d\n%s", r.code, tail(r.stderr, 3000))
	}
	b := parseBackup(t, r)
	t.Logf("incr on the paused standby: %+v", b)
	if b.Parent == full {
		t.Errorf("the incr %s on a standby paused before the stop LSN of %s builds on it (start %s)", b.ID, full, b.StartLSN)
	}
	if b.Type != "full" || !strings.Contains(b.TypeReason, full) || !strings.Contains(b.TypeReason, "start LSN") {
		t.Errorf("backup %s is %s with reason %q, want a full backup whose reason names %s and the start LSN", b.ID, b.Type, b.TypeReason, full)
	}
	if !strings.Contains(r.stderr, "taking a full backup") {
		t.Errorf("the fall-back to a full backup is not logged:\n%s", tail(r.stderr, 3000))
	}
	if m := loadManifest(t, l.cfg, b.ID); m.TypeReason != b.TypeReason || m.Parent != "" || m.Type != "full" || !strings.HasSuffix(m.ID, "F") || m.Label != "pgdr "+m.ID {
		t.Errorf("manifest of %s: type %s, parent %q, label %q, type_reason %q", b.ID, m.Type, m.Parent, m.Label, m.TypeReason)
	}
	sb.Exec(t, "SELECT pg_wal_replay_resume()")
	testutil.WaitFor(t, 60*time.Second, "the standby to replay batch 3", func() (bool, error) {
		got := batchesIn(t, sb)
		return got == "1,2,3", fmt.Errorf("standby has batches %q", got)
	})
	// Replaying again, the standby can build on that full: with
	// --primary-dsn a checkpoint on the primary, once replayed, moves its
	// start past the full's end.
	r = runAgentPG(t, "backup", "--config", sbcfg, "--json", "--wal-timeout", "2m", "--type", "incr", "--from-standby", "--primary-dsn", l.pg.DSN())
	if r.code != 0 {
		t.Fatalf("incr on the standby replaying again: exit %d\n%s", r.code, tail(r.stderr, 3000))
	}
	b2 := parseBackup(t, r)
	if b2.Type != "incr" || b2.Parent != b.ID {
		t.Errorf("incr on the standby replaying again: %+v, want an incr on %s\n%s", b2, b.ID, tail(r.stderr, 3000))
	}
	// And right after it, with no checkpoint on the primary in between
	// but the one --primary-dsn asks for.
	r = runAgentPG(t, "backup", "--config", sbcfg, "--json", "--wal-timeout", "2m", "--type", "incr", "--from-standby", "--primary-dsn", l.pg.DSN())
	if r.code != 0 {
		t.Fatalf("second incr on the standby: exit %d\n%s", r.code, tail(r.stderr, 3000))
	}
	if b3 := parseBackup(t, r); b3.Type != "incr" || b3.Parent != b2.ID || !strings.Contains(r.stderr, "checkpoint of the primary") {
		t.Errorf("second incr on the standby: %+v, want an incr on %s after a checkpoint of the primary\n%s", b3, b2.ID, tail(r.stderr, 3000))
	}
	seg := l.switchWAL(t)
	l.waitArchived(t, seg, 2*time.Minute)
	sb.Stop(t, "fast")

	// The files as restore writes them: no page newer than where recovery
	// declares them consistent.
	c := pgtest.Empty(t, pgtest.Options{})
	if r := runAgent(t, nil, "restore", "--config", l.cfg, "--pgdata", c.PGData, "--backup", b.ID, "--target-immediate", "--json"); r.code != 0 {
		t.Fatalf("restore of %s: exit %d\n%s\n%s", b.ID, r.code, r.stdout, tail(r.stderr, 3000))
	}
	minRecovery := controlMinRecoveryPoint(t, c)
	if n, first := pageLSNsAbove(t, c.PGData, minRecovery); n > 0 {
		t.Errorf("backup %s holds %d pages with an LSN above its consistency point %s: e.g. %v", b.ID, n, minRecovery, first)
	}

	rc, _ := l.restoreJSON(t, l.cfg, "--backup", b.ID, "--target-immediate", "--target-action", "promote")
	if got := batchesIn(t, rc); got != want {
		t.Errorf("backup %s restored to its consistency point: batches %q, the standby had %q", b.ID, got, want)
	}
	if n := rc.QueryString(t, "SELECT count(*)::text FROM batches"); n != "100" {
		t.Errorf("backup %s restored to its consistency point: %s rows, the standby had 100", b.ID, n)
	}
	rc.Stop(t, "fast")
}

// TestBackupIncrAfterAddingRepository: a repository added after the last
// full backup does not hold it, so the next incr cannot build on it there
// (issue 11 item 3): it is taken full, and restores from each repository
// alone.
func TestBackupIncrAfterAddingRepository(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{s3: true})
	fileOnly := l.writeConfig(t, "file-only.yaml", []string{"file"}, l.identity, 0)
	l.pg.Exec(t, "CREATE TABLE batches(batch int, n int)")
	insertBatch(t, l, 1)
	full := l.backup(t, fileOnly)
	insertBatch(t, l, 2)

	r := runAgentPG(t, "backup", "--config", l.cfg, "--json", "--wal-timeout", "2m", "--type", "incr")
	if r.code != 0 {
		t.Fatalf("incr with the new repository: exit %d\n%s", r.code, tail(r.stderr, 3000))
	}
	b := parseBackup(t, r)
	t.Logf("incr after adding a repository: %+v", b)
	if b.Parent == full || b.Type != "full" || !strings.Contains(b.TypeReason, "repository dr") {
		t.Errorf("backup %s: type %s, parent %q, reason %q; want a full backup since repository dr lacks %s", b.ID, b.Type, b.Parent, b.TypeReason, full)
	}
	seg := l.switchWAL(t)
	l.waitArchived(t, seg, 2*time.Minute)
	for _, repoName := range []string{"local", "dr"} {
		c, out := l.restoreJSON(t, l.cfg, "--backup", b.ID, "--repo", repoName, "--target-immediate", "--target-action", "promote")
		if got := batchesIn(t, c); got != "1,2" {
			t.Errorf("backup %s restored from repository %s alone (chain %v): batches %q, want 1,2", b.ID, repoName, out.Restore.Chain, got)
		}
		c.Stop(t, "fast")
	}

	// Now that both repositories hold a full backup, an incr builds on it.
	insertBatch(t, l, 3)
	r = runAgentPG(t, "backup", "--config", l.cfg, "--json", "--wal-timeout", "2m", "--type", "incr")
	if r.code != 0 {
		t.Fatalf("second incr: exit %d\n%s", r.code, tail(r.stderr, 3000))
	}
	if b2 := parseBackup(t, r); b2.Type != "incr" || b2.Parent != b.ID || b2.TypeReason != "" {
		t.Errorf("second incr: %+v, want an incr on %s", b2, b.ID)
	}
}

// TestBackupConcurrentIDs: two backups started in the same second get
// distinct IDs and both are complete (issue 11 item 8): the second used to
// take the first's ID, overwrite its manifest, and its clean-up delete the
// other's objects.
func TestBackupConcurrentIDs(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{})
	l.pg.Exec(t, "CREATE TABLE batches(batch int, n int)")
	insertBatch(t, l, 1)
	agentPath(t) // built before the clock starts

	// Start both just after a second begins.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 20*time.Millisecond)))
	type run struct {
		cmd            *exec.Cmd
		stdout, stderr bytes.Buffer
		err            error
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	runs := make([]*run, 2)
	for i := range runs {
		ru := &run{cmd: exec.CommandContext(ctx, agentPath(t), "backup", "--config", l.cfg, "--json", "--wal-timeout", "2m")}
		ru.cmd.Stdout, ru.cmd.Stderr = &ru.stdout, &ru.stderr
		if cred := pgtest.Credential(t); cred != nil {
			ru.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		runs[i] = ru
	}
	for _, ru := range runs {
		if err := ru.cmd.Start(); err != nil {
			t.Fatal(err)
		}
	}
	ids := map[string]bool{}
	for i, ru := range runs {
		ru.err = ru.cmd.Wait()
		if ru.err != nil {
			t.Fatalf("backup %d: %v\n%s", i, ru.err, tail(ru.stderr.String(), 3000))
		}
		b := parseBackup(t, result{stdout: ru.stdout.String(), stderr: ru.stderr.String()})
		t.Logf("backup %d: %s", i, b.ID)
		ids[b.ID] = true
	}
	if len(ids) != 2 {
		t.Fatalf("two concurrent backups got IDs %v, want two distinct", ids)
	}
	bs := listBackups(t, l.cfg, "local")
	for id := range ids {
		findBackup(t, bs, id)
		if r := runAgent(t, nil, "backup-verify", "--config", l.cfg, id); r.code != 0 {
			t.Errorf("backup-verify %s: exit %d\n%s\n%s", id, r.code, r.stdout, tail(r.stderr, 2000))
		}
	}
	// No reservation is left behind.
	left, _ := filepath.Glob(filepath.Join(l.repoDir, "main", "backup", "*.reserved", "*"))
	if len(left) > 0 {
		t.Errorf("reservations left in the repository: %v", left)
	}
}

// TestBackupAsOtherUser: a backup run as root (not the data directory's
// owner) against a fresh file repository used to create <cluster>/ and
// the repository root private to root, after which every archive_command
// (as postgres) failed with "permission denied" (issue 11 item 11). It is
// refused up front, nothing is created, and archiving keeps working.
func TestBackupAsOtherUser(t *testing.T) {
	skipShort(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test runs the backup as root against a cluster owned by postgres")
	}
	l := newLab(t, labOpts{})
	r := runAgent(t, nil, "backup", "--config", l.cfg, "--json", "--wal-timeout", "20s")
	if r.code == 0 || !strings.Contains(r.stderr, "belongs to") || !strings.Contains(r.stderr, "--allow-other-user") {
		t.Errorf("backup as root of a cluster owned by postgres: exit %d, want a refusal naming --allow-other-user\n%s", r.code, tail(r.stderr, 3000))
	}
	t.Logf("backup as root: exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	owner := pgtest.Credential(t).Uid
	filepath.WalkDir(l.repoDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // no repository yet
		}
		if fi, err := d.Info(); err == nil && fi.Sys().(*syscall.Stat_t).Uid != owner {
			t.Errorf("the backup as root left %s owned by uid %d, mode %v", p, fi.Sys().(*syscall.Stat_t).Uid, fi.Mode())
		}
		return nil
	})
	seg := l.switchWAL(t)
	l.waitArchived(t, seg, time.Minute)
	if n := l.pg.QueryString(t, "SELECT failed_count::text FROM pg_stat_archiver"); n != "0" {
		t.Errorf("archive_command failed %s times after the root backup; server log:\n%s", n, tail(l.pg.Log(), 2000))
	}
}

// TestBackupWALTimeout: a backup whose WAL never reaches the repository
// (archive_command fails) fails within --wal-timeout, naming the missing
// segment and the archiver's last failure (issue 11 item 11).
func TestBackupWALTimeout(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{})
	l.pg.AppendConf(t, map[string]string{"archive_command": "'/bin/false'"})
	l.pg.Exec(t, "SELECT pg_reload_conf()")
	testutil.WaitFor(t, 30*time.Second, "archive_command to be reloaded", func() (bool, error) {
		v := l.pg.QueryString(t, "SHOW archive_command")
		return v == "/bin/false", fmt.Errorf("archive_command %q", v)
	})
	began := time.Now()
	r := runAgentPG(t, "backup", "--config", l.cfg, "--json", "--wal-timeout", "5s")
	took := time.Since(began)
	t.Logf("backup with a failing archive_command: exit %d after %s: %s", r.code, took, r.stderr)
	if r.code == 0 {
		t.Fatalf("backup succeeded without its WAL archived:\n%s", r.stdout)
	}
	if took > 45*time.Second {
		t.Errorf("the backup took %s to fail with --wal-timeout 5s", took)
	}
	failed := l.pg.QueryString(t, "SELECT coalesce(last_failed_wal, '') FROM pg_stat_archiver")
	for _, want := range []string{"not archived after 5s", "is missing", "segment 0000000100000000000000", "last_failed_wal " + failed, "failures"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("the failure does not say %q:\n%s", want, tail(r.stderr, 3000))
		}
	}
	if bs := listBackups(t, l.cfg, ""); len(bs) != 0 {
		t.Errorf("a backup was recorded: %+v", bs)
	}
}
