package fsm

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/policy"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// MaxGameDayRuns is how many game days a cluster keeps: the oldest ended
// ones go first, never the one in flight nor the newest scheduled one of
// each of the policy's game days.
const MaxGameDayRuns = 20

// Results of a game day (coordinator/gameday).
const (
	GameDayOK      = "ok"
	GameDayFailed  = "failed"
	GameDayTimeout = "timeout"
)

// GameDayRunID is the id of the game day started at index.
func GameDayRunID(index uint64) string { return fmt.Sprintf("GD-%d", index) }

// startGameDay records the intent to run one of the cluster's policy's
// game days: refused while another game day of the cluster is in flight.
// It copies the game day's runbooks and sets its deadline (start +
// window).
func startGameDay(st *pgdrv1.State, c *pgdrv1.Command, s *pgdrv1.GameDayStart, index uint64) error {
	cl, err := findCluster(st, s.GetCluster())
	if err != nil {
		return fmt.Errorf("game day: %w", err)
	}
	p, _ := policy.Effective(cl)
	g, ok := p.GameDayByName(s.GetName())
	if !ok {
		return fmt.Errorf("game day %q: not in the policy of cluster %s", clip(s.GetName(), 64), cl.GetName())
	}
	for _, r := range cl.GetGameDayRuns() {
		if r.GetResult() == "" {
			return fmt.Errorf("game day %s: cluster %s already runs game day %s (%s): one at a time", g.Name, cl.GetName(), r.GetName(), r.GetId())
		}
	}
	// A scheduled slot runs once: a start for a slot at or before the
	// game day's newest recorded one (a retried proposal, a stale
	// leader's) is refused. The newest record is never compacted first.
	if s.GetSlot() != nil {
		for _, r := range cl.GetGameDayRuns() {
			if r.GetName() == g.Name && r.GetSlot() != nil && !s.GetSlot().AsTime().After(r.GetSlot().AsTime()) {
				return fmt.Errorf("game day %s: slot %s: already run (%s, slot %s)", g.Name, s.GetSlot().AsTime().UTC().Format(time.RFC3339), r.GetId(), r.GetSlot().AsTime().UTC().Format(time.RFC3339))
			}
		}
	}
	// A runbook run of the cluster still in flight (an operator's, or one a
	// game day whose window ended left running): the game day would start
	// its probe and window on top of it. It starts once that run ended.
	for _, r := range st.GetRunbookRuns() {
		if r.GetCluster() == cl.GetName() && runEnded(r) == "" {
			return fmt.Errorf("game day %s: runbook %s (run %s) of cluster %s is in flight: start the game day once it ended", g.Name, r.GetRunbook(), r.GetId(), cl.GetName())
		}
	}
	now := cmdTime(c)
	run := &pgdrv1.GameDayRun{Id: GameDayRunID(index), Name: g.Name, Slot: s.GetSlot(), Started: now,
		Deadline: timestamppb.New(now.AsTime().Add(g.Window)), Runbooks: policy.GameDayRunbooksProto(g.Runbooks),
		RtoMs: -1, RequestedBy: clip(c.GetActor(), 200)}
	cl.GameDayRuns = append(cl.GameDayRuns, run)
	// The newest scheduled record of each of the policy's game days stays
	// (its slot is where the next one is counted from: dropped, that slot
	// would be due again); so at most MaxGameDayRuns + MaxGameDays.
	newest := map[string]*pgdrv1.GameDayRun{}
	for _, r := range cl.GameDayRuns {
		if _, ok := p.GameDayByName(r.GetName()); ok && r.GetSlot() != nil &&
			(newest[r.GetName()] == nil || r.GetSlot().AsTime().After(newest[r.GetName()].GetSlot().AsTime())) {
			newest[r.GetName()] = r
		}
	}
	for n := len(cl.GameDayRuns); n > MaxGameDayRuns; n-- {
		i := slices.IndexFunc(cl.GameDayRuns, func(r *pgdrv1.GameDayRun) bool { return r.GetResult() != "" && newest[r.GetName()] != r })
		if i < 0 {
			break
		}
		cl.GameDayRuns = slices.Delete(cl.GameDayRuns, i, i+1)
	}
	addEvent(st, c, index, &pgdrv1.HistoryEvent{Cluster: cl.GetName(), Kind: kindRunbook,
		Message: fmt.Sprintf("game day %s (%s) started: %d runbook(s) within %s", g.Name, run.GetId(), len(g.Runbooks), g.Window),
		Details: map[string]string{"game_day": run.GetId()}})
	return nil
}

// gameDayInFlight is cluster's game day id, which must not have ended.
func gameDayInFlight(st *pgdrv1.State, cluster, id string) (*pgdrv1.Cluster, *pgdrv1.GameDayRun, error) {
	cl, err := findCluster(st, cluster)
	if err != nil {
		return nil, nil, fmt.Errorf("game day: %w", err)
	}
	i := slices.IndexFunc(cl.GetGameDayRuns(), func(r *pgdrv1.GameDayRun) bool { return r.GetId() == id })
	if i < 0 {
		return nil, nil, fmt.Errorf("game day %q of cluster %s: not found", clip(id, 64), cl.GetName())
	}
	if r := cl.GameDayRuns[i]; r.GetResult() != "" {
		return nil, nil, fmt.Errorf("game day %s: already ended %s", r.GetId(), r.GetResult())
	}
	return cl, cl.GameDayRuns[i], nil
}

// checkGameDayRun checks that a runbook run about to start is the next of
// its game day: the game day in flight, position the next free one, the
// runbook the one at that position. A position already taken is refused:
// a game day never starts a runbook twice.
func checkGameDayRun(st *pgdrv1.State, s *pgdrv1.RunbookStart) (*pgdrv1.GameDayRun, error) {
	_, g, err := gameDayInFlight(st, s.GetCluster(), s.GetGameDay())
	if err != nil {
		return nil, err
	}
	pos := int(s.GetGameDayPosition())
	switch {
	case pos != len(g.GetRuns()):
		return nil, fmt.Errorf("game day %s: runbook position %d: the next one is %d (started once only)", g.GetId(), pos, len(g.GetRuns()))
	case pos >= len(g.GetRunbooks()):
		return nil, fmt.Errorf("game day %s: runbook position %d: it runs %d runbook(s)", g.GetId(), pos, len(g.GetRunbooks()))
	case g.GetRunbooks()[pos].GetName() != s.GetRunbook():
		return nil, fmt.Errorf("game day %s: runbook position %d is %s, not %s", g.GetId(), pos, g.GetRunbooks()[pos].GetName(), clip(s.GetRunbook(), 64))
	}
	return g, nil
}

// measureGameDay records the probe's measure of one runbook run of the
// game day (once per run).
func measureGameDay(st *pgdrv1.State, c *pgdrv1.Command, m *pgdrv1.GameDayMeasured, index uint64) error {
	cl, g, err := gameDayInFlight(st, m.GetCluster(), m.GetId())
	if err != nil {
		return err
	}
	ms := m.GetMeasure()
	if ms == nil || !slices.Contains(g.GetRuns(), ms.GetRunId()) {
		return fmt.Errorf("game day %s: measure.run_id %q is not one of its runs", g.GetId(), clip(ms.GetRunId(), 64))
	}
	if slices.ContainsFunc(g.GetMeasures(), func(x *pgdrv1.GameDayMeasure) bool { return x.GetRunId() == ms.GetRunId() }) {
		return fmt.Errorf("game day %s: run %s is measured already", g.GetId(), ms.GetRunId())
	}
	if ms.GetLongestGapMs() < 0 || ms.GetUnavailableMs() < 0 {
		return fmt.Errorf("game day %s: run %s: negative measure", g.GetId(), ms.GetRunId())
	}
	ms = proto.Clone(ms).(*pgdrv1.GameDayMeasure)
	ms.Note = clip(ms.GetNote(), 500)
	g.Measures = append(g.Measures, ms)
	addEvent(st, c, index, &pgdrv1.HistoryEvent{Cluster: cl.GetName(), Kind: kindRunbook,
		Message: fmt.Sprintf("game day %s (%s): run %s of %s: longest write unavailability %s (%d gap(s), %d writes ok, %d failed)%s",
			g.GetName(), g.GetId(), ms.GetRunId(), ms.GetRunbook(), time.Duration(ms.GetLongestGapMs())*time.Millisecond,
			ms.GetGaps(), ms.GetWritesOk(), ms.GetWritesFailed(), noteSuffix(ms.GetNote())),
		Details: map[string]string{"game_day": g.GetId(), "run": ms.GetRunId()}})
	return nil
}

func noteSuffix(s string) string {
	if s == "" {
		return ""
	}
	return " (" + s + ")"
}

// endGameDay ends the game day: its measured RTO is the longest write
// unavailability of its measures (-1 when none was measured).
func endGameDay(st *pgdrv1.State, c *pgdrv1.Command, e *pgdrv1.GameDayEnd, index uint64) error {
	switch e.GetResult() {
	case GameDayOK, GameDayFailed, GameDayTimeout:
	default:
		return fmt.Errorf("game day %s: result %q: want ok, failed or timeout", clip(e.GetId(), 64), clip(e.GetResult(), 64))
	}
	cl, g, err := gameDayInFlight(st, e.GetCluster(), e.GetId())
	if err != nil {
		return err
	}
	if e.GetResult() == GameDayOK && len(g.GetRuns()) < len(g.GetRunbooks()) {
		return errors.New("game day " + g.GetId() + ": ok with runbooks not run")
	}
	g.Result, g.Message, g.Ended = e.GetResult(), clip(e.GetMessage(), 1000), cmdTime(c)
	for _, m := range g.GetMeasures() {
		g.RtoMs = max(g.RtoMs, m.GetLongestGapMs())
	}
	msg := fmt.Sprintf("game day %s (%s) ended %s: %s", g.GetName(), g.GetId(), g.GetResult(), g.GetMessage())
	if g.GetRtoMs() >= 0 {
		msg += fmt.Sprintf("; measured RTO %s", time.Duration(g.GetRtoMs())*time.Millisecond)
	}
	addEvent(st, c, index, &pgdrv1.HistoryEvent{Cluster: cl.GetName(), Kind: kindRunbook, Message: msg,
		Details: map[string]string{"game_day": g.GetId()}})
	return nil
}

// GameDayRuns returns copies of the game days of cluster ("" = every
// one), by cluster name, oldest first.
func (f *FSM) GameDayRuns(cluster string) map[string][]*pgdrv1.GameDayRun {
	out := map[string][]*pgdrv1.GameDayRun{}
	f.Read(func(st *pgdrv1.State) {
		for name, cl := range st.GetClusters() {
			if cluster != "" && name != cluster {
				continue
			}
			for _, r := range cl.GetGameDayRuns() {
				out[name] = append(out[name], proto.Clone(r).(*pgdrv1.GameDayRun))
			}
		}
	})
	return out
}
