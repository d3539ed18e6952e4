package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/agent/repocopy"
	"github.com/pgdr/pgdr/agent/repocopy/queue"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// copyStatus reads the daemon's /status: the async repository dr's copy state.
func copyStatus(t *testing.T, base string) (repocopy.Status, error) {
	t.Helper()
	resp, err := http.Get(base + "/status")
	if err != nil {
		return repocopy.Status{}, err
	}
	defer resp.Body.Close()
	var body struct {
		RepoCopies []repocopy.Status `json:"repo_copies"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return repocopy.Status{}, err
	}
	for _, s := range body.RepoCopies {
		if s.Repo == "dr" {
			return s, nil
		}
	}
	return repocopy.Status{}, fmt.Errorf("/status has no repository dr: %+v", body.RepoCopies)
}

func metricsText(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// An async S3 repository stopped for a while: archiving and backups go on
// in the sync repository, the copy lag grows and shows in /status and
// /metrics, and after the restart everything is copied, and backup-verify
// and wal-verify pass on the async repository alone.
func TestAsyncRepoOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e")
	}
	l := newLab(t, labOpts{s3: true})
	base := fmt.Sprintf("http://127.0.0.1:%d", testutil.FreePort(t))
	rewriteFile(t, l.cfg, "  - name: dr\n", "  - name: dr\n    mode: async\n    copy_concurrency: 4\n")
	f, err := os.OpenFile(l.cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "health: {listen: %q}\n", strings.TrimPrefix(base, "http://"))
	f.Close()
	daemonLog, kill := startKillableDaemon(t, l, l.cfg)
	caughtUp := func(what string, timeout time.Duration) repocopy.Status {
		t.Helper()
		var last repocopy.Status
		testutil.WaitFor(t, timeout, what, func() (bool, error) {
			s, err := copyStatus(t, base)
			last = s
			if err != nil {
				return false, err
			}
			return s.LagObjects == 0 && s.CopiedObjects > 0 && !s.LastReconcile.IsZero(), fmt.Errorf("status %+v\ndaemon log:\n%s", s, tail(daemonLog.String(), 3000))
		})
		return last
	}

	id1 := l.backup(t, l.cfg)
	l.waitArchived(t, l.switchWAL(t), time.Minute)
	caughtUp("the first catch-up", time.Minute)

	// The remote region's bucket goes away.
	l.s3.Stop()
	var last string
	for range 3 {
		last = l.switchWAL(t)
		l.waitArchived(t, last, time.Minute) // archiving goes on
	}
	l.pg.Exec(t, "CREATE TABLE outage(v text); INSERT INTO outage VALUES ('during the outage')")
	id2 := l.backup(t, l.cfg) // and so do backups
	// Listing backups goes on too.
	if bs := listBackups(t, l.cfg, "local"); len(bs) != 2 {
		t.Fatalf("backup-list during the outage: %+v, want both backups in local", bs)
	}
	// Expiry goes on in the sync repository, the async one skipped.
	if out := runExpire(t, l.cfg, "--keep-full", "2", "--pitr-window", "0", "--dry-run"); len(out.Results) != 1 || out.Results[0].Repo != "local" {
		t.Fatalf("expire during the outage: %+v, want a result for local only", out.Results)
	}
	testutil.WaitFor(t, time.Minute, "the copy lag to show", func() (bool, error) {
		s, err := copyStatus(t, base)
		if err != nil {
			return false, err
		}
		return s.LagObjects >= 4 && s.LagBytes > 0 && s.OldestMissingSeconds >= 1 && s.LastError != "", fmt.Errorf("status %+v", s)
	})
	m := metricsText(t, base)
	for _, name := range []string{"pgdr_repo_copy_lag_objects", "pgdr_repo_copy_lag_bytes", "pgdr_repo_copy_oldest_missing_seconds"} {
		prefix := name + `{cluster="main",node="pg-a1",repository="dr"} `
		i := strings.Index(m, prefix)
		if i < 0 || strings.HasPrefix(m[i+len(prefix):], "0\n") {
			t.Fatalf("/metrics does not show a lag in %s:\n%s", name, m)
		}
	}

	// The daemon dies (kill -9) during the outage; archive_command goes on
	// alone, queueing what the async repository is missing on disk.
	kill()
	for range 2 {
		last = l.switchWAL(t)
		l.waitArchived(t, last, time.Minute)
	}
	q, _ := queue.Open(filepath.Join(l.dir, "repocopy", "dr"))
	ps, _, err := q.List()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(ps, func(p queue.Pending) bool { return p.Hash == queue.Hash(queue.KindObject, repo.WALKey("main", last)) }) {
		t.Fatalf("%s, archived by a one-shot wal-push with no daemon, is not in the copy queue (%d entries)", last, len(ps))
	}

	l.s3.Restart(t)
	daemonLog, _ = startKillableDaemon(t, l, l.cfg)
	caughtUp("the catch-up after the outage and the daemon's restart", 2*time.Minute)

	// The async repository alone holds every backup and the WAL.
	drCfg := l.writeConfig(t, "dr-only.yaml", []string{"s3"}, l.identity, 0)
	for _, id := range []string{id1, id2} {
		if code, failed, r := verifyBackup(t, drCfg, id); code != 0 {
			t.Fatalf("backup-verify %s on dr alone: exit %d, failed %v\n%s\n%s", id, code, failed, r.stdout, tail(r.stderr, 3000))
		}
	}
	if r := runAgent(t, nil, "wal-verify", "--config", drCfg); r.code != 0 {
		t.Fatalf("wal-verify on dr alone: exit %d\n%s\n%s", r.code, r.stdout, tail(r.stderr, 3000))
	}
	restored, _ := l.restoreJSON(t, drCfg, "--backup", id2)
	if got := restored.QueryString(t, "SELECT v FROM outage"); got != "during the outage" {
		t.Fatalf("restored from dr alone: %q", got)
	}
	ls := walList(t, drCfg)
	if len(ls.Repos) != 1 || len(ls.Repos[0].Timelines) != 1 || ls.Repos[0].Timelines[0].Last < last || len(ls.Repos[0].Timelines[0].Gaps) > 0 {
		t.Fatalf("dr's archive does not reach %s, archived during the outage, without gaps: %+v", last, ls)
	}

	// Expiry runs in the async repository too, by the same rules, and
	// what it deleted from the sync one is not copied again.
	out := runExpire(t, l.cfg, "--keep-full", "1", "--pitr-window", "0")
	if len(out.Results) != 2 {
		t.Fatalf("expire ran in %d repositories, want local and dr: %+v", len(out.Results), out)
	}
	for _, r := range out.Results {
		if !slices.Equal(r.Deleted, []string{id1}) {
			t.Fatalf("expire in %s deleted %v, want %s", r.Repo, r.Deleted, id1)
		}
	}
	ctx := context.Background()
	cfg, err := config.Load(l.cfg)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := repo.OpenAll(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := repocopy.FromConfig(cfg, rs, slog.New(slog.DiscardHandler), repocopy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ReconcileAll(ctx); err != nil {
		t.Fatal(err)
	}
	q, _ = queue.Open(queue.DirOf(cfg.Agent.StateDir, "dr"))
	ps, _, _ = q.List()
	for _, p := range ps {
		if p.Hash == queue.Hash(queue.KindBackup, id1) {
			t.Fatalf("the reconcile after expiry queued the expired backup %s again", id1)
		}
	}
	n := 0
	rs[1].Store.List(ctx, backup.Prefix(cfg.Cluster)+id1+"/", func(storage.ObjectInfo) error { n++; return nil })
	if n != 0 {
		t.Fatalf("dr still holds %d objects of the expired %s", n, id1)
	}
}

// startKillableDaemon starts `pgdr-agent run` as the postgres user, like
// startDaemon, and returns its log and a kill -9 of it (also run at the
// test's end).
func startKillableDaemon(t *testing.T, l *lab, cfg string) (*testutil.SyncBuffer, func()) {
	t.Helper()
	cmd := exec.Command(agentPath(t), "run", "--config", cfg)
	var logb testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &logb, &logb
	if cred := pgtest.Credential(t); cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	kill := func() {
		cmd.Process.Kill()
		<-done
	}
	t.Cleanup(kill)
	testutil.WaitFor(t, 30*time.Second, "the agent daemon's HTTP server", func() (bool, error) {
		_, err := copyStatus(t, "http://"+healthListen(t, cfg))
		return err == nil, err
	})
	return &logb, kill
}

// healthListen is health.listen in the configuration file cfg.
func healthListen(t *testing.T, cfg string) string {
	t.Helper()
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c.Health.Listen
}
