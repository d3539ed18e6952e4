package daemon

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgdr/pgdr/agent/health"
)

// promoteWait bounds pg_promote's own wait.
const promoteWait = 60 * time.Second

// promotion is the local server's side of a promotion; the daemon opens one
// per order (openPromotion, replaced in tests).
type promotion interface {
	// InRecovery is pg_is_in_recovery().
	InRecovery(ctx context.Context) (bool, error)
	// Promote is pg_promote(true, wait): true once the promotion finished.
	Promote(ctx context.Context, wait time.Duration) (bool, error)
	// Finish runs after the end of recovery: a checkpoint, then the new
	// timeline and LSN for the order's output.
	Finish(ctx context.Context) (string, error)
	Close()
}

// pgPromotion is a promotion over a connection to the local server.
type pgPromotion struct {
	d    *Daemon
	conn *pgx.Conn
}

func (d *Daemon) openPGPromotion(ctx context.Context) (promotion, error) {
	conn, err := d.localConn(ctx)
	if err != nil {
		return nil, fmt.Errorf("connecting to the local server: %w", err)
	}
	return &pgPromotion{d: d, conn: conn}, nil
}

func (p *pgPromotion) InRecovery(ctx context.Context) (bool, error) {
	var in bool
	err := p.conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&in)
	return in, err
}

func (p *pgPromotion) Promote(ctx context.Context, wait time.Duration) (bool, error) {
	var done bool
	err := p.conn.QueryRow(ctx, fmt.Sprintf("SELECT pg_promote(true, %d)", max(int(wait.Seconds()), 1))).Scan(&done)
	return done, err
}

func (p *pgPromotion) Finish(ctx context.Context) (string, error) {
	// A checkpoint puts the new timeline into pg_control at once, so the
	// old primary can be rewound from this one without waiting.
	if _, err := p.conn.Exec(ctx, "CHECKPOINT"); err != nil {
		p.d.log.Warn("checkpoint after the promotion", "err", err)
	}
	var lsn, file string
	if err := p.conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text, pg_walfile_name(pg_current_wal_lsn())").Scan(&lsn, &file); err != nil {
		return "", err
	}
	tli, _ := strconv.ParseUint(file[:min(8, len(file))], 16, 32)
	return fmt.Sprintf("promoted: timeline %d, lsn %s", tli, lsn), nil
}

func (p *pgPromotion) Close() { p.conn.Close(context.Background()) }

func (d *Daemon) openPromotion(ctx context.Context) (promotion, error) {
	if d.promotionOpener != nil {
		return d.promotionOpener(ctx)
	}
	return d.openPGPromotion(ctx)
}

// promote promotes the local replica: never a fenced node.
func (d *Daemon) promote(ctx context.Context) (string, error) {
	fsDone, err := d.failsafeBeginPromote() // acknowledged a failsafe ping within lease_ttl?
	if err != nil {
		return "", err
	}
	defer fsDone()
	pgdata := d.cfg.Postgres.PGData
	if fi, err := health.ReadFenced(pgdata); fi != nil {
		return "", fmt.Errorf("refusing to promote: this node is fenced (%s, epoch %d; marker %s, %v); a fenced node is never promoted, rejoin it first", fi.Reason, fi.Epoch, health.FencedPath(pgdata), err)
	}
	p, err := d.openPromotion(ctx)
	if err != nil {
		return "", err
	}
	defer p.Close()
	inRecovery, err := p.InRecovery(ctx)
	if err != nil {
		return "", err
	}
	if !inRecovery {
		return "", errors.New("refusing to promote: the server is not in recovery (already a primary)")
	}
	done, err := p.Promote(ctx, promoteWait)
	if err != nil {
		return "", fmt.Errorf("pg_promote: %w", err)
	}
	if !done {
		return "", fmt.Errorf("pg_promote did not finish within %s", promoteWait)
	}
	if err := waitCond(ctx, promoteWait, "the end of recovery", func(ctx context.Context) (bool, error) {
		in, err := p.InRecovery(ctx)
		return err == nil && !in, err
	}); err != nil {
		return "", err
	}
	out, err := p.Finish(ctx)
	if err != nil {
		return "", err
	}
	d.CheckNow(ctx)
	return out, nil
}
