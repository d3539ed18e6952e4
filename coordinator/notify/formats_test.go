package notify

import (
	"context"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// str returns m[k] as a string, failing when it is missing or not a string.
func str(t *testing.T, m map[string]any, k string) string {
	t.Helper()
	v, ok := m[k]
	if !ok {
		t.Fatalf("required field %q missing in %v", k, m)
	}
	s, ok := v.(string)
	if !ok {
		t.Fatalf("field %q is %T, want string", k, v)
	}
	return s
}

func obj(t *testing.T, m map[string]any, k string) map[string]any {
	t.Helper()
	o, ok := m[k].(map[string]any)
	if !ok {
		t.Fatalf("field %q is %T, want object", k, m[k])
	}
	return o
}

func oneOf(t *testing.T, field, v string, allowed ...string) {
	t.Helper()
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	t.Fatalf("%s = %q, want one of %v", field, v, allowed)
}

func maxLen(t *testing.T, field, v string, n int) {
	t.Helper()
	if c := utf8.RuneCountInString(v); c > n {
		t.Fatalf("%s is %d characters, limit %d", field, c, n)
	}
}

func rfc3339(t *testing.T, field, v string) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		t.Fatalf("%s = %q is not RFC 3339: %v", field, v, err)
	}
	return ts
}

func send(t *testing.T, ch Channel, ev Event) {
	t.Helper()
	s := &sleeper{}
	if err := New(testOptions(s), ch).Send(context.Background(), ev); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// checkPagerDuty checks an Events API v2 body
// (developer.pagerduty.com/docs/events-api-v2/trigger-events).
func checkPagerDuty(t *testing.T, r received, key, dedup, action string) map[string]any {
	t.Helper()
	if r.Method != http.MethodPost || r.Path != "/v2/enqueue" {
		t.Fatalf("got %s %s, want POST /v2/enqueue", r.Method, r.Path)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	var m map[string]any
	decodeJSON(t, r.Body, &m)
	if got := str(t, m, "routing_key"); got != key {
		t.Fatalf("routing_key %q, want the key from the file", got)
	}
	oneOf(t, "event_action", str(t, m, "event_action"), "trigger", "acknowledge", "resolve")
	if got := str(t, m, "event_action"); got != action {
		t.Fatalf("event_action %q, want %q", got, action)
	}
	d := str(t, m, "dedup_key")
	maxLen(t, "dedup_key", d, 255)
	if d != dedup {
		t.Fatalf("dedup_key %q, want the incident id %q", d, dedup)
	}
	if action != "trigger" {
		return m
	}
	p := obj(t, m, "payload")
	s := str(t, p, "summary")
	if s == "" {
		t.Fatal("payload.summary empty")
	}
	maxLen(t, "payload.summary", s, 1024)
	if str(t, p, "source") == "" {
		t.Fatal("payload.source empty")
	}
	oneOf(t, "payload.severity", str(t, p, "severity"), "critical", "error", "warning", "info")
	rfc3339(t, "payload.timestamp", str(t, p, "timestamp"))
	for _, k := range []string{"component", "group", "class"} {
		str(t, p, k)
	}
	cd := obj(t, p, "custom_details")
	if cd["incident_id"] != dedup {
		t.Fatalf("custom_details %v lacks the incident id", cd)
	}
	return m
}

func TestPagerDutyEventsV2Format(t *testing.T) {
	rcv := newReceiver(t, http.StatusAccepted)
	key := "R0UTINGKEY0123456789abcdefABCDEF"
	ch, err := NewChannel(nil, ChannelConfig{Name: "pd", Type: TypePagerDuty, URL: rcv.srv.URL + "/v2/enqueue",
		RoutingKeyFile: writeSecret(t, "pd", "  "+key+"\n")})
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range []Status{StatusTriggered, StatusAcknowledged, StatusResolved} {
		send(t, ch, testEvent(st))
		want := map[Status]string{StatusTriggered: "trigger", StatusAcknowledged: "acknowledge", StatusResolved: "resolve"}[st]
		checkPagerDuty(t, rcv.requests()[i], key, "inc-42", want)
	}

	// Severity mapping and the 1024-character summary limit.
	for sev, want := range map[Severity]string{SeverityCritical: "critical", SeverityHigh: "error", SeverityMedium: "warning", SeverityLow: "info"} {
		ev := testEvent(StatusTriggered)
		ev.Severity = sev
		ev.Title = strings.Repeat("é", 3000)
		send(t, ch, ev)
		rs := rcv.requests()
		m := checkPagerDuty(t, rs[len(rs)-1], key, "inc-42", "trigger")
		if got := obj(t, m, "payload")["severity"]; got != want {
			t.Fatalf("severity %s mapped to %v, want %s", sev, got, want)
		}
	}
}

func TestSlackIncomingWebhookFormat(t *testing.T) {
	rcv := newReceiver(t, http.StatusOK)
	ch, err := NewChannel(nil, ChannelConfig{Name: "ops", Type: TypeSlack,
		URLFile: writeSecret(t, "slack", rcv.srv.URL+"/services/T000/B000/XXXXSECRET\n")})
	if err != nil {
		t.Fatal(err)
	}
	ev := testEvent(StatusTriggered)
	ev.Title = strings.Repeat("long title <b>&", 40)
	ev.Timeline = strings.Repeat("x", 5000)
	send(t, ch, ev)
	r := rcv.requests()[0]
	if r.Method != http.MethodPost || r.Path != "/services/T000/B000/XXXXSECRET" {
		t.Fatalf("got %s %s", r.Method, r.Path)
	}
	var m map[string]any
	decodeJSON(t, r.Body, &m)
	if str(t, m, "text") == "" {
		t.Fatal("text (the notification fallback) empty")
	}
	blocks, ok := m["blocks"].([]any)
	if !ok || len(blocks) == 0 || len(blocks) > 50 {
		t.Fatalf("blocks %T len %d, want 1..50 blocks", m["blocks"], len(blocks))
	}
	textObj := func(field string, o any, types ...string) string {
		t.Helper()
		tm, ok := o.(map[string]any)
		if !ok {
			t.Fatalf("%s is %T, want a text object", field, o)
		}
		oneOf(t, field+".type", str(t, tm, "type"), types...)
		return str(t, tm, "text")
	}
	for i, b := range blocks {
		bm := b.(map[string]any)
		switch typ := str(t, bm, "type"); typ {
		case "header":
			maxLen(t, "header.text", textObj("header.text", bm["text"], "plain_text"), 150)
		case "section":
			maxLen(t, "section.text", textObj("section.text", bm["text"], "plain_text", "mrkdwn"), 3000)
			fs, _ := bm["fields"].([]any)
			if len(fs) > 10 {
				t.Fatalf("section has %d fields, limit 10", len(fs))
			}
			for _, f := range fs {
				maxLen(t, "section.fields[].text", textObj("section.fields[]", f, "plain_text", "mrkdwn"), 2000)
			}
		case "context":
			es, _ := bm["elements"].([]any)
			if len(es) == 0 || len(es) > 10 {
				t.Fatalf("context has %d elements, want 1..10", len(es))
			}
			for _, e := range es {
				textObj("context.elements[]", e, "plain_text", "mrkdwn")
			}
		default:
			t.Fatalf("block %d has type %q, not one this test knows", i, typ)
		}
	}
	// A long timeline is cut, not the link to the incident.
	section := blocks[1].(map[string]any)["text"].(map[string]any)["text"].(string)
	if !strings.HasSuffix(section, "\n<https://pgdr.example/incidents/inc-42|Open incident inc-42>") {
		t.Fatalf("link to the incident lost from a long message: ...%s", section[max(len(section)-120, 0):])
	}
	// mrkdwn texts escape <, > and &.
	for _, s := range []string{section, str(t, m, "text")} {
		if strings.Contains(s, "<b>") || strings.Contains(s, "&long") {
			t.Fatalf("mrkdwn control characters not escaped in %.200q", s)
		}
	}
}

func TestAlertmanagerV2Format(t *testing.T) {
	rcv := newReceiver(t, http.StatusOK)
	ch, err := NewChannel(nil, ChannelConfig{Name: "am", Type: TypeAlertmanager, URL: rcv.srv.URL + "/",
		BasicAuthUser: "pgdr", BasicAuthPasswordFile: writeSecret(t, "pw", "s3cr3t-pw")})
	if err != nil {
		t.Fatal(err)
	}
	send(t, ch, testEvent(StatusTriggered))
	send(t, ch, testEvent(StatusTriggered)) // re-sent while open
	send(t, ch, testEvent(StatusResolved))
	rs := rcv.requests()
	for i, r := range rs {
		if r.Method != http.MethodPost || r.Path != "/api/v2/alerts" {
			t.Fatalf("got %s %s, want POST /api/v2/alerts", r.Method, r.Path)
		}
		if want := "Basic " + base64.StdEncoding.EncodeToString([]byte("pgdr:s3cr3t-pw")); r.Header.Get("Authorization") != want {
			t.Fatalf("Authorization %q", r.Header.Get("Authorization"))
		}
		var alerts []map[string]any
		decodeJSON(t, r.Body, &alerts)
		if len(alerts) != 1 {
			t.Fatalf("got %d alerts, want 1", len(alerts))
		}
		a := alerts[0]
		labels := obj(t, a, "labels") // required, map of strings
		if len(labels) == 0 {
			t.Fatal("labels empty")
		}
		for k, v := range labels {
			if _, ok := v.(string); !ok || v == "" {
				t.Fatalf("label %s = %v, want a non-empty string", k, v)
			}
		}
		if labels["alertname"] != AlertName || labels["incident_id"] != "inc-42" || labels["severity"] != "critical" {
			t.Fatalf("labels %v", labels)
		}
		for _, v := range obj(t, a, "annotations") {
			if _, ok := v.(string); !ok {
				t.Fatalf("annotation %v not a string", v)
			}
		}
		start := rfc3339(t, "startsAt", str(t, a, "startsAt"))
		if !start.Equal(t0) {
			t.Fatalf("startsAt %v, want %v", start, t0)
		}
		if str(t, a, "generatorURL") != "https://pgdr.example/incidents/inc-42" {
			t.Fatalf("generatorURL %v", a["generatorURL"])
		}
		_, hasEnd := a["endsAt"]
		if resolved := i == 2; resolved != hasEnd {
			t.Fatalf("alert %d: endsAt present %v, want %v", i, hasEnd, resolved)
		}
		if hasEnd {
			if end := rfc3339(t, "endsAt", str(t, a, "endsAt")); !end.After(start) {
				t.Fatalf("endsAt %v not after startsAt %v", end, start)
			}
		}
	}
	if len(rs) != 3 {
		t.Fatalf("receiver got %d pushes, want 3", len(rs))
	}
}

func TestAlertmanagerBearer(t *testing.T) {
	rcv := newReceiver(t, http.StatusOK)
	ch, err := NewChannel(nil, ChannelConfig{Name: "am", Type: TypeAlertmanager, URL: rcv.srv.URL,
		BearerTokenFile: writeSecret(t, "tok", "tok-123\n")})
	if err != nil {
		t.Fatal(err)
	}
	send(t, ch, testEvent(StatusAcknowledged))
	if got := rcv.requests()[0].Header.Get("Authorization"); got != "Bearer tok-123" {
		t.Fatalf("Authorization %q", got)
	}
}

func TestSignedWebhookFormat(t *testing.T) {
	rcv := newReceiver(t, http.StatusNoContent)
	ch, err := NewChannel(nil, ChannelConfig{Name: "hook", Type: TypeWebhook, URL: rcv.srv.URL + "/hook",
		SecretFile: writeSecret(t, "hk", "hmac-key\n")})
	if err != nil {
		t.Fatal(err)
	}
	send(t, ch, testEvent(StatusAcknowledged))
	r := rcv.requests()[0]
	var m map[string]any
	decodeJSON(t, r.Body, &m)
	for _, k := range []string{"id", "cluster", "kind", "node", "message", "time", "coordinator"} {
		str(t, m, k)
	}
	obj(t, m, "details")
	if _, ok := m["epoch"]; !ok {
		t.Fatal("epoch missing")
	}
	if m["kind"] != "incident_acknowledged" || r.Header.Get("X-Pgdr-Event") != "incident_acknowledged" {
		t.Fatalf("kind %v header %q", m["kind"], r.Header.Get("X-Pgdr-Event"))
	}
	if r.Header.Get("X-Pgdr-Delivery") != m["id"] {
		t.Fatalf("X-Pgdr-Delivery %q, id %v", r.Header.Get("X-Pgdr-Delivery"), m["id"])
	}
	if got, want := r.Header.Get("X-Pgdr-Signature"), "sha256="+Sign([]byte("hmac-key"), r.Body); got != want {
		t.Fatalf("signature %q, want %q", got, want)
	}
}
