package notify

import (
	"context"
	"net/http"
	"time"
)

// PagerDuty sends PagerDuty Events API v2 events
// (https://developer.pagerduty.com/docs/events-api-v2/trigger-events/):
// trigger, acknowledge and resolve with the incident id as dedup_key.
type PagerDuty struct {
	name       string
	url        string
	routingKey string // secret
}

func (p *PagerDuty) Name() string      { return p.name }
func (p *PagerDuty) Type() string      { return TypePagerDuty }
func (p *PagerDuty) secrets() []string { return []string{p.routingKey} }
func (p *PagerDuty) String() string    { return "pagerduty " + p.name }

// Events API v2 limits.
const (
	pdSummaryMax  = 1024
	pdDedupKeyMax = 255
)

type pdPayload struct {
	Summary       string            `json:"summary"`
	Source        string            `json:"source"`
	Severity      string            `json:"severity"` // critical, error, warning, info
	Timestamp     string            `json:"timestamp,omitempty"`
	Component     string            `json:"component,omitempty"`
	Group         string            `json:"group,omitempty"`
	Class         string            `json:"class,omitempty"`
	CustomDetails map[string]string `json:"custom_details,omitempty"`
}

type pdLink struct {
	Href string `json:"href"`
	Text string `json:"text,omitempty"`
}

type pdEvent struct {
	RoutingKey  string     `json:"routing_key"`
	EventAction string     `json:"event_action"` // trigger, acknowledge, resolve
	DedupKey    string     `json:"dedup_key"`
	Payload     *pdPayload `json:"payload,omitempty"`
	Client      string     `json:"client,omitempty"`
	ClientURL   string     `json:"client_url,omitempty"`
	Links       []pdLink   `json:"links,omitempty"`
}

// pdSeverity maps our severities onto PagerDuty's.
func pdSeverity(s Severity) string {
	switch s {
	case SeverityCritical:
		return "critical"
	case SeverityHigh:
		return "error"
	case SeverityMedium:
		return "warning"
	default:
		return "info"
	}
}

func pdAction(s Status) string {
	switch s {
	case StatusAcknowledged:
		return "acknowledge"
	case StatusResolved:
		return "resolve"
	default:
		return "trigger"
	}
}

func pagerDutyPayload(routingKey string, ev Event) pdEvent {
	e := pdEvent{
		RoutingKey:  routingKey,
		EventAction: pdAction(ev.Status),
		DedupKey:    truncate(ev.IncidentID, pdDedupKeyMax),
	}
	if e.EventAction != "trigger" {
		// acknowledge and resolve need only the dedup_key.
		return e
	}
	source := ev.Source
	if source == "" {
		source = "pgdr"
	}
	details := map[string]string{
		"incident_id": ev.IncidentID,
		"status":      string(ev.Status),
		"severity":    string(ev.Severity),
	}
	if ev.DedupKey != "" {
		details["condition"] = ev.DedupKey
	}
	if ev.Timeline != "" {
		details["timeline"] = ev.Timeline
	}
	e.Payload = &pdPayload{
		Summary:       truncate(ev.Cluster+": "+ev.Title, pdSummaryMax),
		Source:        source,
		Severity:      pdSeverity(ev.Severity),
		Timestamp:     ev.OpenedAt.UTC().Format(time.RFC3339Nano),
		Component:     ev.Cluster,
		Group:         ev.Cluster,
		Class:         ev.Category,
		CustomDetails: details,
	}
	e.Client = "pgdr"
	if ev.Link != "" {
		e.ClientURL = ev.Link
		e.Links = []pdLink{{Href: ev.Link, Text: "pgdr incident " + ev.IncidentID}}
	}
	return e
}

// Request renders ev as an Events API v2 event.
func (p *PagerDuty) Request(ctx context.Context, ev Event) (*http.Request, error) {
	req, _, err := jsonRequest(ctx, p.url, pagerDutyPayload(p.routingKey, ev))
	return req, err
}
