package backuprun

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

var agentBin testutil.Builder

// realLab is a PostgreSQL 15 primary archiving with pgdr-agent wal-push
// into a file repository, and the agent's configuration of it.
type realLab struct {
	pg      *pgtest.Cluster
	repoDir string
	cfg     *config.Config
	repos   []repo.Repo
}

func newRealLab(t *testing.T) *realLab {
	t.Helper()
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	bin := agentBin.Build(t, "./agent/cmd/pgdr-agent", "pgdr-agent")
	dir := pgtest.OwnedDir(t, "pgdr-backuprun-")
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(dir, "identity.txt")
	if err := os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l := &realLab{pg: pgtest.New(t, pgtest.Options{}), repoDir: filepath.Join(dir, "repo")}
	cfgPath := filepath.Join(dir, "agent.yaml")
	yaml := fmt.Sprintf("cluster: main\nnode: {name: pg-a1, region: local}\npostgres:\n  pgdata: %s\n  dsn: %q\nrepos:\n  - name: local\n    url: file://%s\n"+
		"compression: {method: zstd, level: 3}\nencryption:\n  recipients: [%q]\n  identity_file: %s\nagent:\n  socket: %s\n",
		l.pg.PGData, l.pg.DSN(), l.repoDir, id.Recipient().String(), idFile, filepath.Join(dir, "agent.sock"))
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	l.pg.AppendConf(t, map[string]string{
		"archive_mode":    "on",
		"archive_command": fmt.Sprintf("'%s wal-push --config %s %%p'", bin, cfgPath),
	})
	pgtest.Chown(t, dir)
	l.pg.Start(t)
	if l.cfg, err = config.Load(cfgPath); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if l.repos, err = repo.OpenAll(ctx, l.cfg); err != nil {
		t.Fatal(err)
	}
	return l
}

// runReal runs one Backup order through a Runner with take, and returns
// its delivered result.
func runReal(t *testing.T, l *realLab, take TakeFunc, cmd *pgdrv1.AgentCommand) *pgdrv1.CommandResult {
	t.Helper()
	comp := &fakeCompleter{}
	r := New(Deps{Cluster: l.cfg.Cluster, Node: l.cfg.Node.Name, Repos: l.repos, Take: take, Completer: comp,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), CleanupGrace: 20 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); r.Wait() }()
	if res := r.Start(ctx, cmd); !res.GetPending() {
		t.Fatalf("Start = %v, want pending", res)
	}
	testutil.WaitFor(t, 60*time.Second, "the run's result", func() (bool, error) {
		comp.mu.Lock()
		defer comp.mu.Unlock()
		return len(comp.got) > 0, nil
	})
	comp.mu.Lock()
	defer comp.mu.Unlock()
	return comp.got[0]
}

func TestRealFullBackupThroughRunner(t *testing.T) {
	l := newRealLab(t)
	l.pg.Exec(t, "CREATE TABLE t AS SELECT g AS i, md5(g::text) AS s FROM generate_series(1, 20000) g")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	got := runReal(t, l, Taker(l.cfg, log, nil), order("r1", "full", time.Minute, "local"))
	if !got.GetOk() || got.GetBackup().GetBackupId() == "" || got.GetBackup().GetSizeBytes() == 0 || got.GetBackup().GetStoredBytes() == 0 {
		t.Fatalf("result = %v, want ok with the backup's id and sizes", got)
	}
	ctx := context.Background()
	m, err := backup.LoadManifest(ctx, l.repos[0], "main", got.GetBackup().GetBackupId())
	if err != nil {
		t.Fatalf("the reported backup has no manifest: %v", err)
	}
	if m.Tier != "daily" || m.Type != backup.TypeFull || uint64(m.DatabaseBytes) != got.GetBackup().GetSizeBytes() {
		t.Fatalf("manifest: tier %q type %s %d bytes, want tier daily, full, %d bytes", m.Tier, m.Type, m.DatabaseBytes, got.GetBackup().GetSizeBytes())
	}
}

func TestRealTimeoutLeavesNoBackup(t *testing.T) {
	l := newRealLab(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	real := Taker(l.cfg, log, nil)
	// Reading at 1 MB/s, the ~30 MB of a new cluster take far longer
	// than the 2 s timeout: the backup is cancelled while it copies.
	slow := func(ctx context.Context, repos []repo.Repo, o backup.Options) (*backup.Manifest, error) {
		o.MaxRate = 1e6
		return real(ctx, repos, o)
	}
	got := runReal(t, l, slow, order("r1", "full", 2*time.Second))
	if got.GetOk() || !strings.Contains(got.GetError(), "timed out after 2s") || !strings.Contains(got.GetError(), "objects removed") {
		t.Fatalf("result = %v, want a timeout whose backup was removed", got)
	}
	ctx := context.Background()
	ms, err := backup.List(ctx, l.repos[0], "main")
	if err != nil || len(ms) != 0 {
		t.Fatalf("backups after a timed-out run: %v (%v), want none", ms, err)
	}
	// Nothing of the backup is left under backup/: no data object, no
	// reservation.
	var left []string
	err = filepath.Walk(filepath.Join(l.repoDir, "main", "backup"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			left = append(left, p)
		}
		return nil
	})
	if len(left) != 0 {
		t.Fatalf("objects left by the cancelled backup: %v", left)
	}
}

// TestTakerErrorHidesPassword: a Taker that cannot reach the local server
// fails without the DSN's password in its error (the run's result, which
// the leader records in Raft).
func TestTakerErrorHidesPassword(t *testing.T) {
	port := testutil.FreePort(t) // nothing listens there
	cfg := &config.Config{Encryption: config.Encryption{Disabled: true}}
	cfg.Postgres.DSN = fmt.Sprintf("host=127.0.0.1 port=%d user=backup password=secret dbname=postgres sslmode=disable connect_timeout=10", port)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := Taker(cfg, slog.New(slog.DiscardHandler), nil)(ctx, nil, backup.Options{})
	if err == nil {
		t.Fatal("the Taker connected to a closed port")
	}
	if strings.Contains(err.Error(), "secret") {
		t.Fatalf("the error shows the DSN's password: %v", err)
	}
}

// TestRealScheduledExpiry (issue 16 item 3): on a real file repository, a
// run whose order carries the cluster's retention (daily: keep 1, no PITR
// window) expires the older daily backup after its own succeeded, keeps
// the new one, and reports what it removed.
func TestRealScheduledExpiry(t *testing.T) {
	l := newRealLab(t)
	l.pg.Exec(t, "CREATE TABLE t AS SELECT g AS i, md5(g::text) AS s FROM generate_series(1, 20000) g")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	take := Taker(l.cfg, log, nil)
	first := runReal(t, l, take, order("r1", "full", time.Minute, "local"))
	if !first.GetOk() {
		t.Fatalf("first backup: %v", first)
	}
	cmd := order("r2", "full", time.Minute, "local")
	cmd.GetBackup().Retention = &pgdrv1.BackupRetention{Tiers: []*pgdrv1.TierRetention{{Tier: "daily", KeepCount: 1}}}
	comp := &fakeCompleter{}
	r := New(Deps{Cluster: l.cfg.Cluster, Node: l.cfg.Node.Name, Repos: l.repos, Take: take, Completer: comp, Log: log,
		Expire: Expirer(l.cfg, log, true)}) // the lab's repository has no signing
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); r.Wait() }()
	if res := r.Start(ctx, cmd); !res.GetPending() {
		t.Fatalf("Start = %v", res)
	}
	second := comp.waitResultsWithin(t, 1, 120*time.Second)[0]
	e := second.GetBackup().GetExpiry()
	if !second.GetOk() || e == nil || e.GetError() != "" || e.GetBackupsDeleted() != 1 || e.GetObjectsDeleted() == 0 {
		t.Fatalf("second run: %v, want ok with one backup expired", second)
	}
	ms, err := backup.List(context.Background(), l.repos[0], "main")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	if len(ids) != 1 || ids[0] != second.GetBackup().GetBackupId() {
		t.Fatalf("backups after expiry %v, want only %s (the first, %s, expired)", ids, second.GetBackup().GetBackupId(), first.GetBackup().GetBackupId())
	}
}
