package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/ctl"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// pdSink is a PagerDuty Events API v2 receiver: it checks every event
// against the documented format (routing key, event_action, dedup_key, a
// trigger's payload summary, source and severity) and keeps them.
type pdSink struct {
	key    string
	mu     sync.Mutex
	events []pdReceived
	bad    []string
}

type pdReceived struct {
	Action, DedupKey, Summary, Severity string
	At                                  time.Time
}

var incidentIDPattern = regexp.MustCompile(`^INC-[0-9]+$`)

func (s *pdSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var ev struct {
		RoutingKey  string `json:"routing_key"`
		EventAction string `json:"event_action"`
		DedupKey    string `json:"dedup_key"`
		Payload     *struct {
			Summary  string `json:"summary"`
			Source   string `json:"source"`
			Severity string `json:"severity"`
		} `json:"payload"`
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	err := json.Unmarshal(body, &ev)
	switch {
	case r.Method != http.MethodPost || r.URL.Path != "/v2/enqueue":
		s.bad = append(s.bad, r.Method+" "+r.URL.Path)
	case err != nil:
		s.bad = append(s.bad, "not JSON: "+string(body))
	case ev.RoutingKey != s.key:
		s.bad = append(s.bad, "routing_key "+ev.RoutingKey)
	case !incidentIDPattern.MatchString(ev.DedupKey):
		s.bad = append(s.bad, "dedup_key "+ev.DedupKey)
	case ev.EventAction == "trigger" && (ev.Payload == nil || ev.Payload.Summary == "" || ev.Payload.Source == "" ||
		!strings.Contains(" critical error warning info ", " "+ev.Payload.Severity+" ")):
		s.bad = append(s.bad, "trigger payload: "+string(body))
	case ev.EventAction != "trigger" && ev.EventAction != "acknowledge" && ev.EventAction != "resolve":
		s.bad = append(s.bad, "event_action "+ev.EventAction)
	default:
		got := pdReceived{Action: ev.EventAction, DedupKey: ev.DedupKey, At: time.Now()}
		if ev.Payload != nil {
			got.Summary, got.Severity = ev.Payload.Summary, ev.Payload.Severity
		}
		s.events = append(s.events, got)
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprint(w, `{"status":"success","message":"Event processed","dedup_key":"`+ev.DedupKey+`"}`)
		return
	}
	w.WriteHeader(http.StatusBadRequest)
}

func (s *pdSink) actions(id string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, e := range s.events {
		if e.DedupKey == id {
			out = append(out, e.Action)
		}
	}
	return out
}

// amSink is an Alertmanager v2 receiver (POST /api/v2/alerts, an array of
// postable alerts with labels, startsAt, and endsAt once resolved).
type amSink struct {
	mu     sync.Mutex
	alerts []amReceived
	bad    []string
}

type amReceived struct {
	ID, Status, EndsAt string
}

func (s *amSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var alerts []struct {
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
		StartsAt    string            `json:"startsAt"`
		EndsAt      string            `json:"endsAt"`
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	err := json.Unmarshal(body, &alerts)
	switch {
	case r.Method != http.MethodPost || r.URL.Path != "/api/v2/alerts":
		s.bad = append(s.bad, r.Method+" "+r.URL.Path)
	case err != nil || len(alerts) != 1:
		s.bad = append(s.bad, "not an array of one alert: "+string(body))
	case alerts[0].Labels["alertname"] != "PgdrIncident" || !incidentIDPattern.MatchString(alerts[0].Labels["incident_id"]):
		s.bad = append(s.bad, "labels: "+string(body))
	default:
		if _, err := time.Parse(time.RFC3339Nano, alerts[0].StartsAt); err != nil {
			s.bad = append(s.bad, "startsAt: "+alerts[0].StartsAt)
			break
		}
		s.alerts = append(s.alerts, amReceived{ID: alerts[0].Labels["incident_id"], Status: alerts[0].Annotations["status"], EndsAt: alerts[0].EndsAt})
		w.WriteHeader(http.StatusOK)
		return
	}
	w.WriteHeader(http.StatusBadRequest)
}

func (s *amSink) of(id string) []amReceived {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []amReceived
	for _, a := range s.alerts {
		if a.ID == id {
			out = append(out, a)
		}
	}
	return out
}

// incidentNotes are the signed webhook's incident notifications for id,
// by delivery id (a repeat of one id is a duplicate).
func (s *webhookSink) incidentNotes(id string) map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for _, n := range s.notes {
		if strings.HasPrefix(n.Kind, "incident_") && n.Details["incident_id"] == id {
			out[n.ID]++
		}
	}
	return out
}

func (l *lab) incidents(t *testing.T, all bool) []ctl.IncidentJSON {
	t.Helper()
	args := []string{"incidents", "--json"}
	if all {
		args = append(args, "--all")
	}
	out, err := l.ctl(args...)
	if err != nil {
		t.Fatalf("pgdrctl incidents: %v\n%s", err, out)
	}
	var v ctl.IncidentsJSON
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("pgdrctl incidents --json: %v\n%s", err, out)
	}
	return v.Incidents
}

func (l *lab) incident(t *testing.T, id string) ctl.IncidentJSON {
	t.Helper()
	out, err := l.ctl("incident", "show", id, "--json")
	if err != nil {
		t.Fatalf("pgdrctl incident show %s: %v\n%s", id, err, out)
	}
	var v ctl.IncidentJSON
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("pgdrctl incident show --json: %v\n%s", err, out)
	}
	return v
}

func timelineKinds(in ctl.IncidentJSON, kind string) []ctl.IncidentEntryJSON {
	var out []ctl.IncidentEntryJSON
	for _, e := range in.Timeline {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// TestIncidentsFailoverEscalation: with incident channels (the signed
// webhook, PagerDuty Events v2, Alertmanager v2) and a four-level
// escalation policy in the lab, kill -9 the primary. The failover opens
// exactly one incident (not one per tick), level 0 (webhook and
// Alertmanager) is notified; nobody acknowledges, so after the level
// timeout it escalates to level 1 (PagerDuty trigger with the incident id
// as dedup_key). The coordinator leader is killed -9 while the incident
// waits at level 1: the new leader escalates to level 2 once, and no level
// is notified twice or lost. An acknowledgement stops escalation (level 3
// never comes) and is sent to PagerDuty; resolving sends resolve and the
// Alertmanager alert's endsAt. The incident's timeline holds the
// escalations and the deliveries.
func TestIncidentsFailoverEscalation(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	hook := &webhookSink{secret: []byte("incident-webhook-secret")}
	pd := &pdSink{key: "R0UTINGKEY0123456789abcdef012345"}
	am := &amSink{}
	var srvs []*httptest.Server
	for _, h := range []http.Handler{hook, pd, am} {
		srv := httptest.NewServer(h)
		srvs = append(srvs, srv)
		defer srv.Close()
	}
	dir := pgtest.OwnedDir(t, "pgdr-incidents-")
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const levelTimeout = 8 * time.Second
	cfg := fmt.Sprintf(`incidents:
  interval: 250ms
  alertmanager_resend: 3s
  channels:
    - {name: hook, type: webhook, url: "%s/pgdr", secret_file: %s}
    - {name: pd, type: pagerduty, url: "%s/v2/enqueue", routing_key_file: %s}
    - {name: am, type: alertmanager, url: "%s"}
  escalation:
    - {name: oncall, channels: [hook, am], timeout: %s}
    - {name: lead, channels: [pd], timeout: %s}
    - {name: manager, channels: [hook], timeout: %s}
    - {name: director, channels: [pd, hook]}
`, srvs[0].URL, write("hook.secret", string(hook.secret)), srvs[1].URL, write("pd.key", pd.key), srvs[2].URL,
		levelTimeout, levelTimeout, levelTimeout)
	t.Setenv("PGDR_LAB_INCIDENTS_FILE", write("incidents.yaml", cfg))
	l := startLab(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("webhook: %v rejected %v; pagerduty: %+v rejected %v; alertmanager: %+v rejected %v",
				hook.kinds(), hook.bad, pd.events, pd.bad, am.alerts, am.bad)
		}
	})
	testutil.WaitFor(t, 60*time.Second, "incidents started", func() (bool, error) {
		out, err := l.ctl("incidents")
		return err == nil, fmt.Errorf("%v: %s", err, out)
	})

	epoch := l.wantPrimary(t, "pg-a1")
	killed := l.killNode(t, "pg-a1")
	newPrimary, _ := l.waitNewPrimary(t, "pg-a1", epoch, 90*time.Second)
	t.Logf("%s promoted %.1fs after kill -9 of pg-a1", newPrimary, time.Since(killed).Seconds())

	// One failover incident, its condition cleared by the result.
	var inc ctl.IncidentJSON
	testutil.WaitFor(t, 30*time.Second, "one failover incident, condition cleared", func() (bool, error) {
		var fo []ctl.IncidentJSON
		for _, in := range l.incidents(t, true) {
			if in.Category == "failover" {
				fo = append(fo, in)
			}
		}
		if len(fo) > 1 {
			t.Fatalf("%d failover incidents for one failover, want 1: %+v", len(fo), fo)
		}
		if len(fo) == 1 {
			inc = fo[0]
		}
		return len(fo) == 1 && inc.ConditionCleared, fmt.Errorf("%+v", fo)
	})
	id := inc.ID
	if inc.Severity != "critical" || inc.Priority != "P1" || inc.Status != "open" || inc.Cluster != "main" || !strings.Contains(inc.Title, newPrimary) {
		t.Errorf("failover incident: %+v", inc)
	}
	opened, _ := time.Parse(time.RFC3339Nano, inc.Opened)
	t.Logf("%s opened %s: %q", id, inc.Opened, inc.Title)

	// Level 0: the webhook and Alertmanager.
	testutil.WaitFor(t, 30*time.Second, "level 0 notified (webhook, alertmanager)", func() (bool, error) {
		return hook.incidentNotes(id)[id+"/open/L0"] == 1 && len(am.of(id)) > 0, fmt.Errorf("webhook %v, alertmanager %v", hook.incidentNotes(id), am.of(id))
	})
	if got := pd.actions(id); len(got) != 0 {
		t.Fatalf("PagerDuty (level 1) notified before the level timeout: %v", got)
	}

	// Nobody acknowledges: level 1 (PagerDuty) after the level timeout.
	testutil.WaitFor(t, levelTimeout+30*time.Second, "escalated to level 1: PagerDuty trigger", func() (bool, error) {
		return len(pd.actions(id)) > 0, fmt.Errorf("pagerduty %v", pd.actions(id))
	})
	pd.mu.Lock()
	firstPD := pd.events[0]
	pd.mu.Unlock()
	if early := opened.Add(levelTimeout).Sub(firstPD.At); early > 500*time.Millisecond {
		t.Errorf("level 1 notified %s before the level timeout ran out", early)
	}
	if firstPD.Action != "trigger" || firstPD.Severity != "critical" || !strings.Contains(firstPD.Summary, "Failover") {
		t.Errorf("PagerDuty event: %+v", firstPD)
	}

	// The leader dies while the incident waits at level 1.
	leader, err := l.leaderName()
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(readPid(t, filepath.Join(l.dir, leader, "coordinator.pid")), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Logf("coordinator leader %s killed -9 at level 1", leader)
	testutil.WaitFor(t, 60*time.Second, "another coordinator leads", func() (bool, error) {
		n, err := l.leaderName()
		return err == nil && n != leader, fmt.Errorf("leader %q: %v", n, err)
	})
	testutil.WaitFor(t, levelTimeout+45*time.Second, "escalated to level 2 by the new leader", func() (bool, error) {
		return hook.incidentNotes(id)[id+"/open/L2"] >= 1, fmt.Errorf("webhook %v", hook.incidentNotes(id))
	})

	// Acknowledge at level 2: escalation stops, PagerDuty is told.
	out, err := l.ctl("incident", "ack", id, "--note", "looking into it", "--json")
	if err != nil {
		t.Fatalf("incident ack: %v\n%s", err, out)
	}
	testutil.WaitFor(t, 30*time.Second, "acknowledgement sent to PagerDuty and the webhook", func() (bool, error) {
		a := pd.actions(id)
		return len(a) > 0 && a[len(a)-1] == "acknowledge" && hook.incidentNotes(id)[id+"/acknowledged/L0"] == 1,
			fmt.Errorf("pagerduty %v webhook %v", a, hook.incidentNotes(id))
	})
	// Level 3 would come levelTimeout after level 2: wait past it.
	deadline := time.Now().Add(levelTimeout + 4*time.Second)
	for time.Now().Before(deadline) {
		if in := l.incident(t, id); in.EscalationLevel != 2 {
			t.Fatalf("escalated after the acknowledgement: level %d", in.EscalationLevel)
		}
		time.Sleep(time.Second)
	}

	out, err = l.ctl("incident", "resolve", id, "--note", "new primary serving; old node to be rebuilt")
	if err != nil {
		t.Fatalf("incident resolve: %v\n%s", err, out)
	}
	testutil.WaitFor(t, 30*time.Second, "resolution sent (PagerDuty resolve, Alertmanager endsAt)", func() (bool, error) {
		a := pd.actions(id)
		ams := am.of(id)
		return len(a) > 0 && a[len(a)-1] == "resolve" && len(ams) > 0 && ams[len(ams)-1].EndsAt != "",
			fmt.Errorf("pagerduty %v alertmanager %+v", a, ams)
	})
	in := l.incident(t, id)
	if in.Status != "resolved" || len(in.Notes) != 2 {
		t.Errorf("after resolve: status %s, notes %+v", in.Status, in.Notes)
	}

	// No level lost or repeated: each state went to each level once (a
	// channel of several notified levels is told a new status once), the
	// timeline escalated exactly twice, and the deliveries are on it.
	notes := hook.incidentNotes(id)
	if len(notes) != 4 {
		t.Errorf("webhook deliveries %v, want 4 distinct", notes)
	}
	for _, want := range []string{"/open/L0", "/open/L2", "/acknowledged/L0", "/resolved/L0"} {
		if notes[id+want] != 1 {
			t.Errorf("webhook delivery %s%s received %d times, want once (all: %v)", id, want, notes[id+want], notes)
		}
	}
	if got, want := strings.Join(pd.actions(id), ","), "trigger,acknowledge,resolve"; got != want {
		t.Errorf("PagerDuty actions %s, want %s", got, want)
	}
	if esc := timelineKinds(in, "escalated"); len(esc) != 2 {
		t.Errorf("%d escalations on the timeline, want 2 (0→1, 1→2): %+v", len(esc), esc)
	}
	if n := timelineKinds(in, "notified"); len(n) < 4 || !strings.Contains(n[0].Message, "delivered") {
		t.Errorf("delivery log on the timeline: %+v", n)
	}
	for name, bad := range map[string][]string{"webhook": hook.bad, "pagerduty": pd.bad, "alertmanager": am.bad} {
		if len(bad) > 0 {
			t.Errorf("%s receiver rejected deliveries: %v", name, bad)
		}
	}
	// Exactly one failover incident in all.
	var fo int
	for _, in := range l.incidents(t, true) {
		if in.Category == "failover" {
			fo++
		}
	}
	if fo != 1 {
		t.Errorf("%d failover incidents, want 1", fo)
	}
}
