package commitgate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgdr/pgdr/agent/pgctl"
	"github.com/pgdr/pgdr/pkg/syncnames"
	"github.com/pgdr/pgdr/pkg/wal"
)

// idlePoll is how often the gate looks at the lease again while it holds
// WAL it may not acknowledge (no lease).
const idlePoll = 50 * time.Millisecond

// Lease is the primary lease as the gate reads it: whether the node may
// serve writes at now (a monotonic reading of time.Now). The daemon
// passes the failsafe's Serving: the lease's verdict (granted, not
// fenced, before lease_ttl - safety_margin after the last granted
// renewal was sent), extended only while every member acknowledges the
// failsafe's pings.
type Lease interface {
	Serving(now time.Time) (bool, string)
}

// Config is the gate's configuration.
type Config struct {
	// DSN is the local server (postgres.dsn); the gate adds
	// replication=true and its application_name for its stream.
	DSN string
	// AppName is the gate's application_name (DefaultAppName when "").
	AppName string
	// Settle: on each connection, make PostgreSQL's setting name the gate
	// (Settle with gate on). Off in tests that set it themselves.
	Settle bool
	// Poll is how often the gate looks again at the standbys' positions
	// (and the lease) while it holds WAL it has not acknowledged (default
	// 2ms); Status how often it replies when there is nothing new (default
	// 1s, well inside wal_sender_timeout); Retry how long it waits before
	// reconnecting (default 100ms).
	Poll, Status, Retry time.Duration
}

// Stats is what the gate did, for tests and metrics.
type Stats struct {
	Connected bool
	// Received is the end of the WAL received on the current stream;
	// Acked the flush position last sent (0 before any).
	Received, Acked uint64
	// LastAdvance is when an acknowledgement last moved Acked forward
	// (monotonic reading; zero before any): after the lease's deadline
	// none may.
	LastAdvance time.Time
	// Withheld counts looks at WAL not yet acknowledged that found the
	// lease not valid (on a replica, where the gate never acknowledges,
	// it counts up too).
	Withheld int
}

// Gate is the commit gate: run it with Run.
type Gate struct {
	cfg   Config
	lease Lease
	log   *slog.Logger
	now   func() time.Time

	mu sync.Mutex
	st Stats

	// want is bumped by Refresh; the stream reads the requested setting
	// again when it is ahead of have, and at least every reread.
	want, have atomic.Uint64
	// req is the requested setting as last read (the stream's own).
	req requested
}

// requested is the coordinator's setting as the gate last read it.
type requested struct {
	value string
	gated bool
	at    time.Time // zero: read it before using it
}

// reread is how often the gate reads the requested setting again by
// itself (changes made through Refresh are read at once): a change by
// hand (ALTER SYSTEM) counts within this.
const reread = time.Second

// New builds a gate for cfg reading lease.
func New(cfg Config, lease Lease, log *slog.Logger) *Gate {
	if cfg.AppName == "" {
		cfg.AppName = DefaultAppName
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 2 * time.Millisecond
	}
	if cfg.Status <= 0 {
		cfg.Status = time.Second
	}
	if cfg.Retry <= 0 {
		cfg.Retry = 100 * time.Millisecond
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Gate{cfg: cfg, lease: lease, log: log.With("component", "commitgate"), now: time.Now}
}

// Stats returns what the gate did so far.
func (g *Gate) Stats() Stats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.st
}

// AppName is the gate's application_name.
func (g *Gate) AppName() string { return g.cfg.AppName }

// Run keeps the gate connected to the local server until ctx ends,
// reconnecting after every error: while it is not connected, commits wait
// (PostgreSQL's setting names the gate).
func (g *Gate) Run(ctx context.Context) {
	var lastErr string
	var lastAt time.Time
	for ctx.Err() == nil {
		err := g.stream(ctx)
		g.mu.Lock()
		g.st.Connected = false
		g.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		if s := err.Error(); s != lastErr || time.Since(lastAt) > 10*time.Second {
			g.log.Warn("commit gate disconnected; commits wait until it reconnects", "err", err)
			lastErr, lastAt = s, time.Now()
		}
		select {
		case <-ctx.Done():
		case <-time.After(g.cfg.Retry):
		}
	}
}

// stream connects, starts physical replication at the server's current
// position and acknowledges what it may until the stream or ctx ends.
func (g *Gate) stream(ctx context.Context) error {
	qc, err := g.queryConn(ctx)
	if err != nil {
		return err
	}
	defer qc.Close(context.WithoutCancel(ctx))
	if g.cfg.Settle {
		if changed, err := Settle(ctx, qc, g.cfg.AppName, true); err != nil {
			return err
		} else if changed {
			g.log.Info("synchronous_standby_names now names the commit gate; the coordinator's value is kept in "+RequestedGUC, "gate", GateSetting(g.cfg.AppName))
		}
	}
	pc, err := pgconn.ParseConfig(g.cfg.DSN)
	if err != nil {
		return errors.New("commit gate: postgres.dsn does not parse")
	}
	if pc.ConnectTimeout == 0 {
		pc.ConnectTimeout = 10 * time.Second
	}
	pc.RuntimeParams["replication"] = "true"
	pc.RuntimeParams["application_name"] = g.cfg.AppName
	rc, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		return fmt.Errorf("commit gate: connecting for replication: %w", err)
	}
	defer rc.Close(context.WithoutCancel(ctx))
	sys, err := pglogrepl.IdentifySystem(ctx, rc)
	if err != nil {
		return fmt.Errorf("commit gate: IDENTIFY_SYSTEM: %w", err)
	}
	// From the server's current position: the gate keeps no WAL, it only
	// answers for what the server sends it from now on.
	if err := startReplication(ctx, rc, sys.XLogPos, sys.Timeline); err != nil {
		return fmt.Errorf("commit gate: START_REPLICATION at %s: %w", sys.XLogPos, err)
	}
	g.log.Info("commit gate streaming", "from", sys.XLogPos, "timeline", sys.Timeline)
	received := uint64(sys.XLogPos)
	var acked uint64
	g.req = requested{}
	var lastReply time.Time
	g.mu.Lock()
	g.st.Connected, g.st.Received, g.st.Acked = true, received, 0
	g.mu.Unlock()
	leaseOK := true // as last read: while not, look again every idle
	for {
		wait := g.cfg.Status
		switch {
		case received > acked && leaseOK:
			wait = g.cfg.Poll
		case received > acked:
			// No lease (a replica, a primary not granted yet or past its
			// deadline): look again soon, without polling the server.
			wait = min(g.cfg.Status, idlePoll)
		}
		rctx, cancel := context.WithTimeout(ctx, wait)
		msg, err := rc.ReceiveMessage(rctx)
		cancel()
		replyNow := false
		switch {
		case err != nil && pgconn.Timeout(err) && ctx.Err() == nil:
		case err != nil:
			return fmt.Errorf("commit gate: receiving: %w", err)
		default:
			switch m := msg.(type) {
			case *pgproto3.CopyData:
				if len(m.Data) == 0 {
					break
				}
				switch m.Data[0] {
				case pglogrepl.XLogDataByteID:
					x, err := pglogrepl.ParseXLogData(m.Data[1:])
					if err != nil {
						return fmt.Errorf("commit gate: %w", err)
					}
					received = max(received, uint64(x.WALStart)+uint64(len(x.WALData)))
				case pglogrepl.PrimaryKeepaliveMessageByteID:
					k, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
					if err != nil {
						return fmt.Errorf("commit gate: %w", err)
					}
					replyNow = k.ReplyRequested
				}
			case *pgproto3.ErrorResponse:
				return fmt.Errorf("commit gate: the server ended replication: %s", m.Message)
			case *pgproto3.CopyDone:
				return errors.New("commit gate: the server ended the stream (end of timeline)")
			}
		}
		g.mu.Lock()
		g.st.Received = received
		g.mu.Unlock()
		if g.want.Load() != g.have.Load() {
			if _, _, err := g.requested(ctx, qc); err != nil {
				return err
			}
		}
		due := g.now().Sub(lastReply) >= g.cfg.Status
		if received <= acked && !replyNow && !due {
			continue
		}
		target := acked
		if received > acked {
			// A first look at the lease spares the server the standbys'
			// query while there is none; it decides nothing.
			if leaseOK, _ = g.lease.Serving(g.now()); leaseOK {
				allowed, err := g.allowed(ctx, qc, received)
				if err != nil {
					return err
				}
				// The check and the send, back to back: the monotonic
				// clock is read after everything else, right before the
				// reply goes out (see the package comment).
				if allowed > acked {
					if leaseOK, _ = g.lease.Serving(g.now()); leaseOK {
						target = allowed
					}
				}
			}
			if !leaseOK {
				g.mu.Lock()
				g.st.Withheld++
				g.mu.Unlock()
			}
		}
		if target == acked && !replyNow && !due {
			continue // nothing new to say
		}
		if err := pglogrepl.SendStandbyStatusUpdate(ctx, rc, pglogrepl.StandbyStatusUpdate{
			WALWritePosition: pglogrepl.LSN(target), WALFlushPosition: pglogrepl.LSN(target), WALApplyPosition: pglogrepl.LSN(target),
		}); err != nil {
			return fmt.Errorf("commit gate: replying: %w", err)
		}
		now := g.now()
		lastReply = now
		g.mu.Lock()
		if target > acked {
			g.st.LastAdvance = now
		}
		g.st.Acked = target
		g.mu.Unlock()
		acked = target
	}
}

// allowed is how far the gate may acknowledge, lease aside: what it
// received, and no further than the coordinator's requested
// synchronous_standby_names lets a commit through (syncnames.Required on
// the local pg_stat_replication, the gate itself left out).
func (g *Gate) allowed(ctx context.Context, qc *pgx.Conn, received uint64) (uint64, error) {
	req, gated, err := g.requested(ctx, qc)
	if err != nil {
		return 0, err
	}
	if !gated || req == "" {
		// Not gated (commits do not wait for the gate) or no standby
		// required: the lease alone decides.
		return received, nil
	}
	set, ok := syncnames.Parse(req)
	if !ok {
		return 0, fmt.Errorf("commit gate: %s = %q does not parse; acknowledging nothing", RequestedGUC, req)
	}
	rows, err := qc.Query(ctx, "SELECT coalesce(application_name, ''), coalesce(state, ''), flush_lsn::text FROM pg_stat_replication WHERE application_name IS DISTINCT FROM $1", g.cfg.AppName)
	if err != nil {
		return 0, fmt.Errorf("commit gate: reading pg_stat_replication: %w", err)
	}
	ws, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (syncnames.Walsender, error) {
		var w syncnames.Walsender
		var flush *string
		if err := r.Scan(&w.Name, &w.State, &flush); err != nil {
			return w, err
		}
		if flush != nil {
			if l, err := wal.ParseLSN(*flush); err == nil {
				w.Flush = uint64(l)
			}
		}
		return w, nil
	})
	if err != nil {
		return 0, fmt.Errorf("commit gate: reading pg_stat_replication: %w", err)
	}
	lsn, ok := syncnames.Required(set, ws)
	if !ok {
		return 0, nil
	}
	return min(lsn, received), nil
}

// requested is the coordinator's setting (Requested), read again when
// Refresh asked for it or reread passed.
func (g *Gate) requested(ctx context.Context, qc *pgx.Conn) (string, bool, error) {
	w := g.want.Load()
	if w != g.have.Load() || g.req.at.IsZero() || g.now().Sub(g.req.at) >= reread {
		v, gated, err := Requested(ctx, qc, g.cfg.AppName)
		if err != nil {
			return "", false, fmt.Errorf("commit gate: %w", err)
		}
		g.req = requested{value: v, gated: gated, at: g.now()}
		g.have.Store(w)
	}
	return g.req.value, g.req.gated, nil
}

// Refresh returns once the gate enforces the requested setting as it is
// now: it reads it again (a set_synchronous order calls it after the
// reload, before it reports the new setting applied), or it is not
// connected (it reads the setting afresh when it connects).
func (g *Gate) Refresh(ctx context.Context) error {
	w := g.want.Add(1)
	for {
		if g.have.Load() >= w || !g.Stats().Connected {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("commit gate: waiting for it to read the new synchronous_standby_names: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// queryConn connects to the local server for the gate's queries.
func (g *Gate) queryConn(ctx context.Context) (*pgx.Conn, error) { return connect(ctx, g.cfg.DSN) }

// connect connects to dsn as the agent for queries.
func connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	conn, err := pgctl.Connect(ctx, dsn, "postgres.dsn")
	if err != nil {
		return nil, fmt.Errorf("commit gate: connecting to the local server: %w", err)
	}
	return conn, nil
}

// startReplication runs START_REPLICATION PHYSICAL without a slot
// (pglogrepl's always names one) and returns once the server answered
// with CopyBothResponse.
func startReplication(ctx context.Context, rc *pgconn.PgConn, from pglogrepl.LSN, tli int32) error {
	rc.Frontend().SendQuery(&pgproto3.Query{String: fmt.Sprintf("START_REPLICATION PHYSICAL %s TIMELINE %d", from, tli)})
	if err := rc.Frontend().Flush(); err != nil {
		return err
	}
	for {
		msg, err := rc.ReceiveMessage(ctx)
		if err != nil {
			return err
		}
		switch m := msg.(type) {
		case *pgproto3.CopyBothResponse:
			return nil
		case *pgproto3.ErrorResponse:
			return pgconn.ErrorResponseToPgError(m)
		}
	}
}
