package incident

import (
	"fmt"
	"time"
)

// Signal is one observation of a condition, from the leader or an operator.
type Signal struct {
	// Seq is the sequence the incident gets if this signal opens one (the
	// Raft index of the command carrying it); it must be greater than
	// State.LastSeq when it opens one, and is unused when it folds.
	Seq      uint64
	DedupKey string
	Title    string
	Cluster  string
	Category Category
	Severity Severity
	Actor    string
	Message  string
}

// Result says what Observe did.
type Result struct {
	ID     string
	Opened bool // a new incident was opened
	Added  bool // a timeline entry was added
}

// validate refuses a signal that could not be stored, naming the field.
func (s Signal) validate(lim Limits) error {
	if s.Seq == 0 {
		return fmt.Errorf("%w: signal seq is 0", ErrInvalid)
	}
	for _, f := range []struct {
		name, v  string
		max      int
		required bool
	}{
		{"dedup_key", s.DedupKey, lim.MaxKey, true},
		{"title", s.Title, lim.MaxTitle, true},
		{"cluster", s.Cluster, lim.MaxKey, true},
		{"actor", s.Actor, lim.MaxKey, true},
		{"message", s.Message, lim.MaxMessage, false},
	} {
		if err := checkText("signal "+f.name, f.v, f.max, f.required); err != nil {
			return err
		}
	}
	if !s.Category.Valid() {
		return fmt.Errorf("%w: signal category %q is not one of %v", ErrInvalid, s.Category, categories)
	}
	if !s.Severity.Valid() {
		return fmt.Errorf("%w: signal severity %q is not critical, high, medium or low", ErrInvalid, s.Severity)
	}
	return nil
}

// Observe folds a signal into the active incident with its dedup key, or
// opens a new incident with id IDFor(sig.Seq) (rule 1 of the package doc).
func Observe(st State, sig Signal, lim Limits, now time.Time) (State, Result, error) {
	if err := lim.Validate(); err != nil {
		return st, Result{}, err
	}
	if err := sig.validate(lim); err != nil {
		return st, Result{}, err
	}
	msg := sig.Message
	if msg == "" {
		msg = sig.Title
	}
	if i := st.ActiveByKey(sig.DedupKey); i >= 0 {
		out := st.Clone()
		in := &out.Incidents[i]
		res := Result{ID: in.ID}
		in.Occurrences++
		in.LastSeen = now
		if in.ConditionCleared {
			in.ConditionCleared = false
			in.ClearedAt = time.Time{}
			in.Timeline = append(in.Timeline, Entry{Time: now, Actor: sig.Actor, Kind: KindRecurred, Message: msg})
			res.Added = true
		} else if !seenRecently(in.Timeline, msg, now, lim.RepeatWindow) {
			in.Timeline = append(in.Timeline, Entry{Time: now, Actor: sig.Actor, Kind: KindRepeated, Message: msg})
			res.Added = true
		}
		if sig.Severity.rank() < in.Severity.rank() {
			in.Timeline = append(in.Timeline, Entry{Time: now, Actor: sig.Actor, Kind: KindSeverity,
				Message: fmt.Sprintf("severity %s → %s", in.Severity, sig.Severity)})
			in.Severity = sig.Severity
			res.Added = true
		}
		capTimeline(in, lim.MaxTimeline)
		return out, res, nil
	}
	id := IDFor(sig.Seq)
	if sig.Seq <= st.LastSeq {
		return st, Result{}, fmt.Errorf("%w: signal seq %d would open %s, but seq %d was already used (ids are never reused)",
			ErrInvalid, sig.Seq, id, st.LastSeq)
	}
	open := 0
	for _, in := range st.Incidents {
		if in.Cluster == sig.Cluster && in.Active() {
			open++
		}
	}
	if open >= lim.MaxOpen {
		return st, Result{}, fmt.Errorf("%w: cluster %s has %d open incidents (limit %d), not opening one for %s",
			ErrTooManyOpen, sig.Cluster, open, lim.MaxOpen, sig.DedupKey)
	}
	out := st.Clone()
	out.Incidents = append(out.Incidents, Incident{
		ID: id, Seq: sig.Seq, DedupKey: sig.DedupKey, Title: sig.Title, Cluster: sig.Cluster,
		Category: sig.Category, Severity: sig.Severity, Status: Open,
		Occurrences: 1, LastSeen: now, Opened: now,
		Timeline: []Entry{{Time: now, Actor: sig.Actor, Kind: KindOpened, Message: msg}},
	})
	out.LastSeq = sig.Seq
	return out, Result{ID: id, Opened: true, Added: true}, nil
}

// seenRecently reports whether msg is on the timeline within window of now.
func seenRecently(tl []Entry, msg string, now time.Time, window time.Duration) bool {
	for j := len(tl) - 1; j >= 0; j-- {
		if tl[j].Message == msg && now.Sub(tl[j].Time) < window {
			return true
		}
	}
	return false
}

// Clear marks the condition of the active incident with the dedup key as
// cleared; the incident stays open (rule 2). It reports whether anything
// changed: no active incident for the key, or one already cleared, is not an
// error.
func Clear(st State, key, actor, message string, lim Limits, now time.Time) (State, bool, error) {
	if err := lim.Validate(); err != nil {
		return st, false, err
	}
	if err := checkText("clear dedup_key", key, lim.MaxKey, true); err != nil {
		return st, false, err
	}
	if err := checkText("clear actor", actor, lim.MaxKey, true); err != nil {
		return st, false, err
	}
	if err := checkText("clear message", message, lim.MaxMessage, false); err != nil {
		return st, false, err
	}
	i := st.ActiveByKey(key)
	if i < 0 || st.Incidents[i].ConditionCleared {
		return st, false, nil
	}
	if message == "" {
		message = "condition cleared"
	}
	out := st.Clone()
	in := &out.Incidents[i]
	in.ConditionCleared = true
	in.ClearedAt = now
	in.Timeline = append(in.Timeline, Entry{Time: now, Actor: actor, Kind: KindCleared, Message: message})
	capTimeline(in, lim.MaxTimeline)
	return out, true, nil
}

// AutoResolvePolicy says which categories resolve by themselves once their
// condition has stayed cleared for Hold. The zero policy resolves nothing.
type AutoResolvePolicy struct {
	Categories []Category
	Hold       time.Duration
}

// AutoResolveActor is the actor recorded on automatic resolutions.
const AutoResolveActor = "auto-resolve"

// AutoResolve resolves the active incidents the policy covers whose
// condition has been cleared for at least the hold time, returning their ids
// in state order.
func AutoResolve(st State, p AutoResolvePolicy, now time.Time) (State, []string, error) {
	if err := p.Validate(); err != nil {
		return st, nil, err
	}
	var ids []string
	var out State
	for i, in := range st.Incidents {
		if !in.Active() || !in.ConditionCleared || now.Sub(in.ClearedAt) < p.Hold || !covers(p.Categories, in.Category) {
			continue
		}
		if ids == nil {
			out = st.Clone()
		}
		o := &out.Incidents[i]
		o.Status = Resolved
		o.Resolved = now
		o.Timeline = append(o.Timeline, Entry{Time: now, Actor: AutoResolveActor, Kind: KindAutoResolved,
			Message: fmt.Sprintf("condition cleared for %s (hold %s)", now.Sub(in.ClearedAt), p.Hold)})
		ids = append(ids, in.ID)
	}
	if ids == nil {
		return st, nil, nil
	}
	return out, ids, nil
}

// Validate refuses a negative hold time or an unknown category.
func (p AutoResolvePolicy) Validate() error {
	if p.Hold < 0 {
		return fmt.Errorf("%w: auto-resolve hold is negative (%s)", ErrInvalid, p.Hold)
	}
	for _, c := range p.Categories {
		if !c.Valid() {
			return fmt.Errorf("%w: auto-resolve category %q is not one of %v", ErrInvalid, c, categories)
		}
	}
	return nil
}

func covers(cs []Category, c Category) bool {
	for _, k := range cs {
		if k == c {
			return true
		}
	}
	return false
}

// Ack acknowledges an open incident, which stops its escalation (rule 3).
// The note is optional.
func Ack(st State, id, actor, note string, lim Limits, now time.Time) (State, error) {
	return transition(st, id, actor, note, false, Acknowledged, lim, now)
}

// Resolve resolves an open or acknowledged incident with a note saying why
// (rule 3).
func Resolve(st State, id, actor, note string, lim Limits, now time.Time) (State, error) {
	return transition(st, id, actor, note, true, Resolved, lim, now)
}

func transition(st State, id, actor, note string, noteRequired bool, to Status, lim Limits, now time.Time) (State, error) {
	i, err := findForNote(st, string(to), id, actor, note, noteRequired, false, lim)
	if err != nil {
		return st, err
	}
	cur := st.Incidents[i].Status
	allowed := cur == Open || (to == Resolved && cur == Acknowledged)
	if !allowed {
		verb := map[Status]string{Acknowledged: "acknowledge", Resolved: "resolve"}[to]
		return st, fmt.Errorf("%w: incident %s is %s, cannot %s it", ErrTransition, id, cur, verb)
	}
	out := st.Clone()
	in := &out.Incidents[i]
	in.Status = to
	kind := KindAcknowledged
	if to == Acknowledged {
		in.Acked = now
	} else {
		in.Resolved = now
		kind = KindResolved
	}
	msg := string(to) + " by " + actor
	if note != "" {
		if len(in.Notes) < lim.MaxNotes { // at the limit the note is on the timeline only
			in.Notes = append(in.Notes, Note{Time: now, Actor: actor, Text: note})
		}
		msg += ": " + note
	}
	in.Timeline = append(in.Timeline, Entry{Time: now, Actor: actor, Kind: kind, Message: msg})
	capTimeline(in, lim.MaxTimeline)
	return out, nil
}

// AddNote adds an operator's note to an incident in any status (a
// post-mortem link on a resolved one, say), also recorded on the timeline.
func AddNote(st State, id, actor, note string, lim Limits, now time.Time) (State, error) {
	i, err := findForNote(st, "note", id, actor, note, true, true, lim)
	if err != nil {
		return st, err
	}
	out := st.Clone()
	in := &out.Incidents[i]
	in.Notes = append(in.Notes, Note{Time: now, Actor: actor, Text: note})
	in.Timeline = append(in.Timeline, Entry{Time: now, Actor: actor, Kind: KindNote, Message: note})
	capTimeline(in, lim.MaxTimeline)
	return out, nil
}

// findForNote checks the limits, the actor and the note of an operator's
// command (what names the command in errors) and finds the incident;
// refuseFull refuses a note beyond Limits.MaxNotes (a note on its own: an
// acknowledgement or resolution at the limit keeps its note on the
// timeline only, so that an incident can always be resolved).
func findForNote(st State, what, id, actor, note string, noteRequired, refuseFull bool, lim Limits) (int, error) {
	if err := lim.Validate(); err != nil {
		return -1, err
	}
	if err := checkText(what+" actor", actor, lim.MaxKey, true); err != nil {
		return -1, err
	}
	if err := checkText(what+" note", note, lim.MaxMessage, noteRequired); err != nil {
		return -1, err
	}
	i := st.Find(id)
	if i < 0 {
		return -1, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if refuseFull && len(st.Incidents[i].Notes) >= lim.MaxNotes {
		return -1, fmt.Errorf("%w: incident %s has %d notes (limit max_notes %d)", ErrInvalid, id, len(st.Incidents[i].Notes), lim.MaxNotes)
	}
	return i, nil
}
