package notify

import (
	"context"
	"errors"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

func pdChannel(t *testing.T, url, key string) Channel {
	t.Helper()
	ch, err := NewChannel(nil, ChannelConfig{Name: "pd", Type: TypePagerDuty, URL: url, RoutingKeyFile: writeSecret(t, "pd", key)})
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func TestRetryTwice503Then202(t *testing.T) {
	rcv := newReceiver(t, 503, 503, 202)
	s := &sleeper{}
	n := New(testOptions(s), pdChannel(t, rcv.srv.URL+"/v2/enqueue", "key-1"))
	if err := n.Send(context.Background(), testEvent(StatusTriggered)); err != nil {
		t.Fatalf("send: %v", err)
	}
	if got := len(rcv.requests()); got != 3 {
		t.Fatalf("receiver got %d attempts, want 3", got)
	}
	for _, r := range rcv.requests() {
		checkPagerDuty(t, r, "key-1", "inc-42", "trigger") // every attempt is a whole, fresh body
	}
	if want := []time.Duration{time.Second, 2 * time.Second}; !reflect.DeepEqual(s.got(), want) {
		t.Fatalf("waits %v, want %v (exponential backoff)", s.got(), want)
	}
	log := n.Deliveries()
	var codes []int
	for _, d := range log {
		codes = append(codes, d.StatusCode)
		if d.Channel != "pd" || d.Type != TypePagerDuty || d.EventID != "inc-42" || d.Action != "triggered" || !d.Time.Equal(t0) {
			t.Fatalf("log entry %+v", d)
		}
	}
	if !reflect.DeepEqual(codes, []int{503, 503, 202}) || log[2].Attempt != 3 || log[2].Error != "" || !log[0].Retry || log[0].Error == "" {
		t.Fatalf("log %+v", log)
	}
}

func TestNoRetryOn400(t *testing.T) {
	rcv := newReceiver(t, 400)
	s := &sleeper{}
	n := New(testOptions(s), pdChannel(t, rcv.srv.URL, "key-1"))
	err := n.Send(context.Background(), testEvent(StatusTriggered))
	if err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("err %v, want the 400", err)
	}
	if len(rcv.requests()) != 1 || len(s.got()) != 0 {
		t.Fatalf("%d attempts, waits %v: a 400 must not be retried", len(rcv.requests()), s.got())
	}
	if d := n.Deliveries(); len(d) != 1 || d[0].Retry || d[0].StatusCode != 400 {
		t.Fatalf("log %+v", d)
	}
}

func TestRetryAfterHonouredAndCapped(t *testing.T) {
	rcv := newReceiver(t, 429, 503, 503, 200)
	rcv.header.Set("Retry-After", "7")
	s := &sleeper{}
	opts := testOptions(s)
	opts.MaxRetryAfter = 30 * time.Second
	n := New(opts, pdChannel(t, rcv.srv.URL, "k"))
	if err := n.Send(context.Background(), testEvent(StatusTriggered)); err != nil {
		t.Fatal(err)
	}
	if want := []time.Duration{7 * time.Second, 7 * time.Second, 7 * time.Second}; !reflect.DeepEqual(s.got(), want) {
		t.Fatalf("waits %v, want %v (Retry-After)", s.got(), want)
	}

	// A huge Retry-After is capped; an HTTP-date form is understood.
	rcv2 := newReceiver(t, 503, 200)
	rcv2.header.Set("Retry-After", "86400")
	s2 := &sleeper{}
	n2 := New(Options{Sleep: s2.Sleep, MaxRetryAfter: 30 * time.Second}, pdChannel(t, rcv2.srv.URL, "k"))
	if err := n2.Send(context.Background(), testEvent(StatusTriggered)); err != nil {
		t.Fatal(err)
	}
	if want := []time.Duration{30 * time.Second}; !reflect.DeepEqual(s2.got(), want) {
		t.Fatalf("waits %v, want %v (capped)", s2.got(), want)
	}
	if got := parseRetryAfter(t0.Add(12*time.Second).Format(http.TimeFormat), t0); got != 12*time.Second {
		t.Fatalf("HTTP-date Retry-After: %v", got)
	}
}

func TestBackoffCappedAndAttemptsBounded(t *testing.T) {
	rcv := newReceiver(t, 500)
	s := &sleeper{}
	opts := testOptions(s)
	opts.MaxAttempts = 6
	opts.Backoff = time.Second
	opts.MaxBackoff = 5 * time.Second
	n := New(opts, pdChannel(t, rcv.srv.URL, "k"))
	err := n.Send(context.Background(), testEvent(StatusTriggered))
	if err == nil || !strings.Contains(err.Error(), "attempt 6") {
		t.Fatalf("err %v, want giving up after attempt 6", err)
	}
	if len(rcv.requests()) != 6 {
		t.Fatalf("%d attempts, want 6", len(rcv.requests()))
	}
	want := []time.Duration{1, 2, 4, 5, 5}
	for i := range want {
		want[i] *= time.Second
	}
	if !reflect.DeepEqual(s.got(), want) {
		t.Fatalf("waits %v, want %v", s.got(), want)
	}
}

func TestContextCancelStopsRetries(t *testing.T) {
	rcv := newReceiver(t, 503)
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	opts := testOptions(nil)
	opts.Sleep = func(ctx context.Context, d time.Duration) error {
		calls++
		cancel()
		return ctx.Err()
	}
	err := New(opts, pdChannel(t, rcv.srv.URL, "k")).Send(ctx, testEvent(StatusTriggered))
	if !errors.Is(err, context.Canceled) && !strings.Contains(err.Error(), "canceled") {
		t.Fatalf("err %v, want cancelled", err)
	}
	if len(rcv.requests()) != 1 || calls != 1 {
		t.Fatalf("%d attempts after cancel", len(rcv.requests()))
	}
}

func TestDeliveryLogBounded(t *testing.T) {
	rcv := newReceiver(t, 200)
	opts := testOptions(&sleeper{})
	opts.LogSize = 4
	n := New(opts, pdChannel(t, rcv.srv.URL, "k"))
	for i := range 10 {
		ev := testEvent(StatusTriggered)
		ev.IncidentID = "inc-" + string(rune('a'+i))
		if err := n.Send(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	for _, d := range n.Deliveries() {
		ids = append(ids, d.EventID)
	}
	if want := []string{"inc-g", "inc-h", "inc-i", "inc-j"}; !reflect.DeepEqual(ids, want) {
		t.Fatalf("log %v, want the last 4 oldest first %v", ids, want)
	}
}

// closedURL is an http URL nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func TestSecretsNeverInErrorsOrLogs(t *testing.T) {
	const slackSecret = "T0SECRET/B0SECRET/xoxSLACKSECRETTOKEN"
	const pdKey = "PDROUTINGKEYSECRET42"
	const bearer = "AMBEARERSECRET"
	down := closedURL(t)
	rcv400 := newReceiver(t, 400)

	var logs logBuffer
	slack, err := NewChannel(logs.logger(), ChannelConfig{Name: "s", Type: TypeSlack, URLFile: writeSecret(t, "s", down+"/services/"+slackSecret)})
	if err != nil {
		t.Fatal(err)
	}
	pd, err := NewChannel(logs.logger(), ChannelConfig{Name: "p", Type: TypePagerDuty, URL: rcv400.srv.URL, RoutingKeyFile: writeSecret(t, "p", pdKey)})
	if err != nil {
		t.Fatal(err)
	}
	am, err := NewChannel(logs.logger(), ChannelConfig{Name: "a", Type: TypeAlertmanager, URL: down, BearerTokenFile: writeSecret(t, "a", bearer)})
	if err != nil {
		t.Fatal(err)
	}
	opts := testOptions(&sleeper{})
	opts.MaxAttempts = 2
	opts.Log = logs.logger()
	n := New(opts, slack, pd, am)
	err = n.Send(context.Background(), testEvent(StatusTriggered))
	if err == nil {
		t.Fatal("want delivery errors")
	}
	var logged strings.Builder
	for _, d := range n.Deliveries() {
		logged.WriteString(d.Error + "\n")
	}
	for _, where := range []string{err.Error(), logs.String(), logged.String()} {
		for _, sec := range []string{slackSecret, "xoxSLACKSECRETTOKEN", pdKey, bearer} {
			if strings.Contains(where, sec) {
				t.Fatalf("secret %q leaked in %q", sec, where)
			}
		}
	}
	if !strings.Contains(err.Error(), "slack s") || !strings.Contains(err.Error(), "pagerduty p") || !strings.Contains(err.Error(), "alertmanager a") {
		t.Fatalf("err %q does not name each failed channel", err)
	}
	// Network errors are retried (attempt 2); the 400 is not.
	if !strings.Contains(err.Error(), "slack s: event inc-42: attempt 2") || !strings.Contains(err.Error(), "pagerduty p: event inc-42: attempt 1") {
		t.Fatalf("err %q: want the refused connection retried and the 400 not", err)
	}

	// A secret that does not parse as a URL: the error names the field, not the content.
	_, err = NewChannel(nil, ChannelConfig{Name: "s", Type: TypeSlack, URLFile: writeSecret(t, "bad", "ftp://"+slackSecret)})
	if err == nil || strings.Contains(err.Error(), slackSecret) || !strings.Contains(err.Error(), "url_file") {
		t.Fatalf("err %v", err)
	}
}
