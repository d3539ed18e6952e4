package watchdog

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/pkg/fsutil"
)

// The settle deadline of a promotion (Promote.settle_by, review D10).
//
// A promotion the leader never heard the outcome of may still complete
// (PostgreSQL finishes a requested promotion once replay catches up). The
// leader may count it as settled, and promote another member, once the
// order's settle window (Promote.settle_after_ms) plus its safety margin
// has passed on its own monotonic clock since the order went out (or since
// it caught up, for orders of earlier leaders), provided this agent
// registered honours_settle_by (its watchdog runs). The agent keeps that
// promise as follows. Let G, the give-up time, be a time no later than
// the order's sending (the promoter's settleGiveUp), plus the window, less the safety margin,
// on the agent's monotonic clock: the leader's wall clock does not count
// (an older coordinator sends only settle_by: G = settle_by -
// safety_margin, on the clocks' agreement).
//
// G is held on three clocks and has passed once ANY of them reaches it
// (GiveUpTime): CLOCK_MONOTONIC (Go's monotonic readings), the wall clock
// (that window from the sending's wall reading) and CLOCK_BOOTTIME (the
// window's rest from the guard, on Linux). CLOCK_MONOTONIC stands still
// while a hypervisor pauses the guest (and while the host is suspended),
// but the leader's clock runs on: counted on it alone, a candidate paused
// longer than the window with its pg_promote pending would give up only
// after the leader had counted the promotion as settled and promoted
// another member, and two primaries would take writes until the watcher
// saw the newer epoch. CLOCK_BOOTTIME counts a suspension, and the wall
// clock is set right once the guest resumes (kvmclock, NTP), so either
// brings G forward by the pause. A wall clock stepped forward for another
// reason fences early, the conservative direction; one stepped back
// changes nothing, since the monotonic G still applies. Wall times are
// compared without Go's monotonic readings (t.Round(0)): Go compares two
// readings that both carry one on the monotonic clock.
//
// From right before pg_promote until the node holds a lease
// granted as the new primary (or is fenced, or its PostgreSQL stopped,
// which drops the promote request), the promotion is guarded:
//   - the pending promotion watcher fences the node at G unless a lease
//     was granted (the promoter's watchPromotion, which Resume hands a
//     guard left by a previous agent process);
//   - the watchdog's deadline is at most G (plus its grace), whatever the
//     lease loop says, and the guard reaches the watchdog before
//     pg_promote is called; so a crashed, killed or stalled agent leaves
//     it to the watchdog, which fences at G + grace, before the window
//     ends (the heartbeat carries G on the wall clock and CLOCK_BOOTTIME
//     too, which the child checks at least every poll, since its
//     timer runs on CLOCK_MONOTONIC);
//   - the guard is written to pgdata (PendingFile, G on
//     CLOCK_MONOTONIC and CLOCK_BOOTTIME with the boot id, and on the
//     wall clock), so that an agent restarted meanwhile resumes it before
//     its own watchdog tells the previous one to stand down.
// After the window the node is therefore writable only under a lease
// granted by a leader that records it as primary, which the leader's
// lease check (revokeExpired) covers like any primary's.

// PendingFile is the guard's record in pgdata (health.PromotePendingFile,
// where the code that copies data directories finds it).
const PendingFile = health.PromotePendingFile

// pendingPromotion is the guard of one promotion. Its give-up time is the
// earliest of GiveUpMonoNs on CLOCK_MONOTONIC and GiveUpBootNs on
// CLOCK_BOOTTIME (0: not recorded, as by older agents), both of the boot
// BootID, and GiveUp on the wall clock (older agents wrote the same
// instant's wall reading there): a wall clock stepped back while the agent
// was down moves nothing, one stepped forward brings it forward. A record
// of another boot, or without the monotonic time, counts as passed: the
// node is fenced at once unless a lease was granted to it (a reboot
// restarts PostgreSQL, which drops a requested promotion, but one that
// completed before it stays: the node then starts writable).
type pendingPromotion struct {
	Epoch        uint64    `json:"epoch"`
	GiveUp       time.Time `json:"give_up"`
	GiveUpMonoNs int64     `json:"give_up_mono_ns,omitempty"`
	GiveUpBootNs int64     `json:"give_up_boot_ns,omitempty"`
	BootID       string    `json:"boot_id,omitempty"`
}

// GuardConfig is what the promotion guard takes from the agent.
type GuardConfig struct {
	// PGData is postgres.pgdata, where the guard is recorded.
	PGData string
	// BootID reads this boot's id ("" when it cannot be read); nil:
	// ReadBootID("").
	BootID func() string
}

// Guard is the promotion guard: a guarded promotion's give-up time, held
// on disk (PendingFile) and in the watchdog's heartbeat from right
// before pg_promote until the node holds a lease granted as the new
// primary (or is fenced, or its PostgreSQL stopped).
type Guard struct {
	cfg GuardConfig
	wd  *Watchdog
	log *slog.Logger
}

// NewGuard builds the promotion guard of cfg.PGData, whose give-up times
// wd's heartbeat carries (and judges on wd's clocks).
func NewGuard(cfg GuardConfig, wd *Watchdog, log *slog.Logger) *Guard {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Guard{cfg: cfg, wd: wd, log: log}
}

// Path is the guard's record in pgdata.
func (g *Guard) Path() string {
	return filepath.Join(g.cfg.PGData, PendingFile)
}

// DefaultBootIDPath is where Linux tells the current boot apart.
const DefaultBootIDPath = "/proc/sys/kernel/random/boot_id"

// ReadBootID is the boot id at path ("": DefaultBootIDPath), "" when it
// cannot be read.
func ReadBootID(path string) string {
	if path == "" {
		path = DefaultBootIDPath
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// bootID is this boot's id ("" when it cannot be read).
func (g *Guard) bootID() string {
	if g.cfg.BootID != nil {
		return g.cfg.BootID()
	}
	return ReadBootID("")
}

// record is the record of a guard of epoch until giveUp.
func (g *Guard) record(epoch uint64, giveUp GiveUpTime) pendingPromotion {
	p := pendingPromotion{Epoch: epoch, GiveUp: giveUp.wall.UTC()}
	if giveUp.wall.IsZero() {
		p.GiveUp = giveUp.mono.Round(0).UTC()
	}
	if mono, ok := MonoNow(); ok {
		if id := g.bootID(); id != "" {
			p.GiveUpMonoNs, p.GiveUpBootNs, p.BootID = mono+int64(time.Until(giveUp.mono)), giveUp.boot, id
		}
	}
	return p
}

// giveUpOf is the give-up time of a record left by an agent process, and
// why it is taken as passed ("" when it is not).
func (g *Guard) giveUpOf(p pendingPromotion) (GiveUpTime, string) {
	c := g.wd.readClocks()
	mono, ok := MonoNow()
	switch id := g.bootID(); {
	case p.GiveUpMonoNs == 0 || p.BootID == "":
		return GiveUpAfter(c, 0, 0), "the record has no monotonic give-up time"
	case !ok || id == "":
		return GiveUpAfter(c, 0, 0), "this boot's monotonic clock or boot id cannot be read"
	case id != p.BootID:
		return GiveUpAfter(c, 0, 0), fmt.Sprintf("it was recorded in another boot (%s, now %s)", p.BootID, id)
	default:
		// CLOCK_BOOTTIME of the same boot, like CLOCK_MONOTONIC.
		return GiveUpTime{mono: c.Now.Add(time.Duration(p.GiveUpMonoNs - mono)), wall: p.GiveUp.Round(0), boot: p.GiveUpBootNs}, ""
	}
}

// guardWait bounds how long the guard waits for the watchdog to take it.
const guardWait = 2 * time.Second

// Guard guards a promotion of epoch until giveUp: on disk, and in
// the watchdog's deadline, which it waits for the watchdog to receive. An
// error means the promise cannot be kept: pg_promote must not be called.
func (g *Guard) Guard(epoch uint64, giveUp GiveUpTime) error {
	if giveUp.IsZero() {
		// A guard with no give-up time would promise nothing: refuse it,
		// so that pg_promote is not called behind it.
		return fmt.Errorf("refusing to guard the promotion at epoch %d: no give-up time", epoch)
	}
	b, err := json.Marshal(g.record(epoch, giveUp))
	if err != nil {
		return err
	}
	// An earlier order's guard (its pg_promote may be pending) is
	// restored when this one is not taken.
	prev, err := os.ReadFile(g.Path())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reading the pending promotion's record %s: %w", g.Path(), err)
	}
	prevUntil := g.wd.held()
	if err := fsutil.WriteFileSynced(g.Path(), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("recording the pending promotion's settle deadline: %w", err)
	}
	if err := fsutil.SyncDir(g.cfg.PGData); err != nil {
		return fmt.Errorf("recording the pending promotion's settle deadline: %w", err)
	}
	seq := g.wd.hold(giveUp)
	if !g.wd.Enabled() {
		return nil // no watchdog: the registration did not promise it (honours_settle_by)
	}
	g.wd.poke()
	deadline := time.Now().Add(guardWait)
	for {
		if g.wd.taken(seq) {
			return nil
		}
		if time.Now().After(deadline) {
			g.restore(prev, prevUntil, giveUp)
			return fmt.Errorf("refusing to promote at epoch %d: the watchdog did not take the promotion's settle deadline within %s", epoch, guardWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// restore undoes a guard until giveUp that the watchdog did not
// take: it restores the guard before it (prev, the record on disk, and
// prevUntil; none: it ends the guard), unless the guard changed meanwhile.
func (g *Guard) restore(prev []byte, prevUntil, giveUp GiveUpTime) {
	changed := !g.wd.held().Equal(giveUp)
	switch {
	case changed:
		return
	case prev == nil && prevUntil.IsZero():
		g.Unguard()
		return
	}
	if prev == nil {
		if err := os.Remove(g.Path()); err != nil && !errors.Is(err, os.ErrNotExist) {
			g.log.Warn("removing the pending promotion's record", "path", g.Path(), "err", err)
		}
	} else {
		if err := fsutil.WriteFileSynced(g.Path(), prev, 0o600); err != nil {
			g.log.Error("restoring the earlier pending promotion's record", "path", g.Path(), "err", err)
		} else if err := fsutil.SyncDir(g.cfg.PGData); err != nil {
			g.log.Error("restoring the earlier pending promotion's record", "path", g.Path(), "err", err)
		}
	}
	g.wd.setHeld(prevUntil, true)
}

// Unguard ends the guard (lease granted, fenced, or PostgreSQL
// stopped).
func (g *Guard) Unguard() {
	if err := os.Remove(g.Path()); err != nil && !errors.Is(err, os.ErrNotExist) {
		g.log.Warn("removing the pending promotion's record", "path", g.Path(), "err", err)
	}
	g.wd.setHeld(GiveUpTime{}, true)
}

// Resume resumes the guard of a promotion that a previous agent process
// left in pgdata (ok), before this agent's watchdog relieves the previous
// one: the heartbeat carries its give-up time from now on (at once when
// it passed), and the caller hands epoch and giveUp to the pending
// promotion watcher, which fences the node at the give-up time unless a
// lease is granted by then.
func (g *Guard) Resume() (epoch uint64, giveUp GiveUpTime, ok bool) {
	b, err := os.ReadFile(g.Path())
	if errors.Is(err, os.ErrNotExist) {
		return 0, GiveUpTime{}, false
	}
	var p pendingPromotion
	if err == nil {
		err = json.Unmarshal(b, &p)
	}
	giveUp = GiveUpAfter(g.wd.readClocks(), 0, 0)
	if err != nil {
		// Unreadable: the promise is kept the strictest way.
		g.log.Error("the pending promotion's record is unreadable; treating its settle deadline as passed", "path", g.Path(), "err", err)
	} else {
		var why string
		if giveUp, why = g.giveUpOf(p); why != "" {
			g.log.Warn("treating the pending promotion's settle deadline as passed", "path", g.Path(), "why", why)
		}
	}
	g.log.Warn("resuming the guard of a promotion a previous agent process left pending", "epoch", p.Epoch, "give_up_in", giveUp.Left(g.wd.readClocks()).Round(time.Millisecond))
	g.wd.setHeld(giveUp, false)
	return p.Epoch, giveUp, true
}
