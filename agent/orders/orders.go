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
	"github.com/pgdr/pgdr/agent/leaderclock"
	"github.com/pgdr/pgdr/agent/pgctl"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/conninfo"
	"github.com/pgdr/pgdr/pkg/fsutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Bounds of the orders' waits.
const (
	followWait = 20 * time.Second
	// RejoinWait bounds a rejoined or re-cloned replica's wait for
	// streaming.
	RejoinWait = 2 * time.Minute
)

// Name is an order's kind as the logs name it.
func Name(cmd *pgdrv1.AgentCommand) string {
	switch cmd.GetKind().(type) {
	case *pgdrv1.AgentCommand_Promote:
		return "promote"
	case *pgdrv1.AgentCommand_Follow:
		return "follow"
	case *pgdrv1.AgentCommand_Fence:
		return "fence"
	case *pgdrv1.AgentCommand_Rejoin:
		return "rejoin"
	case *pgdrv1.AgentCommand_SetSynchronous:
		return "set_synchronous"
	case *pgdrv1.AgentCommand_Demote:
		return "demote"
	case *pgdrv1.AgentCommand_Restart:
		return "restart"
	}
	return fmt.Sprintf("%T", cmd.GetKind())
}

// ErrOrderExpired: an order's deadline passed before it could start.
var ErrOrderExpired = errors.New("refused: the order's deadline passed")

// orderTiming is when an order stops being worth starting.
type orderTiming struct {
	// ID is the order's command id (the Epoch call asks about it), Sender
	// the coordinator that sent it ("": an older one).
	ID, Sender string
	// Deadline is on the agent's clock (zero: none). From a budget it
	// carries the monotonic reading of the receipt time, so that no step
	// of the agent's wall clock moves it.
	Deadline time.Time
	// Leader is the order's deadline on the leader's clock (zero: none):
	// what a promote or a restart checks against the leader's own clock.
	Leader time.Time
	// Relative: Deadline counts the leader's budget from the receipt.
	// Otherwise it is the leader's absolute deadline taken as the agent's
	// (an older coordinator that sends no budget): right only while the
	// clocks agree.
	Relative bool
	// Skew is the agent's wall clock at receipt minus the leader's at
	// sending: the clocks' offset plus the transit time. Valid when
	// HasSkew (the order carries sent_at).
	Skew    time.Duration
	HasSkew bool
	// Transit is the longest the order can have been on its way, on the
	// leader's clock (its sending to its receipt), as a measurement of
	// that clock tells (leaderclock.Measurement.Latest). Valid when
	// HasTransit; it is taken off the budget.
	Transit    time.Duration
	HasTransit bool
	// Received is the order's receipt on the agent's clock; Budget its
	// budget_ms (HasBudget: it carries sent_at and a deadline).
	Received  time.Time
	Budget    time.Duration
	HasBudget bool
}

// sentBefore is a time no later than the order's sending, on the agent's
// clock (Deps.Clock): its receipt less the transit time, which the
// measurement of the leader's clock overestimates (ok false: no such
// measurement).
func (t orderTiming) sentBefore() (time.Time, bool) {
	if !t.HasTransit {
		return time.Time{}, false
	}
	return t.Received.Add(-max(t.Transit, 0)), true
}

// orderDeadline times an order received at received, a reading of the
// agent's clock taken when the order arrived on the stream (not when its
// turn came behind another order). With a budget (sent_at set) the
// deadline is received + budget_ms on the agent's monotonic clock, less
// the time the order spent in transit when lc, a measurement of the
// leader's clock, tells it: received + min(budget, sent_at + budget -
// the leader's clock at receipt). So an order that sat in a frozen
// agent's socket buffer, on a stalled connection or behind a full receive
// queue loses that time, whatever the agent's wall clock says, and the
// leader may assume that the agent starts it no later than sent_at +
// budget_ms. Without lc the budget counts from the receipt (see Order for
// when that happens). Without a budget (an older coordinator) the
// leader's absolute deadline is compared with the agent's wall clock, as
// before.
func orderDeadline(cmd *pgdrv1.AgentCommand, received time.Time, lc *leaderclock.Measurement) orderTiming {
	t := orderTiming{ID: cmd.GetId(), Sender: cmd.GetSender(), Received: received}
	s := cmd.GetSentAt()
	if s != nil {
		t.Skew, t.HasSkew = received.Sub(s.AsTime()), true
	}
	dl := cmd.GetDeadline()
	if dl == nil {
		return t
	}
	t.Leader = dl.AsTime()
	if t.HasSkew {
		budget := time.Duration(cmd.GetBudgetMs()) * time.Millisecond
		t.Budget, t.HasBudget = budget, true
		if lc != nil {
			t.Transit, t.HasTransit = lc.Latest(received).Sub(s.AsTime()), true
			budget -= max(t.Transit, 0)
		}
		t.Deadline, t.Relative = received.Add(budget), true
		return t
	}
	t.Deadline = t.Leader
	return t
}

// orderLeaderClock is the measurement of the leader's clock an order with
// a budget is timed with. Every session measures it when it registers
// and again every leaderRecheck, so there is one unless the coordinator
// sends no clock in those answers (one from before this agent). Then, to
// stay on the safe side, the leader is asked once (the Epoch call, which
// carries its clock too); if that fails as well the budget counts from the
// receipt, as that coordinator expects, and the orders that make this
// node writable (promote, restart) are refused anyway unless the leader
// confirms them (confirmCurrent).
func (x *Executor) orderLeaderClock(ctx context.Context, cmd *pgdrv1.AgentCommand) *leaderclock.Measurement {
	if cmd.GetSentAt() == nil || cmd.GetDeadline() == nil {
		return nil
	}
	if lc := x.lclock.Last(); lc != nil {
		return lc
	}
	if _, _, _, err := x.askEpoch(ctx, ""); err != nil {
		x.log.Warn("no measurement of the coordinator leader's clock: the order's budget counts from its receipt, its transit time unknown",
			"command", cmd.GetId(), "err", err)
	}
	return x.lclock.Last()
}

// Order carries out one of the coordinator's orders (promote, follow,
// fence, rejoin), one at a time. An order must carry an epoch, and one
// older than the highest epoch seen (checked again once the previous
// order is done) is refused, as is one whose deadline (when the leader
// stops waiting for it; see orderDeadline, counted from received) passed
// before it could start. Only an accepted order's epoch becomes the
// highest seen. It returns the output to report. ctx is the agent's run
// context, not the session's: orders outlive the session that brought
// them.
func (x *Executor) Order(ctx context.Context, cmd *pgdrv1.AgentCommand, received time.Time) (string, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if cmd.GetEpoch() == 0 {
		return "", fmt.Errorf("%s: an order must carry an epoch", Name(cmd))
	}
	if known := x.epoch.Current(); cmd.GetEpoch() < known {
		return "", fmt.Errorf("stale epoch %d: this agent knows epoch %d", cmd.GetEpoch(), known)
	}
	timing := orderDeadline(cmd, received, x.orderLeaderClock(ctx, cmd))
	if dl := timing.Deadline; !dl.IsZero() {
		if now := x.clock(); !now.Before(dl) {
			if timing.Relative {
				transit := "its transit time unknown"
				if timing.HasTransit {
					transit = fmt.Sprintf("%s of it spent in transit by the leader's clock", max(timing.Transit, 0).Round(time.Millisecond))
				}
				return "", fmt.Errorf("%w: %s order %s at epoch %d, received %s ago with a budget of %s, %s (it waited in transit or behind another order); the leader no longer waits for it",
					ErrOrderExpired, Name(cmd), cmd.GetId(), cmd.GetEpoch(), now.Sub(received).Round(time.Millisecond), time.Duration(cmd.GetBudgetMs())*time.Millisecond, transit)
			}
			return "", fmt.Errorf("%w: %s order %s at epoch %d, issued at %s, had to start by %s by this agent's clock (it waited behind another order or in transit; the coordinator sent no budget, so the clocks must agree); the leader no longer waits for it",
				ErrOrderExpired, Name(cmd), cmd.GetId(), cmd.GetEpoch(), cmd.GetIssuedAt().AsTime().Format(time.RFC3339Nano), dl.Format(time.RFC3339Nano))
		}
	}
	switch cmd.GetKind().(type) {
	case *pgdrv1.AgentCommand_Promote, *pgdrv1.AgentCommand_Follow, *pgdrv1.AgentCommand_Fence, *pgdrv1.AgentCommand_Rejoin,
		*pgdrv1.AgentCommand_SetSynchronous, *pgdrv1.AgentCommand_Demote, *pgdrv1.AgentCommand_Restart:
	default:
		return "", fmt.Errorf("unknown order %T", cmd.GetKind())
	}
	// Adopted only now that the order is accepted: a refused order (expired,
	// unknown) must not make the next order at the recorded epoch stale.
	x.epoch.See(cmd.GetEpoch())
	switch k := cmd.GetKind().(type) {
	case *pgdrv1.AgentCommand_Promote:
		var settle settlePromise
		if sb := k.Promote.GetSettleBy(); sb != nil {
			settle.By = sb.AsTime()
		}
		settle.After = time.Duration(k.Promote.GetSettleAfterMs()) * time.Millisecond
		return x.promoter.promote(ctx, cmd.GetEpoch(), timing, settle)
	case *pgdrv1.AgentCommand_Follow:
		return x.follow(ctx, k.Follow.GetPrimary(), k.Follow.GetPrimaryDsn())
	case *pgdrv1.AgentCommand_Fence:
		reason := k.Fence.GetReason()
		if reason == "" {
			reason = "no reason given"
		}
		if err := x.Fence(ctx, fmt.Sprintf("fence order %s at epoch %d: %s", cmd.GetId(), cmd.GetEpoch(), reason)); err != nil {
			return "", err
		}
		return "fenced: PostgreSQL stopped (fast shutdown), marker " + health.FencedPath(x.cfg.Postgres.PGData), nil
	case *pgdrv1.AgentCommand_Rejoin:
		return x.rejoin(ctx, cmd.GetEpoch(), k.Rejoin.GetPrimary(), k.Rejoin.GetPrimaryDsn())
	case *pgdrv1.AgentCommand_SetSynchronous:
		return x.setSynchronous(ctx, cmd.GetEpoch(), k.SetSynchronous.GetValue(), timing)
	case *pgdrv1.AgentCommand_Demote:
		return x.demote(ctx, cmd.GetEpoch(), k.Demote.GetReason())
	case *pgdrv1.AgentCommand_Restart:
		return x.restart(ctx, cmd.GetEpoch(), timing)
	}
	return "", fmt.Errorf("unknown order %T", cmd.GetKind())
}

// waitCond polls cond every 200ms until it holds, fails, or timeout.
func waitCond(ctx context.Context, timeout time.Duration, what string, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		ok, err := cond(ctx)
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%s: not within %s: %w", what, timeout, last)
			}
			return fmt.Errorf("%s: not within %s", what, timeout)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

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

// quoteLiteral quotes s as an SQL escape string literal, E'...', with \
// and ' doubled: the same value whatever standard_conforming_strings is
// (off, a plain '...' literal takes \' as an escaped quote and the value
// could end early, the rest run as SQL). For statements that take no bind
// parameters (ALTER SYSTEM); not for configuration files: see confQuote.
func quoteLiteral(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 3)
	b.WriteString("E'")
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			b.WriteString(`\\`)
		case '\'':
			b.WriteString("''")
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
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
// pg_rewind.
func (x *Executor) rejoin(ctx context.Context, epoch uint64, primary, dsn string) (string, error) {
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
