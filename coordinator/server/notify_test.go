package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgdr/pgdr/coordinator/config"
	"github.com/pgdr/pgdr/coordinator/notify"
	"github.com/pgdr/pgdr/pkg/testutil"
)

// receiver is a webhook endpoint answering with the statuses in codes, in
// turn (the last one repeats), and keeping every request.
type receiver struct {
	mu    sync.Mutex
	codes []int
	reqs  []receivedReq
}

type receivedReq struct {
	header http.Header
	body   []byte
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.reqs = append(r.reqs, receivedReq{req.Header.Clone(), b})
	code := http.StatusOK
	if len(r.codes) > 0 {
		code = r.codes[0]
		if len(r.codes) > 1 {
			r.codes = r.codes[1:]
		}
	}
	r.mu.Unlock()
	w.WriteHeader(code)
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reqs)
}

func (r *receiver) got() []receivedReq {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]receivedReq(nil), r.reqs...)
}

func testNotifier(t *testing.T, hooks ...config.Webhook) *notifier {
	t.Helper()
	for i := range hooks {
		if hooks[i].Timeout.Duration == 0 {
			hooks[i].Timeout.Duration = 2 * time.Second
		}
	}
	n, err := newNotifier(&config.Config{Name: "c9", Notifications: config.Notifications{
		Webhooks: hooks, Kinds: config.DefaultNotificationKinds,
	}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range n.hooks {
		h.backoff, h.maxWait = 5*time.Millisecond, 20*time.Millisecond
	}
	return n
}

func deliveries(t *testing.T, n *notifier, result string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(n.deliveries)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no deliveries{result=%q}", result)
	return 0
}

func waitCount(t *testing.T, n *notifier, result string, want float64) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("%v deliveries %s", want, result), func() (bool, error) {
		got := deliveries(t, n, result)
		return got == want, fmt.Errorf("%v", got)
	})
}

// TestWebhookDelivery: the JSON body, the headers and the HMAC signature.
func TestWebhookDelivery(t *testing.T) {
	rcv := &receiver{}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := testNotifier(t, config.Webhook{URL: srv.URL + "/hook?token=x", SecretFile: secretFile, QueueSize: 10})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n.run(ctx)
	at := time.Now().UTC()
	n.enqueue(Notification{Cluster: "main", Kind: "failover-result", Node: "pg-a2", Epoch: 4,
		Message: "done", Details: map[string]string{"old_primary": "pg-a1"}, Time: at, Coordinator: "c9"})
	waitCount(t, n, deliveryOK, 1)
	r := rcv.got()[0]
	var got Notification
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	if got.Cluster != "main" || got.Kind != "failover-result" || got.Node != "pg-a2" || got.Epoch != 4 ||
		got.Message != "done" || got.Details["old_primary"] != "pg-a1" || !got.Time.Equal(at) || got.Coordinator != "c9" || got.ID == "" {
		t.Errorf("notification %+v", got)
	}
	var raw map[string]any
	json.Unmarshal(r.body, &raw)
	for _, k := range []string{"cluster", "kind", "node", "epoch", "message", "details", "time", "coordinator"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("body lacks %q: %s", k, r.body)
		}
	}
	if want := "sha256=" + notify.Sign([]byte("s3cret"), r.body); r.header.Get("X-Pgdr-Signature") != want {
		t.Errorf("X-Pgdr-Signature %q, want %q", r.header.Get("X-Pgdr-Signature"), want)
	}
	if r.header.Get("Content-Type") != "application/json" || r.header.Get("X-Pgdr-Event") != "failover-result" || r.header.Get("X-Pgdr-Delivery") != got.ID {
		t.Errorf("headers %v", r.header)
	}
	// A known signature (so that receivers in other languages can check theirs).
	if s := notify.Sign([]byte("key"), []byte("The quick brown fox jumps over the lazy dog")); s != "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8" {
		t.Errorf("Sign = %s", s)
	}
	if n.hooks[0].name != "http://"+strings.TrimPrefix(srv.URL, "http://") {
		t.Errorf("logged webhook name %q keeps more than scheme and host", n.hooks[0].name)
	}
}

// TestWebhookRetries: 503 and 429 are retried until success; 400 is not
// retried; network errors are retried until the attempts run out.
func TestWebhookRetries(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	rcv := &receiver{codes: []int{503, 429, 503, 200}}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	n := testNotifier(t, config.Webhook{URL: srv.URL, QueueSize: 10})
	n.run(ctx)
	n.enqueue(Notification{Cluster: "main", Kind: "failover-intent"})
	waitCount(t, n, deliveryOK, 1)
	if c := rcv.count(); c != 4 {
		t.Errorf("%d attempts, want 4", c)
	}
	if r := deliveries(t, n, deliveryRetry); r != 3 {
		t.Errorf("%v retries, want 3", r)
	}
	ids := map[string]bool{}
	for _, r := range rcv.got() {
		ids[r.header.Get("X-Pgdr-Delivery")] = true
	}
	if len(ids) != 1 {
		t.Errorf("retries carry different delivery ids: %v", ids)
	}

	bad := &receiver{codes: []int{400}}
	srv400 := httptest.NewServer(bad)
	defer srv400.Close()
	n = testNotifier(t, config.Webhook{URL: srv400.URL, QueueSize: 10})
	n.run(ctx)
	n.enqueue(Notification{Cluster: "main", Kind: "failover-intent"})
	waitCount(t, n, deliveryRejected, 1)
	time.Sleep(100 * time.Millisecond)
	if c := bad.count(); c != 1 {
		t.Errorf("400 was tried %d times, want once", c)
	}

	// Nothing listens: every attempt fails, 5 in all.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String() + "/x"
	ln.Close()
	n = testNotifier(t, config.Webhook{URL: dead, QueueSize: 10})
	n.run(ctx)
	n.enqueue(Notification{Cluster: "main", Kind: "failover-intent"})
	waitCount(t, n, deliveryFailed, 1)
	if r := deliveries(t, n, deliveryRetry); r != notifyMaxAttempts-1 {
		t.Errorf("%v retries, want %d", r, notifyMaxAttempts-1)
	}
}

// TestWebhookQueueBound: a full queue drops its oldest notification and
// counts it; the rest are delivered in order.
func TestWebhookQueueBound(t *testing.T) {
	rcv := &receiver{}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	n := testNotifier(t, config.Webhook{URL: srv.URL, QueueSize: 3})
	for i := 1; i <= 5; i++ { // the worker is not running yet
		n.enqueue(Notification{Cluster: "main", Kind: "rejoin", Message: fmt.Sprint(i)})
	}
	if d := deliveries(t, n, deliveryDropped); d != 2 {
		t.Errorf("%v dropped, want 2", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n.run(ctx)
	waitCount(t, n, deliveryOK, 3)
	var msgs []string
	for _, r := range rcv.got() {
		var nt Notification
		json.Unmarshal(r.body, &nt)
		msgs = append(msgs, nt.Message)
	}
	if strings.Join(msgs, ",") != "3,4,5" {
		t.Errorf("delivered %v, want the newest three in order", msgs)
	}
}

// TestNotifyEventLeaderOnly: a follower never enqueues; a leader enqueues
// only the notified kinds.
func TestNotifyEventLeaderOnly(t *testing.T) {
	n := testNotifier(t, config.Webhook{URL: "http://127.0.0.1:1/", QueueSize: 10})
	s := &Server{cfg: &config.Config{Name: "c1"}, notify: n}
	s.notifyEvent("main", "failover-intent", "pg-a2", 1, "x", nil)
	if q := len(n.hooks[0].queue); q != 0 {
		t.Errorf("a follower (no raft) queued %d notifications", q)
	}
	if !n.wants("failover-intent") || n.wants("failover-step") || n.wants("member-registered") {
		t.Error("kinds: want failover-intent only among these")
	}
	var none *notifier
	none.enqueue(Notification{}) // no webhooks configured: a no-op
	if none.wants("failover-intent") {
		t.Error("a nil notifier wants events")
	}
}

func TestNotificationsConfig(t *testing.T) {
	const base = `name: c1
region: r
data_dir: /d
raft: {bind: "127.0.0.1:7001"}
api: {listen: "127.0.0.1:7101"}
tls: {ca_file: ca.crt, cert_file: c1.crt, key_file: c1.key}
`
	c, err := config.Parse([]byte(base + "notifications: {webhooks: [{url: 'https://hooks.example/x'}]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	w := c.Notifications.Webhooks[0]
	if w.Timeout.Duration != 5*time.Second || w.QueueSize != config.DefaultWebhookQueueSize ||
		strings.Join(c.Notifications.Kinds, ",") != strings.Join(config.DefaultNotificationKinds, ",") {
		t.Errorf("defaults: %+v kinds %v", w, c.Notifications.Kinds)
	}
	for _, tc := range []struct{ yaml, field string }{
		{"{webhooks: [{url: ''}]}", "notifications.webhooks[0].url"},
		{"{webhooks: [{url: 'ftp://x/y'}]}", "notifications.webhooks[0].url"},
		{"{webhooks: [{url: 'http://x', timeout: 1ms}]}", "notifications.webhooks[0].timeout"},
		{"{webhooks: [{url: 'http://x', queue_size: -1}]}", "notifications.webhooks[0].queue_size"},
		{"{webhooks: [{url: 'http://x'}], kinds: [Failover]}", "notifications.kinds[0]"},
		{"{webhooks: [{url: 'http://x'}], kinds: [rejoin, rejoin]}", "notifications.kinds[1]"},
		{"{webhooks: [{url: 'http://x'}], kinds: []}", "notifications.kinds"},
		{"{webhooks: [{url: 'http://x', secret: 1}]}", "secret"},
	} {
		_, err := config.Parse([]byte(base + "notifications: " + tc.yaml + "\n"))
		var fe *config.FieldError
		if err == nil || (!errors.As(err, &fe) && !strings.Contains(err.Error(), tc.field)) || (fe != nil && fe.Field != tc.field) {
			t.Errorf("%s: error %v, want one naming %s", tc.yaml, err, tc.field)
		}
	}
	// A secret file that cannot be read stops the server at start.
	c, err = config.Parse([]byte(base + "notifications: {webhooks: [{url: 'http://x', secret_file: /nonexistent/secret}]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = newNotifier(c, slog.New(slog.DiscardHandler))
	var fe *config.FieldError
	if !errors.As(err, &fe) || fe.Field != "notifications.webhooks[0].secret_file" {
		t.Errorf("unreadable secret file: %v", err)
	}
}
