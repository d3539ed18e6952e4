package daemon

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
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/agent/walship"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/keys"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
	"github.com/pgdr/pgdr/pkg/testutil/s3server"
)

var agentBin testutil.Builder

// gaugeValue reads one series from reg: the family name and the labels
// besides cluster and node; ok is false when it is not served.
func gaugeValue(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.Metric {
			got := map[string]string{}
			for _, l := range m.Label {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			if m.Gauge != nil {
				return m.GetGauge().GetValue(), true
			}
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}

// TestRepoMetricsOnRealPostgreSQL: a PostgreSQL 15 primary archiving with
// pgdr-agent wal-push (its own process) into a file repository and a
// versitygw S3 bucket. A backup of tier daily taken outside the daemon,
// after it read the repositories, shows in its pgdr_repo_* figures at its
// next read, and in a restarted daemon's (whose reader runs on
// metrics.repo_interval); a pushed segment moves the WAL figures; the
// archiver's figures come from the real server.
func TestRepoMetricsOnRealPostgreSQL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and versitygw")
	}
	bin := agentBin.Build(t, "./agent/cmd/pgdr-agent", "pgdr-agent")
	dir := pgtest.OwnedDir(t, "pgdr-repostat-")
	s3 := s3server.Start(t)
	s3.CreateBucket(t, "pgdr-metrics")
	os.WriteFile(filepath.Join(dir, "s3-key-id"), []byte(s3.AccessKey+"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "s3-secret"), []byte(s3.SecretKey+"\n"), 0o644)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(dir, "identity.txt")
	if err := os.WriteFile(idFile, []byte(id.String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pg := pgtest.New(t, pgtest.Options{})
	cfgPath := filepath.Join(dir, "agent.yaml")
	yaml := fmt.Sprintf("cluster: main\nnode: {name: pg-a1, region: local}\npostgres:\n  pgdata: %s\n  dsn: %q\nrepos:\n  - name: local\n    url: file://%s\n"+
		"  - name: s3\n    url: s3://pgdr-metrics/main\n    s3: {endpoint: '%s', region: %s, path_style: true, access_key_id_file: %s, secret_access_key_file: %s}\n"+
		"encryption:\n  recipients: [%q]\n  identity_file: %s\nagent:\n  socket: %s\nhealth: {listen: ''}\nmetrics: {repo_interval: 1s}\n",
		pg.PGData, pg.DSN(), filepath.Join(dir, "repo"), s3.Endpoint, s3.Region, filepath.Join(dir, "s3-key-id"), filepath.Join(dir, "s3-secret"),
		id.Recipient().String(), idFile, filepath.Join(dir, "agent.sock"))
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	pg.AppendConf(t, map[string]string{"archive_mode": "on",
		"archive_command": fmt.Sprintf("'%s wal-push --config %s %%p'", bin, cfgPath)})
	pgtest.Chown(t, dir)
	pg.Start(t)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	switchWAL := func() string {
		seg := pg.QueryString(t, "SELECT pg_walfile_name(pg_switch_wal())")
		testutil.WaitFor(t, time.Minute, "segment "+seg+" archived", func() (bool, error) {
			return pg.QueryString(t, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") >= seg, nil
		})
		return seg
	}
	pg.Exec(t, "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
	first := switchWAL()

	newDaemon := func() *Daemon {
		sh, err := walship.New(ctx, cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		return New(cfg, sh, log)
	}
	d1 := newDaemon()
	d1.repoStat.ReadOnce(ctx)
	d1.monitor.CheckNow(ctx)
	reg := d1.metrics.reg
	for _, r := range []string{"local", "s3"} {
		if _, ok := gaugeValue(t, reg, "pgdr_repo_read_timestamp_seconds", map[string]string{"repository": r}); !ok {
			t.Fatalf("%s not read", r)
		}
		if _, ok := gaugeValue(t, reg, "pgdr_repo_backups", map[string]string{"repository": r}); ok {
			t.Fatalf("%s: backups counted before any was taken", r)
		}
		if v, _ := gaugeValue(t, reg, "pgdr_repo_read_failures_total", map[string]string{"repository": r}); v != 0 {
			t.Fatalf("%s: %v read failures", r, v)
		}
	}
	snaps := d1.repoStat.Snapshots()
	if !snaps[0].WALKnown || snaps[0].WALName < first || snaps[1].WALName != snaps[0].WALName {
		t.Fatalf("newest WAL %+v, want at least %s in both", snaps, first)
	}
	if v, ok := gaugeValue(t, reg, "pgdr_agent_last_archived_timestamp_seconds", nil); !ok || time.Since(time.Unix(int64(v), 0)) > time.Minute {
		t.Fatalf("pgdr_agent_last_archived_timestamp_seconds = %v (%v)", v, ok)
	}
	if v, ok := gaugeValue(t, reg, "pgdr_agent_wal_ready_segments", nil); !ok || v != 0 {
		t.Fatalf("pgdr_agent_wal_ready_segments = %v (%v), want 0 with the archive caught up", v, ok)
	}
	if v, ok := gaugeValue(t, reg, "pgdr_agent_archive_rpo_bytes", map[string]string{"repository": "s3"}); !ok || v >= 16<<20 {
		t.Fatalf("pgdr_agent_archive_rpo_bytes{s3} = %v (%v), want under a segment", v, ok)
	}
	if v, ok := gaugeValue(t, reg, "pgdr_agent_role", map[string]string{"role": "primary"}); !ok || v != 1 {
		t.Fatalf("pgdr_agent_role{role=primary} = %v (%v)", v, ok)
	}
	behind1, ok := gaugeValue(t, reg, "pgdr_repo_wal_behind_bytes", map[string]string{"repository": "s3"})
	if !ok {
		t.Fatal("pgdr_repo_wal_behind_bytes not served on the primary")
	}
	walAt1, _ := gaugeValue(t, reg, "pgdr_repo_last_wal_timestamp_seconds", map[string]string{"repository": "s3"})

	// A backup taken outside the daemon.
	repos := d1.shipper.Repos()
	rec, err := keys.Recipients(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, err := backup.Take(ctx, backup.Deps{Cfg: cfg, Repos: repos, Recipients: rec, Log: log}, backup.Options{Type: backup.TypeFull, Tier: "daily"})
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	wantStop := float64(m.StopTime.UnixNano()) / 1e9
	check := func(reg prometheus.Gatherer) (bool, error) {
		for _, r := range []string{"local", "s3"} {
			n, _ := gaugeValue(t, reg, "pgdr_repo_backups", map[string]string{"repository": r, "tier": "daily"})
			at, _ := gaugeValue(t, reg, "pgdr_repo_last_backup_timestamp_seconds", map[string]string{"repository": r, "tier": "daily", "type": "full"})
			if n != 1 || at < wantStop-0.001 || at > wantStop+0.001 {
				return false, fmt.Errorf("%s: %v daily backups, newest full ending %v, want 1 ending %v", r, n, at, wantStop)
			}
		}
		return true, nil
	}
	d1.repoStat.ReadOnce(ctx)
	if ok, err := check(reg); !ok {
		t.Fatalf("the running daemon's next read: %v", err)
	}

	// A restarted daemon: its reader, on metrics.repo_interval, finds the
	// backup; a segment pushed after the restart moves its WAL figures.
	d2 := newDaemon()
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); d2.repoStat.Run(rctx, repoInterval(cfg)) }()
	defer func() { stop(); <-done }()
	testutil.WaitFor(t, time.Minute, "the restarted daemon's figures", func() (bool, error) { return check(d2.metrics.reg) })
	pg.Exec(t, "INSERT INTO t SELECT g FROM generate_series(1, 100000) g")
	last := switchWAL()
	d2.monitor.CheckNow(ctx)
	testutil.WaitFor(t, time.Minute, "segment "+last+" in the WAL figures", func() (bool, error) {
		s := d2.repoStat.Snapshots()
		return s[0].WALName >= last && s[1].WALName >= last, fmt.Errorf("newest WAL %s / %s", s[0].WALName, s[1].WALName)
	})
	walAt2, _ := gaugeValue(t, d2.metrics.reg, "pgdr_repo_last_wal_timestamp_seconds", map[string]string{"repository": "s3"})
	if walAt2 <= walAt1 {
		t.Fatalf("pgdr_repo_last_wal_timestamp_seconds %v, was %v before the push", walAt2, walAt1)
	}
	behind2, ok := gaugeValue(t, d2.metrics.reg, "pgdr_repo_wal_behind_bytes", map[string]string{"repository": "s3"})
	if !ok || behind2 > 16<<20 {
		t.Fatalf("pgdr_repo_wal_behind_bytes = %v (%v), want within a segment (was %v)", behind2, ok, behind1)
	}
	for _, r := range []string{"local", "s3"} {
		if v, _ := gaugeValue(t, d2.metrics.reg, "pgdr_repo_read_failures_total", map[string]string{"repository": r}); v != 0 {
			t.Fatalf("%s: %v read failures", r, v)
		}
	}
	if strings.Contains(pg.Log(), "archive command failed") {
		t.Logf("archiver log: %s", pg.Log())
	}
}
