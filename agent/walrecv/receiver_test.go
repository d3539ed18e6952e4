package walrecv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgdr/pgdr/agent/walship"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
	"github.com/pgdr/pgdr/pkg/wal"
)

const testSeg = 1 << 20 // initdb --wal-segsize=1

// env is a real PostgreSQL 15 primary, a file repository and the
// shipper the receiver uploads through.
type env struct {
	pg      *pgtest.Cluster
	repo    string
	spool   string
	sh      *walship.Shipper
	primary atomic.Pointer[string] // the DSN the receiver is given
}

func newEnv(t *testing.T, conf map[string]string) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("runs PostgreSQL")
	}
	c := map[string]string{"archive_mode": "off", "archive_timeout": "0", "wal_keep_size": "0", "max_wal_senders": "5", "max_replication_slots": "5"}
	for k, v := range conf {
		c[k] = v
	}
	pg := pgtest.New(t, pgtest.Options{InitdbArgs: []string{"--wal-segsize=1"}, Conf: c})
	pg.Start(t)
	e := &env{pg: pg, repo: t.TempDir(), spool: filepath.Join(t.TempDir(), "spool")}
	y := fmt.Sprintf("cluster: c1\nnode: {name: n1}\npostgres: {pgdata: %s}\nrepos: [{name: r1, url: 'file://%s'}]\nencryption: {disabled: true}\n", pg.PGData, e.repo)
	cfg, err := config.Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	e.sh, err = walship.New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	dsn := pg.DSN()
	e.primary.Store(&dsn)
	pg.Exec(t, "CREATE TABLE t (id serial PRIMARY KEY, v text)")
	return e
}

// start runs a receiver until the returned stop is called (or the test
// ends).
func (e *env) start(t *testing.T, interval time.Duration) (*Receiver, func()) {
	t.Helper()
	r := New(Config{AppName: AppName("n1"), Slot: DefaultSlot("n1"), SpoolDir: e.spool, UploadInterval: interval, RetryInterval: 100 * time.Millisecond},
		Deps{Primary: func(context.Context) (string, error) { return *e.primary.Load(), nil }, Upload: e.sh,
			Log: slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	waitFor(t, 20*time.Second, "the receiver streams", func() bool { return r.Status().Connected })
	return r, stop
}

// tlog writes the receiver's log to the test's.
type tlog struct{ t *testing.T }

func (l tlog) Write(p []byte) (int, error) { l.t.Log(string(bytes.TrimSpace(p))); return len(p), nil }

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// header reads the cleartext header of the object at key (false: none).
func (e *env) header(t *testing.T, key string) (objstream.Header, os.FileInfo, bool) {
	t.Helper()
	p := filepath.Join(e.repo, filepath.FromSlash(key))
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return objstream.Header{}, nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := objstream.ReadHeader(f)
	if err != nil {
		return objstream.Header{}, nil, false // being replaced
	}
	st, _ := f.Stat()
	return h, st, true
}

// pgFile reads the first n bytes of PostgreSQL's own pg_wal file (n < 0:
// all of it).
func (e *env) pgFile(t *testing.T, name string, n int64) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.pg.PGData, "pg_wal", name))
	if err != nil {
		t.Fatal(err)
	}
	if n >= 0 {
		b = b[:n]
	}
	return b
}

func (e *env) lsn(t *testing.T, sql string) wal.LSN {
	t.Helper()
	l, err := wal.ParseLSN(e.pg.QueryString(t, sql))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// commit commits one row and returns the WAL position after it.
func (e *env) commit(t *testing.T, v string) wal.LSN {
	t.Helper()
	e.pg.Exec(t, "INSERT INTO t (v) VALUES ($1)", v)
	return e.lsn(t, "SELECT pg_current_wal_flush_lsn()::text")
}

func sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

// waitPartial waits until the partial object of the segment holding l
// covers l, and checks it is PostgreSQL's own WAL bytes.
func (e *env) waitPartial(t *testing.T, l wal.LSN, limit time.Duration) time.Duration {
	t.Helper()
	name := l.Segment(1, testSeg)
	key := repo.StreamPartialKey("c1", name)
	start := time.Now()
	var h objstream.Header
	waitFor(t, limit, fmt.Sprintf("the partial object of %s covers %s", name, l), func() bool {
		var ok bool
		h, _, ok = e.header(t, key)
		return ok && h.PlainSize >= int64(uint64(l)%testSeg)
	})
	took := time.Since(start)
	if !bytes.Equal(h.PlainSHA256, sum(e.pgFile(t, name, h.PlainSize))) {
		t.Fatalf("the partial object of %s (%d bytes) is not PostgreSQL's WAL", name, h.PlainSize)
	}
	return took
}

// TestTricklePartialThenSegment: with archive_timeout off, each commit's
// WAL is in the partial object within about the upload interval, with
// PostgreSQL's own bytes; a switched segment is archived by the receiver
// (its partial deleted), and wal-push of PostgreSQL's own file afterwards
// finds it stored with identical bytes and rewrites nothing.
func TestTricklePartialThenSegment(t *testing.T) {
	e := newEnv(t, nil)
	// The segments ahead become recycled files (old segments renamed by
	// the checkpoint, their old WAL still in them): a switched segment's
	// tail must still be what the stream sent.
	e.pg.Exec(t, "INSERT INTO t (v) SELECT md5(i::text) || repeat('x', 1000) FROM generate_series(1, 8000) i")
	e.pg.Exec(t, "CHECKPOINT")
	e.pg.Exec(t, "CHECKPOINT")
	e.pg.Exec(t, "SELECT pg_switch_wal()")
	recycled := e.lsn(t, "SELECT pg_current_wal_lsn()::text").Segment(1, testSeg)
	if b := e.pgFile(t, recycled, -1); bytes.Count(b[testSeg-8192:], []byte{0}) == 8192 {
		t.Fatalf("%s is not a recycled file", recycled)
	}
	const interval = 300 * time.Millisecond
	r, _ := e.start(t, interval)
	var last wal.LSN
	for i := range 3 {
		last = e.commit(t, fmt.Sprint("row", i))
		took := e.waitPartial(t, last, 10*time.Second)
		t.Logf("commit %d at %s: in the partial object after %s", i, last, took.Round(time.Millisecond))
		if took > interval+2*time.Second {
			t.Errorf("the partial object covered the commit after %s, upload interval %s", took, interval)
		}
	}
	name := last.Segment(1, testSeg)
	e.pg.Exec(t, "SELECT pg_switch_wal()")
	key := repo.WALKey("c1", name)
	var h objstream.Header
	var st os.FileInfo
	waitFor(t, 10*time.Second, name+" archived by the receiver", func() bool {
		var ok bool
		h, st, ok = e.header(t, key)
		return ok
	})
	pgBytes := e.pgFile(t, name, -1)
	if h.PlainSize != testSeg || !bytes.Equal(h.PlainSHA256, sum(pgBytes)) {
		spooled, _ := os.ReadFile(filepath.Join(e.spool, name))
		t.Fatalf("the archived %s (%d bytes) differs from PostgreSQL's file; spool equal to PostgreSQL's: %v", name, h.PlainSize, bytes.Equal(spooled, pgBytes))
	}
	waitFor(t, 5*time.Second, "the partial object deleted", func() bool {
		_, _, ok := e.header(t, repo.StreamPartialKey("c1", name))
		return !ok
	})
	if err := e.sh.PushWith(context.Background(), filepath.Join(e.pg.PGData, "pg_wal", name), walship.PushOptions{Force: true}); err != nil {
		t.Fatalf("wal-push of PostgreSQL's own %s after the receiver archived it: %v", name, err)
	}
	if _, st2, _ := e.header(t, key); !st2.ModTime().Equal(st.ModTime()) {
		t.Fatal("wal-push rewrote the object the receiver archived")
	}
	if s := r.Status(); s.Uploaded < wal.LSN((uint64(last)/testSeg+1)*testSeg) || s.Flush < s.Uploaded || s.Timeline != 1 {
		t.Fatalf("status %+v after the segment was archived", s)
	}
}

// pgSums reads the SHA-256 of PostgreSQL's segments first..last of
// timeline tli.
func (e *env) pgSums(t *testing.T, tli uint32, first, last uint64) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	for s := first; s <= last; s++ {
		name := wal.SegmentName(tli, s, testSeg)
		m[name] = sum(e.pgFile(t, name, -1))
	}
	return m
}

// archivedSame checks that the segments of want are archived with these
// SHA-256s (PostgreSQL's bytes).
func (e *env) archivedSame(t *testing.T, want map[string][]byte) {
	t.Helper()
	for name, s := range want {
		waitFor(t, 10*time.Second, name+" archived", func() bool { _, _, ok := e.header(t, repo.WALKey("c1", name)); return ok })
		h, _, _ := e.header(t, repo.WALKey("c1", name))
		if !bytes.Equal(h.PlainSHA256, s) {
			t.Fatalf("the archived %s differs from PostgreSQL's", name)
		}
	}
}

// TestRestartResumesFromSpool: a receiver stopped while the primary goes
// on (its slot keeps the WAL) resumes from its spool's end: every segment
// from before the stop to after the restart is archived, with no gap,
// each with PostgreSQL's bytes, and the spool keeps a bounded number of
// files.
func TestRestartResumesFromSpool(t *testing.T) {
	e := newEnv(t, nil)
	_, stop := e.start(t, 200*time.Millisecond)
	first := uint64(e.commit(t, "a")) / testSeg
	e.pg.Exec(t, "SELECT pg_switch_wal()")
	e.archivedSame(t, e.pgSums(t, 1, first, first))
	mid := e.commit(t, "b")
	e.waitPartial(t, mid, 10*time.Second)
	stop()
	// Written while the receiver is down: three more segments.
	for range 3 {
		e.pg.Exec(t, "INSERT INTO t (v) SELECT repeat('y', 500) FROM generate_series(1, 200)")
		e.pg.Exec(t, "SELECT pg_switch_wal()")
		e.pg.Exec(t, "CHECKPOINT") // the slot must keep the segments
	}
	last := e.commit(t, "c")
	// The slot kept every segment from the receiver's stop on.
	want := e.pgSums(t, 1, uint64(mid)/testSeg, uint64(last)/testSeg-1)
	r, _ := e.start(t, 200*time.Millisecond)
	e.archivedSame(t, want)
	e.waitPartial(t, last, 10*time.Second)
	if s := r.Status(); s.Reconnects != 0 || s.Flush < last {
		t.Fatalf("status %+v", s)
	}
	waitFor(t, 10*time.Second, "the spool trimmed", func() bool {
		files, _ := listSpool(e.spool, testSeg)
		return len(files) <= 4
	})
}

// TestSynchronousReceiver: with synchronous_standby_names naming the
// receiver, a commit returns only once the receiver has it fsynced in its
// spool; with the receiver stopped a commit waits, and returns once a
// restarted receiver has it.
func TestSynchronousReceiver(t *testing.T) {
	e := newEnv(t, nil)
	r, stop := e.start(t, time.Second)
	e.pg.Exec(t, "ALTER SYSTEM SET synchronous_standby_names = '"+AppName("n1")+"'")
	e.pg.Exec(t, "SELECT pg_reload_conf()")
	waitFor(t, 10*time.Second, "the receiver is the synchronous standby", func() bool {
		return e.pg.QueryString(t, "SELECT coalesce((SELECT sync_state FROM pg_stat_replication WHERE application_name = $1), '')", AppName("n1")) == "sync"
	})
	for i := range 5 {
		l := e.commit(t, fmt.Sprint("s", i))
		if f := r.Status().Flush; f < l {
			t.Fatalf("commit %d at %s acknowledged before the receiver flushed it (flush %s)", i, l, f)
		}
		files, _ := listSpool(e.spool, testSeg)
		end := resumePoint(files, testSeg)
		if got := wal.LSN(end.File.SegNo*testSeg + uint64(end.File.Size)); got < l {
			t.Fatalf("commit %d at %s acknowledged, the spool ends at %s", i, l, got)
		}
	}
	stop()
	conn := e.pg.Conn(t)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		_, err := conn.Exec(ctx, "INSERT INTO t (v) VALUES ('blocked')")
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("a commit returned with the synchronous receiver stopped: %v", err)
	case <-time.After(2 * time.Second):
	}
	e.start(t, time.Second)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the waiting commit did not return once the receiver was back")
	}
}

// TestFollowsNewTimeline: the receiver streams from the primary and,
// after its standby (which missed the last commit: the receiver has WAL of
// timeline 1 past the fork) is promoted, from the new primary: it archives
// 00000002.history as PostgreSQL wrote it, creates its slot there, and
// uploads timeline 2 from the segment holding the switch point with the
// new primary's own bytes (not the old timeline's WAL past the fork);
// wal-push of the new primary's segment then finds it stored.
func TestFollowsNewTimeline(t *testing.T) {
	e := newEnv(t, map[string]string{"wal_log_hints": "on"})
	r, _ := e.start(t, 200*time.Millisecond)
	sb := pgtest.Empty(t, pgtest.Options{})
	sb.Run(t, "pg_basebackup", "-D", sb.PGData, "-d", e.pg.DSN(), "-X", "stream", "-R", "-c", "fast")
	sb.AppendConf(t, sb.LocalConf())
	sb.Start(t)
	// Beside the standby, LocalPrimary finds the primary in its
	// primary_conninfo; beside a primary, the primary itself.
	local := func(c *pgtest.Cluster) func(context.Context) (*pgx.Conn, bool, error) {
		return func(ctx context.Context) (*pgx.Conn, bool, error) {
			conn, err := pgx.Connect(ctx, c.DSN())
			if err != nil {
				return nil, false, err
			}
			var rec bool
			err = conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec)
			return conn, rec, err
		}
	}
	ctx := context.Background()
	got, err := LocalPrimary(local(sb), "self")(ctx)
	if err != nil || !strings.Contains(got, fmt.Sprintf("port=%d", e.pg.Port)) {
		t.Fatalf("LocalPrimary beside the standby: %q, %v", got, err)
	}
	// pg_basebackup -R's primary_conninfo carries libpq-only keywords
	// (sslcompression, gssencmode, ...) the server refuses as settings: what
	// LocalPrimary returns connects.
	if rc, err := pgconn.Connect(ctx, got+" replication=true"); err != nil {
		t.Fatalf("connecting with LocalPrimary's %q: %v", got, err)
	} else {
		rc.Close(ctx)
	}
	if got, err := LocalPrimary(local(e.pg), "self")(ctx); err != nil || got != "self" {
		t.Fatalf("LocalPrimary beside the primary: %q, %v", got, err)
	}
	a := e.commit(t, "on both")
	waitFor(t, 20*time.Second, "the standby replayed the commit", func() bool {
		l, err := wal.ParseLSN(sb.QueryString(t, "SELECT coalesce(pg_last_wal_replay_lsn(), '0/0')::text"))
		return err == nil && l >= a
	})
	sb.Stop(t, "fast")
	b := e.commit(t, "only on the old primary")
	waitFor(t, 10*time.Second, "the receiver flushed the commit the standby missed", func() bool { return r.Status().Flush >= b })
	e.waitPartial(t, b, 10*time.Second)
	e.pg.Stop(t, "immediate")
	sb.Start(t)
	sb.Run(t, "pg_ctl", "-D", sb.PGData, "-w", "-t", "60", "promote")
	dsn := sb.DSN()
	e.primary.Store(&dsn)
	waitFor(t, 30*time.Second, "the receiver streams timeline 2", func() bool { s := r.Status(); return s.Connected && s.Timeline == 2 })

	// The history file, as the new primary wrote it.
	hist, err := os.ReadFile(filepath.Join(sb.PGData, "pg_wal", "00000002.history"))
	if err != nil {
		t.Fatal(err)
	}
	// The uploader archives it (it does not hold up streaming).
	waitFor(t, 30*time.Second, "00000002.history archived", func() bool {
		_, _, ok := e.header(t, repo.WALKey("c1", "00000002.history"))
		return ok
	})
	h, _, ok := e.header(t, repo.WALKey("c1", "00000002.history"))
	if !ok || !bytes.Equal(h.PlainSHA256, sum(hist)) {
		t.Fatalf("00000002.history archived: %v, same as the new primary's: %v", ok, ok && bytes.Equal(h.PlainSHA256, sum(hist)))
	}
	entries, err := wal.ParseHistory(hist, 2)
	if err != nil || len(entries) != 1 {
		t.Fatalf("history %q: %v", hist, err)
	}
	fork := entries[0].Switch
	if fork >= b {
		t.Fatalf("the fork %s is not before the commit the standby missed (%s): nothing diverged", fork, b)
	}
	if n := sb.QueryString(t, "SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = $1", DefaultSlot("n1")); n != "1" {
		t.Fatal("the receiver's slot is not on the new primary")
	}
	// Timeline 2 from the segment holding the fork: the new primary's bytes.
	sbFile := func(name string, n int64) []byte {
		b, err := os.ReadFile(filepath.Join(sb.PGData, "pg_wal", name))
		if err != nil {
			t.Fatal(err)
		}
		if n >= 0 {
			b = b[:n]
		}
		return b
	}
	sb.Exec(t, "INSERT INTO t (v) VALUES ('on the new primary')")
	c, err := wal.ParseLSN(sb.QueryString(t, "SELECT pg_current_wal_flush_lsn()::text"))
	if err != nil {
		t.Fatal(err)
	}
	first := fork.Segment(2, testSeg)
	key := repo.StreamPartialKey("c1", c.Segment(2, testSeg))
	waitFor(t, 10*time.Second, "the partial of timeline 2 covers the new commit", func() bool {
		h, _, ok := e.header(t, key)
		return ok && h.PlainSize >= int64(uint64(c)%testSeg)
	})
	h, _, _ = e.header(t, key)
	if !bytes.Equal(h.PlainSHA256, sum(sbFile(c.Segment(2, testSeg), h.PlainSize))) {
		t.Fatalf("the partial of %s is not the new primary's WAL", c.Segment(2, testSeg))
	}
	sb.Exec(t, "SELECT pg_switch_wal()")
	waitFor(t, 10*time.Second, first+" archived", func() bool { _, _, ok := e.header(t, repo.WALKey("c1", first)); return ok })
	h, _, _ = e.header(t, repo.WALKey("c1", first))
	if !bytes.Equal(h.PlainSHA256, sum(sbFile(first, -1))) {
		t.Fatalf("the archived %s is not the new primary's segment", first)
	}
	if err := e.sh.PushWith(context.Background(), filepath.Join(sb.PGData, "pg_wal", first), walship.PushOptions{Force: true}); err != nil {
		t.Fatalf("wal-push of the new primary's %s: %v", first, err)
	}
	// The old timeline's WAL past the fork stays under its own name.
	old := b.Segment(1, testSeg)
	if h, _, ok := e.header(t, repo.StreamPartialKey("c1", old)); !ok || h.PlainSize < int64(uint64(b)%testSeg) {
		t.Fatalf("the old timeline's partial %s does not hold the commit past the fork", old)
	}
}

// TestLostWALStartsAgain: when the WAL from the spool's end is gone from
// the primary (the slot was invalidated by max_slot_wal_keep_size while
// the receiver was away), the receiver starts again at the primary's
// current segment instead of failing forever, and deletes the partial
// object of the segment it abandoned.
func TestLostWALStartsAgain(t *testing.T) {
	e := newEnv(t, map[string]string{"max_slot_wal_keep_size": "'2MB'"})
	_, stop := e.start(t, 200*time.Millisecond)
	a := e.commit(t, "before")
	e.waitPartial(t, a, 10*time.Second)
	stop()
	for range 5 {
		e.pg.Exec(t, "INSERT INTO t (v) SELECT repeat('z', 500) FROM generate_series(1, 200)")
		e.pg.Exec(t, "SELECT pg_switch_wal()")
	}
	e.pg.Exec(t, "CHECKPOINT")
	if st := e.pg.QueryString(t, "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1", DefaultSlot("n1")); st != "lost" {
		t.Fatalf("the slot's wal_status is %q, want lost", st)
	}
	r, _ := e.start(t, 200*time.Millisecond)
	b := e.commit(t, "after")
	e.waitPartial(t, b, 20*time.Second)
	if s := r.Status(); s.Flush < b {
		t.Fatalf("status %+v", s)
	}
	waitFor(t, 10*time.Second, "the abandoned segment's partial object deleted", func() bool {
		_, _, ok := e.header(t, repo.StreamPartialKey("c1", a.Segment(1, testSeg)))
		return !ok
	})
}

// TestFinishesOldTimelineFromNewPrimary: a receiver that was away while
// the standby received more of timeline 1 and was promoted finishes
// timeline 1 from the new primary up to the switch point (the server ends
// that stream at the switch point), then streams timeline 2: timeline 1's
// last segment in the spool is the new primary's copy of it up to the
// switch point, and timeline 2 is uploaded with the new primary's bytes.
func TestFinishesOldTimelineFromNewPrimary(t *testing.T) {
	e := newEnv(t, nil)
	r, stop := e.start(t, 200*time.Millisecond)
	sb := pgtest.Empty(t, pgtest.Options{})
	sb.Run(t, "pg_basebackup", "-D", sb.PGData, "-d", e.pg.DSN(), "-X", "stream", "-R", "-c", "fast")
	sb.AppendConf(t, sb.LocalConf())
	sb.Start(t)
	a := e.commit(t, "seen by the receiver")
	waitFor(t, 10*time.Second, "the receiver flushed", func() bool { return r.Status().Flush >= a })
	stop()
	var b wal.LSN
	for i := range 20 {
		b = e.commit(t, fmt.Sprint("missed by the receiver ", i))
	}
	waitFor(t, 20*time.Second, "the standby replayed the commits", func() bool {
		l, err := wal.ParseLSN(sb.QueryString(t, "SELECT coalesce(pg_last_wal_replay_lsn(), '0/0')::text"))
		return err == nil && l >= b
	})
	e.pg.Stop(t, "fast")
	sb.Run(t, "pg_ctl", "-D", sb.PGData, "-w", "-t", "60", "promote")
	dsn := sb.DSN()
	e.primary.Store(&dsn)
	r, _ = e.start(t, 200*time.Millisecond)
	waitFor(t, 30*time.Second, "the receiver streams timeline 2", func() bool { s := r.Status(); return s.Connected && s.Timeline == 2 })
	hist, err := os.ReadFile(filepath.Join(sb.PGData, "pg_wal", "00000002.history"))
	if err != nil {
		t.Fatal(err)
	}
	entries, err := wal.ParseHistory(hist, 2)
	if err != nil || len(entries) != 1 {
		t.Fatalf("history %q: %v", hist, err)
	}
	fork := entries[0].Switch
	if fork <= b {
		t.Fatalf("the fork %s is not after the commits the receiver missed (%s)", fork, b)
	}
	old := fork.Segment(1, testSeg)
	spooled, err := os.ReadFile(filepath.Join(e.spool, old+partialSuffix))
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(spooled)) != uint64(fork)%testSeg {
		t.Fatalf("timeline 1's last segment in the spool holds %d bytes, the switch point is at %d", len(spooled), uint64(fork)%testSeg)
	}
	if !bytes.Equal(spooled, e.pgFile(t, old, int64(len(spooled)))) {
		t.Fatal("timeline 1's last segment in the spool is not the old primary's WAL up to the switch point")
	}
	sb.Exec(t, "INSERT INTO t (v) VALUES ('on timeline 2')")
	c, err := wal.ParseLSN(sb.QueryString(t, "SELECT pg_current_wal_flush_lsn()::text"))
	if err != nil {
		t.Fatal(err)
	}
	name := c.Segment(2, testSeg)
	waitFor(t, 10*time.Second, "the partial of timeline 2 covers the commit", func() bool {
		h, _, ok := e.header(t, repo.StreamPartialKey("c1", name))
		return ok && h.PlainSize >= int64(uint64(c)%testSeg)
	})
	h, _, _ := e.header(t, repo.StreamPartialKey("c1", name))
	sbData, err := os.ReadFile(filepath.Join(sb.PGData, "pg_wal", name))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h.PlainSHA256, sum(sbData[:h.PlainSize])) {
		t.Fatalf("the partial of %s is not the new primary's WAL", name)
	}
}

// TestRefusesAnotherCluster: a server of another database cluster (a
// primary_conninfo pointing at the wrong place) is refused before
// anything is created on it or written to the spool.
func TestRefusesAnotherCluster(t *testing.T) {
	e := newEnv(t, nil)
	other := pgtest.New(t, pgtest.Options{InitdbArgs: []string{"--wal-segsize=1"}})
	other.Start(t)
	dsn := other.DSN()
	e.primary.Store(&dsn)
	var logs bytes.Buffer
	var mu sync.Mutex
	r := New(Config{AppName: AppName("n1"), Slot: DefaultSlot("n1"), SpoolDir: e.spool, RetryInterval: 100 * time.Millisecond},
		Deps{Primary: func(context.Context) (string, error) { return *e.primary.Load(), nil }, Upload: e.sh,
			SystemID: func() (uint64, error) { return wal.SystemIdentifier(e.pg.PGData) },
			Log:      slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	waitFor(t, 10*time.Second, "the refusal", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(logs.String(), "another database cluster")
	})
	cancel()
	<-done
	if n := other.QueryString(t, "SELECT count(*)::text FROM pg_replication_slots"); n != "0" {
		t.Fatal("a slot was created on another cluster's server")
	}
	if files, _ := listSpool(e.spool, testSeg); len(files) != 0 {
		t.Fatalf("the spool got another cluster's WAL: %v", files)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
