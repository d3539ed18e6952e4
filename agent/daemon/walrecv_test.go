package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/walrecv"
	"github.com/pgdr/pgdr/agent/walship"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
	"github.com/pgdr/pgdr/pkg/wal"
)

// TestDaemonRunsReceiver: with wal.receive.enabled the daemon streams
// from its primary (its own server), uploads the segment being written,
// serves pgdr_walrecv_* and stops the receiver cleanly with the daemon;
// without it there is no receiver.
func TestDaemonRunsReceiver(t *testing.T) {
	if testing.Short() {
		t.Skip("runs PostgreSQL")
	}
	pg := pgtest.New(t, pgtest.Options{InitdbArgs: []string{"--wal-segsize=1"}, Conf: map[string]string{"archive_mode": "off"}})
	pg.Start(t)
	repoDir, spool := t.TempDir(), filepath.Join(t.TempDir(), "spool")
	y := fmt.Sprintf("cluster: c\nnode: {name: n}\npostgres: {pgdata: %s, dsn: '%s'}\nrepos: [{url: 'file://%s'}]\nencryption: {disabled: true}\nagent: {socket: %s}\nhealth: {listen: ''}\nheartbeat: {enabled: false}\n",
		pg.PGData, pg.DSN(), repoDir, filepath.Join(t.TempDir(), "agent.sock"))
	off, err := config.Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	ctx := context.Background()
	sh, err := walship.New(ctx, off, log)
	if err != nil {
		t.Fatal(err)
	}
	if New(off, sh, log).receiver != nil {
		t.Fatal("a receiver without wal.receive.enabled")
	}
	cfg, err := config.Parse([]byte(y + fmt.Sprintf("wal: {receive: {enabled: true, spool_dir: %s, upload_interval: 200ms}}\n", spool)))
	if err != nil {
		t.Fatal(err)
	}
	d := New(cfg, sh, log)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(rctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the daemon did not stop")
		}
	}
	defer stop()
	pg.Exec(t, "CREATE TABLE t (v text)")
	pg.Exec(t, "INSERT INTO t VALUES ('x')")
	l, err := wal.ParseLSN(pg.QueryString(t, "SELECT pg_current_wal_flush_lsn()::text"))
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(repoDir, filepath.FromSlash(repo.StreamPartialKey("c", l.Segment(1, 1<<20))))
	testutil.WaitFor(t, 30*time.Second, "the partial object of the commit's segment", func() (bool, error) {
		_, err := os.Stat(key)
		return err == nil, nil
	})
	testutil.WaitFor(t, 10*time.Second, "the receiver's flush position", func() (bool, error) {
		return d.receiver.Status().Flush >= l, nil
	})
	if n := pg.QueryString(t, "SELECT count(*)::text FROM pg_stat_replication WHERE application_name = $1", walrecv.AppName("n")); n != "1" {
		t.Fatalf("%s is not streaming from the primary", walrecv.AppName("n"))
	}
	_, body := get(t, d.Handler(), "GET", "/metrics")
	if !strings.Contains(body, `pgdr_walrecv_connected{cluster="c",node="n"} 1`) {
		t.Fatalf("/metrics does not show the receiver connected:\n%s", grepLines(body, "pgdr_walrecv_"))
	}
	if _, body := get(t, d.Handler(), "GET", "/status"); !strings.Contains(body, `"wal_receiver":{"connected":true`) || !strings.Contains(body, `"flush_lsn":"0/`) {
		t.Fatalf("/status does not show the receiver: %s", body)
	}
	stop()
	if d.receiver.Status().Connected {
		t.Fatal("the receiver still says connected after the daemon stopped")
	}
	testutil.WaitFor(t, 10*time.Second, "the replication connection closed", func() (bool, error) {
		return pg.QueryString(t, "SELECT count(*)::text FROM pg_stat_replication") == "0", nil
	})
	if ents, _ := os.ReadDir(spool); len(ents) == 0 {
		t.Fatal("the spool is empty")
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
