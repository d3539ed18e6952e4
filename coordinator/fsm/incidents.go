package fsm

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/incident"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Incidents (incident.proto) are kept in the State as the pure package
// coordinator/incident decides them: an applier converts the State's
// incidents to an incident.State, runs one decision, compacts the result
// (so the replicated state stays bounded after every change) and stores it
// back. The limits are fixed (incident.DefaultLimits): every node must
// decide alike.
//
// Incidents are opened and cleared here, from the commands that record the
// conditions (a failover intent or result, a refused failover, a target
// breach or its end, a backup or drill result), once StartIncidents was
// applied: the same log gives every node the same incidents, a leader
// change cannot lose or repeat one, and no second command is needed.
// Conditions the leader sees in no command (a fenced node, a lost quorum)
// and the operators' actions come as IncidentCommand.

// Event kinds the incidents are derived from (coordinator/server records
// them; compliance owns the target kinds).
const (
	evFailoverIntent  = "failover-intent"
	evFailoverResult  = "failover-result"
	evFailoverRefused = "failover-refused"
	evTargetBreached  = "target-breached"
	evTargetRestored  = "target-restored"
	// Details of the target events (compliance.DetailTarget/DetailSubject).
	detailTarget  = "target"
	detailSubject = "subject"
)

// QuorumCluster is the cluster name of lost-quorum incidents: they are
// about the coordinators, not one cluster.
const QuorumCluster = "coordinators"

func incidentsOn(st *pgdrv1.State) bool { return st.GetIncidentsSinceIndex() != 0 }

// applyIncident applies one IncidentCommand. Start is applied once; every
// other operation is refused while incidents are not started (the leader
// starts them only once every voter knows the command).
func applyIncident(st *pgdrv1.State, c *pgdrv1.Command, p *pgdrv1.IncidentCommand, index uint64) error {
	if _, ok := p.GetOp().(*pgdrv1.IncidentCommand_Start); ok {
		if st.GetIncidentsSinceIndex() == 0 {
			st.IncidentsSinceIndex = index
		}
		return nil
	}
	if !incidentsOn(st) {
		return errors.New("incident: incidents are not started yet (a rolling upgrade in progress?)")
	}
	now, actor := cmdTime(c).AsTime(), c.GetActor()
	lim := incident.DefaultLimits()
	var next incident.State
	var err error
	switch op := p.GetOp().(type) {
	case *pgdrv1.IncidentCommand_Observe:
		o := op.Observe
		if o.GetCategory() != string(incident.Manual) && o.GetCluster() != QuorumCluster {
			if _, ok := st.GetClusters()[o.GetCluster()]; !ok {
				return fmt.Errorf("incident: cluster %q not found", o.GetCluster())
			}
		}
		sig := incident.Signal{Seq: index, DedupKey: o.GetDedupKey(), Title: o.GetTitle(), Cluster: o.GetCluster(),
			Category: incident.Category(o.GetCategory()), Severity: incident.Severity(o.GetSeverity()), Actor: actor, Message: o.GetMessage()}
		cur := incidentsFor(st, observed(sig))
		if err := manualRoom(cur, sig, lim); err != nil {
			return err
		}
		next, _, err = incident.Observe(cur, sig, lim, now)
		if err == nil && o.GetClearNow() {
			next, _, err = incident.Clear(next, o.GetDedupKey(), actor, "condition over: "+clip(o.GetMessage(), 200), lim, now)
		}
	case *pgdrv1.IncidentCommand_Clear:
		next, _, err = incident.Clear(incidentsFor(st, activeKey(op.Clear.GetDedupKey())), op.Clear.GetDedupKey(), actor, op.Clear.GetMessage(), lim, now)
	case *pgdrv1.IncidentCommand_Ack:
		next, err = incident.Ack(incidentsFor(st, withID(op.Ack.GetId())), op.Ack.GetId(), actor, op.Ack.GetNote(), lim, now)
	case *pgdrv1.IncidentCommand_Resolve:
		next, err = incident.Resolve(incidentsFor(st, withID(op.Resolve.GetId())), op.Resolve.GetId(), actor, op.Resolve.GetNote(), lim, now)
	case *pgdrv1.IncidentCommand_Note:
		next, err = incident.AddNote(incidentsFor(st, withID(op.Note.GetId())), op.Note.GetId(), actor, op.Note.GetNote(), lim, now)
	case *pgdrv1.IncidentCommand_Escalate:
		next, err = escalateTo(incidentsFor(st, withID(op.Escalate.GetId())), op.Escalate, actor, lim, now)
	case *pgdrv1.IncidentCommand_Notified:
		next, err = recordNotified(incidentsFor(st, withID(op.Notified.GetId())), op.Notified, actor, lim, now)
	default:
		return errors.New("incident: no operation")
	}
	if err != nil {
		return fmt.Errorf("incident: %w", err)
	}
	return storeIncidents(st, next, lim, now)
}

// manualRoom refuses a manual incident beyond half the open incidents a
// cluster may have (Limits.MaxOpen): the conditions the coordinators see
// (a failover, a fencing) must always find room for theirs.
func manualRoom(cur incident.State, sig incident.Signal, lim incident.Limits) error {
	if sig.Category != incident.Manual || cur.ActiveByKey(sig.DedupKey) >= 0 {
		return nil
	}
	n := 0
	for _, in := range cur.Incidents {
		if in.Cluster == sig.Cluster && in.Category == incident.Manual && in.Active() {
			n++
		}
	}
	if n >= lim.MaxOpen/2 {
		return fmt.Errorf("incident: cluster %s has %d open manual incidents (at most %d, half of max_open: the rest is kept for the conditions the coordinators see); resolve some first",
			clip(sig.Cluster, 64), n, lim.MaxOpen/2)
	}
	return nil
}

// escalateTo moves an incident still open at level e.from to e.to; a
// repeated proposal (a new leader) finds it moved and changes nothing.
func escalateTo(cur incident.State, e *pgdrv1.IncidentEscalate, actor string, lim incident.Limits, now time.Time) (incident.State, error) {
	i := cur.Find(e.GetId())
	if i < 0 {
		return cur, fmt.Errorf("%w: %s", incident.ErrNotFound, clip(e.GetId(), 64))
	}
	if e.GetTo() != e.GetFrom()+1 || e.GetFrom() < 0 {
		return cur, fmt.Errorf("%w: escalate %s from level %d to %d: one level at a time", incident.ErrInvalid, e.GetId(), e.GetFrom(), e.GetTo())
	}
	in := cur.Incidents[i]
	if in.Status != incident.Open || in.EscalationLevel != int(e.GetFrom()) {
		return cur, nil
	}
	out := cur.Clone()
	o := &out.Incidents[i]
	o.EscalationLevel, o.LastEscalated = int(e.GetTo()), now
	o.Timeline = append(o.Timeline, incident.Entry{Time: now, Actor: actor, Kind: incident.KindEscalated, Message: clip(e.GetMessage(), lim.MaxMessage)})
	return out, nil
}

// recordNotified moves an incident's outbox mark forward (never back: a
// slow leader's late record of an older mark changes nothing) and puts the
// deliveries on its timeline, as one entry (cut at max_message).
func recordNotified(cur incident.State, n *pgdrv1.IncidentNotified, actor string, lim incident.Limits, now time.Time) (incident.State, error) {
	i := cur.Find(n.GetId())
	if i < 0 {
		return cur, fmt.Errorf("%w: %s", incident.ErrNotFound, clip(n.GetId(), 64))
	}
	if len(n.GetDeliveries()) > incident.MaxDeliveries {
		return cur, fmt.Errorf("%w: %d deliveries in one record (at most %d)", incident.ErrInvalid, len(n.GetDeliveries()), incident.MaxDeliveries)
	}
	out := cur.Clone()
	o := &out.Incidents[i]
	if int(n.GetNotifiedLevels()) >= o.NotifiedLevels {
		o.NotifiedLevels, o.NotifiedStatus = int(n.GetNotifiedLevels()), incident.Status(clip(n.GetStatus(), 32))
	}
	if len(n.GetDeliveries()) > 0 { // one entry, so that a record cannot push the rest of the timeline out
		o.Timeline = append(o.Timeline, incident.Entry{Time: now, Actor: actor, Kind: "notified",
			Message: clip(flat(strings.Join(n.GetDeliveries(), "; ")), lim.MaxMessage)})
	}
	return out, nil
}

// observeEvent opens, folds or clears the incident a history event just
// recorded is about (once incidents are started). A signal the decisions
// refuse (too many open incidents) is dropped: recording the event must
// not fail for it.
func observeEvent(st *pgdrv1.State, c *pgdrv1.Command, ev *pgdrv1.HistoryEvent, index uint64) {
	if !incidentsOn(st) || ev.GetCluster() == "" {
		return
	}
	cl, msg := ev.GetCluster(), ev.GetMessage()
	switch ev.GetKind() {
	case evFailoverIntent:
		observe(st, c, index, cl, incident.Signal{DedupKey: "failover:" + cl, Category: incident.Failover, Severity: incident.Critical,
			Title: fmt.Sprintf("Failover in cluster %s: %s promoted", cl, ev.GetNode()), Message: msg})
	case evFailoverResult:
		if strings.HasPrefix(msg, "done") {
			clearKey(st, c, "failover:"+cl, msg)
			clearKey(st, c, "failover-refused:"+cl, "failover done: "+msg)
		} else {
			observe(st, c, index, cl, incident.Signal{DedupKey: "failover:" + cl, Category: incident.Failover, Severity: incident.Critical,
				Title: fmt.Sprintf("Failover in cluster %s failed", cl), Message: msg})
		}
	case evFailoverRefused:
		observe(st, c, index, cl, incident.Signal{DedupKey: "failover-refused:" + cl, Category: incident.FailoverRefused, Severity: incident.Critical,
			Title: fmt.Sprintf("Failover refused in cluster %s", cl), Message: msg})
	case evTargetBreached, evTargetRestored:
		d := ev.GetDetails()
		key := "target:" + cl + ":" + d[detailTarget] + ":" + d[detailSubject]
		if ev.GetKind() == evTargetRestored {
			clearKey(st, c, key, msg)
			return
		}
		observe(st, c, index, cl, incident.Signal{DedupKey: key, Category: incident.TargetBreach, Severity: incident.High,
			Title: fmt.Sprintf("Recovery target %s breached in cluster %s (%s)", d[detailTarget], cl, d[detailSubject]), Message: msg})
	}
}

// observeRun opens or clears the incident of a backup tier's or a drill's
// result just recorded.
func observeRun(st *pgdrv1.State, c *pgdrv1.Command, index uint64, cluster, what, key, result, errText string) {
	if !incidentsOn(st) {
		return
	}
	switch result {
	case RunOK:
		clearKey(st, c, key, what+" succeeded")
	case RunFailed, RunTimeout:
		cat := incident.BackupFailed
		if strings.HasPrefix(key, "drill:") {
			cat = incident.DrillFailed
		}
		observe(st, c, index, cluster, incident.Signal{DedupKey: key, Category: cat, Severity: incident.High,
			Title: fmt.Sprintf("%s %s in cluster %s", what, result, cluster), Message: what + " " + result + ": " + errText})
	}
}

// observe folds sig, the condition of cluster, into the incidents.
func observe(st *pgdrv1.State, c *pgdrv1.Command, index uint64, cluster string, sig incident.Signal) {
	lim, now := incident.DefaultLimits(), cmdTime(c).AsTime()
	sig.Seq, sig.Actor, sig.Cluster = index, clip(c.GetActor(), lim.MaxKey), clip(cluster, lim.MaxKey)
	sig.DedupKey, sig.Title, sig.Message = clip(flat(sig.DedupKey), lim.MaxKey), clip(flat(sig.Title), lim.MaxTitle), clip(flat(sig.Message), lim.MaxMessage)
	next, _, err := incident.Observe(incidentsFor(st, observed(sig)), sig, lim, now)
	if err != nil {
		return
	}
	_ = storeIncidents(st, next, lim, now)
}

// flat makes text recorded elsewhere (an agent's multi-line error, say)
// fit an incident, which refuses control characters: each run of them
// becomes one space.
func flat(s string) string {
	var b strings.Builder
	ctl := false
	for _, r := range s {
		if r < 0x20 && r != '\t' || r == 0x7f {
			if !ctl {
				b.WriteByte(' ')
			}
			ctl = true
			continue
		}
		ctl = false
		b.WriteRune(r)
	}
	return b.String()
}

// clearKey marks the condition of the active incident with key cleared.
func clearKey(st *pgdrv1.State, c *pgdrv1.Command, key, msg string) {
	lim, now := incident.DefaultLimits(), cmdTime(c).AsTime()
	key = clip(flat(key), lim.MaxKey) // as observe stored it
	cur := incidentsFor(st, activeKey(key))
	if len(cur.Incidents) == 0 {
		return
	}
	next, changed, err := incident.Clear(cur, clip(key, lim.MaxKey), clip(c.GetActor(), lim.MaxKey), clip(flat(msg), lim.MaxMessage), lim, now)
	if err != nil || !changed {
		return
	}
	_ = storeIncidents(st, next, lim, now)
}

// A decision is given only the incidents it can read or change (those a
// pick selects) with the State's LastSeq, and storeIncidents merges what
// it returns back: converting every kept incident on each backup result,
// refusal or delivery record would cost milliseconds per thousand
// incidents under the FSM's lock.

// observed picks what Observe reads for sig: the active incident with its
// dedup key, and the active incidents of its cluster (counted against
// Limits.MaxOpen).
func observed(sig incident.Signal) func(*pgdrv1.Incident) bool {
	return func(p *pgdrv1.Incident) bool {
		return p.GetStatus() != string(incident.Resolved) && (p.GetDedupKey() == sig.DedupKey || p.GetCluster() == sig.Cluster)
	}
}

// activeKey picks the active incident with the dedup key.
func activeKey(key string) func(*pgdrv1.Incident) bool {
	return func(p *pgdrv1.Incident) bool {
		return p.GetStatus() != string(incident.Resolved) && p.GetDedupKey() == key
	}
}

// withID picks the incident with the id.
func withID(id string) func(*pgdrv1.Incident) bool {
	return func(p *pgdrv1.Incident) bool { return p.GetId() == id }
}

// incidentsFor is the part of the State's incidents pick selects, as the
// pure package holds them.
func incidentsFor(st *pgdrv1.State, pick func(*pgdrv1.Incident) bool) incident.State {
	out := incident.State{LastSeq: st.GetIncidentLastSeq()}
	for _, p := range st.GetIncidents() {
		if pick(p) {
			out.Incidents = append(out.Incidents, IncidentFromProto(p))
		}
	}
	return out
}

// storeIncidents merges next, a decision's result on a part of the
// incidents (incidentsFor), into st: each incident replaces the one with
// its id, or is appended (opened now: its seq is the highest). It then
// compacts as incident.Compact does the whole state: the changed
// incidents' timelines are capped (the others were when they changed) and
// the resolved incidents beyond the limits are dropped.
func storeIncidents(st *pgdrv1.State, next incident.State, lim incident.Limits, now time.Time) error {
	capOnly := lim
	capOnly.MaxResolved, capOnly.MaxResolvedAge = len(next.Incidents), time.Duration(math.MaxInt64)
	next, _, err := incident.Compact(next, capOnly, now)
	if err != nil {
		return fmt.Errorf("incident: %w", err)
	}
	changed := make(map[string]*pgdrv1.Incident, len(next.Incidents))
	for _, in := range next.Incidents {
		changed[in.ID] = IncidentToProto(in)
	}
	var resolved incident.State // only what Compact reads to drop resolved incidents
	for _, p := range st.GetIncidents() {
		if _, ok := changed[p.GetId()]; !ok && p.GetStatus() == string(incident.Resolved) {
			resolved.Incidents = append(resolved.Incidents, incident.Incident{ID: p.GetId(), Seq: p.GetSeq(), Status: incident.Resolved, Resolved: timeOf(p.GetResolved())})
		}
	}
	for _, in := range next.Incidents {
		if !in.Active() {
			resolved.Incidents = append(resolved.Incidents, incident.Incident{ID: in.ID, Seq: in.Seq, Status: in.Status, Resolved: in.Resolved})
		}
	}
	_, dropped, err := incident.Compact(resolved, lim, now)
	if err != nil {
		return fmt.Errorf("incident: %w", err)
	}
	drop := make(map[string]bool, len(dropped.Dropped))
	for _, id := range dropped.Dropped {
		drop[id] = true
	}
	kept := make([]*pgdrv1.Incident, 0, len(st.GetIncidents())+1)
	for _, p := range st.GetIncidents() {
		if drop[p.GetId()] {
			continue
		}
		if q, ok := changed[p.GetId()]; ok {
			p = q
			delete(changed, p.GetId())
		}
		kept = append(kept, p)
	}
	for _, in := range next.Incidents { // opened now, in seq order
		if q, ok := changed[in.ID]; ok && !drop[in.ID] {
			kept = append(kept, q)
		}
	}
	st.Incidents = kept
	st.IncidentLastSeq = next.LastSeq
	return nil
}

// incidentsOf is the State's incidents as the pure package holds them.
func incidentsOf(st *pgdrv1.State) incident.State {
	return incidentsFor(st, func(*pgdrv1.Incident) bool { return true })
}

// IncidentFromProto converts a stored incident to the pure package's form.
func IncidentFromProto(p *pgdrv1.Incident) incident.Incident {
	return incidentFromProto(p, len(p.GetTimeline()), true)
}

// incidentFromProto converts p with only the newest tail entries of its
// timeline, and its notes when notes is set.
func incidentFromProto(p *pgdrv1.Incident, tail int, notes bool) incident.Incident {
	in := incident.Incident{
		ID: p.GetId(), Seq: p.GetSeq(), DedupKey: p.GetDedupKey(), Title: p.GetTitle(), Cluster: p.GetCluster(),
		Category: incident.Category(p.GetCategory()), Severity: incident.Severity(p.GetSeverity()), Status: incident.Status(p.GetStatus()),
		ConditionCleared: p.GetConditionCleared(), ClearedAt: timeOf(p.GetClearedAt()),
		Occurrences: p.GetOccurrences(), LastSeen: timeOf(p.GetLastSeen()), TimelineDropped: p.GetTimelineDropped(),
		EscalationLevel: int(p.GetEscalationLevel()), LastEscalated: timeOf(p.GetLastEscalated()),
		Opened: timeOf(p.GetOpened()), Acked: timeOf(p.GetAcked()), Resolved: timeOf(p.GetResolved()),
		NotifiedLevels: int(p.GetNotifiedLevels()), NotifiedStatus: incident.Status(p.GetNotifiedStatus()),
	}
	tl := p.GetTimeline()
	tl = tl[len(tl)-min(max(tail, 0), len(tl)):]
	if len(tl) > 0 {
		in.Timeline = make([]incident.Entry, len(tl))
	}
	for i, e := range tl {
		in.Timeline[i] = incident.Entry{Time: timeOf(e.GetTime()), Actor: e.GetActor(), Kind: e.GetKind(), Message: e.GetMessage()}
	}
	if !notes || len(p.GetNotes()) == 0 {
		return in
	}
	in.Notes = make([]incident.Note, len(p.GetNotes()))
	for i, n := range p.GetNotes() {
		in.Notes[i] = incident.Note{Time: timeOf(n.GetTime()), Actor: n.GetActor(), Text: n.GetText()}
	}
	return in
}

// IncidentToProto converts an incident to its stored form.
func IncidentToProto(in incident.Incident) *pgdrv1.Incident {
	p := &pgdrv1.Incident{
		Id: in.ID, Seq: in.Seq, DedupKey: in.DedupKey, Title: in.Title, Cluster: in.Cluster,
		Category: string(in.Category), Severity: string(in.Severity), Status: string(in.Status),
		ConditionCleared: in.ConditionCleared, ClearedAt: tsOf(in.ClearedAt),
		Occurrences: in.Occurrences, LastSeen: tsOf(in.LastSeen), TimelineDropped: in.TimelineDropped,
		EscalationLevel: int32(in.EscalationLevel), LastEscalated: tsOf(in.LastEscalated),
		Opened: tsOf(in.Opened), Acked: tsOf(in.Acked), Resolved: tsOf(in.Resolved),
		NotifiedLevels: uint32(max(in.NotifiedLevels, 0)), NotifiedStatus: string(in.NotifiedStatus),
	}
	for _, e := range in.Timeline {
		p.Timeline = append(p.Timeline, &pgdrv1.IncidentEntry{Time: tsOf(e.Time), Actor: e.Actor, Kind: e.Kind, Message: e.Message})
	}
	for _, n := range in.Notes {
		p.Notes = append(p.Notes, &pgdrv1.IncidentNote{Time: tsOf(n.Time), Actor: n.Actor, Text: n.Text})
	}
	return p
}

func timeOf(t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.AsTime()
}

func tsOf(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// Incidents returns copies of the incidents kept, oldest first: with id,
// that one only; else those of cluster ("" = every cluster), the resolved
// ones only when all is set.
func (f *FSM) Incidents(cluster string, all bool, id string) []*pgdrv1.Incident {
	var out []*pgdrv1.Incident
	f.Read(func(st *pgdrv1.State) {
		for _, in := range st.GetIncidents() {
			switch {
			case id != "":
				if in.GetId() != id {
					continue
				}
			case cluster != "" && in.GetCluster() != cluster,
				!all && in.GetStatus() == string(incident.Resolved):
				continue
			}
			out = append(out, proto.Clone(in).(*pgdrv1.Incident))
		}
	})
	return out
}

// IncidentState returns the incidents as the pure package holds them (a
// copy).
func (f *FSM) IncidentState() incident.State {
	var out incident.State
	f.Read(func(st *pgdrv1.State) { out = incidentsOf(st) })
	return out
}

// IncidentStateTail is IncidentState with at most the newest tail
// timeline entries of each incident and no notes: what the leader reads
// every round (escalation, auto-resolution, the outbox and the text of a
// notification) without copying every timeline.
func (f *FSM) IncidentStateTail(tail int) incident.State {
	var out incident.State
	f.Read(func(st *pgdrv1.State) {
		out = incident.State{LastSeq: st.GetIncidentLastSeq(), Incidents: make([]incident.Incident, len(st.GetIncidents()))}
		for i, p := range st.GetIncidents() {
			out.Incidents[i] = incidentFromProto(p, tail, false)
		}
	})
	return out
}

// IncidentsStarted reports whether incidents are derived (StartIncidents
// was applied).
func (f *FSM) IncidentsStarted() bool {
	var on bool
	f.Read(func(st *pgdrv1.State) { on = incidentsOn(st) })
	return on
}
