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

// uploadOnce archives the complete segments of the spool not archived yet
// (in WAL order, stopping at the first failure: the next round retries),
// deleting each one's partial object once it is archived; uploads the
// fsynced part of the segment being written as its partial object when it
// grew; and removes spool files no longer needed.
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
	for _, f := range files {
		if !f.full(segSize) || r.archived[f.Name] || r.conflicted[f.Name] {
			continue
		}
		data, err := os.ReadFile(r.spoolPath(f.file()))
		if err == nil {
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
			r.uploadFailed("archiving a received segment failed; the next round retries", f.Name, err)
			return
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
	if curName != "" && curFlushed > r.partialDone[curName] && curFlushed < segSize && !r.archived[curName] {
		data, err := readPrefix(r.cfg.SpoolDir, curName, curFlushed)
		if err == nil {
			err = r.deps.Upload.PushPartial(ctx, curName, data)
		}
		if err != nil {
			r.uploadFailed("uploading the partial segment failed; the next round retries", curName, err)
		} else {
			r.partialDone[curName] = curFlushed
			if n, err := wal.ParseName(curName); err == nil && n.Timeline == tli {
				r.uploaded(wal.LSN(n.SegNo(segSize)*segSize + curFlushed))
			}
		}
	}
	r.cleanup(files, segSize)
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
