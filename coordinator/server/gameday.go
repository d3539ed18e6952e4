package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/fsm"
	"github.com/pgdr/pgdr/coordinator/gameday"
	"github.com/pgdr/pgdr/coordinator/policy"
	"github.com/pgdr/pgdr/coordinator/runbook"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Game days: the leader carries out coordinator/gameday's decisions.
//
// Every gameDayTick, for each cluster, the leader asks gameday.Decide on
// the replicated records and proposes what it decided: the intent
// (GameDayStart), each runbook run (RunbookStart with the game day's id
// and the runbook's position: the FSM refuses a position taken, so a
// runbook never starts twice), the probe's measure of each run once it
// ended (GameDayMeasured), and the end (GameDayEnd, with the measured
// RTO). The runbook runs themselves are the runbook runner's. While a
// game day of a cluster is in flight the leader runs a probe writing
// through the game day's endpoint; a new leader starts its own probe (a
// run that began before it is recorded as not fully measured).

const gameDayTick = time.Second

// gameDaysFeatureLevel: the voters know RunbookCommand's game day
// operations and RunbookStart.game_day. A voter of level 5 would refuse
// the first (no operation) and start a game day's run without attaching
// it (field unknown): both diverge, so nothing of game days is proposed
// until every voter has this level.
const gameDaysFeatureLevel = 6

// gameDaysReady says whether every voter knows game days.
func (s *Server) gameDaysReady() (bool, string) {
	servers := s.voters()
	return votersReadyFor(s.cfg.Name, servers, peerLevels(s.cfg.Name, servers, s.featureLevels(), s.askLevel), gameDaysFeatureLevel, "game days")
}

type gameDayRunner struct {
	s   *Server
	log *slog.Logger

	mu     sync.Mutex
	probes map[string]*gameDayProbe // game day id → its probe
}

func newGameDayRunner(s *Server, log *slog.Logger) *gameDayRunner {
	return &gameDayRunner{s: s, log: log.With("subsystem", "gamedays"), probes: map[string]*gameDayProbe{}}
}

func (g *gameDayRunner) run(ctx context.Context) {
	defer g.stopProbes(nil)
	t := time.NewTicker(gameDayTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !g.s.fsm.IncidentsStarted() {
			continue
		}
		if ok, why := g.s.gameDaysReady(); !ok {
			g.log.Debug("game days held", "why", why)
			continue
		}
		inFlight := map[string]bool{}
		for _, c := range g.s.fsm.ClusterViews() {
			busy := false
			for _, r := range c.GetGameDayRuns() {
				if r.GetResult() == "" {
					busy = true
					inFlight[r.GetId()] = true
					g.ensureProbe(ctx, c, r)
				}
			}
			// A cluster without game days in its policy and none in
			// flight has nothing to decide (most clusters of a fleet):
			// its policy is not even read.
			if busy || len(c.GetBackupPolicy().GetGameDays()) > 0 {
				g.step(ctx, c)
			}
		}
		g.stopProbes(inFlight)
	}
}

// input is what gameday.Decide reads of cluster c.
func (g *gameDayRunner) input(c *pgdrv1.Cluster, now time.Time) gameday.Input {
	p, _ := policy.Effective(c)
	in := gameday.Input{Now: now, Since: p.UpdatedAt, Runs: map[string]gameday.Run{}}
	if in.Since.IsZero() {
		in.Since = c.GetCreatedAt().AsTime()
	}
	for _, gd := range p.GameDays {
		in.Plans = append(in.Plans, gameday.Plan{Name: gd.Name, Next: gd.NextRun})
	}
	ofGameDay := map[string]bool{}
	for _, r := range c.GetGameDayRuns() {
		rec := gameday.Record{ID: r.GetId(), Name: r.GetName(), Deadline: r.GetDeadline().AsTime(), Runbooks: len(r.GetRunbooks()),
			Runs: r.GetRuns(), Measured: map[string]bool{}, Result: r.GetResult()}
		if r.GetSlot() != nil {
			rec.Slot = r.GetSlot().AsTime()
		}
		for _, m := range r.GetMeasures() {
			rec.Measured[m.GetRunId()] = true
		}
		if r.GetResult() == "" {
			for _, id := range r.GetRuns() {
				ofGameDay[id] = true
			}
		}
		in.Records = append(in.Records, rec)
	}
	for _, run := range g.s.fsm.RunbookRuns(c.GetName(), "") {
		rs, err := fsm.RunState(run)
		if err != nil {
			continue
		}
		in.Runs[run.GetId()] = gameday.Run{Result: string(rs.Result), Reason: rs.Reason}
		if rs.Result == "" && !ofGameDay[run.GetId()] {
			in.OtherRun = run.GetId()
		}
	}
	return in
}

// step takes the next decision of cluster c's game days.
func (g *gameDayRunner) step(ctx context.Context, c *pgdrv1.Cluster) {
	d, err := gameday.Decide(g.input(c, time.Now()))
	if err != nil {
		g.log.Warn("game day decision", "cluster", c.GetName(), "err", err)
		return
	}
	switch d.Kind {
	case gameday.Start:
		g.log.Info("starting game day", "cluster", c.GetName(), "game_day", d.Name, "reason", d.Reason)
		g.propose(ctx, &pgdrv1.RunbookCommand{Op: &pgdrv1.RunbookCommand_GameDayStart{GameDayStart: &pgdrv1.GameDayStart{
			Cluster: c.GetName(), Name: d.Name, Slot: timestamppb.New(d.Slot)}}})
	case gameday.StartRunbook:
		g.startRunbook(ctx, c, d)
	case gameday.Measure:
		g.measure(ctx, c, d)
	case gameday.End:
		g.log.Info("game day ends", "cluster", c.GetName(), "game_day", d.ID, "result", d.Result, "reason", d.Reason)
		g.propose(ctx, &pgdrv1.RunbookCommand{Op: &pgdrv1.RunbookCommand_GameDayEnd{GameDayEnd: &pgdrv1.GameDayEnd{
			Cluster: c.GetName(), Id: d.ID, Result: d.Result, Message: d.Reason}}})
	}
}

func record(c *pgdrv1.Cluster, id string) *pgdrv1.GameDayRun {
	for _, r := range c.GetGameDayRuns() {
		if r.GetId() == id {
			return r
		}
	}
	return nil
}

// startRunbook checks the game day's next runbook against the leader's
// view (a dry run, as RunRunbook does) and starts it. An invalid runbook
// (unknown, bad parameters) ends the game day failed; a precondition not
// met yet waits (the window bounds the wait).
func (g *gameDayRunner) startRunbook(ctx context.Context, c *pgdrv1.Cluster, d gameday.Decision) {
	r := record(c, d.ID)
	if r == nil || d.Position >= len(r.GetRunbooks()) {
		return
	}
	want := r.GetRunbooks()[d.Position]
	if d.Position == 0 && time.Since(r.GetStarted().AsTime()) < probeWarmup {
		g.mu.Lock()
		p := g.probes[d.ID]
		g.mu.Unlock()
		if p == nil || !p.wrote() {
			return // the first runbook waits for the probe's first write (up to probeWarmup)
		}
	}
	var text string
	var found bool
	g.s.fsm.Read(func(st *pgdrv1.State) { text, found = fsm.RunbookText(st, want.GetName()) })
	fail := func(msg string) {
		g.propose(ctx, &pgdrv1.RunbookCommand{Op: &pgdrv1.RunbookCommand_GameDayEnd{GameDayEnd: &pgdrv1.GameDayEnd{
			Cluster: c.GetName(), Id: d.ID, Result: fsm.GameDayFailed, Message: msg}}})
	}
	if !found {
		fail(fmt.Sprintf("runbook %d (%s) is not known (apply it first)", d.Position+1, want.GetName()))
		return
	}
	rb, err := runbook.Parse([]byte(text))
	if err != nil {
		fail(fmt.Sprintf("runbook %s: %v", want.GetName(), err))
		return
	}
	if _, err := runbook.DryRun(rb, want.GetParams(), g.s.runbooks.view(c, "")); err != nil {
		if errors.Is(err, runbook.ErrInvalid) {
			fail(fmt.Sprintf("runbook %s: %v", want.GetName(), err))
			return
		}
		g.log.Info("game day runbook waits", "cluster", c.GetName(), "game_day", d.ID, "runbook", want.GetName(), "reason", err)
		return
	}
	g.log.Info("game day starts runbook", "cluster", c.GetName(), "game_day", d.ID, "runbook", want.GetName(), "position", d.Position)
	g.propose(ctx, &pgdrv1.RunbookCommand{Op: &pgdrv1.RunbookCommand_Start{Start: &pgdrv1.RunbookStart{
		Cluster: c.GetName(), Runbook: want.GetName(), Params: want.GetParams(), Yaml: text, GameDay: d.ID, GameDayPosition: uint32(d.Position)}}})
}

// measure records the probe's measure of run d.RunID.
func (g *gameDayRunner) measure(ctx context.Context, c *pgdrv1.Cluster, d gameday.Decision) {
	runs := g.s.fsm.RunbookRuns(c.GetName(), d.RunID)
	if len(runs) != 1 {
		return
	}
	rs, err := fsm.RunState(runs[0])
	if err != nil {
		return
	}
	g.mu.Lock()
	p := g.probes[d.ID]
	g.mu.Unlock()
	m := &pgdrv1.GameDayMeasure{RunId: d.RunID, Runbook: runs[0].GetRunbook(), Note: "no probe ran on this leader"}
	if p != nil {
		m = p.measure(rs.Started, rs.Ended, time.Now())
		m.RunId, m.Runbook = d.RunID, runs[0].GetRunbook()
	}
	g.propose(ctx, &pgdrv1.RunbookCommand{Op: &pgdrv1.RunbookCommand_GameDayMeasured{GameDayMeasured: &pgdrv1.GameDayMeasured{
		Cluster: c.GetName(), Id: d.ID, Measure: m}}})
}

func (g *gameDayRunner) propose(ctx context.Context, op *pgdrv1.RunbookCommand) bool {
	return g.s.runbooks.propose(ctx, "game day", op)
}

// ensureProbe starts the probe of game day r if none runs.
func (g *gameDayRunner) ensureProbe(ctx context.Context, c *pgdrv1.Cluster, r *pgdrv1.GameDayRun) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.probes[r.GetId()] != nil {
		return
	}
	p, _ := policy.Effective(c)
	gd, ok := p.GameDayByName(r.GetName())
	if !ok {
		return
	}
	pctx, cancel := context.WithCancel(ctx)
	pr := newGameDayProbe(gd.Probe, r.GetId(), cancel)
	g.probes[r.GetId()] = pr
	go pr.run(pctx, g.log.With("game_day", r.GetId()))
}

// stopProbes stops the probes of game days not in keep (nil: every one).
func (g *gameDayRunner) stopProbes(keep map[string]bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for id, p := range g.probes {
		if !keep[id] {
			p.cancel()
			delete(g.probes, id)
		}
	}
}

// probeWarmup: how long a game day's first runbook waits for the probe's
// first acknowledged write (a switchover before it is not measured).
const probeWarmup = time.Minute

// maxProbeGaps bounds the gaps a probe keeps (the oldest go first).
const maxProbeGaps = 512

type probeGap struct{ from, to time.Time }

// gameDayProbe writes a row through the game day's endpoint every
// interval and keeps the gaps: the times between two acknowledged writes
// longer than twice the interval.
type gameDayProbe struct {
	cfg    policy.GameDayProbe
	id     string
	cancel context.CancelFunc
	since  time.Time

	mu        sync.Mutex
	lastAck   time.Time
	gaps      []probeGap
	ok, fails uint64
	lastErr   string
}

func newGameDayProbe(cfg policy.GameDayProbe, id string, cancel context.CancelFunc) *gameDayProbe {
	if cfg.Interval <= 0 {
		cfg.Interval = policy.DefaultProbeInterval
	}
	return &gameDayProbe{cfg: cfg, id: id, cancel: cancel, since: time.Now()}
}

func (p *gameDayProbe) threshold() time.Duration { return 2 * p.cfg.Interval }

func (p *gameDayProbe) connect(ctx context.Context) (*pgx.Conn, error) {
	cc, err := pgx.ParseConfig(p.cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("probe dsn: %w", err)
	}
	if p.cfg.PasswordFile != "" {
		b, err := os.ReadFile(p.cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("probe password_file: %w", err)
		}
		cc.Password = strings.TrimRight(string(b), "\r\n") // shared by every host of the DSN
	}
	if cc.ValidateConnect == nil {
		// The probe writes: a host that is not writable (a standby, the
		// old primary after a switchover) is skipped for the next one of
		// the DSN, as target_session_attrs=read-write does.
		cc.ValidateConnect = pgconn.ValidateConnectTargetSessionAttrsReadWrite
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cc.ConnectTimeout = 2 * time.Second
	conn, err := pgx.ConnectConfig(cctx, cc)
	if err != nil {
		return nil, err
	}
	// Unlogged: a FOR ALL TABLES publication of the user's would take a
	// logged table in, and a subscriber without it stops applying; nor do
	// its rows reach the standbys.
	if _, err := conn.Exec(cctx, `CREATE UNLOGGED TABLE IF NOT EXISTS pgdr_gameday_probe (id bigserial PRIMARY KEY, game_day text NOT NULL, at timestamptz NOT NULL DEFAULT now())`); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("creating pgdr_gameday_probe: %w", err)
	}
	// The table stays small: one row per game day (each write replaces
	// the previous one), kept a week.
	if _, err := conn.Exec(cctx, `DELETE FROM pgdr_gameday_probe WHERE at < now() - interval '7 days'`); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("pruning pgdr_gameday_probe: %w", err)
	}
	return conn, nil
}

func (p *gameDayProbe) run(ctx context.Context, log *slog.Logger) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	timeout := max(5*p.cfg.Interval, time.Second)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var err error
		if conn == nil {
			if conn, err = p.connect(ctx); err != nil {
				conn = nil
				p.failed(err)
				continue
			}
		}
		wctx, cancel := context.WithTimeout(ctx, timeout)
		// One row per game day: each write replaces the previous one (a
		// day's window at a 10ms interval would otherwise leave millions
		// of rows in the user's database).
		_, err = conn.Exec(wctx, `WITH old AS (DELETE FROM pgdr_gameday_probe WHERE game_day = $1) INSERT INTO pgdr_gameday_probe (game_day) VALUES ($1)`, p.id)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			conn.Close(context.Background())
			conn = nil
			p.failed(err)
			continue
		}
		p.acked(time.Now())
	}
}

func (p *gameDayProbe) wrote() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.lastAck.IsZero()
}

func (p *gameDayProbe) failed(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fails++
	p.lastErr = err.Error()
}

func (p *gameDayProbe) acked(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ok++
	if !p.lastAck.IsZero() && now.Sub(p.lastAck) > p.threshold() {
		if len(p.gaps) == maxProbeGaps {
			p.gaps = p.gaps[1:]
		}
		p.gaps = append(p.gaps, probeGap{p.lastAck, now})
	}
	p.lastAck = now
}

// measure sums the gaps overlapping [from, to] (and one still open at
// now); the write counts are those since the previous measure.
func (p *gameDayProbe) measure(from, to, now time.Time) *pgdrv1.GameDayMeasure {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := &pgdrv1.GameDayMeasure{WritesOk: p.ok, WritesFailed: p.fails, Measured: true}
	p.ok, p.fails = 0, 0
	if p.lastAck.IsZero() {
		m.Measured = false
		m.Note = "the probe never wrote: " + clipText(p.lastErr, 300)
		return m
	}
	if p.since.After(from) {
		m.Measured = false
		m.Note = "the probe started after the run (a leader change): partial"
	}
	gaps := p.gaps
	if now.Sub(p.lastAck) > p.threshold() {
		gaps = append(gaps[:len(gaps):len(gaps)], probeGap{p.lastAck, now})
	}
	for _, gp := range gaps {
		if gp.to.Before(from) || (!to.IsZero() && gp.from.After(to)) {
			continue
		}
		d := gp.to.Sub(gp.from).Milliseconds()
		m.Gaps++
		m.UnavailableMs += d
		m.LongestGapMs = max(m.LongestGapMs, d)
	}
	return m
}
