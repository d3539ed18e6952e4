package orders

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/agent/pgctl"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/conninfo"
	"github.com/pgdr/pgdr/pkg/fsutil"
)

// PrimaryConninfo is dsn with this node's name as application_name (what
// synchronous_standby_names and pg_stat_replication know it by).
func PrimaryConninfo(dsn, node string) string {
	dsn = strings.TrimSpace(dsn)
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if u, err := url.Parse(dsn); err == nil {
			q := u.Query()
			q.Set("application_name", node)
			u.RawQuery = q.Encode()
			return u.String()
		}
	}
	return dsn + " application_name=" + node
}

// HostPort is where dsn connects (the first host).
func HostPort(dsn string) (string, uint16, error) {
	pc, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return "", 0, errors.New("the primary's DSN does not parse")
	}
	return pc.Host, pc.Port, nil
}

// WaitStreaming waits until the local WAL receiver streams from
// host:port, for at most timeout; it returns what it saw last.
func WaitStreaming(ctx context.Context, pg *pgctl.Controller, timeout time.Duration, host string, port uint16) (string, error) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	var got string
	err := waitCond(ctx, timeout, fmt.Sprintf("streaming from %s:%d", host, port), func(ctx context.Context) (bool, error) {
		if conn == nil || conn.IsClosed() {
			c, err := pg.Conn(ctx)
			if err != nil {
				return false, err
			}
			conn = c
		}
		var status, senderHost, conninfo string
		var senderPort, tli int64
		err := conn.QueryRow(ctx, `SELECT coalesce(status, ''), coalesce(sender_host, ''), coalesce(sender_port, 0), coalesce(conninfo, ''), coalesce(received_tli, 0)::int8
			FROM pg_stat_wal_receiver`).Scan(&status, &senderHost, &senderPort, &conninfo, &tli)
		if errors.Is(err, pgx.ErrNoRows) {
			return false, errors.New("no WAL receiver running")
		}
		if err != nil {
			conn.Close(ctx)
			return false, err
		}
		got = fmt.Sprintf("WAL receiver %s from %s:%d on timeline %d", status, senderHost, senderPort, tli)
		match := uint16(senderPort) == port && (senderHost == host || strings.Contains(conninfo, "host="+host))
		if status == "streaming" && match {
			return true, nil
		}
		return false, errors.New(got)
	})
	return got, err
}

// follow re-points the local replica to a new primary.
func (x *Executor) follow(ctx context.Context, primary, dsn string) (string, error) {
	if strings.TrimSpace(dsn) == "" {
		return "", errors.New("follow: no primary_dsn")
	}
	if err := conninfo.Check(dsn); err != nil {
		return "", fmt.Errorf("follow: the primary's DSN: %w", err)
	}
	host, port, err := HostPort(dsn)
	if err != nil {
		return "", err
	}
	conn, inRecovery, err := x.pg.ConnRecovery(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if !inRecovery {
		return "", errors.New("refusing to follow: the server is not in recovery (a primary must be rejoined, not re-pointed)")
	}
	for _, sql := range []string{
		"ALTER SYSTEM SET primary_conninfo = " + quoteLiteral(PrimaryConninfo(dsn, x.cfg.Node.Name)),
		"ALTER SYSTEM SET recovery_target_timeline = 'latest'",
		"SELECT pg_reload_conf()",
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			// Do not echo the statement: the DSN may hold a password.
			return "", fmt.Errorf("re-pointing the replica: %w", err)
		}
	}
	got, err := WaitStreaming(ctx, x.pg, followWait, host, port)
	if err != nil {
		return got, err
	}
	x.monitor.CheckNow(ctx)
	return fmt.Sprintf("following %s: %s", primary, got), nil
}

// rewindable says whether pg_rewind can work on pgdata: it needs
// wal_log_hints=on or data checksums (pg_controldata shows both).
func (x *Executor) rewindable(ctx context.Context) (string, error) {
	out, err := x.pg.Run(ctx, "pg_controldata", "-D", x.cfg.Postgres.PGData)
	if err != nil {
		return "", err
	}
	field := func(name string) string {
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `:\s*(.*?)\s*$`).FindStringSubmatch(out)
		if m == nil {
			return ""
		}
		return m[1]
	}
	checksums, hints := field("Data page checksum version"), field("wal_log_hints setting")
	switch {
	case checksums != "" && checksums != "0":
		return "data checksums on", nil
	case hints == "on":
		return "wal_log_hints on", nil
	}
	return "", fmt.Errorf("pg_rewind cannot rejoin this node: it needs wal_log_hints=on or data checksums, and this data directory has neither (pg_controldata: checksum version %q, wal_log_hints %q); it needs a fresh copy from the new primary or a backup", checksums, hints)
}

// ConfigFiles are kept across pg_rewind, which would copy the source's
// (and across a re-clone).
func ConfigFiles() []string {
	return []string{"postgresql.conf", "pg_hba.conf", "pg_ident.conf", "postgresql.auto.conf"}
}

// managedKeys are the recovery settings rejoin writes (earlier values of
// them are dropped from postgresql.auto.conf).
var managedKeys = regexp.MustCompile(`^\s*(primary_conninfo|recovery_target_timeline|restore_command)\s*=`)

// rejoin turns this former primary into a replica of the new one with
// pg_rewind. Once PostgreSQL is stopped, and before pg_rewind or a fresh
// copy changes anything, the divergence report (Deps.Divergence) records
// what this node's WAL holds past the new timeline's fork point; it is
// held for the session under the order's id (TakeDivergence).
func (x *Executor) rejoin(ctx context.Context, id string, epoch uint64, primary, dsn string) (string, error) {
	pgdata := x.cfg.Postgres.PGData
	if strings.TrimSpace(dsn) == "" {
		return "", errors.New("rejoin: no primary_dsn")
	}
	if err := conninfo.Check(dsn); err != nil {
		return "", fmt.Errorf("rejoin: the primary's DSN: %w", err)
	}
	host, port, err := HostPort(dsn)
	if err != nil {
		return "", err
	}
	if pgctl.PostmasterRunning(pgdata) {
		x.log.Warn("rejoin: stopping the running server (fast shutdown)")
		if err := x.pg.Stop(ctx); err != nil {
			return "", fmt.Errorf("rejoin: stopping PostgreSQL: %w", err)
		}
	}
	if x.Divergence != nil {
		x.holdDivergence(id, x.Divergence(ctx, epoch, primary, dsn))
	}
	how, err := x.rewindable(ctx)
	if err != nil {
		return x.Reclone(ctx, epoch, primary, dsn, err) // a fresh copy instead (Deps.Reclone)
	}
	// The new primary's control file must show its new timeline.
	if c, err := pgctl.Connect(ctx, dsn, "the primary's DSN"); err != nil {
		x.log.Warn("rejoin: cannot reach the new primary for a checkpoint", "err", err)
	} else {
		if _, err := c.Exec(ctx, "CHECKPOINT"); err != nil {
			x.log.Warn("rejoin: checkpoint on the new primary", "err", err)
		}
		c.Close(context.WithoutCancel(ctx))
	}
	saved := map[string][]byte{}
	for _, f := range ConfigFiles() {
		if b, err := os.ReadFile(filepath.Join(pgdata, f)); err == nil {
			saved[f] = b
		}
	}
	restoreConfig := func() error {
		for f, b := range saved {
			p := filepath.Join(pgdata, f)
			if err := os.WriteFile(p, b, 0o600); err != nil {
				return err
			}
			x.pg.ChownLikePGData(p)
		}
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	out, err := x.pg.Run(rctx, "pg_rewind", "--target-pgdata", pgdata, "--source-server", dsn, "--progress")
	cancel()
	if rerr := restoreConfig(); rerr != nil {
		return "", fmt.Errorf("restoring the configuration files after pg_rewind: %w", rerr)
	}
	// pg_rewind copies the source's promotion guard record (a promotion
	// of its own may have been pending) and removes this node's: a record
	// here now is the source's, which the agent would take for this
	// node's, from another boot, and fence the node on its next start.
	// Removed whether or not the rewind completed (a failed one may have
	// copied it, and the data directory comes back if the fresh copy
	// fails too): PostgreSQL was stopped above, which drops a promotion
	// this node had requested, and it is started again only as a replica,
	// so no guard of this node needs it.
	if removed, rerr := health.RemovePromotePending(pgdata); rerr != nil {
		if err == nil {
			return "", fmt.Errorf("after pg_rewind: the source's promotion guard record: %w", rerr)
		}
		x.log.Warn("rejoin: after the failed pg_rewind, the promotion guard record", "err", rerr)
	} else if removed {
		x.log.Info("rejoin: removed the promotion guard record pg_rewind copied from the source", "path", health.PromotePendingPath(pgdata))
	}
	if err != nil {
		return x.Reclone(ctx, epoch, primary, dsn, fmt.Errorf("pg_rewind failed: %w", err))
	}
	if err := WriteStandbyConfig(x.cfg, x.pg, epoch, dsn); err != nil {
		return "", err
	}
	if err := x.Unfence(); err != nil {
		return "", err
	}
	if err := x.pg.Start(ctx); err != nil {
		return "", err
	}
	got, err := WaitStreaming(ctx, x.pg, RejoinWait, host, port)
	x.monitor.CheckNow(ctx)
	if err != nil {
		return got, err
	}
	// The coordinator's history line already says "<node> rejoined as a
	// replica of <primary>": this is the detail, on one line.
	return fmt.Sprintf("rewound (pg_rewind, %s): %s; pg_rewind: %s", how, got, strings.ReplaceAll(pgctl.Tail(out, 300), "\n", " | ")), nil
}

// WriteStandbyConfig writes standby.signal and the recovery settings of
// cfg's server for a replica of the primary at dsn (rejoin, re-clone).
func WriteStandbyConfig(cfg *config.Config, pg *pgctl.Controller, epoch uint64, dsn string) error {
	if err := conninfo.Check(dsn); err != nil {
		return fmt.Errorf("primary_conninfo: the primary's DSN: %w", err)
	}
	pgdata := cfg.Postgres.PGData
	auto := filepath.Join(pgdata, "postgresql.auto.conf")
	old, err := os.ReadFile(auto)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(string(old), "\n"), "\n") {
		if !managedKeys.MatchString(l) && l != "" {
			lines = append(lines, l)
		}
	}
	lines = append(lines, fmt.Sprintf("# recovery settings written by pgdr-agent rejoin at epoch %d", epoch),
		"primary_conninfo = "+confQuote(PrimaryConninfo(dsn, cfg.Node.Name)),
		"recovery_target_timeline = 'latest'")
	if exe, err := os.Executable(); err == nil && cfg.Path != "" && len(cfg.Repos) > 0 {
		lines = append(lines, "restore_command = "+confQuote(fmt.Sprintf("%s wal-fetch --config %s %%f %%p", exe, cfg.Path)))
	}
	if err := fsutil.WriteFileSynced(auto, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	pg.ChownLikePGData(auto)
	sig := filepath.Join(pgdata, "standby.signal")
	if err := fsutil.WriteFileSynced(sig, nil, 0o600); err != nil {
		return err
	}
	pg.ChownLikePGData(sig)
	if err := os.Remove(filepath.Join(pgdata, "recovery.signal")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
