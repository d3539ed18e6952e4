package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pgdr/pgdr/pkg/fsutil"
)

// The settle deadline of a promotion (Promote.settle_by, review D10).
//
// A promotion the leader never heard the outcome of may still complete
// (PostgreSQL finishes a requested promotion once replay catches up). The
// leader may count it as settled, and promote another member, once the
// order's settle_by plus its safety margin has passed, provided this agent
// registered honours_settle_by (its watchdog runs). The agent keeps that
// promise as follows. Let G = settle_by - safety_margin (the give-up
// time). From right before pg_promote until the node holds a lease
// granted as the new primary (or is fenced, or its PostgreSQL stopped,
// which drops the promote request), the promotion is guarded:
//   - the pending promotion watcher fences the node at G unless a lease
//     was granted (promote.go);
//   - the watchdog's deadline is at most G (plus its grace), whatever the
//     lease loop says, and the guard reaches the watchdog before
//     pg_promote is called; so a crashed, killed or stalled agent leaves
//     it to the watchdog, which fences at G + grace < settle_by;
//   - the guard is written to pgdata (promotePendingFile), so that an
//     agent restarted meanwhile resumes it before its own watchdog tells
//     the previous one to stand down.
// After settle_by the node is therefore writable only under a lease
// granted by a leader that records it as primary, which the leader's
// lease check (revokeExpired) covers like any primary's.

// promotePendingFile is the guard's record in pgdata.
const promotePendingFile = "pgdr.promote-pending"

// pendingPromotion is the guard of one promotion.
type pendingPromotion struct {
	Epoch  uint64    `json:"epoch"`
	GiveUp time.Time `json:"give_up"`
}

func (d *Daemon) promotePendingPath() string {
	return filepath.Join(d.cfg.Postgres.PGData, promotePendingFile)
}

// guardWait bounds how long the guard waits for the watchdog to take it.
const guardWait = 2 * time.Second

// guardPromotion guards a promotion of epoch until giveUp: on disk, and in
// the watchdog's deadline, which it waits for the watchdog to receive. An
// error means the promise cannot be kept: pg_promote must not be called.
func (d *Daemon) guardPromotion(epoch uint64, giveUp time.Time) error {
	b, err := json.Marshal(pendingPromotion{Epoch: epoch, GiveUp: giveUp.UTC()})
	if err != nil {
		return err
	}
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
			d.unguardPromotion()
			return fmt.Errorf("refusing to promote at epoch %d: the watchdog did not take the promotion's settle deadline within %s", epoch, guardWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// unguardPromotion ends the guard (lease granted, fenced, or PostgreSQL
// stopped).
func (d *Daemon) unguardPromotion() {
	if err := os.Remove(d.promotePendingPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		d.log.Warn("removing the pending promotion's record", "path", d.promotePendingPath(), "err", err)
	}
	d.wd.mu.Lock()
	d.wd.pendingUntil = time.Time{}
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
	if err != nil || p.GiveUp.IsZero() {
		// Unreadable: the promise is kept the strictest way.
		p.GiveUp = time.Now()
		d.log.Error("the pending promotion's record is unreadable; treating its settle deadline as passed", "path", d.promotePendingPath(), "err", err)
	}
	d.log.Warn("resuming the guard of a promotion a previous agent process left pending", "epoch", p.Epoch, "give_up", p.GiveUp)
	d.wd.mu.Lock()
	d.wd.pendingUntil = p.GiveUp
	d.wd.mu.Unlock()
	d.watchPromotion(p.Epoch, p.GiveUp, func() {})
}
