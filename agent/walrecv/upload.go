package walrecv

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/pgdr/pgdr/agent/walship"
	"github.com/pgdr/pgdr/pkg/wal"
)

// uploadLoop uploads every upload interval, and at once when a segment
// is complete, until ctx ends.
func (r *Receiver) uploadLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.UploadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.kick:
		}
		r.uploadOnce(ctx)
	}
}

// uploadOnce archives the spool's .history files and the complete
// segments not archived yet (in WAL order, stopping at the first failure:
// the next round retries; one that is not this cluster's valid WAL, or that
// the archive holds differently, is reported once and skipped), deleting
// each one's partial object once it is archived; uploads the fsynced part
// of the segment being written, and the last incomplete segment of every
// other timeline, as partial objects when they grew; and removes spool
// files no longer needed.
func (r *Receiver) uploadOnce(ctx context.Context) {
	r.mu.Lock()
	segSize, curName, curFlushed, tli := r.segSize, r.curName, r.curFlushed, r.st.Timeline
	abandoned := r.abandoned
	r.abandoned = nil
	r.mu.Unlock()
	if segSize == 0 {
		return // no connection yet
	}
	for i, name := range abandoned {
		if err := r.deps.Upload.DeletePartial(ctx, name); err != nil {
			r.uploadFailed("deleting the partial copy of an abandoned segment failed; the next round retries", name, err)
			r.mu.Lock()
			r.abandoned = append(r.abandoned, abandoned[i:]...)
			r.mu.Unlock()
			break
		}
		r.partialDone[name] = 1 << 62 // never uploaded again
	}
	r.uploadHistories(ctx)
	files, err := listSpool(r.cfg.SpoolDir, segSize)
	if err != nil {
		r.log.Warn("listing the spool", "err", err)
		return
	}
	var sysid uint64 // 0: not checked here (the shipper checks it)
	if r.deps.SystemID != nil {
		if id, err := r.deps.SystemID(); err == nil {
			sysid = id
		}
	}
	for _, f := range files {
		if !f.full(segSize) || r.archived[f.Name] || r.conflicted[f.Name] {
			continue
		}
		data, err := os.ReadFile(r.spoolPath(f.file()))
		if err == nil {
			if n, perr := wal.ParseName(f.Name); perr == nil {
				if _, cerr := wal.CheckSegment(n, data, sysid); cerr != nil {
					// Never valid later (a spool left from an earlier
					// initdb): skipped like a conflict, not retried ahead
					// of every later segment.
					r.conflicted[f.Name] = true
					r.uploadFailed("a received segment is not this cluster's valid WAL: it stays in the spool and is skipped", f.Name, cerr)
					continue
				}
			}
			err = r.deps.Upload.PushSegment(ctx, f.Name, data)
		}
		if errors.Is(err, walship.ErrConflict) {
			// Not retried (it would stop every later segment): reported
			// once, kept in the spool for the operator (wal-repair).
			r.conflicted[f.Name] = true
			r.uploadFailed("archiving a received segment failed: the archive holds different content under its name; it stays in the spool and is skipped", f.Name, err)
			continue
		}
		if err != nil {
			// The later segments wait (archived in WAL order); the
			// partials below are still uploaded.
			r.uploadFailed("archiving a received segment failed; the next round retries", f.Name, err)
			break
		}
		r.archived[f.Name] = true
		delete(r.partialDone, f.Name)
		if err := r.deps.Upload.DeletePartial(ctx, f.Name); err != nil {
			r.log.Warn("deleting the partial copy of an archived segment", "file", f.Name, "err", err)
		}
		if f.TLI == tli {
			r.uploaded(wal.LSN((f.SegNo + 1) * segSize))
		}
	}
	// The last, incomplete segment of every other timeline (the stream
	// moved to a new primary's timeline before its last partial upload
	// succeeded), then the segment being written.
	tails := map[uint32]spoolFile{}
	for _, f := range files {
		if t, ok := tails[f.TLI]; !ok || f.SegNo >= t.SegNo {
			tails[f.TLI] = f
		}
	}
	for _, f := range tails {
		// Only older timelines' (the current timeline's newest file is
		// the one being written, or resumed by the next stream).
		if f.TLI < tli && f.Name != curName && !f.full(segSize) && f.Size > 0 {
			r.uploadPartial(ctx, f.Name, uint64(f.Size), segSize, tli)
		}
	}
	if curName != "" {
		r.uploadPartial(ctx, curName, curFlushed, segSize, tli)
	}
	r.cleanup(files, segSize)
}

// uploadPartial uploads the first n bytes of segment name as its partial
// object when they grew since the last upload.
func (r *Receiver) uploadPartial(ctx context.Context, name string, n, segSize uint64, tli uint32) {
	r.mu.Lock()
	rs := r.restream
	r.mu.Unlock()
	if n <= r.partialDone[name] || n >= segSize || r.archived[name] || r.conflicted[name] || (name == rs.name && n <= rs.size) {
		return
	}
	if _, err := os.Stat(r.spoolPath(name)); err == nil {
		return // complete meanwhile: archived (its partial object deleted), not uploaded as a partial
	}
	data, err := readPrefix(r.cfg.SpoolDir, name, n)
	if err == nil {
		err = r.deps.Upload.PushPartial(ctx, name, data)
	}
	if err != nil {
		r.uploadFailed("uploading the partial segment failed; the next round retries", name, err)
		return
	}
	r.partialDone[name] = n
	if w, err := wal.ParseName(name); err == nil && w.Timeline == tli {
		r.uploaded(wal.LSN(w.SegNo(segSize)*segSize + n))
	}
}

// uploadFailed counts and logs a failed upload (msg says what happens
// next); one cut short by the receiver's stop is not a failure.
func (r *Receiver) uploadFailed(msg, name string, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	r.mu.Lock()
	r.st.UploadFailures++
	r.mu.Unlock()
	r.log.Warn(msg, "file", name, "err", err)
}

func (r *Receiver) uploaded(end wal.LSN) {
	r.mu.Lock()
	if end > r.st.Uploaded {
		r.st.Uploaded = end
	}
	r.st.LastUpload = time.Now()
	r.mu.Unlock()
}

// cleanup removes spool files older than the newest Keep: complete ones
// once archived, incomplete ones (an old timeline's last segment) unless
// they are the spool's end.
func (r *Receiver) cleanup(files []spoolFile, segSize uint64) {
	if len(files) <= r.cfg.Keep {
		return
	}
	end := resumePoint(files, segSize)
	for _, f := range files[:len(files)-r.cfg.Keep] {
		if f == end.File || (f.full(segSize) && !r.archived[f.Name]) || r.conflicted[f.Name] {
			continue
		}
		if err := os.Remove(r.spoolPath(f.file())); err != nil && !os.IsNotExist(err) {
			r.log.Warn("removing an old spool file", "file", f.Name, "err", err)
			continue
		}
		delete(r.archived, f.Name)
		delete(r.partialDone, f.Name)
	}
}

// uploadHistories archives the .history files of the spool and removes
// each once archived; a failure is counted and retried the next round.
func (r *Receiver) uploadHistories(ctx context.Context) {
	ents, err := os.ReadDir(r.cfg.SpoolDir)
	if err != nil {
		return // none yet
	}
	for _, e := range ents {
		n, err := wal.ParseName(e.Name())
		if err != nil || n.Kind != wal.KindHistory || !e.Type().IsRegular() || r.conflicted[e.Name()] {
			continue
		}
		data, err := os.ReadFile(r.spoolPath(e.Name()))
		if err == nil {
			err = r.deps.Upload.PushSegment(ctx, e.Name(), data)
		}
		if errors.Is(err, walship.ErrConflict) {
			r.conflicted[e.Name()] = true
			r.uploadFailed("archiving a timeline history file failed: the archive holds different content under its name; it stays in the spool and is skipped", e.Name(), err)
			continue
		}
		if err != nil {
			r.uploadFailed("archiving a timeline history file failed; the next round retries", e.Name(), err)
			continue
		}
		if err := os.Remove(r.spoolPath(e.Name())); err != nil {
			r.log.Warn("removing an archived history file from the spool", "file", e.Name(), "err", err)
		}
	}
}
