package expire

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/wal"
)

// maxListers bounds the listings of parts of the WAL prefix run at once.
const maxListers = 8

// chunkLogs is how many WAL logs (the middle 8 hex digits of a segment
// name: 256 segments of 16 MiB each) one part of a parallel WAL listing
// covers: 8,192 segments, a few pages of a listing.
const chunkLogs = 32

// walListing is what one listing of the WAL prefix found.
type walListing struct {
	names     []string // base names of archived WAL files, in key order
	histories []string // the timeline history files among them
	err       error
}

// listWAL lists the archived WAL files of cluster: only keys exactly
// where wal-push puts them (repo.WALKey of their name). A key such as
// wal/x/../<segment> (any key is allowed on S3) is never read as archive,
// and deleting it would be refused.
//
// A store that lists from a given key (storage.RangeLister, S3) is listed
// in parts, parallel at once: a repository of 100,000 segments is 100
// pages, each a round trip. The parts are ranges of keys that together
// cover the whole prefix, whatever it holds (see listWALParts).
func listWAL(ctx context.Context, st storage.ObjectStore, cluster string, parallel int, chunk uint64, log *slog.Logger) walListing {
	var out walListing
	odd := 0
	add := func(oi storage.ObjectInfo) {
		name := oi.Key[strings.LastIndexByte(oi.Key, '/')+1:]
		if len(name) < 8 || oi.Key != repo.WALKey(cluster, name) {
			if odd++; odd == 1 {
				log.Warn("object under the WAL prefix that is not an archived WAL file's key: ignored (and not deleted)", "key", oi.Key)
			}
			return
		}
		out.names = append(out.names, name)
		if n, err := wal.ParseName(name); err == nil && n.Kind == wal.KindHistory {
			out.histories = append(out.histories, name)
		}
	}
	rl, ok := st.(storage.RangeLister)
	if ok && parallel > 1 {
		var parts [][]storage.ObjectInfo
		parts, out.err = listWALParts(ctx, rl, repo.WALPrefix(cluster), parallel, chunk)
		for _, p := range parts {
			for _, oi := range p {
				add(oi)
			}
		}
	} else {
		out.err = st.List(ctx, repo.WALPrefix(cluster), func(oi storage.ObjectInfo) error { add(oi); return nil })
	}
	if odd > 1 {
		log.Warn("objects under the WAL prefix that are not archived WAL files' keys were ignored", "count", odd)
	}
	return out
}

var errFound = errors.New("found")

// maxOddProbes bounds the keys that are not segments (history files,
// odd keys) a parallel WAL listing looks past one by one.
const maxOddProbes = 64

// listWALParts lists prefix in ranges of keys, parallel at once, and
// returns the objects of each range in key order. The ranges are
// contiguous from the start of the prefix to its end, so every key is in
// exactly one of them, whatever the keys are; only their sizes depend on
// the keys being WAL names.
//
// From the first key after the ranges so far (at first: the first key),
// read as a segment name of timeline T and log L, ranges of chunk logs
// each are listed parallel at once, bounded by the names
// T+log (16 hex digits, a prefix of every segment of that log), until one
// comes back empty; then again from the first key after the last range
// given out (the next timeline, or WAL after a gap). A key that is not a
// segment name there ends the parts: the rest is one last range.
func listWALParts(ctx context.Context, rl storage.RangeLister, prefix string, parallel int, chunk uint64) ([][]storage.ObjectInfo, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var parts [][]storage.ObjectInfo
	after := ""
	odd := 0
	for {
		// The first key after the ranges so far.
		var first *storage.ObjectInfo
		err := rl.ListRange(ctx, prefix, after, "", func(oi storage.ObjectInfo) error {
			first = &oi
			return errFound
		})
		if err != nil && !errors.Is(err, errFound) {
			return nil, err
		}
		if first == nil {
			return parts, nil
		}
		tli, log, ok := segmentOf(prefix, first.Key)
		if !ok {
			// A history file (first in its timeline's keys), or a key that
			// is not WAL: a range of its own; many such, the rest in one.
			if odd++; odd <= maxOddProbes {
				parts = append(parts, []storage.ObjectInfo{*first})
				after = first.Key
				continue
			}
			var rest []storage.ObjectInfo
			if err := rl.ListRange(ctx, prefix, after, "", func(oi storage.ObjectInfo) error {
				rest = append(rest, oi)
				return nil
			}); err != nil {
				return nil, err
			}
			return append(parts, rest), nil
		}
		t := fmt.Sprintf("%08X", tli)
		// Ranges (after, bound(log+chunk)], (bound(log+chunk),
		// bound(log+2*chunk)], ..., the last one to the end of the
		// timeline's keys, given out in order; each worker fills its
		// range's slot.
		type job struct {
			i           int
			after, upTo string
		}
		var (
			mu    sync.Mutex
			slots [][]storage.ObjectInfo
			empty bool
			wg    sync.WaitGroup
		)
		jobs := make(chan job)
		for range parallel {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range jobs {
					var got []storage.ObjectInfo
					if err := rl.ListRange(ctx, prefix, j.after, j.upTo, func(oi storage.ObjectInfo) error {
						got = append(got, oi)
						return nil
					}); err != nil {
						cancel(err)
						continue
					}
					mu.Lock()
					slots[j.i] = got
					empty = empty || len(got) == 0
					mu.Unlock()
				}
			}()
		}
		from := after
		for l := log + chunk; ; l += chunk {
			// A bound is T+log, 16 hex digits: a prefix of each of that
			// log's segments, so it sorts before them.
			upTo := prefix + t + "/" + t + fmt.Sprintf("%08X", l)
			last := l > 0xFFFFFFFF
			if last {
				upTo = prefix + t + "/\xff" // above every key of the timeline (UTF-8 has no 0xff byte)
			}
			mu.Lock()
			stop := empty
			if !stop {
				slots = append(slots, nil)
			}
			i := len(slots) - 1
			mu.Unlock()
			if stop || ctx.Err() != nil {
				break
			}
			jobs <- job{i, from, upTo} // a worker is always free to take it, or ends at once on a cancelled ctx
			from = upTo
			if last {
				break
			}
		}
		close(jobs)
		wg.Wait()
		if err := context.Cause(ctx); err != nil {
			return nil, err
		}
		parts = append(parts, slots...)
		after = from
	}
}

// segmentOf reads key (under prefix) as a WAL segment's key, in its
// timeline's directory: its timeline and log. The bounds of the ranges
// listed from it then sort after it.
func segmentOf(prefix, key string) (tli uint32, log uint64, ok bool) {
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok {
		return 0, 0, false
	}
	dir, name, ok := strings.Cut(rest, "/")
	if !ok || len(name) != 24 || dir != name[:8] {
		return 0, 0, false
	}
	n, err := wal.ParseName(name)
	if err != nil || n.Kind != wal.KindSegment {
		return 0, 0, false
	}
	var l uint64
	if _, err := fmt.Sscanf(name[8:16], "%08X", &l); err != nil {
		return 0, 0, false
	}
	return n.Timeline, l, true
}
