package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
)

// The protocol between backups being taken and expiry (agent/expire),
// which may run at the same time on other hosts. The object stores have
// strong read-after-write and list-after-write consistency (S3, the file
// store) but no locks. The parent choice is settled by a pair of "write
// my flag, then read yours" steps (Dekker): of two processes doing that, at
// least one sees the other's flag; the WAL check below is one-sided. Ages
// are judged by the objects' ModTime (the store's clock) against the clock
// of the host running expiry, never by a stamp from a backup host. A file
// repository on NFS (no such consistency between hosts) is not supported
// for backups and expiry at the same time.
//
//   - Parent choice. A diff/incr backup C, before writing its manifest,
//     writes ChildKey(P, C) for its parent P and then checks, in every
//     repository, that DeletingKey(P) is absent and P's chain still there
//     (ClaimParent). Expiry, before deleting P's manifest, writes
//     DeletingKey(P) and then lists ChildPrefix(P): a child it did not
//     expire itself stops it. Either C sees the marker (and is not
//     recorded) or expiry sees C's child key (and keeps P). Expiry removes
//     P's manifest before its marker, so a backup that checks after the
//     marker is gone finds the manifest gone. Another run removes a
//     marker only once older than StaleMarkerAge, and the run that wrote
//     it abandons P when StaleMarkerAge/2 has passed on its monotonic
//     clock before deleting P's manifest: so while a run relies on its
//     marker (unless the clocks are StaleMarkerAge/2 apart) no other run
//     removes it. A backup skips a marked P when choosing its parent.
//   - WAL. A backup writes StartedKey(stamp) right after reserving its
//     ID, before pg_backup_start settles which WAL it needs; expiry lists
//     StartedPrefix before its plan and again just before deleting WAL,
//     and deletes no WAL if an entry appeared (nor while a reservation is
//     fresh). This is not a Dekker pair: expiry writes nothing before its
//     second listing, so a backup starting after it is not seen. On a
//     primary that backup's WAL begins after all WAL archived so far; a
//     standby's backup (from its last restartpoint) may find WAL deleted
//     and then fails at its end (it waits for its WAL in every
//     repository) rather than being recorded. A started entry is left in
//     place when the backup ends; expiry removes it once older than its
//     grace period.
//   - Long backups. A running backup rewrites its reservation every
//     ReservationRefresh, so that its age, by ModTime, stays far below
//     expiry's grace period (at least expire.MinGrace).

// ReservationRefresh is how often a running backup rewrites its
// reservation (and so its ModTime): far below expiry's minimum grace
// period (6h).
const ReservationRefresh = 30 * time.Minute

// StaleMarkerAge is how old (by its ModTime, judged by the expiring
// host's clock) a DeletingKey marker must be before an expiry run removes
// it as left by an interrupted run. A run abandons the manifest delete a
// marker announces once StaleMarkerAge/2 has passed on its own monotonic
// clock since writing it, so a marker younger than that bound (less clock
// skew, at most StaleMarkerAge/2) is always some run's live one.
const StaleMarkerAge = time.Hour

// ValidStamp says whether s is a backup stamp (an ID without its type
// letter), the shape of the StartedKey records.
func ValidStamp(s string) bool { return ValidID(s + "F") }

func expiryPrefix(cluster string) string { return cluster + "/expiry/" }

// DeletingPrefix is where expiry marks the backups whose manifest it is
// about to delete.
func DeletingPrefix(cluster string) string { return expiryPrefix(cluster) + "deleting/" }

// DeletingKey marks backup id as being deleted by expiry.
func DeletingKey(cluster, id string) string { return DeletingPrefix(cluster) + id }

// ChildPrefix holds one object per backup recorded on parent.
func ChildPrefix(cluster, parent string) string {
	return expiryPrefix(cluster) + "children/" + parent + "/"
}

// ChildKey records that backup child builds on parent.
func ChildKey(cluster, parent, child string) string { return ChildPrefix(cluster, parent) + child }

// StartedPrefix holds one object per backup started (by stamp).
func StartedPrefix(cluster string) string { return expiryPrefix(cluster) + "started/" }

// StartedKey records that the backup of stamp started.
func StartedKey(cluster, stamp string) string { return StartedPrefix(cluster) + stamp }

// ErrParentExpiring means expiry is deleting the backup chosen as parent.
var ErrParentExpiring = errors.New("the parent backup is being expired")

// ClaimParent records, in every repository, that backup child builds on
// parent, then checks that expiry is not deleting parent and that its
// chain is still there (see the protocol above). On failure it removes
// the records it wrote (best effort) and the backup must not be recorded.
func ClaimParent(ctx context.Context, repos []repo.Repo, cluster, parent, child string) error {
	key := ChildKey(cluster, parent, child)
	body := fmt.Sprintf(`{"child":%q,"time":%q}`, child, time.Now().UTC().Format(time.RFC3339Nano))
	undo := func() {
		for _, r := range repos {
			_ = r.Store.Delete(context.WithoutCancel(ctx), key)
		}
	}
	for _, r := range repos {
		if err := r.Store.Put(ctx, key, strings.NewReader(body), int64(len(body))); err != nil {
			undo()
			return fmt.Errorf("repository %s: recording %s as a child of %s: %w", r.Name, child, parent, err)
		}
	}
	for _, r := range repos {
		oi, err := r.Store.Stat(ctx, DeletingKey(cluster, parent))
		if err == nil {
			undo()
			return fmt.Errorf("repository %s: %w (%s; %s), so this backup is not recorded; take it again", r.Name, ErrParentExpiring, parent, markerNote(oi))
		}
		if !errors.Is(err, storage.ErrNotFound) {
			undo()
			return fmt.Errorf("repository %s: checking %s: %w", r.Name, DeletingKey(cluster, parent), err)
		}
		if _, err := Chain(ctx, r, cluster, parent); err != nil {
			undo()
			return fmt.Errorf("repository %s: the parent chain of backup %s is gone (expired while it ran?), so it is not recorded: %w", r.Name, child, err)
		}
	}
	return nil
}

// recordStarted writes StartedKey(stamp) to every repository.
func recordStarted(ctx context.Context, repos []repo.Repo, cluster, stamp string) error {
	body := fmt.Sprintf(`{"time":%q}`, time.Now().UTC().Format(time.RFC3339Nano))
	for _, r := range repos {
		if err := r.Store.Put(ctx, StartedKey(cluster, stamp), strings.NewReader(body), int64(len(body))); err != nil {
			return fmt.Errorf("repository %s: recording backup %s as started: %w", r.Name, stamp, err)
		}
	}
	return nil
}

// keepFresh rewrites the reservation every interval until the returned
// function is called, so that its ModTime stays recent however long the
// backup runs.
func (r *reservation) keepFresh(ctx context.Context, interval time.Duration, log *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			for _, rp := range r.repos {
				if err := rp.Store.Put(ctx, r.key, strings.NewReader(r.body), int64(len(r.body))); err != nil && ctx.Err() == nil {
					log.Warn("refreshing the backup's reservation (expiry may take it for stale after its grace period)", "repo", rp.Name, "key", r.key, "err", err)
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}

// markerNote describes a DeletingKey marker: its key, its age and what
// clears it when it was left by an interrupted run.
func markerNote(oi storage.ObjectInfo) string {
	return fmt.Sprintf("marker %s, written %s ago; a run of `pgdr-agent expire` (not --dry-run) removes markers older than %s, left by an interrupted run",
		oi.Key, time.Since(oi.ModTime).Round(time.Second), StaleMarkerAge)
}
