package walrecv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/pgdr/pgdr/pkg/fsutil"
	"github.com/pgdr/pgdr/pkg/wal"
)

// pageSize is PostgreSQL's WAL page size (XLOG_BLCKSZ): a resumed spool
// file is cut back to a whole page.
const pageSize = 8192

// partialSuffix marks the spool file of a segment still being received
// (or of an old timeline's last segment, which never completes). A
// segment's file is renamed to the segment's own name only once it is
// complete and fsynced (as pg_receivewal does), so a file without the
// suffix holds a whole segment, durably.
const partialSuffix = ".partial"

// spoolFile is one segment file of the spool.
type spoolFile struct {
	Name    string // the segment's name
	Partial bool   // the file is Name + partialSuffix
	TLI     uint32
	SegNo   uint64
	Size    int64
}

// full reports whether the file holds its whole segment (complete and
// fsynced).
func (f spoolFile) full(segSize uint64) bool { return !f.Partial && uint64(f.Size) == segSize }

// file is the file's name in the spool.
func (f spoolFile) file() string {
	if f.Partial {
		return f.Name + partialSuffix
	}
	return f.Name
}

// listSpool lists the segment files in dir in WAL order (segment number,
// then timeline); other files are ignored. A missing dir is empty.
func listSpool(dir string, segSize uint64) ([]spoolFile, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the spool %s: %w", dir, err)
	}
	var out []spoolFile
	complete := map[string]bool{}
	for _, e := range ents {
		name, partial := strings.CutSuffix(e.Name(), partialSuffix)
		n, err := wal.ParseName(name)
		if err != nil || n.Kind != wal.KindSegment || !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		complete[name] = complete[name] || !partial
		out = append(out, spoolFile{Name: name, Partial: partial, TLI: n.Timeline, SegNo: n.SegNo(segSize), Size: info.Size()})
	}
	// A partial file beside its segment's complete one is left over.
	out = slices.DeleteFunc(out, func(f spoolFile) bool { return f.Partial && complete[f.Name] })
	slices.SortFunc(out, func(a, b spoolFile) int {
		if a.SegNo != b.SegNo {
			return cmpU(a.SegNo, b.SegNo)
		}
		return cmpU(uint64(a.TLI), uint64(b.TLI))
	})
	return out, nil
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// spoolEnd is where the spool stands: the newest timeline's newest file
// and the WAL position after its last whole page.
type spoolEnd struct {
	Has bool
	TLI uint32
	// End is where streaming resumes: the file's end cut back to a whole
	// page. Raw is the file's end: timeline decisions compare it (a
	// timeline that ended at its switch point mid-page is complete).
	End, Raw wal.LSN
	File     spoolFile
}

// resumePoint is the spool's end: the file of the highest timeline with
// the highest segment number, its size cut back to a whole page (the tail
// of a file written but not fsynced when the machine stopped is not
// trusted).
func resumePoint(files []spoolFile, segSize uint64) spoolEnd {
	var e spoolEnd
	for _, f := range files {
		if !e.Has || f.TLI > e.File.TLI || (f.TLI == e.File.TLI && f.SegNo > e.File.SegNo) {
			e = spoolEnd{Has: true, TLI: f.TLI, File: f}
		}
	}
	if e.Has {
		e.End = wal.LSN(e.File.SegNo*segSize + uint64(e.File.Size)/pageSize*pageSize)
		e.Raw = wal.LSN(e.File.SegNo*segSize + uint64(e.File.Size))
	}
	return e
}

// parseSegSize parses SHOW wal_segment_size ("16MB", "1GB").
func parseSegSize(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	mult := uint64(1)
	for _, u := range []struct {
		suffix string
		m      uint64
	}{{"kB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = v, u.m
			break
		}
	}
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	sz := n * mult
	if err != nil || sz < 1<<20 || sz > 1<<30 || sz&(sz-1) != 0 {
		return 0, fmt.Errorf("wal_segment_size %q is not a power of two between 1MB and 1GB", s)
	}
	return sz, nil
}

// segWriter writes streamed WAL into the spool, one file per segment.
// Positions are offsets within the open segment: written is what was
// written, flushed what was fsynced.
type segWriter struct {
	dir     string
	segSize uint64
	tli     uint32
	segNo   uint64
	f       *os.File
	written uint64
	flushed uint64
	// name is the segment of the file last opened: current reports it
	// also once close closed the file, so the WAL flushed last before a
	// stream ended (the primary lost with its region) is still uploaded.
	name string
	// done is called with a segment's name once it is complete and fsynced.
	done func(name string)
	// stale: the open file's bytes past written are from before a restart,
	// being streamed again (restreamWriter); close cuts them off.
	stale bool
}

// newSegWriter prepares writing timeline tli from start, which must be the
// end of the spool's file for its segment or that segment's beginning.
func newSegWriter(dir string, segSize uint64, tli uint32, start wal.LSN, done func(string)) (*segWriter, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("wal.receive.spool_dir %s: %w", dir, err)
	}
	w := &segWriter{dir: dir, segSize: segSize, tli: tli, done: done}
	if err := w.open(uint64(start)/segSize, uint64(start)%segSize); err != nil {
		return nil, err
	}
	return w, nil
}

// restreamWriter prepares writing timeline tli from the beginning of
// segment segNo, whose partial file is overwritten in place (as
// pg_receivewal does after a restart): its bytes are not trusted (a power
// loss can tear a page and leave a sound header before zeros), and are
// kept only until the stream has rewritten them, so nothing the spool held
// shrinks meanwhile; close cuts off what was not rewritten.
func restreamWriter(dir string, segSize uint64, tli uint32, segNo uint64, done func(string)) (*segWriter, error) {
	w := &segWriter{dir: dir, segSize: segSize, tli: tli, done: done}
	if err := w.openAt(segNo, 0, false); err != nil {
		return nil, err
	}
	w.stale = true
	return w, nil
}

// open opens the file of segment segNo for writing at off: the file must
// hold at least off bytes; what it holds past off is cut away.
func (w *segWriter) open(segNo, off uint64) error { return w.openAt(segNo, off, true) }

// openAt is open; with cut false the file's bytes past off are kept.
func (w *segWriter) openAt(segNo, off uint64, cut bool) error {
	name := wal.SegmentName(w.tli, segNo, w.segSize)
	if _, err := os.Stat(filepath.Join(w.dir, name)); err == nil {
		return fmt.Errorf("spool file %s: the segment is already complete, the stream resumes inside it", name)
	}
	path := filepath.Join(w.dir, name+partialSuffix)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("spool file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("spool file: %w", err)
	}
	if uint64(st.Size()) < off {
		f.Close()
		return fmt.Errorf("spool file %s holds %d bytes, the stream resumes at offset %d: a gap", path, st.Size(), off)
	}
	if cut && uint64(st.Size()) > off {
		if err := f.Truncate(int64(off)); err != nil {
			f.Close()
			return fmt.Errorf("spool file %s: %w", path, err)
		}
	}
	if st.Size() == 0 {
		if err := fsutil.SyncDir(w.dir); err != nil {
			f.Close()
			return fmt.Errorf("spool %s: %w", w.dir, err)
		}
	}
	w.f, w.segNo, w.written, w.flushed, w.name = f, segNo, off, off, name
	return nil
}

// write writes data, the stream's WAL from start; it must continue what
// was written (or rewrite part of it).
func (w *segWriter) write(start wal.LSN, data []byte) error {
	pos := uint64(start)
	for len(data) > 0 {
		if pos/w.segSize != w.segNo {
			return fmt.Errorf("the stream sent WAL at %s, the spool is at %s", wal.LSN(pos), w.writePos())
		}
		if w.f == nil { // the previous segment was finished
			if err := w.open(w.segNo, 0); err != nil {
				return err
			}
		}
		off := pos % w.segSize
		if off > w.written {
			return fmt.Errorf("the stream sent WAL at %s, the spool is at %s: a gap", wal.LSN(pos), w.writePos())
		}
		n := min(uint64(len(data)), w.segSize-off)
		if _, err := w.f.WriteAt(data[:n], int64(off)); err != nil {
			return fmt.Errorf("writing the spool: %w", err)
		}
		w.written = max(w.written, off+n)
		w.flushed = min(w.flushed, off)
		data, pos = data[n:], pos+n
		if w.written == w.segSize {
			if err := w.finish(); err != nil {
				return err
			}
		}
	}
	return nil
}

// finish fsyncs and closes the complete segment, gives it its segment's
// name (fsyncing the directory) and reports it done.
func (w *segWriter) finish() error {
	if err := w.flush(); err != nil {
		return err
	}
	w.stale = false // every byte rewritten
	path := w.f.Name()
	name := strings.TrimSuffix(filepath.Base(path), partialSuffix)
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", name, err)
	}
	w.f = nil
	if err := os.Rename(path, filepath.Join(w.dir, name)); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if err := fsutil.SyncDir(w.dir); err != nil {
		return fmt.Errorf("spool %s: %w", w.dir, err)
	}
	if w.done != nil {
		w.done(name)
	}
	w.segNo, w.written, w.flushed, w.name = w.segNo+1, 0, 0, ""
	return nil
}

// flush fsyncs what was written.
func (w *segWriter) flush() error {
	if w.f == nil || w.flushed == w.written {
		return nil
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("fsync of the spool file %s: %w", w.f.Name(), err)
	}
	w.flushed = w.written
	return nil
}

func (w *segWriter) writePos() wal.LSN { return wal.LSN(w.segNo*w.segSize + w.written) }
func (w *segWriter) flushPos() wal.LSN { return wal.LSN(w.segNo*w.segSize + w.flushed) }

// current is the segment being written and how many of its bytes are
// fsynced: the open one, or the one close closed ("" when none was opened
// since the last complete segment).
func (w *segWriter) current() (string, uint64) {
	return w.name, w.flushed
}

// close fsyncs and closes the open file.
func (w *segWriter) close() error {
	if w.f == nil {
		return nil
	}
	err := w.flush()
	if err == nil && w.stale {
		// The old bytes not streamed again are not trusted: the next
		// stream resumes from what was.
		if err = w.f.Truncate(int64(w.flushed)); err == nil {
			err = w.f.Sync()
		}
		w.stale = false
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	w.f = nil
	return err
}

// readPrefix reads the first n bytes of segment name's spool file (the
// partial one, or the complete one it was renamed to meanwhile).
func readPrefix(dir, name string, n uint64) ([]byte, error) {
	f, err := os.Open(filepath.Join(dir, name+partialSuffix))
	if errors.Is(err, os.ErrNotExist) {
		f, err = os.Open(filepath.Join(dir, name))
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, fmt.Errorf("reading %s: %w", f.Name(), err)
	}
	return b, nil
}

// soundPrefix is how many bytes of data, the spool's copy of the segment
// starting at segStart, have sound page headers: every 8 KiB page begins
// with PostgreSQL's page magic and its own address. The first page that
// does not (the zeros a machine stopping can leave in a file past what was
// fsynced) and everything after it are not the stream's.
func soundPrefix(data []byte, segStart uint64) int64 {
	le := binary.LittleEndian
	for off := 0; off < len(data); off += pageSize {
		if len(data)-off < 16 || le.Uint16(data[off:]) != wal.XLogPageMagic || le.Uint64(data[off+8:]) != segStart+uint64(off) {
			return int64(off)
		}
	}
	return int64(len(data))
}

// checkSpool cuts every partial spool file back to its sound prefix
// (soundPrefix), fsyncing what it cut: run once, before a restarted
// receiver resumes from the spool or uploads from it. A partial file has
// no switch padding (a switched segment is complete, and the zero pages
// after an XLOG_SWITCH record have no headers): the first page that is not
// sound is past what was made durable. Cutting back is always safe, the
// stream sends it again.
func checkSpool(dir string, files []spoolFile, segSize uint64, log *slog.Logger) error {
	for _, f := range files {
		if !f.Partial {
			continue // renamed only once complete and fsynced
		}
		path := filepath.Join(dir, f.file())
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("checking the spool: %w", err)
		}
		n := soundPrefix(data, f.SegNo*segSize)
		if n == int64(len(data)) {
			continue
		}
		if log != nil {
			log.Warn("a spool file holds pages that are not the stream's past what was made durable: cut back", "file", f.Name, "bytes", len(data), "kept", n)
		}
		if err := truncateSynced(path, n); err != nil {
			return fmt.Errorf("checking the spool: %w", err)
		}
	}
	return nil
}

// truncateSynced cuts the file at path to n bytes and fsyncs it.
func truncateSynced(path string, n int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(n); err != nil {
		return err
	}
	return f.Sync()
}
