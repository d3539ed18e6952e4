package walrecv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgdr/pgdr/pkg/fsutil"
	"github.com/pgdr/pgdr/pkg/wal"
)

// Uploader stores what the receiver uploads (agent/walship's Shipper).
type Uploader interface {
	// PushSegment archives a complete WAL file (a segment, a .history
	// file) given as bytes, the object wal-push stores.
	PushSegment(ctx context.Context, name string, data []byte) error
	// PushPartial stores the first len(data) bytes of segment name as its
	// partial object, replacing the previous one.
	PushPartial(ctx context.Context, name string, data []byte) error
	// DeletePartial removes segment name's partial object.
	DeletePartial(ctx context.Context, name string) error
}

// Config configures a Receiver.
type Config struct {
	// AppName is the application_name of the replication connection
	// (AppName(node)).
	AppName string
	// Slot is the physical replication slot, created if missing.
	Slot string
	// SpoolDir holds the received segments.
	SpoolDir string
	// UploadInterval: the segment being written is uploaded at least this
	// often while it grows (default 1s).
	UploadInterval time.Duration
	// Keep is how many spool files are kept once uploaded (default 4).
	Keep int
	// StatusInterval: a standby status update is sent at least this often
	// (default 10s; always at once after an fsync and when the server asks).
	StatusInterval time.Duration
	// RetryInterval is the wait before connecting again (default 1s).
	RetryInterval time.Duration
	// RequirePrimary: a server in recovery is refused (a synchronous
	// receiver: the primary waits for it, so it must stream from the
	// primary). Without it a standby upstream (a cascading replica's) is
	// streamed from.
	RequirePrimary bool
}

// Deps is what the receiver calls.
type Deps struct {
	// Primary returns the connection string of the server to stream from
	// (the cluster's primary); its application_name is replaced.
	Primary func(ctx context.Context) (string, error)
	Upload  Uploader
	// SystemID returns the cluster's database system identifier: a server
	// of another cluster is refused before anything is created on it (nil:
	// not checked; uploads check every segment's header anyway).
	SystemID func() (uint64, error)
	Log      *slog.Logger
}

// Status is the receiver's progress.
type Status struct {
	// Connected: a replication stream is open.
	Connected bool `json:"connected"`
	// Server is host:port of the server streamed from last.
	Server string `json:"server"`
	// Timeline is the timeline being received.
	Timeline uint32 `json:"timeline"`
	// Write and Flush are the positions written to and fsynced in the
	// spool; Uploaded is the end of the WAL of Timeline last stored in the
	// repositories (a complete segment or a partial copy).
	Write    wal.LSN `json:"write_lsn"`
	Flush    wal.LSN `json:"flush_lsn"`
	Uploaded wal.LSN `json:"uploaded_lsn"`
	// LastUpload is when an upload last succeeded.
	LastUpload time.Time `json:"last_upload"`
	// UploadFailures counts failed uploads; Reconnects counts streams that
	// ended or could not start.
	UploadFailures uint64 `json:"upload_failures"`
	Reconnects     uint64 `json:"reconnects"`
	// LastError is why the last stream ended or could not start.
	LastError string `json:"last_error,omitempty"`
}

// Receiver streams WAL into the spool and uploads it; Run runs it.
type Receiver struct {
	cfg  Config
	deps Deps
	log  *slog.Logger

	mu      sync.Mutex
	st      Status
	segSize uint64
	// cur is the segment being written and its fsynced length, for the
	// uploader.
	curName    string
	curFlushed uint64
	// abandoned: segments whose partial object must go (the stream
	// restarted elsewhere: their WAL is gone from the server).
	abandoned []string
	// restream: the partial file a restarted receiver streams again from
	// its segment's start; its partial object is not uploaded again before
	// the stream passes size.
	restream restreamed
	kick     chan struct{}

	// lost: the server no longer has the WAL from the spool's end (its
	// slot was invalidated, or never protected it): the next stream
	// starts afresh (the session's goroutine).
	lost bool

	// The uploader's own state (its goroutine only).
	archived    map[string]bool
	conflicted  map[string]bool // complete segments the archive holds differently
	partialDone map[string]uint64
	histories   map[uint32]bool // .history files spooled (the session's goroutine)
}

type restreamed struct {
	name string
	size uint64
}

// New makes a receiver.
func New(cfg Config, deps Deps) *Receiver {
	if cfg.UploadInterval <= 0 {
		cfg.UploadInterval = time.Second
	}
	if cfg.Keep <= 0 {
		cfg.Keep = 4
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = 10 * time.Second
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = time.Second
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	return &Receiver{cfg: cfg, deps: deps, log: deps.Log.With("component", "walrecv"),
		kick: make(chan struct{}, 1), archived: map[string]bool{}, conflicted: map[string]bool{}, partialDone: map[string]uint64{}, histories: map[uint32]bool{}}
}

// Status returns the receiver's progress.
func (r *Receiver) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.st
}

// Run streams and uploads until ctx ends; a failed or ended stream is
// started again after the retry interval. On return the spool is fsynced
// and the upload in progress finished or abandoned.
func (r *Receiver) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.uploadLoop(ctx) }()
	defer wg.Wait()
	ended := 0 // streams in a row that ended at a timeline's end
	lastErr := ""
	for ctx.Err() == nil {
		err := r.session(ctx)
		r.mu.Lock()
		if r.st.Connected {
			lastErr = "" // a stream ran: its end is news
		}
		r.st.Connected = false
		if ctx.Err() == nil {
			r.st.Reconnects++
			if err != nil {
				r.st.LastError = err.Error()
			}
		}
		r.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "58P01" { // undefined_file: "requested WAL segment ... has already been removed"
			r.lost = true
			r.log.Error("the server no longer has the WAL from the spool's end (the receiver's slot was invalidated, e.g. by max_slot_wal_keep_size, or dropped): starting again at its current segment; archive_command archives the WAL in between", "err", err)
		}
		if errors.Is(err, errTimelineEnded) {
			if ended++; ended == 1 {
				continue // plan again at once: the next timeline
			}
		} else {
			ended = 0
			// The same failure again (a primary down for a while) is
			// logged at debug level.
			level := slog.LevelWarn
			if msg := err.Error(); msg == lastErr {
				level = slog.LevelDebug
			} else {
				lastErr = msg
			}
			r.log.Log(ctx, level, "WAL receiver stream ended; connecting again", "err", err, "in", r.cfg.RetryInterval)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.cfg.RetryInterval):
		}
	}
}

// maxUnflushed: under a stream that never pauses, the spool is fsynced
// (and the position reported) at least every this many bytes.
const maxUnflushed = 1 << 20

// errTimelineEnded: the server ended the stream at the end of the
// timeline being received (its switch point).
var errTimelineEnded = errors.New("the timeline being received ended")

// upstreamCheck: while streaming, Deps.Primary is asked again at least
// this often; the stream ends when it names another server (a follow
// order changed primary_conninfo).
const upstreamCheck = 2 * time.Second

// connect opens a replication connection to the primary; dsn is what
// Deps.Primary returned.
func (r *Receiver) connect(ctx context.Context) (conn *pgconn.PgConn, dsn string, err error) {
	dsn, err = r.deps.Primary(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("finding the primary: %w", err)
	}
	pc, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, "", errors.New("the primary's connection string does not parse")
	}
	pc.RuntimeParams["replication"] = "true"
	pc.RuntimeParams["application_name"] = r.cfg.AppName
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	server := net.JoinHostPort(pc.Host, strconv.Itoa(int(pc.Port)))
	conn, err = pgconn.ConnectConfig(cctx, pc)
	if err != nil {
		return nil, "", fmt.Errorf("replication connection to %s: %w", server, err)
	}
	r.mu.Lock()
	r.st.Server = server
	r.mu.Unlock()
	if r.cfg.RequirePrimary {
		hs, err := showSetting(ctx, conn, "in_hot_standby")
		if err == nil && hs == "on" {
			conn.Close(context.WithoutCancel(ctx))
			return nil, "", fmt.Errorf("the server %s is in recovery (a standby): a synchronous receiver streams only from the primary", server)
		}
		if err != nil {
			conn.Close(context.WithoutCancel(ctx))
			return nil, "", err
		}
	}
	return conn, dsn, nil
}

// upstreamChanged reports whether Deps.Primary names another server than
// dsn now (an error is not a change: the stream goes on).
func (r *Receiver) upstreamChanged(ctx context.Context, dsn string) bool {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	now, err := r.deps.Primary(cctx)
	if err != nil {
		r.log.Debug("checking the WAL receiver's upstream", "err", err)
		return false
	}
	return now != dsn
}

// session is one replication connection: it plans where to start, makes
// sure of the slot, and streams until the stream ends or fails.
func (r *Receiver) session(ctx context.Context) error {
	conn, dsn, err := r.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	segSize, err := showSegSize(ctx, conn)
	if err != nil {
		return err
	}
	r.mu.Lock()
	known := r.segSize
	r.mu.Unlock()
	if known != 0 && known != segSize {
		return fmt.Errorf("the server's wal_segment_size is %d, the spool's %d", segSize, known)
	}
	id, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return fmt.Errorf("IDENTIFY_SYSTEM: %w", err)
	}
	if r.deps.SystemID != nil {
		want, err := r.deps.SystemID()
		if err != nil {
			return err
		}
		if got := id.SystemID; got != strconv.FormatUint(want, 10) {
			return fmt.Errorf("the server %s belongs to another database cluster (system identifier %s, this cluster's %d): not streaming from it", r.Status().Server, got, want)
		}
	}
	srvTLI := uint32(id.Timeline)
	files, err := listSpool(r.cfg.SpoolDir, segSize)
	if err != nil {
		return err
	}
	if known == 0 {
		// The first stream of this process: what a previous one left is
		// checked before anything resumes from it or uploads it (the
		// uploader starts once the segment size is known).
		if err := checkSpool(r.cfg.SpoolDir, files, segSize, r.log); err != nil {
			return err
		}
		if files, err = listSpool(r.cfg.SpoolDir, segSize); err != nil {
			return err
		}
		r.mu.Lock()
		r.segSize = segSize
		r.mu.Unlock()
	}
	sp := resumePoint(files, segSize)
	var hist []wal.HistoryEntry
	if sp.Has && sp.TLI < srvTLI {
		if hist, err = r.history(ctx, conn, srvTLI); err != nil {
			return err
		}
	}
	var abandon string
	if r.lost {
		if sp.Has && !sp.File.full(segSize) {
			abandon = sp.File.Name
		}
		sp, hist = spoolEnd{}, nil
	}
	start, err := Plan(sp, srvTLI, wal.LSN(id.XLogPos), hist, segSize)
	if err != nil {
		return err
	}
	if start.Diverged > 0 {
		r.log.Warn("the spool's timeline went on past the switch point of the server's history: that WAL stays under the old timeline's names",
			"timeline", sp.TLI, "spool_end", sp.Raw, "switch_point", sp.Raw-wal.LSN(start.Diverged), "next_timeline", start.TLI, "bytes", start.Diverged)
	}
	if start.Fresh && sp.Has {
		r.log.Warn("the spool's timeline is not in the server's history: streaming starts afresh at the server's current segment (the archive may have a gap archive_command fills)",
			"spool_timeline", sp.TLI, "server_timeline", srvTLI)
	}
	if start.TLI > 1 && !r.histories[start.TLI] {
		if _, err := r.history(ctx, conn, start.TLI); err != nil {
			return err
		}
	}
	if err := r.ensureSlot(ctx, conn); err != nil {
		return err
	}
	var w *segWriter
	if known == 0 && sp.Has && sp.File.Partial && !start.Fresh && start.TLI == sp.TLI && start.LSN == sp.End {
		// The first stream of this process resumes inside a partial file:
		// its segment is streamed again from its start (the slot kept it),
		// overwriting the file in place; the partial object is not
		// uploaded again until the stream passes what the file held.
		r.mu.Lock()
		r.restream = restreamed{name: sp.File.Name, size: uint64(sp.File.Size)}
		r.mu.Unlock()
		start.LSN = wal.LSN(sp.File.SegNo * segSize)
		w, err = restreamWriter(r.cfg.SpoolDir, segSize, start.TLI, sp.File.SegNo, func(string) { r.kickUpload() })
	} else {
		w, err = newSegWriter(r.cfg.SpoolDir, segSize, start.TLI, start.LSN, func(string) { r.kickUpload() })
	}
	if err != nil {
		return err
	}
	defer func() {
		if err := w.close(); err != nil {
			r.log.Error("closing the spool file", "err", err)
		}
		r.published(w)
	}()
	err = pglogrepl.StartReplication(ctx, conn, r.cfg.Slot, pglogrepl.LSN(start.LSN), pglogrepl.StartReplicationOptions{Timeline: int32(start.TLI), Mode: pglogrepl.PhysicalReplication})
	if _, _, ended := pglogrepl.IsErrEndTimeline(err); ended {
		return errTimelineEnded
	}
	if err != nil {
		return fmt.Errorf("START_REPLICATION on timeline %d at %s: %w", start.TLI, start.LSN, err)
	}
	r.log.Info("WAL receiver streaming", "server", r.Status().Server, "timeline", start.TLI, "from", start.LSN, "slot", r.cfg.Slot, "application_name", r.cfg.AppName)
	r.mu.Lock()
	if r.st.Timeline != start.TLI {
		r.st.Uploaded = 0 // uploads of the new timeline are counted anew
	}
	r.st.Connected, r.st.Timeline = true, start.TLI
	r.mu.Unlock()
	r.published(w)
	if r.lost {
		r.lost = false
		if cur, _ := w.current(); abandon != "" && abandon != cur {
			r.mu.Lock()
			r.abandoned = append(r.abandoned, abandon)
			r.mu.Unlock()
			r.kickUpload()
		}
	}
	return r.stream(ctx, conn, w, dsn)
}

// history fetches timeline tli's history file, stores it in the spool
// (the uploader archives it, as wal-push would) and parses it.
func (r *Receiver) history(ctx context.Context, conn *pgconn.PgConn, tli uint32) ([]wal.HistoryEntry, error) {
	res, err := pglogrepl.TimelineHistory(ctx, conn, int32(tli))
	if err != nil {
		return nil, fmt.Errorf("TIMELINE_HISTORY %d: %w", tli, err)
	}
	h, err := wal.ParseHistory(res.Content, tli)
	if err != nil {
		return nil, fmt.Errorf("history of timeline %d: %w", tli, err)
	}
	if !r.histories[tli] {
		if err := spoolHistory(r.cfg.SpoolDir, wal.HistoryFileName(tli), res.Content); err != nil {
			return nil, err
		}
		r.histories[tli] = true
		r.kickUpload()
	}
	return h, nil
}

// spoolHistory stores a .history file in the spool, durably, for the
// uploader (which archives it, retrying): streaming never waits for the
// repository.
func spoolHistory(dir, name string, content []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("wal.receive.spool_dir %s: %w", dir, err)
	}
	tmp := filepath.Join(dir, name+".tmp")
	if err := fsutil.WriteFileSynced(tmp, content, 0o600); err != nil {
		return fmt.Errorf("spooling %s: %w", name, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("spooling %s: %w", name, err)
	}
	if err := fsutil.SyncDir(dir); err != nil {
		return fmt.Errorf("spooling %s: %w", name, err)
	}
	return nil
}

// ensureSlot creates the physical slot, reserving WAL, unless it exists.
func (r *Receiver) ensureSlot(ctx context.Context, conn *pgconn.PgConn) error {
	_, err := pglogrepl.CreateReplicationSlot(ctx, conn, r.cfg.Slot, "", pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.PhysicalReplication, SnapshotAction: "RESERVE_WAL"})
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42710" { // duplicate_object: kept from before
		return nil
	}
	if err != nil {
		return fmt.Errorf("creating the replication slot %s: %w", r.cfg.Slot, err)
	}
	r.log.Info("replication slot created", "slot", r.cfg.Slot)
	return nil
}

// showSegSize reads the server's wal_segment_size.
func showSegSize(ctx context.Context, conn *pgconn.PgConn) (uint64, error) {
	v, err := showSetting(ctx, conn, "wal_segment_size")
	if err != nil {
		return 0, err
	}
	return parseSegSize(v)
}

// showSetting reads a server setting over a replication connection.
func showSetting(ctx context.Context, conn *pgconn.PgConn, name string) (string, error) {
	res, err := conn.Exec(ctx, "SHOW "+name).ReadAll()
	if err != nil {
		return "", fmt.Errorf("SHOW %s: %w", name, err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 1 {
		return "", fmt.Errorf("SHOW %s: unexpected answer", name)
	}
	return string(res[0].Rows[0][0]), nil
}

// message is one message of the stream, read by the reader goroutine.
type message struct {
	data []byte // a CopyData's payload (copied)
	done bool   // the server ended the copy (end of the timeline)
	err  error
}

// stream receives until the stream ends: it writes WAL into the spool,
// fsyncs when no further message is waiting and then replies with the
// positions, replies at once when the server asks, and at least every
// status interval.
func (r *Receiver) stream(ctx context.Context, conn *pgconn.PgConn, w *segWriter, dsn string) error {
	sctx, cancel := context.WithCancel(ctx)
	msgs := make(chan message, 64)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(msgs)
		for {
			m, err := conn.ReceiveMessage(sctx)
			var out message
			switch m := m.(type) {
			case nil:
				out.err = err
			case *pgproto3.CopyData:
				out.data = bytes.Clone(m.Data)
			case *pgproto3.CopyDone:
				out.done = true
			case *pgproto3.ErrorResponse:
				out.err = pgconn.ErrorResponseToPgError(m)
			default:
				continue // notices, parameter changes
			}
			select {
			case msgs <- out:
			case <-sctx.Done():
				return
			}
			if out.err != nil || out.done {
				return
			}
		}
	}()
	defer wg.Wait()
	defer cancel()
	tick := time.NewTicker(r.cfg.StatusInterval)
	defer tick.Stop()
	upstream := time.NewTicker(min(r.cfg.StatusInterval, upstreamCheck))
	defer upstream.Stop()
	var replied wal.LSN
	reply := func(ask bool) error {
		err := pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{
			WALWritePosition: pglogrepl.LSN(w.writePos()),
			WALFlushPosition: pglogrepl.LSN(w.flushPos()),
			WALApplyPosition: pglogrepl.LSN(w.flushPos()),
			ReplyRequested:   ask,
		})
		if err != nil {
			return fmt.Errorf("standby status update: %w", err)
		}
		replied = w.flushPos()
		return nil
	}
	for {
		var m message
		var ok bool
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-upstream.C:
			if r.upstreamChanged(ctx, dsn) {
				if err := w.flush(); err != nil {
					return err
				}
				r.published(w)
				return fmt.Errorf("the upstream changed (primary_conninfo names another server than %s): streaming from the new one", r.Status().Server)
			}
			continue
		case <-tick.C:
			if err := w.flush(); err != nil {
				return err
			}
			r.published(w)
			if err := reply(false); err != nil {
				return err
			}
			continue
		case m, ok = <-msgs:
		}
		if !ok {
			return errors.New("the replication stream closed")
		}
		if m.err != nil {
			return fmt.Errorf("replication stream: %w", m.err)
		}
		if m.done {
			if err := w.flush(); err != nil {
				return err
			}
			r.published(w)
			wg.Wait() // the reader stopped after CopyDone
			res, err := pglogrepl.SendStandbyCopyDone(ctx, conn)
			if err != nil {
				return fmt.Errorf("ending the stream at the end of timeline %d: %w", w.tli, err)
			}
			if res != nil {
				r.log.Info("the timeline being received ended", "timeline", w.tli, "next_timeline", res.Timeline, "switch_point", wal.LSN(res.LSN))
			}
			return errTimelineEnded
		}
		askNow := false
		if len(m.data) == 0 {
			continue
		}
		switch m.data[0] {
		case pglogrepl.XLogDataByteID:
			x, err := pglogrepl.ParseXLogData(m.data[1:])
			if err != nil {
				return err
			}
			if err := w.write(wal.LSN(x.WALStart), x.WALData); err != nil {
				return err
			}
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			k, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.data[1:])
			if err != nil {
				return err
			}
			askNow = k.ReplyRequested
		}
		if len(msgs) > 0 && !askNow && w.writePos()-w.flushPos() < maxUnflushed {
			continue // more is waiting: fsync once after it
		}
		if err := w.flush(); err != nil {
			return err
		}
		r.published(w)
		if askNow || w.flushPos() != replied {
			if err := reply(false); err != nil {
				return err
			}
		}
	}
}

// published makes w's positions the receiver's (Status, the uploader).
func (r *Receiver) published(w *segWriter) {
	name, flushed := w.current()
	r.mu.Lock()
	r.st.Write, r.st.Flush = w.writePos(), w.flushPos()
	r.curName, r.curFlushed = name, flushed
	r.mu.Unlock()
}

func (r *Receiver) kickUpload() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// spoolPath is the path of spool file name.
func (r *Receiver) spoolPath(name string) string { return filepath.Join(r.cfg.SpoolDir, name) }
