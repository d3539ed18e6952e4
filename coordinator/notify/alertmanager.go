package notify

import (
	"context"
	"net/http"
	"strings"
	"time"
)

// Alertmanager pushes alerts to Alertmanager's v2 API (POST
// /api/v2/alerts, an array of postable alerts). An open incident's alert
// has no endsAt, so Alertmanager resolves it after its resolve_timeout
// unless it is sent again: the caller re-sends while the incident is open.
// A resolved incident's alert carries endsAt.
type Alertmanager struct {
	name          string
	url           string // base URL, e.g. http://am:9093
	bearer        string // secret
	basicUser     string
	basicPassword string // secret
}

func (a *Alertmanager) Name() string      { return a.name }
func (a *Alertmanager) Type() string      { return TypeAlertmanager }
func (a *Alertmanager) String() string    { return "alertmanager " + a.name }
func (a *Alertmanager) secrets() []string { return []string{a.bearer, a.basicPassword} }

// AlertName is the alertname label of every alert pgdr pushes.
const AlertName = "PgdrIncident"

type amAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     string            `json:"startsAt,omitempty"`
	EndsAt       string            `json:"endsAt,omitempty"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

func alertmanagerPayload(ev Event) []amAlert {
	a := amAlert{
		Labels: map[string]string{
			"alertname":   AlertName,
			"cluster":     ev.Cluster,
			"severity":    string(ev.Severity),
			"category":    ev.Category,
			"incident_id": ev.IncidentID,
		},
		Annotations: map[string]string{
			"summary": ev.Title,
			"status":  string(ev.Status),
		},
		StartsAt:     ev.OpenedAt.UTC().Format(time.RFC3339Nano),
		GeneratorURL: ev.Link,
	}
	for k, v := range a.Labels {
		if v == "" {
			delete(a.Labels, k)
		}
	}
	if ev.Timeline != "" {
		a.Annotations["description"] = ev.Timeline
	}
	if ev.DedupKey != "" {
		a.Annotations["condition"] = ev.DedupKey
	}
	if ev.Status == StatusResolved {
		end := ev.ResolvedAt
		if end.IsZero() {
			end = ev.when()
		}
		a.EndsAt = end.UTC().Format(time.RFC3339Nano)
	}
	return []amAlert{a}
}

// Request renders ev as one Alertmanager alert.
func (a *Alertmanager) Request(ctx context.Context, ev Event) (*http.Request, error) {
	req, _, err := jsonRequest(ctx, strings.TrimRight(a.url, "/")+"/api/v2/alerts", alertmanagerPayload(ev))
	if err != nil {
		return nil, err
	}
	switch {
	case a.bearer != "":
		req.Header.Set("Authorization", "Bearer "+a.bearer)
	case a.basicUser != "":
		req.SetBasicAuth(a.basicUser, a.basicPassword)
	}
	return req, nil
}
