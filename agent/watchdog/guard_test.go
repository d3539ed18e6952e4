package watchdog

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeLease is a lease that exists (coordinator.addresses), granted or not.
type fakeLease struct{ granted bool }

func (fakeLease) Enabled() bool   { return true }
func (l fakeLease) Granted() bool { return l.granted }

// newGuard is a watchdog's parent side (failover.watchdog on, the default
// safety margin; not enabled: no child command yet) with lease, and the
// promotion guard of a fresh data directory in boot "boot-1", judged on
// clocks (nil: ReadClocks).
func newGuard(t *testing.T, lease Lease, clocks func() Clocks) (*Watchdog, *Guard) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	w := New(Config{Enabled: true, SafetyMargin: time.Second, PIDPath: filepath.Join(t.TempDir(), "agent.sock.watchdog.pid")},
		Deps{Lease: lease, Epoch: func() uint64 { return 6 }, Clocks: clocks, Log: log})
	g := NewGuard(GuardConfig{PGData: t.TempDir(), BootID: func() string { return "boot-1" }}, w, log)
	return w, g
}

// TestPromoteGuardRecord: the guard's record carries the give-up time on
// CLOCK_MONOTONIC with this boot's id, and reads back as the same time.
func TestPromoteGuardRecord(t *testing.T) {
	mono, ok := MonoNow()
	if !ok {
		t.Skip("no CLOCK_MONOTONIC on this platform")
	}
	_, d := newGuard(t, nil, nil) // this boot is boot-1
	g := GiveUpAfter(ReadClocks(), 10*time.Second, 10*time.Second)
	p := d.record(6, g)
	if p.BootID != "boot-1" || p.GiveUpMonoNs < mono+int64(9*time.Second) || p.GiveUpMonoNs > mono+int64(11*time.Second) {
		t.Fatalf("record %+v, want boot-1 and about %d", p, mono+int64(10*time.Second))
	}
	if !p.GiveUp.Equal(g.wall) || p.GiveUpBootNs != g.boot {
		t.Fatalf("record %+v, want the wall-clock give-up %s and CLOCK_BOOTTIME %d", p, g.wall, g.boot)
	}
	if at, why := d.giveUpOf(p); why != "" || at.Left(ReadClocks()) < 9*time.Second || at.Left(ReadClocks()) > 10*time.Second || !at.wall.Equal(g.wall) || at.boot != g.boot {
		t.Fatalf("give-up %+v in %s (%q), want %+v", at, at.Left(ReadClocks()), why, g)
	}
}

// TestGuardReachesWatchdog: the watchdog's side of the daemon's
// TestPromoteGuardReachesWatchdog. With a watchdog, Guard returns only
// once a heartbeat carrying the guard's give-up time was written to it (so
// that the agent's death right after pg_promote is covered); when none is
// written in time, it fails (pg_promote must not be called) and leaves no
// guard behind.
func TestGuardReachesWatchdog(t *testing.T) {
	for _, reads := range []bool{true, false} {
		w, d := newGuard(t, fakeLease{}, nil)
		w.Enable([]string{"pgdr-agent", "watchdog"})
		var got []Heartbeat
		var mu sync.Mutex
		if reads { // runChild's bookkeeping, without the child
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			go func() {
				for {
					select {
					case <-ctx.Done():
						return
					case <-w.notify:
					}
					hb, _, seq := w.heartbeatSeq()
					mu.Lock()
					got = append(got, hb)
					mu.Unlock()
					w.sent(seq)
				}
			}()
		}
		err := d.Guard(6, GiveUpAfter(ReadClocks(), time.Minute, time.Minute))
		if !reads {
			if err == nil || !strings.Contains(err.Error(), "watchdog") {
				t.Fatalf("no watchdog reading: err %v", err)
			}
			if _, err := os.Stat(d.Path()); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a guard the watchdog did not take left its record: %v", err)
			}
			if hb, _ := w.Heartbeat(); hb.RemainingMs != 0 {
				t.Fatalf("a guard the watchdog did not take stays in its deadline: %+v", hb)
			}
			continue
		}
		if err != nil {
			t.Fatalf("watchdog reading: %v", err)
		}
		mu.Lock()
		if len(got) == 0 || got[0].RemainingMs <= 0 {
			t.Fatalf("heartbeats before Guard returned: %+v", got)
		}
		mu.Unlock()
	}
}

// TestPromoteGuardNotTakenKeepsPrevious: review 3/5. When the watchdog
// does not take a second order's guard in time, that order is refused, and
// the first order's guard (its pg_promote may still be pending) stays: on
// disk and in the watchdog's deadline.
func TestPromoteGuardNotTakenKeepsPrevious(t *testing.T) {
	w, d := newGuard(t, fakeLease{}, nil)
	w.Enable([]string{"pgdr-agent", "watchdog"})
	first := GiveUpAfter(ReadClocks(), time.Minute, time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	acks := make(chan struct{})
	go func() { // the watchdog takes the first guard only
		defer close(acks)
		select {
		case <-ctx.Done():
			return
		case <-w.notify:
		}
		_, _, seq := w.heartbeatSeq()
		w.sent(seq)
	}()
	if err := d.Guard(5, first); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-acks
	if err := d.Guard(6, GiveUpAfter(ReadClocks(), 2*time.Minute, 2*time.Minute)); err == nil || !strings.Contains(err.Error(), "watchdog") {
		t.Fatalf("second guard not taken by the watchdog: err %v", err)
	}
	b, err := os.ReadFile(d.Path())
	if err != nil || !strings.Contains(string(b), `"epoch":5`) {
		t.Fatalf("the first order's guard record after the second was refused: %q, %v", b, err)
	}
	w.mu.Lock()
	until := w.pendingUntil
	w.mu.Unlock()
	if !until.Equal(first) {
		t.Fatalf("watchdog pendingUntil %v, want the first order's %v", until, first)
	}
}

// TestGuardRefusesZeroGiveUp: review of issue 15. A zero give-up time
// (a caller's translation that lost it) must not become a guard that
// promises nothing: Guard refuses it, writes no record and holds nothing,
// so pg_promote is never called behind it.
func TestGuardRefusesZeroGiveUp(t *testing.T) {
	_, d := newGuard(t, nil, nil)
	err := d.Guard(6, GiveUpTime{})
	if err == nil || !strings.Contains(err.Error(), "no give-up time") {
		t.Fatalf("Guard with a zero give-up time: err %v, want a refusal naming the missing give-up time", err)
	}
	if _, err := os.Stat(d.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused guard left a record: %v", err)
	}
}
