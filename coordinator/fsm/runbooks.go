package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/pgdr/pgdr/coordinator/incident"
	"github.com/pgdr/pgdr/coordinator/runbook"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Bounds of the runbooks and their runs, which sit in every snapshot.
const (
	// MaxRunbooks is how many runbooks operators may apply.
	MaxRunbooks = 50
	// MaxRunbookYAML bounds a runbook's text.
	MaxRunbookYAML = 64 << 10
	// MaxRunbookRuns is how many runs a cluster keeps: the oldest ended
	// ones go first, never the one in flight.
	MaxRunbookRuns = 20
)

// History kind of every runbook record.
const kindRunbook = "runbook"

// applyRunbook applies one RunbookCommand. Runbooks come with incidents
// (feature level 4): refused until StartIncidents was applied. The run's
// transitions are coordinator/runbook's pure functions on the RunState
// kept as JSON; a transition they call stale is refused and changes
// nothing.
func applyRunbook(st *pgdrv1.State, c *pgdrv1.Command, p *pgdrv1.RunbookCommand, index uint64) error {
	if !incidentsOn(st) {
		return errors.New("runbook: runbooks are not started yet (a rolling upgrade in progress?)")
	}
	switch op := p.GetOp().(type) {
	case *pgdrv1.RunbookCommand_Put:
		return putRunbook(st, c, op.Put.GetYaml(), index)
	case *pgdrv1.RunbookCommand_Delete:
		i := slices.IndexFunc(st.GetRunbooks(), func(d *pgdrv1.RunbookDef) bool { return d.GetName() == op.Delete.GetName() })
		if i < 0 {
			return fmt.Errorf("runbook %q: not found", clip(op.Delete.GetName(), 64))
		}
		st.Runbooks = slices.Delete(st.Runbooks, i, i+1)
		addEvent(st, c, index, &pgdrv1.HistoryEvent{Kind: kindRunbook, Message: "runbook " + op.Delete.GetName() + " deleted"})
		return nil
	case *pgdrv1.RunbookCommand_Start:
		return startRun(st, c, op.Start, index)
	case *pgdrv1.RunbookCommand_Decide:
		var d runbook.Decision
		if err := json.Unmarshal(op.Decide.GetDecisionJson(), &d); err != nil {
			return fmt.Errorf("runbook run %s: decision: %w", clip(op.Decide.GetRunId(), 64), err)
		}
		if d.Kind == runbook.KindWait || d.Kind == runbook.KindEnded || d.Kind == "" {
			return fmt.Errorf("runbook run %s: decision %q records nothing", clip(op.Decide.GetRunId(), 64), clip(string(d.Kind), 32))
		}
		return transition(st, c, index, op.Decide.GetRunId(), func(_ runbook.Runbook, rs runbook.RunState) (runbook.RunState, string, error) {
			out, err := runbook.Apply(rs, d, cmdTime(c).AsTime())
			return out, describeDecision(d), err
		})
	case *pgdrv1.RunbookCommand_Record:
		r := op.Record
		var o runbook.Outcome
		if err := json.Unmarshal(r.GetOutcomeJson(), &o); err != nil {
			return fmt.Errorf("runbook run %s: outcome: %w", clip(r.GetRunId(), 64), err)
		}
		return transition(st, c, index, r.GetRunId(), func(rb runbook.Runbook, rs runbook.RunState) (runbook.RunState, string, error) {
			out, err := runbook.Record(rb, rs, r.GetStep(), r.GetRollback(), o, cmdTime(c).AsTime())
			verdict := "failed"
			if o.OK {
				verdict = "succeeded"
			}
			return out, fmt.Sprintf("step %s%s %s: %s", r.GetStep(), rollbackWord(r.GetRollback()), verdict, o.Message), err
		})
	case *pgdrv1.RunbookCommand_GameDayStart:
		return startGameDay(st, c, op.GameDayStart, index)
	case *pgdrv1.RunbookCommand_GameDayMeasured:
		return measureGameDay(st, c, op.GameDayMeasured, index)
	case *pgdrv1.RunbookCommand_GameDayEnd:
		return endGameDay(st, c, op.GameDayEnd, index)
	case *pgdrv1.RunbookCommand_Ref:
		r := op.Ref
		return transition(st, c, index, r.GetRunId(), func(_ runbook.Runbook, rs runbook.RunState) (runbook.RunState, string, error) {
			out, err := runbook.WithRef(rs, r.GetStep(), r.GetRollback(), r.GetRef())
			return out, fmt.Sprintf("step %s%s started %s", r.GetStep(), rollbackWord(r.GetRollback()), r.GetRef()), err
		})
	}
	return errors.New("runbook: no operation")
}

func rollbackWord(rollback bool) string {
	if rollback {
		return " (rollback)"
	}
	return ""
}

func describeDecision(d runbook.Decision) string {
	s := string(d.Kind)
	if d.Step != "" {
		s += " " + d.Step + rollbackWord(d.Rollback)
	}
	if d.Target != "" {
		s += " → " + d.Target
	}
	return s + ": " + d.Reason
}

func putRunbook(st *pgdrv1.State, c *pgdrv1.Command, text string, index uint64) error {
	if len(text) > MaxRunbookYAML {
		return fmt.Errorf("runbook: %d bytes of YAML, at most %d", len(text), MaxRunbookYAML)
	}
	rb, err := runbook.Parse([]byte(text))
	if err != nil {
		return err
	}
	// Whether rb.Name is a shipped runbook's is not asked here: it depends
	// on the binary, and voters of two versions must apply a put alike.
	// The leader's API refuses a shipped name; an applied runbook of that
	// name wins over the shipped one wherever it is read (RunbookText).
	def := &pgdrv1.RunbookDef{Name: rb.Name, Yaml: text, Updated: cmdTime(c), UpdatedBy: clip(c.GetActor(), 200), Description: rb.Description}
	i := slices.IndexFunc(st.GetRunbooks(), func(d *pgdrv1.RunbookDef) bool { return d.GetName() == rb.Name })
	switch {
	case i >= 0:
		st.Runbooks[i] = def
	case len(st.GetRunbooks()) >= MaxRunbooks:
		return fmt.Errorf("runbook %s: %d runbooks are stored, at most %d (delete one first)", rb.Name, len(st.GetRunbooks()), MaxRunbooks)
	default:
		st.Runbooks = append(st.Runbooks, def)
	}
	addEvent(st, c, index, &pgdrv1.HistoryEvent{Kind: kindRunbook, Message: fmt.Sprintf("runbook %s applied (%d steps)", rb.Name, len(rb.Steps))})
	return nil
}

// RunbookText is the YAML of runbook name: an applied one, else a shipped
// one.
func RunbookText(st *pgdrv1.State, name string) (string, bool) {
	for _, d := range st.GetRunbooks() {
		if d.GetName() == name {
			return d.GetYaml(), true
		}
	}
	b, ok := runbook.BuiltinText(name)
	return string(b), ok
}

// RunbookRunID is the id of the run started at index.
func RunbookRunID(index uint64) string { return fmt.Sprintf("RB-%d", index) }

func startRun(st *pgdrv1.State, c *pgdrv1.Command, s *pgdrv1.RunbookStart, index uint64) error {
	cl, err := findCluster(st, s.GetCluster())
	if err != nil {
		return fmt.Errorf("runbook: %w", err)
	}
	for _, r := range st.GetRunbookRuns() {
		if r.GetCluster() == cl.GetName() && runEnded(r) == "" {
			return fmt.Errorf("runbook: cluster %s already runs %s (run %s): one runbook per cluster at a time", cl.GetName(), r.GetRunbook(), r.GetId())
		}
	}
	// The text comes with the command, never from this binary's shipped
	// runbooks (voters of another version ship others): an applied
	// runbook's must still be the stored one; otherwise it is the shipped
	// one the proposing leader read.
	text := s.GetYaml()
	if text == "" {
		return fmt.Errorf("runbook %q: the start carries no runbook text", clip(s.GetRunbook(), 64))
	}
	if i := slices.IndexFunc(st.GetRunbooks(), func(d *pgdrv1.RunbookDef) bool { return d.GetName() == s.GetRunbook() }); i >= 0 && st.Runbooks[i].GetYaml() != text {
		return fmt.Errorf("runbook %s: changed since the run was checked (applied again meanwhile): run it again", clip(s.GetRunbook(), 64))
	}
	rb, err := runbook.Parse([]byte(text))
	if err != nil {
		return fmt.Errorf("runbook %s: %w", clip(s.GetRunbook(), 64), err)
	}
	if rb.Name != s.GetRunbook() {
		return fmt.Errorf("runbook %q: the text carried is runbook %s", clip(s.GetRunbook(), 64), rb.Name)
	}
	if id := s.GetIncident(); id != "" {
		if i := incidentsOf(st).Find(id); i < 0 {
			return fmt.Errorf("runbook: incident %q: not found", clip(id, 64))
		}
	}
	var gd *pgdrv1.GameDayRun
	if s.GetGameDay() != "" {
		if gd, err = checkGameDayRun(st, s); err != nil {
			return fmt.Errorf("runbook: %w", err)
		}
	}
	id := RunbookRunID(index)
	rs, err := runbook.NewRun(rb, id, s.GetParams(), cmdTime(c).AsTime())
	if err != nil {
		return fmt.Errorf("runbook %s: %w", rb.Name, err)
	}
	data, err := json.Marshal(rs)
	if err != nil {
		return fmt.Errorf("runbook %s: %w", rb.Name, err)
	}
	st.RunbookRuns = append(st.RunbookRuns, &pgdrv1.RunbookRun{Id: id, Cluster: cl.GetName(), Runbook: rb.Name, Yaml: text,
		Incident: s.GetIncident(), StateJson: data, RequestedBy: clip(c.GetActor(), 200)})
	compactRuns(st, cl.GetName())
	msg := fmt.Sprintf("run %s of runbook %s started (%d steps)", id, rb.Name, len(rb.Steps))
	if gd != nil {
		gd.Runs = append(gd.Runs, id)
		msg += fmt.Sprintf(" for game day %s (%s)", gd.GetName(), gd.GetId())
	}
	addEvent(st, c, index, &pgdrv1.HistoryEvent{Cluster: cl.GetName(), Kind: kindRunbook, Message: msg, Details: map[string]string{"run": id}})
	noteIncident(st, c, s.GetIncident(), msg)
	return nil
}

// runEnded is the result of a run ("" while in flight).
func runEnded(r *pgdrv1.RunbookRun) string { return r.GetResult() }

// compactRuns keeps at most MaxRunbookRuns runs of cluster, dropping the
// oldest ended ones.
func compactRuns(st *pgdrv1.State, cluster string) {
	n := 0
	for _, r := range st.GetRunbookRuns() {
		if r.GetCluster() == cluster {
			n++
		}
	}
	for i := 0; n > MaxRunbookRuns && i < len(st.RunbookRuns); {
		r := st.RunbookRuns[i]
		if r.GetCluster() == cluster && runEnded(r) != "" {
			st.RunbookRuns = slices.Delete(st.RunbookRuns, i, i+1)
			n--
			continue
		}
		i++
	}
}

// transition runs one pure transition on run id's state and records it
// in history (and on its incident's timeline).
func transition(st *pgdrv1.State, c *pgdrv1.Command, index uint64, id string,
	fn func(runbook.Runbook, runbook.RunState) (runbook.RunState, string, error)) error {
	i := slices.IndexFunc(st.GetRunbookRuns(), func(r *pgdrv1.RunbookRun) bool { return r.GetId() == id })
	if i < 0 {
		return fmt.Errorf("runbook run %q: not found", clip(id, 64))
	}
	r := st.RunbookRuns[i]
	rb, err := runbook.Parse([]byte(r.GetYaml()))
	if err != nil {
		return fmt.Errorf("runbook run %s: %w", id, err)
	}
	var rs runbook.RunState
	if err := json.Unmarshal(r.GetStateJson(), &rs); err != nil {
		return fmt.Errorf("runbook run %s: state: %w", id, err)
	}
	out, msg, err := fn(rb, rs)
	if err != nil {
		return fmt.Errorf("runbook run %s: %w", id, err)
	}
	data, err := json.Marshal(out)
	if err != nil {
		return fmt.Errorf("runbook run %s: %w", id, err)
	}
	nr := proto.Clone(r).(*pgdrv1.RunbookRun)
	nr.StateJson, nr.Result = data, string(out.Result)
	st.RunbookRuns[i] = nr
	msg = clip(fmt.Sprintf("run %s of %s: %s", id, r.GetRunbook(), msg), 1500)
	addEvent(st, c, index, &pgdrv1.HistoryEvent{Cluster: r.GetCluster(), Kind: kindRunbook, Message: msg, Details: map[string]string{"run": id}})
	noteIncident(st, c, r.GetIncident(), msg)
	return nil
}

// noteIncident puts msg on incident id's timeline (if it is still kept).
func noteIncident(st *pgdrv1.State, c *pgdrv1.Command, id, msg string) {
	if id == "" {
		return
	}
	cur := incidentsOf(st)
	i := cur.Find(id)
	if i < 0 {
		return
	}
	lim, now := incident.DefaultLimits(), cmdTime(c).AsTime()
	cur.Incidents[i].Timeline = append(cur.Incidents[i].Timeline, incident.Entry{Time: now, Actor: clip(c.GetActor(), lim.MaxKey), Kind: kindRunbook, Message: clip(msg, lim.MaxMessage)})
	_ = storeIncidents(st, cur, lim, now)
}

// RunbookRuns returns copies of the runs of cluster ("" = every one), or
// of run id, oldest first.
func (f *FSM) RunbookRuns(cluster, id string) []*pgdrv1.RunbookRun {
	var out []*pgdrv1.RunbookRun
	f.Read(func(st *pgdrv1.State) {
		for _, r := range st.GetRunbookRuns() {
			if (id != "" && r.GetId() != id) || (cluster != "" && r.GetCluster() != cluster) {
				continue
			}
			out = append(out, proto.Clone(r).(*pgdrv1.RunbookRun))
		}
	})
	return out
}

// RunbookRunsInFlight returns copies of the runs in flight of cluster (""
// = every one): the leader's tick copies only those, not every kept run
// with its runbook's text.
func (f *FSM) RunbookRunsInFlight(cluster string) []*pgdrv1.RunbookRun {
	var out []*pgdrv1.RunbookRun
	f.Read(func(st *pgdrv1.State) {
		for _, r := range st.GetRunbookRuns() {
			if (cluster == "" || r.GetCluster() == cluster) && runEnded(r) == "" {
				out = append(out, proto.Clone(r).(*pgdrv1.RunbookRun))
			}
		}
	})
	return out
}

// Runbooks returns copies of the applied runbooks.
func (f *FSM) Runbooks() []*pgdrv1.RunbookDef {
	var out []*pgdrv1.RunbookDef
	f.Read(func(st *pgdrv1.State) {
		for _, d := range st.GetRunbooks() {
			out = append(out, proto.Clone(d).(*pgdrv1.RunbookDef))
		}
	})
	return out
}

// RunState decodes a run's state.
func RunState(r *pgdrv1.RunbookRun) (runbook.RunState, error) {
	var rs runbook.RunState
	err := json.Unmarshal(r.GetStateJson(), &rs)
	return rs, err
}
