package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

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
// the order's sending (settleGiveUp), plus the window, less the safety margin,
// on the agent's monotonic clock: the leader's wall clock does not count
// (an older coordinator sends only settle_by: G = settle_by -
// safety_margin, on the clocks' agreement).
//
// G is held on three clocks and has passed once ANY of them reaches it
// (giveUpTime): CLOCK_MONOTONIC (Go's monotonic readings), the wall clock
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
//     was granted (promote.go);
//   - the watchdog's deadline is at most G (plus its grace), whatever the
//     lease loop says, and the guard reaches the watchdog before
//     pg_promote is called; so a crashed, killed or stalled agent leaves
//     it to the watchdog, which fences at G + grace, before the window
//     ends (the heartbeat carries G on the wall clock and CLOCK_BOOTTIME
//     too, which the child checks at least every watchdogPoll, since its
//     timer runs on CLOCK_MONOTONIC);
//   - the guard is written to pgdata (promotePendingFile, G on
//     CLOCK_MONOTONIC and CLOCK_BOOTTIME with the boot id, and on the
//     wall clock), so that an agent restarted meanwhile resumes it before
//     its own watchdog tells the previous one to stand down.
// After the window the node is therefore writable only under a lease
// granted by a leader that records it as primary, which the leader's
// lease check (revokeExpired) covers like any primary's.

// promotePendingFile is the guard's record in pgdata.
const promotePendingFile = "pgdr.promote-pending"

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

func (d *Daemon) promotePendingPath() string {
	return filepath.Join(d.cfg.Postgres.PGData, promotePendingFile)
}

// defaultBootIDPath is where Linux tells the current boot apart.
const defaultBootIDPath = "/proc/sys/kernel/random/boot_id"

// bootID is this boot's id ("" when it cannot be read).
func (d *Daemon) bootID() string {
	p := d.bootIDPath
	if p == "" {
		p = defaultBootIDPath
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// pendingRecord is the record of a guard of epoch until giveUp.
func (d *Daemon) pendingRecord(epoch uint64, giveUp giveUpTime) pendingPromotion {
	p := pendingPromotion{Epoch: epoch, GiveUp: giveUp.wall.UTC()}
	if giveUp.wall.IsZero() {
		p.GiveUp = giveUp.mono.Round(0).UTC()
	}
	if mono, ok := monoNow(); ok {
		if id := d.bootID(); id != "" {
			p.GiveUpMonoNs, p.GiveUpBootNs, p.BootID = mono+int64(time.Until(giveUp.mono)), giveUp.boot, id
		}
	}
	return p
}

// giveUpOf is the give-up time of a record left by an agent process, and
// why it is taken as passed ("" when it is not).
func (d *Daemon) giveUpOf(p pendingPromotion) (giveUpTime, string) {
	c := d.readClocks()
	mono, ok := monoNow()
	switch id := d.bootID(); {
	case p.GiveUpMonoNs == 0 || p.BootID == "":
		return giveUpAfter(c, 0, 0), "the record has no monotonic give-up time"
	case !ok || id == "":
		return giveUpAfter(c, 0, 0), "this boot's monotonic clock or boot id cannot be read"
	case id != p.BootID:
		return giveUpAfter(c, 0, 0), fmt.Sprintf("it was recorded in another boot (%s, now %s)", p.BootID, id)
	default:
		// CLOCK_BOOTTIME of the same boot, like CLOCK_MONOTONIC.
		return giveUpTime{mono: c.Now.Add(time.Duration(p.GiveUpMonoNs - mono)), wall: p.GiveUp.Round(0), boot: p.GiveUpBootNs}, ""
	}
}

// guardWait bounds how long the guard waits for the watchdog to take it.
const guardWait = 2 * time.Second

// guardPromotion guards a promotion of epoch until giveUp: on disk, and in
// the watchdog's deadline, which it waits for the watchdog to receive. An
// error means the promise cannot be kept: pg_promote must not be called.
func (d *Daemon) guardPromotion(epoch uint64, giveUp giveUpTime) error {
	b, err := json.Marshal(d.pendingRecord(epoch, giveUp))
	if err != nil {
		return err
	}
	// An earlier order's guard (its pg_promote may be pending) is
	// restored when this one is not taken.
	prev, err := os.ReadFile(d.promotePendingPath())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reading the pending promotion's record %s: %w", d.promotePendingPath(), err)
	}
	d.wd.mu.Lock()
	prevUntil := d.wd.pendingUntil
	d.wd.mu.Unlock()
	if err := fsutil.WriteFileSynced(d.promotePendingPath(), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("recording the pending promotion's settle deadline: %w", err)
	}
	if err := fsutil.SyncDir(d.cfg.Postgres.PGData); err != nil {
		return fmt.Errorf("recording the pending promotion's settle deadline: %w", err)
	}
	d.wd.mu.Lock()
	d.wd.pendingUntil = giveUp
	d.wd.pendingSeq++
	seq, notify := d.wd.pendingSeq, d.wd.notify
	d.wd.mu.Unlock()
	if notify == nil || !d.watchdogEnabled() {
		return nil // no watchdog: the registration did not promise it (honours_settle_by)
	}
	select {
	case notify <- struct{}{}:
	default:
	}
	deadline := time.Now().Add(guardWait)
	for {
		d.wd.mu.Lock()
		sent := d.wd.pendingSent >= seq
		d.wd.mu.Unlock()
		if sent {
			return nil
		}
		if time.Now().After(deadline) {
			d.restoreGuard(prev, prevUntil, giveUp)
			return fmt.Errorf("refusing to promote at epoch %d: the watchdog did not take the promotion's settle deadline within %s", epoch, guardWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// restoreGuard undoes a guard until giveUp that the watchdog did not
// take: it restores the guard before it (prev, the record on disk, and
// prevUntil; none: it ends the guard), unless the guard changed meanwhile.
func (d *Daemon) restoreGuard(prev []byte, prevUntil, giveUp giveUpTime) {
	d.wd.mu.Lock()
	changed := !d.wd.pendingUntil.equal(giveUp)
	d.wd.mu.Unlock()
	switch {
	case changed:
		return
	case prev == nil && prevUntil.isZero():
		d.unguardPromotion()
		return
	}
	if prev == nil {
		if err := os.Remove(d.promotePendingPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
			d.log.Warn("removing the pending promotion's record", "path", d.promotePendingPath(), "err", err)
		}
	} else {
		if err := fsutil.WriteFileSynced(d.promotePendingPath(), prev, 0o600); err != nil {
			d.log.Error("restoring the earlier pending promotion's record", "path", d.promotePendingPath(), "err", err)
		} else if err := fsutil.SyncDir(d.cfg.Postgres.PGData); err != nil {
			d.log.Error("restoring the earlier pending promotion's record", "path", d.promotePendingPath(), "err", err)
		}
	}
	d.wd.mu.Lock()
	d.wd.pendingUntil = prevUntil
	notify := d.wd.notify
	d.wd.mu.Unlock()
	if notify != nil {
		select {
		case notify <- struct{}{}:
		default:
		}
	}
}

// unguardPromotion ends the guard (lease granted, fenced, or PostgreSQL
// stopped).
func (d *Daemon) unguardPromotion() {
	if err := os.Remove(d.promotePendingPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		d.log.Warn("removing the pending promotion's record", "path", d.promotePendingPath(), "err", err)
	}
	d.wd.mu.Lock()
	d.wd.pendingUntil = giveUpTime{}
	notify := d.wd.notify
	d.wd.mu.Unlock()
	if notify != nil {
		select {
		case notify <- struct{}{}:
		default:
		}
	}
}

// resumePendingPromotion resumes the guard of a promotion that a previous
// agent process left in pgdata: its watcher fences the node at the
// give-up time unless a lease is granted by then (at once when it passed).
func (d *Daemon) resumePendingPromotion() {
	b, err := os.ReadFile(d.promotePendingPath())
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	var p pendingPromotion
	if err == nil {
		err = json.Unmarshal(b, &p)
	}
	giveUp := giveUpAfter(d.readClocks(), 0, 0)
	if err != nil {
		// Unreadable: the promise is kept the strictest way.
		d.log.Error("the pending promotion's record is unreadable; treating its settle deadline as passed", "path", d.promotePendingPath(), "err", err)
	} else {
		var why string
		if giveUp, why = d.giveUpOf(p); why != "" {
			d.log.Warn("treating the pending promotion's settle deadline as passed", "path", d.promotePendingPath(), "why", why)
		}
	}
	d.log.Warn("resuming the guard of a promotion a previous agent process left pending", "epoch", p.Epoch, "give_up_in", giveUp.left(d.readClocks()).Round(time.Millisecond))
	d.wd.mu.Lock()
	d.wd.pendingUntil = giveUp
	d.wd.mu.Unlock()
	d.watchPromotion(p.Epoch, giveUp, func() {})
}
