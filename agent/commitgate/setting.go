package commitgate

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgdr/pgdr/pkg/syncnames"
)

// DefaultAppName is the gate's application_name: PostgreSQL's
// synchronous_standby_names names it while commits are gated.
const DefaultAppName = "pgdr_gate"

// RequestedGUC is the custom setting (ALTER SYSTEM, postgresql.auto.conf)
// that holds the synchronous_standby_names the coordinator asked for
// while PostgreSQL's own setting names the gate alone. The gate enforces
// it (Required); the health report shows it as the node's setting.
const RequestedGUC = "pgdr.synchronous_standby_names"

// GateSetting is PostgreSQL's synchronous_standby_names while commits are
// gated: the gate alone.
func GateSetting(app string) string {
	return syncnames.Setting{Method: "FIRST", Num: 1, Names: []string{app}}.String()
}

// IsGate reports whether value (a synchronous_standby_names) is the gate
// alone: FIRST 1 of app and nothing else.
func IsGate(value, app string) bool {
	s, ok := syncnames.Parse(value)
	return ok && s.Num == 1 && len(s.Names) == 1 && strings.EqualFold(s.Names[0], app)
}

// Requested is what the coordinator asked for, read on conn: RequestedGUC
// while PostgreSQL's setting is the gate, else the setting itself.
// gated reports which.
func Requested(ctx context.Context, conn *pgx.Conn, app string) (value string, gated bool, err error) {
	var cur, req string
	if err := conn.QueryRow(ctx, "SELECT current_setting('synchronous_standby_names'), coalesce(current_setting($1, true), '')", RequestedGUC).Scan(&cur, &req); err != nil {
		return "", false, fmt.Errorf("reading synchronous_standby_names: %w", err)
	}
	if IsGate(cur, app) {
		return req, true, nil
	}
	return cur, false, nil
}

// Apply sets, with ALTER SYSTEM and a reload, the coordinator's
// synchronous_standby_names value: with gate on, RequestedGUC = value and
// PostgreSQL's setting = the gate alone; with it off, PostgreSQL's
// setting = value and RequestedGUC reset. The reload is asked for, not
// awaited: callers that must see it wait for Requested to show it.
func Apply(ctx context.Context, conn *pgx.Conn, value, app string, gate bool) error {
	lit := func(s string) (string, error) {
		e, err := conn.PgConn().EscapeString(s)
		if err != nil {
			return "", fmt.Errorf("quoting %q: %w", s, err)
		}
		return "'" + e + "'", nil
	}
	qv, err := lit(value)
	if err != nil {
		return err
	}
	var stmts []string
	if gate {
		qg, err := lit(GateSetting(app))
		if err != nil {
			return err
		}
		// PostgreSQL 15's ALTER SYSTEM refuses a custom setting this
		// session has no placeholder for: SET makes one (RESET then
		// gives the session the file's value again after the reload).
		stmts = []string{"SET " + RequestedGUC + " = " + qv, "ALTER SYSTEM SET " + RequestedGUC + " = " + qv, "RESET " + RequestedGUC,
			"ALTER SYSTEM SET synchronous_standby_names = " + qg}
	} else {
		stmts = []string{"ALTER SYSTEM SET synchronous_standby_names = " + qv, "SET " + RequestedGUC + " = ''", "ALTER SYSTEM RESET " + RequestedGUC, "RESET " + RequestedGUC}
	}
	stmts = append(stmts, "SELECT pg_reload_conf()")
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("setting synchronous_standby_names (%s): %w", s, err)
		}
	}
	return nil
}

// Settle makes PostgreSQL's setting match the switch, keeping the
// coordinator's value: gate on and the setting not the gate moves the
// setting to RequestedGUC and names the gate; gate off and the setting
// the gate puts RequestedGUC back (a node whose gating was turned off
// must not keep waiting for a gate that no longer runs). It reports
// whether it changed anything.
func Settle(ctx context.Context, conn *pgx.Conn, app string, gate bool) (bool, error) {
	value, gated, err := Requested(ctx, conn, app)
	if err != nil {
		return false, err
	}
	if gated == gate {
		return false, nil
	}
	return true, Apply(ctx, conn, value, app, gate)
}

// SettleOff puts back the coordinator's value where PostgreSQL's setting
// still names the gate while lease-gated commits are off (Settle with
// gate off), trying every few seconds until it could look once or ctx
// ends.
func SettleOff(ctx context.Context, dsn string, log *slog.Logger) {
	for {
		err := settleOff(ctx, dsn, log)
		if err == nil || ctx.Err() != nil {
			return
		}
		log.Debug("checking synchronous_standby_names for a commit gate's setting", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
}

func settleOff(ctx context.Context, dsn string, log *slog.Logger) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := connect(cctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	changed, err := Settle(cctx, conn, DefaultAppName, false)
	if changed && err == nil {
		log.Warn("failover.lease_gated_commits is off: synchronous_standby_names named the commit gate; the coordinator's value is back (" + RequestedGUC + ")")
	}
	return err
}
