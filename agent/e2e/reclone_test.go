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
	"github.com/pgdr/pgdr/pkg/fsutil"
	"github.com/pgdr/pgdr/pkg/testutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestRejoinReclone: the old primary has neither data checksums nor
// wal_log_hints, so pg_rewind cannot rejoin it. A Rejoin order naming an
// unreachable primary fails naming both steps and leaves the original
// data directory in place; a Rejoin naming the new primary moves the old
// data aside (kept), copies the new primary with pg_basebackup, and the
// node streams from it with the new primary's rows and its own
// configuration.
func TestRejoinReclone(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{}) // no --data-checksums
	for setting, want := range map[string]string{"data_checksums": "off", "wal_log_hints": "off"} {
		if got := l.pg.QueryString(t, "SHOW "+setting); got != want {
			t.Fatalf("%s = %s, want %s", setting, got, want)
		}
	}
	l.pg.Exec(t, "CREATE TABLE lease_probe(t timestamptz); CREATE TABLE rows(n int, src text); INSERT INTO rows VALUES (1, 'old primary')")
	r1 := newReplica(t, l, 1)
	f := startFakeLeader(t, filepath.Join(l.dir, "coord"))
	f.set("pg-a1", 1)
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	cfg := l.writeConfig(t, "reclone-pg-a1.yaml", []string{"file"}, l.identity, 0)
	appendFile(t, cfg, f.configLines(addr))
	logb := startDaemon(t, l, cfg)
	waitProbes(t, 30*time.Second, addr, 200, "/primary")
	oldPort := l.pg.Port

	// The replica stops receiving; the old primary writes rows it never gets.
	disconnectReplicas(t, l.pg, r1)
	l.pg.Exec(t, "INSERT INTO rows SELECT g, 'diverged' FROM generate_series(100, 199) g")

	// The old primary is stopped (fenced by order); the replica is promoted.
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
	r1.Exec(t, "INSERT INTO rows VALUES (2, 'new primary')")

	// (a) The copy cannot be made (nothing listens there): the original
	// data directory is back in place, still fenced.
	bad := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable connect_timeout=5", testutil.FreePort(t))
	res = f.order(t, "pg-a1", &pgdrv1.AgentCommand{Epoch: 2, Kind: &pgdrv1.AgentCommand_Rejoin{Rejoin: &pgdrv1.Rejoin{Primary: "pg-a2", PrimaryDsn: bad}}}, 3*time.Minute)
	t.Logf("rejoin from nowhere: ok=%v error: %s", res.Ok, res.Error)
	if res.Ok {
		t.Fatalf("rejoin from an unreachable primary succeeded: %s", res.Output)
	}
	for _, want := range []string{"wal_log_hints", "pg_basebackup", "back in place"} {
		if !strings.Contains(res.Error, want) {
			t.Errorf("the error lacks %q: %s", want, res.Error)
		}
	}
	if fi, _ := health.ReadFenced(l.pg.PGData); fi == nil || fi.Epoch != 2 {
		t.Errorf("fenced marker after the failed copy: %+v", fi)
	}
	if _, err := os.Stat(filepath.Join(l.pg.PGData, "global", "pg_control")); err != nil {
		t.Errorf("the original data directory is not back: %v", err)
	}
	if old, _ := filepath.Glob(l.pg.PGData + ".pgdr-*"); len(old) != 0 {
		t.Errorf("left beside the data directory: %v", old)
	}

	// (b) Rejoin from the new primary: rewind impossible, so a fresh copy.
	// The new primary holds a promotion guard record (as if a promotion
	// of its own were pending): pg_basebackup copies it, and the copy
	// must not keep it (review 12).
	plantPromotePending(t, r1.PGData)
	res = f.order(t, "pg-a1", &pgdrv1.AgentCommand{Epoch: 2, Kind: &pgdrv1.AgentCommand_Rejoin{Rejoin: &pgdrv1.Rejoin{Primary: "pg-a2", PrimaryDsn: r1.DSN()}}}, 5*time.Minute)
	if !res.Ok {
		t.Fatalf("rejoin: %v\nagent log:\n%s\nold primary log:\n%s", res, tail(logb.String(), 3000), tail(readFile(l.pg.PGData+".pgdr.log"), 2000))
	}
	t.Logf("rejoin: %s", res.Output)
	m := regexp.MustCompile(`recloned from pg-a2, old data kept at (\S+)`).FindStringSubmatch(res.Output)
	if m == nil || !strings.Contains(res.Output, "wal_log_hints") {
		t.Fatalf("the output does not say it recloned, and why: %s", res.Output)
	}
	old := m[1]
	if filepath.Dir(old) != filepath.Dir(l.pg.PGData) || !strings.HasPrefix(filepath.Base(old), "pgdata.pgdr-old-") {
		t.Errorf("old data at %s, not beside %s", old, l.pg.PGData)
	}
	if fi, err := health.ReadFenced(old); fi == nil || fi.Epoch != 2 {
		t.Errorf("the old data directory (%s) is not the old node's: marker %+v %v", old, fi, err)
	}
	if fi, err := os.Stat(l.pg.PGData); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("new data directory: %v %v", fi, err)
	}
	if !strings.Contains(logb.String(), old) {
		t.Errorf("the agent did not log the old data's path %s", old)
	}
	streamsTo(t, r1, "pg-a1", 30*time.Second)
	if fi, _ := health.ReadFenced(l.pg.PGData); fi != nil {
		t.Errorf("the marker survived the rejoin: %+v", fi)
	}
	noPromotePending(t, l.pg.PGData)
	r1.Exec(t, "INSERT INTO rows VALUES (3, 'after rejoin')")
	waitRows(t, l.pg, "the recloned node to replay the new primary's rows", "old primary,new primary,after rejoin")
	if got := l.pg.QueryString(t, "SELECT pg_is_in_recovery()::text || ' ' || current_setting('port')"); got != fmt.Sprintf("true %d", oldPort) {
		t.Errorf("the recloned node (recovery, port): %s", got)
	}
	if auto := readFile(filepath.Join(l.pg.PGData, "postgresql.auto.conf")); !strings.Contains(auto, fmt.Sprintf("port=%d", r1.Port)) || !strings.Contains(auto, "application_name=pg-a1") {
		t.Errorf("postgresql.auto.conf:\n%s", auto)
	}
	waitProbes(t, 30*time.Second, addr, 200, "/replica")
	waitProbes(t, 10*time.Second, addr, 503, "/primary")
}

// plantPromotePending writes a promotion guard record of another boot
// into pgdata, owned like it, as an agent whose promotion is pending
// would (agent/watchdog's pendingPromotion). The test removes it at its
// end.
func plantPromotePending(t *testing.T, pgdata string) {
	t.Helper()
	p := health.PromotePendingPath(pgdata)
	rec := `{"epoch":9,"give_up":"2026-12-07T12:00:00Z","give_up_mono_ns":1,"boot_id":"the-source's-boot"}` + "\n"
	if err := os.WriteFile(p, []byte(rec), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(p) })
	o, err := fsutil.OwnerOf(pgdata)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, o.UID, o.GID); err != nil {
		t.Fatal(err)
	}
}

// noPromotePending fails unless pgdata holds no promotion guard record:
// one copied from the source server would make the agent fence the node
// on its next start (it takes another boot's record as passed).
func noPromotePending(t *testing.T, pgdata string) {
	t.Helper()
	if b, err := os.ReadFile(health.PromotePendingPath(pgdata)); err == nil {
		t.Errorf("the rejoined data directory holds a promotion guard record (%s): the agent would fence the node on its next start", strings.TrimSpace(string(b)))
	}
}
