package incident

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Category says which condition an incident is about.
type Category string

// The categories the leader opens incidents for; Manual is an operator's.
const (
	Failover        Category = "failover"
	FailoverRefused Category = "failover_refused"
	Fencing         Category = "fencing"
	QuorumLost      Category = "quorum_lost"
	BackupFailed    Category = "backup_failed"
	DrillFailed     Category = "drill_failed"
	TargetBreach    Category = "target_breach"
	CopyLag         Category = "copy_lag"
	Manual          Category = "manual"
)

// Categories lists every valid category in a fixed order.
var categories = []Category{Failover, FailoverRefused, Fencing, QuorumLost, BackupFailed, DrillFailed, TargetBreach, CopyLag, Manual}

// Valid reports whether c is one of the known categories.
func (c Category) Valid() bool {
	for _, k := range categories {
		if c == k {
			return true
		}
	}
	return false
}

// Severity says how bad the condition is; Priority is derived from it.
type Severity string

// The severities, most severe first.
const (
	Critical Severity = "critical"
	High     Severity = "high"
	Medium   Severity = "medium"
	Low      Severity = "low"
)

// rank orders severities: 1 is the most severe, 0 is not a severity.
func (s Severity) rank() int {
	switch s {
	case Critical:
		return 1
	case High:
		return 2
	case Medium:
		return 3
	case Low:
		return 4
	}
	return 0
}

// Valid reports whether s is one of the four severities.
func (s Severity) Valid() bool { return s.rank() != 0 }

// Priority is P1 (critical) to P4 (low), the label paging tools expect.
type Priority string

// PriorityOf maps a severity to its priority: critical P1, high P2, medium
// P3, low P4; an unknown severity has no priority ("").
func PriorityOf(s Severity) Priority {
	if r := s.rank(); r != 0 {
		return Priority("P" + strconv.Itoa(r))
	}
	return ""
}

// Status is where an incident is in its life: open → acknowledged → resolved.
type Status string

// The statuses.
const (
	Open         Status = "open"
	Acknowledged Status = "acknowledged"
	Resolved     Status = "resolved"
)

// Kinds of timeline entries.
const (
	KindOpened       = "opened"
	KindRepeated     = "repeated"
	KindRecurred     = "recurred"
	KindSeverity     = "severity_raised"
	KindCleared      = "cleared"
	KindAcknowledged = "acknowledged"
	KindResolved     = "resolved"
	KindAutoResolved = "auto_resolved"
	KindEscalated    = "escalated"
	KindNote         = "note"
)

// Entry is one event on an incident's timeline.
type Entry struct {
	Time    time.Time
	Actor   string
	Kind    string
	Message string
}

// Note is an operator's note (given with ack, resolve or on its own).
type Note struct {
	Time  time.Time
	Actor string
	Text  string
}

// Incident is one record that follows a condition to its end.
type Incident struct {
	// ID is "INC-<Seq>"; Seq is the sequence the caller passed when the
	// incident was opened (the Raft index), unique in the state.
	ID       string
	Seq      uint64
	DedupKey string
	Title    string
	Cluster  string
	Category Category
	Severity Severity
	Status   Status

	// ConditionCleared is set when the condition went away (ClearedAt) and
	// reset when it comes back before the incident is resolved.
	ConditionCleared bool
	ClearedAt        time.Time

	// Occurrences counts the signals folded into the incident (1 at open).
	Occurrences uint64
	LastSeen    time.Time

	Timeline []Entry
	// TimelineDropped counts the entries Compact removed from the middle.
	TimelineDropped uint64
	Notes           []Note

	// EscalationLevel is the index of the level last notified (0 at open).
	EscalationLevel int
	LastEscalated   time.Time

	Opened   time.Time
	Acked    time.Time
	Resolved time.Time

	// NotifiedLevels and NotifiedStatus are the leader's outbox (Due):
	// how many escalation levels were notified, and the status they were
	// last told.
	NotifiedLevels int
	NotifiedStatus Status
}

// Priority is derived from the severity, never stored.
func (in Incident) Priority() Priority { return PriorityOf(in.Severity) }

// Active reports whether the incident is not resolved yet.
func (in Incident) Active() bool { return in.Status != Resolved }

// State is every incident the coordinators know, in the order they were
// opened (ascending Seq).
type State struct {
	Incidents []Incident
	// LastSeq is the highest Seq ever opened; a new incident needs a
	// greater one, so an id is never given twice, even after Compact.
	LastSeq uint64
}

// Clone returns a deep copy, so decisions never alias the caller's state.
func (s State) Clone() State {
	out := State{Incidents: make([]Incident, len(s.Incidents)), LastSeq: s.LastSeq}
	for i, in := range s.Incidents {
		in.Timeline = append([]Entry(nil), in.Timeline...)
		in.Notes = append([]Note(nil), in.Notes...)
		out.Incidents[i] = in
	}
	return out
}

// Find returns the index of the incident with the given id, or -1.
func (s State) Find(id string) int {
	for i := range s.Incidents {
		if s.Incidents[i].ID == id {
			return i
		}
	}
	return -1
}

// ActiveByKey returns the index of the open or acknowledged incident with
// the dedup key, or -1.
func (s State) ActiveByKey(key string) int {
	for i := range s.Incidents {
		if s.Incidents[i].DedupKey == key && s.Incidents[i].Active() {
			return i
		}
	}
	return -1
}

// IDFor is the id of the incident opened at sequence seq.
func IDFor(seq uint64) string { return "INC-" + strconv.FormatUint(seq, 10) }

// Errors the decisions return, wrapped with the incident or field at fault.
var (
	ErrNotFound    = errors.New("incident not found")
	ErrTransition  = errors.New("invalid incident transition")
	ErrInvalid     = errors.New("invalid incident input")
	ErrTooManyOpen = errors.New("too many open incidents")
)

// Limits bound the inputs and the state.
type Limits struct {
	MaxTitle    int // characters of a title
	MaxMessage  int // characters of a timeline message or note
	MaxKey      int // characters of a dedup key, cluster or actor
	MaxOpen     int // open or acknowledged incidents per cluster
	MaxTimeline int // timeline entries per incident (>= 2): first + newest kept
	MaxNotes    int // notes per incident; more are refused
	// RepeatWindow: a repeat whose message is already on the timeline
	// within this window adds no entry.
	RepeatWindow time.Duration
	// MaxResolved and MaxResolvedAge bound the resolved incidents Compact
	// keeps: at most MaxResolved, none resolved longer ago than the age.
	MaxResolved    int
	MaxResolvedAge time.Duration
}

// DefaultLimits are the limits the coordinator uses unless configured.
func DefaultLimits() Limits {
	return Limits{
		MaxTitle:       200,
		MaxMessage:     1000,
		MaxKey:         200,
		MaxOpen:        100,
		MaxTimeline:    50,
		MaxNotes:       100,
		RepeatWindow:   time.Hour,
		MaxResolved:    500,
		MaxResolvedAge: 30 * 24 * time.Hour,
	}
}

// Validate refuses limits that would not bound anything.
func (l Limits) Validate() error {
	for _, f := range []struct {
		name string
		v    int
		min  int
	}{{"max_title", l.MaxTitle, 1}, {"max_message", l.MaxMessage, 1}, {"max_key", l.MaxKey, 1},
		{"max_open", l.MaxOpen, 1}, {"max_timeline", l.MaxTimeline, 2}, {"max_notes", l.MaxNotes, 1}, {"max_resolved", l.MaxResolved, 0}} {
		if f.v < f.min {
			return fmt.Errorf("%w: limits %s is %d, must be at least %d", ErrInvalid, f.name, f.v, f.min)
		}
	}
	if l.RepeatWindow < 0 {
		return fmt.Errorf("%w: limits repeat_window is negative (%s)", ErrInvalid, l.RepeatWindow)
	}
	if l.MaxResolvedAge <= 0 {
		return fmt.Errorf("%w: limits max_resolved_age must be positive, got %s", ErrInvalid, l.MaxResolvedAge)
	}
	return nil
}

// checkText refuses an empty (when required), too long or control-character
// laden field, naming it.
func checkText(field, v string, max int, required bool) error {
	if v == "" {
		if required {
			return fmt.Errorf("%w: %s is empty", ErrInvalid, field)
		}
		return nil
	}
	if n := len([]rune(v)); n > max {
		return fmt.Errorf("%w: %s is %d characters, at most %d", ErrInvalid, field, n, max)
	}
	for _, r := range v {
		if r < 0x20 && r != '\t' || r == 0x7f {
			return fmt.Errorf("%w: %s contains control character %U", ErrInvalid, field, r)
		}
	}
	return nil
}
