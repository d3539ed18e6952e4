package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/agent/expire"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// expireOut is expire --json's output.
type expireOut struct {
	Results []struct {
		Repo string `json:"repo"`
		Plan struct {
			Delete     []expire.Decision `json:"delete"`
			Keep       []expire.Decision `json:"keep"`
			WALDelete  []expire.WALRange `json:"wal_delete"`
			PITRAnchor string            `json:"pitr_anchor"`
		} `json:"plan"`
		Deleted    []string `json:"deleted_backups"`
		WALDeleted int      `json:"wal_deleted"`
		Leftovers  []string `json:"leftovers"`
	} `json:"results"`
}

func runExpire(t *testing.T, cfg string, args ...string) expireOut {
	t.Helper()
	r := runAgent(t, nil, append([]string{"expire", "--config", cfg, "--json"}, args...)...)
	if r.code != 0 {
		t.Fatalf("expire %v: exit %d\n%s\n%s", args, r.code, r.stdout, tail(r.stderr, 3000))
	}
	var out expireOut
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("expire --json: %v\n%s", err, r.stdout)
	}
	return out
}

func decisionIDs(ds []expire.Decision) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.ID)
	}
	slices.Sort(out)
	return out
}

func backupIDs(bs []backupInfo) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.ID)
	}
	slices.Sort(out)
	return out
}

// verifyBackup runs backup-verify on id: its objects, its chain and the
// WAL it needs, in every repository of cfg.
func mustVerify(t *testing.T, cfg, id string) {
	t.Helper()
	if code, failed, r := verifyBackup(t, cfg, id); code != 0 {
		t.Fatalf("backup-verify %s after expiry: exit %d, failed %v\n%s\n%s", id, code, failed, r.stdout, tail(r.stderr, 3000))
	}
}

// TestExpireKeepsWhatRestoresNeed takes full and incremental backups with
// WAL in between into a file and an S3 repository, expires with rules that
// drop the oldest chain and a PITR window whose edge falls between the two
// newest backups, and then restores at the window's edge, at the start of
// the anchor backup and at the latest point, from each repository.
func TestExpireKeepsWhatRestoresNeed(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{s3: true})
	s3cfg := l.writeConfig(t, "s3-only.yaml", []string{"s3"}, l.identity, 0)
	fileCfg := l.writeConfig(t, "file-only.yaml", []string{"file"}, l.identity, 0)
	l.pg.Exec(t, "CREATE TABLE batches(batch int, n int)")
	insertBatch(t, l, 1)
	b1 := l.backup(t, l.cfg, "--tier", "daily")
	insertBatch(t, l, 2)
	b2 := l.backup(t, l.cfg, "--type", "incr", "--tier", "hourly")
	insertBatch(t, l, 3)
	b3 := l.backup(t, l.cfg, "--tier", "daily")
	t4 := insertBatch(t, l, 4)
	edge, err := time.Parse(time.RFC3339Nano, t4)
	if err != nil {
		t.Fatal(err)
	}
	// 2s after batch 4: the window's anchor must have stopped at least
	// --pitr-margin before now - window, which the whole-second window
	// below puts up to a second before the edge.
	edge = edge.Add(2 * time.Second)
	testutil.WaitFor(t, 10*time.Second, "the clock to pass the window's edge", func() (bool, error) {
		return time.Now().After(edge.Add(time.Second)), nil
	})
	b4 := l.backup(t, l.cfg, "--type", "incr", "--tier", "hourly")
	insertBatch(t, l, 5)
	l.archivePast(t, utcNow(t, l.pg))
	if m := loadManifest(t, l.cfg, b2); m.Type != backup.TypeIncr || m.Parent != b1 || m.Tier != "hourly" {
		t.Fatalf("backup %s: type %s parent %s tier %q, want incr on %s in tier hourly", b2, m.Type, m.Parent, m.Tier, b1)
	}
	// The window reaches back to just after batch 4: its anchor is b3.
	window := func() string { return fmt.Sprintf("%ds", int(time.Since(edge).Seconds())+1) }
	args := []string{"--keep-tier", "daily=1", "--keep-tier", "hourly=1", "--pitr-margin", "1ms"}

	dry := runExpire(t, l.cfg, append(args, "--pitr-window", window(), "--dry-run")...)
	if len(dry.Results) != 2 {
		t.Fatalf("dry run: %d repositories", len(dry.Results))
	}
	for _, r := range dry.Results {
		if got := decisionIDs(r.Plan.Delete); !slices.Equal(got, []string{b1, b2}) || r.Plan.PITRAnchor != b3 || len(r.Plan.WALDelete) == 0 {
			t.Fatalf("dry run in %s: delete %v, anchor %s, WAL %+v; want %s and %s gone, anchor %s", r.Repo, got, r.Plan.PITRAnchor, r.Plan.WALDelete, b1, b2, b3)
		}
	}
	if got := backupIDs(listBackups(t, s3cfg, "")); len(got) != 4 {
		t.Fatalf("the dry run deleted backups: %v", got)
	}

	out := runExpire(t, l.cfg, append(args, "--pitr-window", window())...)
	for _, r := range out.Results {
		if !slices.Equal(r.Deleted, []string{b2, b1}) || r.WALDeleted == 0 {
			t.Fatalf("expire in %s deleted %v and %d WAL files; want %s then %s, and WAL", r.Repo, r.Deleted, r.WALDeleted, b2, b1)
		}
	}
	for _, cfg := range []string{s3cfg, fileCfg} {
		if got := backupIDs(listBackups(t, cfg, "")); !slices.Equal(got, []string{b3, b4}) {
			t.Fatalf("backups left in %s: %v, want %s %s", cfg, got, b3, b4)
		}
	}
	if _, err := os.Stat(l.backupObjectPath("backup/" + b1)); !os.IsNotExist(err) {
		t.Fatalf("objects of expired %s left in the file repository: %v", b1, err)
	}
	// Nothing a kept backup needs is gone: objects, chain and WAL verify.
	mustVerify(t, l.cfg, b3)
	mustVerify(t, l.cfg, b4)
	// A second run has nothing left to do.
	again := runExpire(t, l.cfg, append(args, "--pitr-window", window())...)
	for _, r := range again.Results {
		if len(r.Deleted)+r.WALDeleted+len(r.Leftovers) != 0 {
			t.Fatalf("second expire in %s: %+v", r.Repo, r)
		}
	}

	for _, tc := range []struct {
		name, cfg string
		args      []string
		backup    string
		want      string
	}{
		{"the PITR window's edge (S3)", s3cfg, []string{"--target-time", t4}, b3, "1,2,3,4"},
		{"the anchor backup's start (file)", fileCfg, []string{"--backup", b3, "--target-immediate"}, b3, "1,2,3"},
		{"the latest point through the kept incremental (S3)", s3cfg, []string{"--backup", b4}, b4, "1,2,3,4,5"},
	} {
		c, res := l.restoreJSON(t, tc.cfg, append(tc.args, "--target-action", "promote")...)
		if res.Restore.Backup != tc.backup {
			t.Fatalf("%s: restored %s, want %s", tc.name, res.Restore.Backup, tc.backup)
		}
		if got := batchesIn(t, c); got != tc.want {
			t.Fatalf("%s: batches %s, want %s", tc.name, got, tc.want)
		}
		c.Stop(t, "fast")
	}
}

// failAfter fails every Delete after the first n: an expiry dying halfway.
type failAfter struct {
	storage.ObjectStore
	n       int64
	deletes atomic.Int64
}

func (s *failAfter) Delete(ctx context.Context, key string) error {
	if s.deletes.Add(1) > s.n {
		return fmt.Errorf("injected failure deleting %s", key)
	}
	return s.ObjectStore.Delete(ctx, key)
}

// TestExpireInterruptedS3: an expiry of the S3 repository that dies after
// deleting the old backup's manifest and part of its data leaves a
// repository where every listed backup verifies; the next run (past the
// grace period) removes the rest, and the kept backup restores.
func TestExpireInterruptedS3(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{s3: true})
	s3cfg := l.writeConfig(t, "s3-only.yaml", []string{"s3"}, l.identity, 0)
	l.pg.Exec(t, "CREATE TABLE batches(batch int, n int)")
	insertBatch(t, l, 1)
	b1 := l.backup(t, l.cfg)
	insertBatch(t, l, 2)
	b2 := l.backup(t, l.cfg)
	insertBatch(t, l, 3)
	l.archivePast(t, utcNow(t, l.pg))

	c, err := config.Load(s3cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rs, err := repo.OpenAll(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	dr := rs[0]
	fs := &failAfter{ObjectStore: dr.Store, n: 4} // the manifest and 3 data objects
	dr.Store = fs
	spec := expire.Spec{Types: map[string]expire.Rule{expire.TypeFull: {Count: 1}}}
	_, err = expire.Run(ctx, expire.Deps{Cluster: c.Cluster, Repos: []repo.Repo{dr}, Log: slog.New(slog.NewTextHandler(os.Stderr, nil))},
		expire.Options{Spec: spec, Parallel: 2})
	if err == nil || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("interrupted expiry: %v", err)
	}
	// b1 no longer exists (its manifest went first); b2 is whole.
	if got := backupIDs(listBackups(t, s3cfg, "")); !slices.Equal(got, []string{b2}) {
		t.Fatalf("backups after the interrupted expiry: %v, want %s", got, b2)
	}
	mustVerify(t, s3cfg, b2)
	left := 0
	if err := rs[0].Store.List(ctx, backup.Prefix(c.Cluster)+b1+"/", func(storage.ObjectInfo) error { left++; return nil }); err != nil {
		t.Fatal(err)
	}
	if left == 0 {
		t.Fatalf("the interrupted expiry removed all of %s's data: the test interrupted nothing", b1)
	}

	// Within the grace period the leftovers stay (they could be a backup
	// being written); the WAL before b2, which the interrupted run never
	// reached, goes.
	if r := runExpire(t, s3cfg, "--keep-full", "1", "--pitr-window", "0").Results[0]; len(r.Leftovers) != 0 || r.WALDeleted == 0 {
		t.Fatalf("the next run within the grace period: leftovers %v, WAL %d; want none, and the WAL before %s", r.Leftovers, r.WALDeleted, b2)
	}
	// Past the grace period (at least 6h: run in-process with a clock a
	// day ahead) the rest goes.
	later := func() time.Time { return time.Now().Add(expire.DefaultGrace + time.Hour) }
	er, err := expire.Run(ctx, expire.Deps{Cluster: c.Cluster, Repos: rs[:1], Log: slog.New(slog.NewTextHandler(os.Stderr, nil))},
		expire.Options{Spec: spec, Parallel: 2, Now: later})
	if err != nil {
		t.Fatal(err)
	}
	if r := er[0]; !slices.Equal(r.Leftovers, []string{b1}) {
		t.Fatalf("the run past the grace period: leftovers %v, want the rest of %s", r.Leftovers, b1)
	}
	left = 0
	if err := rs[0].Store.List(ctx, backup.Prefix(c.Cluster)+b1+"/", func(storage.ObjectInfo) error { left++; return nil }); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("%d objects of %s left after the second run", left, b1)
	}
	mustVerify(t, s3cfg, b2)
	// The file repository was not part of it: it still holds both.
	if got := backupIDs(listBackups(t, l.cfg, "local")); !slices.Equal(got, []string{b1, b2}) {
		t.Fatalf("file repository: %v", got)
	}
	pg, res := l.restoreJSON(t, s3cfg, "--target-action", "promote")
	if res.Restore.Backup != b2 {
		t.Fatalf("restored %s, want %s", res.Restore.Backup, b2)
	}
	if got := batchesIn(t, pg); got != "1,2,3" {
		t.Fatalf("batches %s, want 1,2,3", got)
	}
	pg.Stop(t, "fast")
}

// TestExpireRaceParentGoneDuringBackup: an expiry that listed the
// repository before an incremental backup reserved its ID may delete the
// backup it builds on while it runs (simulated here by removing the
// parent's manifest once the incremental has started copying). The
// incremental must then fail, not record a backup whose chain is gone.
func TestExpireRaceParentGoneDuringBackup(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{})
	l.pg.Exec(t, "CREATE TABLE batches(batch int, n int)")
	insertBatch(t, l, 1)
	parent := l.backup(t, l.cfg)
	insertBatch(t, l, 2)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, agentPath(t), "backup", "--config", l.cfg, "--type", "incr", "--max-rate", "2", "--parallel", "1", "--json", "--wal-timeout", "2m")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: pgtest.Credential(t)}
	var stdout, stderr testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	backupDir := filepath.Join(l.repoDir, "main", "backup")
	testutil.WaitFor(t, time.Minute, "the incremental to start copying", func() (bool, error) {
		m, _ := filepath.Glob(filepath.Join(backupDir, "*I", "pgdata"))
		return len(m) > 0, fmt.Errorf("no incremental objects yet; backup stderr:\n%s", tail(stderr.String(), 2000))
	})
	if err := os.Remove(l.backupObjectPath("backup/" + parent + "/backup.manifest")); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-done:
		done <- err
	case <-ctx.Done():
		t.Fatal("the backup did not finish")
	}
	if err == nil {
		t.Fatalf("the incremental whose parent %s was removed while it ran was recorded:\n%s\n%s", parent, stdout.String(), tail(stderr.String(), 2000))
	}
	if !strings.Contains(stderr.String(), "is gone (expired while it ran?)") {
		t.Fatalf("backup failed, but not on its parent chain:\n%s", tail(stderr.String(), 2000))
	}
	if m, _ := filepath.Glob(filepath.Join(backupDir, "*I", "backup.manifest")); len(m) != 0 {
		t.Fatalf("a manifest was written: %v", m)
	}
}
