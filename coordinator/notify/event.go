package notify

import (
	"errors"
	"fmt"
	"time"
)

// Severity of an incident.
type Severity string

const (
	SeverityCritical Severity = "critical"
	SeverityHigh     Severity = "high"
	SeverityMedium   Severity = "medium"
	SeverityLow      Severity = "low"
)

// Status of an incident.
type Status string

const (
	StatusTriggered    Status = "triggered"
	StatusAcknowledged Status = "acknowledged"
	StatusResolved     Status = "resolved"
)

// Event is what a channel renders: the state of one incident at one moment.
type Event struct {
	IncidentID string   // also PagerDuty's dedup_key
	DedupKey   string   // the condition that opened the incident
	Cluster    string   // pgdr cluster name
	Title      string   // one line
	Category   string   // failover, fencing, quorum, backup, ...
	Severity   Severity // critical, high, medium, low
	Status     Status   // triggered, acknowledged, resolved
	Timeline   string   // short summary of the incident's timeline
	Source     string   // the coordinator that sends it
	OpenedAt   time.Time
	UpdatedAt  time.Time
	ResolvedAt time.Time // zero unless resolved
	Link       string    // where to see the incident; may be empty
	// SendID identifies this notification whoever sends it (a new leader
	// resending what the old one may have sent): the signed webhook's
	// delivery id when set. Level is the escalation level notified.
	SendID string
	Level  int
}

// Validate says which field of the event is wrong, if any.
func (e Event) Validate() error {
	if e.IncidentID == "" {
		return errors.New("event: incident id is empty")
	}
	if e.Title == "" {
		return fmt.Errorf("event %s: title is empty", e.IncidentID)
	}
	switch e.Severity {
	case SeverityCritical, SeverityHigh, SeverityMedium, SeverityLow:
	default:
		return fmt.Errorf("event %s: unknown severity %q (want critical, high, medium or low)", e.IncidentID, e.Severity)
	}
	switch e.Status {
	case StatusTriggered, StatusAcknowledged, StatusResolved:
	default:
		return fmt.Errorf("event %s: unknown status %q (want triggered, acknowledged or resolved)", e.IncidentID, e.Status)
	}
	if e.OpenedAt.IsZero() {
		return fmt.Errorf("event %s: opened time is zero", e.IncidentID)
	}
	return nil
}

// when is the time the event describes.
func (e Event) when() time.Time {
	if e.Status == StatusResolved && !e.ResolvedAt.IsZero() {
		return e.ResolvedAt
	}
	if !e.UpdatedAt.IsZero() {
		return e.UpdatedAt
	}
	return e.OpenedAt
}

// truncate cuts s to at most n runes, marking the cut with an ellipsis.
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	if n <= 1 {
		return string(r[:n])
	}
	return string(r[:n-1]) + "…"
}
