package server

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/policy"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// TestGameDayProbeMeasure: the gaps longer than twice the interval that
// overlap a run are its write unavailability (an open one counts up to
// now); a probe that never wrote, or started after the run, is partial;
// the gaps kept are bounded.
func TestGameDayProbeMeasure(t *testing.T) {
	t0 := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	newProbe := func() *gameDayProbe {
		p := newGameDayProbe(policy.GameDayProbe{DSN: "host=x", Interval: 100 * time.Millisecond}, "GD-1", func() {})
		p.since = t0
		return p
	}
	p := newProbe()
	if m := p.measure(at(0), at(1000), at(1000)); m.GetMeasured() || m.GetNote() == "" {
		t.Fatalf("a probe that never wrote: %+v", m)
	}
	for _, ms := range []int{0, 100, 200, 1700, 1800, 1900, 5000, 5100} { // gaps 200→1700 and 1900→5000
		p.acked(at(ms))
	}
	m := p.measure(at(150), at(1800), at(5200))
	if !m.GetMeasured() || m.GetGaps() != 1 || m.GetLongestGapMs() != 1500 || m.GetUnavailableMs() != 1500 || m.GetWritesOk() != 8 {
		t.Fatalf("first run: %+v", m)
	}
	m = p.measure(at(2000), at(6000), at(9000)) // the gap 1900→5000, and one open since 5100
	if m.GetGaps() != 2 || m.GetLongestGapMs() != 3900 || m.GetUnavailableMs() != 3100+3900 || m.GetWritesOk() != 0 {
		t.Fatalf("second run: %+v", m)
	}
	late := newProbe()
	late.since = at(500)
	late.acked(at(600))
	if m := late.measure(at(0), at(1000), at(700)); m.GetMeasured() {
		t.Fatalf("a probe started after the run: %+v", m)
	}
	for i := 0; i < 2*maxProbeGaps; i++ {
		p.acked(at(10000 + 1000*i))
	}
	if len(p.gaps) != maxProbeGaps {
		t.Fatalf("%d gaps kept", len(p.gaps))
	}
	// A probe against nothing fails, reconnecting, until stopped.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	bad := newGameDayProbe(policy.GameDayProbe{DSN: "host=127.0.0.1 port=1 user=x dbname=x connect_timeout=1", Interval: 50 * time.Millisecond}, "GD-2", cancel)
	bad.run(ctx, slog.New(slog.DiscardHandler))
	if bad.wrote() || bad.fails == 0 || bad.lastErr == "" {
		t.Fatalf("probe against nothing: wrote %v, %d failures (%s)", bad.wrote(), bad.fails, bad.lastErr)
	}
}

// TestGameDayProbeTableBounded: the probe writes into the user's database
// (real PostgreSQL): its table keeps one row per game day, however long the
// window and short the interval, and a row older than a week goes at the
// next probe's connect.
func TestGameDayProbeTableBounded(t *testing.T) {
	pg := pgtest.New(t, pgtest.Options{})
	pg.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newGameDayProbe(policy.GameDayProbe{DSN: pg.DSN(), Interval: 10 * time.Millisecond}, "GD-7", cancel)
	done := make(chan struct{})
	go func() { defer close(done); p.run(ctx, slog.New(slog.DiscardHandler)) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		p.mu.Lock()
		ok := p.ok
		p.mu.Unlock()
		if ok >= 50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the probe wrote %d rows in 30s (%s)", ok, p.lastErr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if n := pg.QueryString(t, `SELECT count(*) FROM pgdr_gameday_probe WHERE game_day = 'GD-7'`); n != "1" {
		t.Fatalf("the probe table holds %s rows of the game day after 50 writes, want 1", n)
	}
	pg.Exec(t, `UPDATE pgdr_gameday_probe SET at = now() - interval '8 days'`)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	p2 := newGameDayProbe(policy.GameDayProbe{DSN: pg.DSN(), Interval: 10 * time.Millisecond}, "GD-8", cancel2)
	conn, err := p2.connect(ctx2)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx2)
	if n := pg.QueryString(t, `SELECT count(*) FROM pgdr_gameday_probe`); n != "0" {
		t.Fatalf("%s rows older than a week kept", n)
	}
}

// TestGameDayProbeWritableNode: a DSN without target_session_attrs whose
// first host is read-only (a standby after a switchover): the probe
// writes through the writable host instead of failing on the first one
// for the whole window.
func TestGameDayProbeWritableNode(t *testing.T) {
	ro := pgtest.New(t, pgtest.Options{Conf: map[string]string{"default_transaction_read_only": "on"}})
	ro.Start(t)
	rw := pgtest.New(t, pgtest.Options{})
	rw.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dsn := fmt.Sprintf("host=127.0.0.1,127.0.0.1 port=%d,%d user=postgres dbname=postgres sslmode=disable", ro.Port, rw.Port)
	p := newGameDayProbe(policy.GameDayProbe{DSN: dsn, Interval: 20 * time.Millisecond}, "GD-9", cancel)
	done := make(chan struct{})
	go func() { defer close(done); p.run(ctx, slog.New(slog.DiscardHandler)) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for !p.wrote() {
		if time.Now().After(deadline) {
			p.mu.Lock()
			defer p.mu.Unlock()
			t.Fatalf("the probe never wrote in 10s through %s: %d failures (%s)", dsn, p.fails, p.lastErr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGameDayProbeLogicalReplication: the probe's table must not enter
// the user's logical replication: a FOR ALL TABLES publication picks up
// every new table, and a subscriber that lacks pgdr_gameday_probe stops
// applying (the user's own rows no longer arrive).
func TestGameDayProbeLogicalReplication(t *testing.T) {
	pub := pgtest.New(t, pgtest.Options{Conf: map[string]string{"wal_level": "logical"}})
	pub.Start(t)
	sub := pgtest.New(t, pgtest.Options{})
	sub.Start(t)
	pub.Exec(t, `CREATE TABLE app (id int PRIMARY KEY)`)
	pub.Exec(t, `CREATE PUBLICATION allpub FOR ALL TABLES`)
	sub.Exec(t, `CREATE TABLE app (id int PRIMARY KEY)`)
	sub.Exec(t, fmt.Sprintf(`CREATE SUBSCRIPTION s CONNECTION 'host=127.0.0.1 port=%d user=postgres dbname=postgres' PUBLICATION allpub`, pub.Port))
	pub.Exec(t, `INSERT INTO app VALUES (1)`)
	waitRows := func(want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for sub.QueryString(t, `SELECT count(*) FROM app`) != want {
			if time.Now().After(deadline) {
				t.Fatalf("the subscriber holds %s rows of app after 30s, want %s (probe table in the publication?)", sub.QueryString(t, `SELECT count(*) FROM app`), want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitRows("1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newGameDayProbe(policy.GameDayProbe{DSN: pub.DSN(), Interval: 20 * time.Millisecond}, "GD-3", cancel)
	done := make(chan struct{})
	go func() { defer close(done); p.run(ctx, slog.New(slog.DiscardHandler)) }()
	deadline := time.Now().Add(10 * time.Second)
	for !p.wrote() {
		if time.Now().After(deadline) {
			t.Fatalf("the probe never wrote: %s", p.lastErr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	pub.Exec(t, `INSERT INTO app VALUES (2)`)
	waitRows("2")
}
