package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgdr/pgdr/coordinator/config"
	"github.com/pgdr/pgdr/coordinator/notify"
)

// Webhook notifications.
//
// After recordEvent has recorded a history event of a notified kind, the
// Raft leader enqueues it to every configured webhook. Followers never
// enqueue (every decision that records such an event runs on the leader;
// forwarded calls run there too). Each webhook has one worker and a bounded
// queue: when the queue is full the oldest event is dropped and counted, so
// a dead receiver never holds memory or the failover path. A delivery is a
// JSON POST; it is retried with exponential backoff on network errors, 5xx
// and 429 (up to notifyMaxAttempts attempts within about a minute), never on
// another status. An event already queued when this coordinator loses
// leadership is still delivered: it was recorded while it led. Receivers
// dedupe retried deliveries by the "id" field (also X-Pgdr-Delivery).

// Delivery results (pgdr_coordinator_webhook_deliveries_total{result}).
const (
	deliveryOK       = "ok"       // 2xx
	deliveryRetry    = "retry"    // an attempt failed and will be retried
	deliveryRejected = "rejected" // a status that is not retried (4xx but 429, 3xx)
	deliveryFailed   = "failed"   // gave up after the last attempt or the time budget
	deliveryDropped  = "dropped"  // pushed out of a full queue, never sent
)

const (
	notifyMaxAttempts = 5
	notifyBudget      = time.Minute
	notifyBackoff     = time.Second // doubles each retry: 1s 2s 4s 8s
	notifyMaxBackoff  = 16 * time.Second
)

// Notification is the JSON body POSTed to a webhook (coordinator/notify
// owns the format).
type Notification = notify.Notification

// notifier fans notifications out to the webhooks' workers.
type notifier struct {
	log         *slog.Logger
	coordinator string
	kinds       map[string]bool
	hooks       []*webhook
	deliveries  *prometheus.CounterVec
	startOnce   sync.Once
}

// webhook is one receiver: its queue and its worker's settings.
type webhook struct {
	n       *notifier
	name    string // for logs: scheme://host of the URL (no path, no query: they may hold tokens)
	url     string
	secret  []byte
	client  *http.Client
	backoff time.Duration
	maxWait time.Duration
	budget  time.Duration

	mu      sync.Mutex
	queue   []Notification
	size    int
	dropped uint64
	wake    chan struct{}
}

// newNotifier reads the webhooks' secret files; the error names the field.
func newNotifier(cfg *config.Config, log *slog.Logger) (*notifier, error) {
	n := &notifier{
		log:         log.With("component", "notify"),
		coordinator: cfg.Name,
		kinds:       map[string]bool{},
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgdr_coordinator_webhook_deliveries_total",
			Help: "Webhook delivery outcomes: ok, retry (an attempt to be retried), rejected (a status not retried), failed (gave up), dropped (queue full).",
		}, []string{"result"}),
	}
	for _, r := range []string{deliveryOK, deliveryRetry, deliveryRejected, deliveryFailed, deliveryDropped} {
		n.deliveries.WithLabelValues(r)
	}
	for _, k := range cfg.Notifications.Kinds {
		n.kinds[k] = true
	}
	for i, w := range cfg.Notifications.Webhooks {
		h := &webhook{
			n: n, url: w.URL, name: redactURL(w.URL), size: w.QueueSize,
			client: &http.Client{
				Timeout: w.Timeout.Duration,
				// A redirect is not followed (a POST would turn into a GET).
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			},
			backoff: notifyBackoff, maxWait: notifyMaxBackoff, budget: notifyBudget,
			wake: make(chan struct{}, 1),
		}
		if h.size <= 0 {
			h.size = config.DefaultWebhookQueueSize
		}
		if w.SecretFile != "" {
			b, err := os.ReadFile(w.SecretFile)
			if err != nil {
				return nil, &config.FieldError{Field: fmt.Sprintf("notifications.webhooks[%d].secret_file", i), Msg: err.Error()}
			}
			if h.secret = bytes.TrimSpace(b); len(h.secret) == 0 {
				return nil, &config.FieldError{Field: fmt.Sprintf("notifications.webhooks[%d].secret_file", i), Msg: w.SecretFile + " is empty"}
			}
		}
		n.hooks = append(n.hooks, h)
	}
	return n, nil
}

// redactURL keeps scheme and host: paths and queries may carry tokens.
func redactURL(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		rest := u[i+3:]
		if j := strings.IndexAny(rest, "/?#"); j >= 0 {
			rest = rest[:j]
		}
		if j := strings.LastIndex(rest, "@"); j >= 0 {
			rest = rest[j+1:]
		}
		return u[:i+3] + rest
	}
	return "webhook"
}

// run starts one worker per webhook until ctx ends (once).
func (n *notifier) run(ctx context.Context) {
	if n == nil {
		return
	}
	n.startOnce.Do(func() {
		for _, h := range n.hooks {
			go h.work(ctx)
		}
	})
}

// wants reports whether events of kind are notified.
func (n *notifier) wants(kind string) bool {
	return n != nil && len(n.hooks) > 0 && n.kinds[kind]
}

// enqueue queues nt to every webhook without blocking.
func (n *notifier) enqueue(nt Notification) {
	if n == nil {
		return
	}
	if nt.ID == "" {
		var b [12]byte
		rand.Read(b[:])
		nt.ID = hex.EncodeToString(b[:])
	}
	if nt.Details == nil {
		nt.Details = map[string]string{}
	}
	for _, h := range n.hooks {
		h.push(nt)
	}
}

func (h *webhook) push(nt Notification) {
	h.mu.Lock()
	if len(h.queue) >= h.size {
		drop := h.queue[0]
		h.queue = h.queue[1:]
		h.dropped++
		h.n.deliveries.WithLabelValues(deliveryDropped).Inc()
		h.n.log.Warn("webhook queue full: dropped the oldest notification", "webhook", h.name,
			"kind", drop.Kind, "cluster", drop.Cluster, "dropped_total", h.dropped)
	}
	h.queue = append(h.queue, nt)
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func (h *webhook) pop() (Notification, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.queue) == 0 {
		return Notification{}, false
	}
	nt := h.queue[0]
	h.queue[0] = Notification{}
	h.queue = h.queue[1:]
	return nt, true
}

// work delivers queued notifications in order until ctx ends.
func (h *webhook) work(ctx context.Context) {
	for {
		nt, ok := h.pop()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-h.wake:
			}
			continue
		}
		h.deliver(ctx, nt)
	}
}

// deliver POSTs nt, retrying transient failures.
func (h *webhook) deliver(ctx context.Context, nt Notification) {
	body, err := json.Marshal(nt)
	if err != nil {
		h.n.deliveries.WithLabelValues(deliveryFailed).Inc()
		h.n.log.Error("encoding notification", "err", err)
		return
	}
	log := h.n.log.With("webhook", h.name, "kind", nt.Kind, "cluster", nt.Cluster, "id", nt.ID)
	start := time.Now()
	wait := h.backoff
	for attempt := 1; ; attempt++ {
		retry, retryAfter, err := h.post(ctx, nt, body)
		if err == nil {
			h.n.deliveries.WithLabelValues(deliveryOK).Inc()
			log.Debug("notification delivered", "attempt", attempt)
			return
		}
		if !retry {
			h.n.deliveries.WithLabelValues(deliveryRejected).Inc()
			log.Error("notification rejected by the webhook; not retried", "attempt", attempt, "err", err)
			return
		}
		if retryAfter > wait {
			wait = min(retryAfter, h.maxWait)
		}
		if attempt >= notifyMaxAttempts || time.Since(start)+wait > h.budget || ctx.Err() != nil {
			h.n.deliveries.WithLabelValues(deliveryFailed).Inc()
			log.Error("notification not delivered; giving up", "attempts", attempt, "err", err)
			return
		}
		h.n.deliveries.WithLabelValues(deliveryRetry).Inc()
		log.Warn("notification delivery failed; retrying", "attempt", attempt, "in", wait, "err", err)
		select {
		case <-ctx.Done():
			h.n.deliveries.WithLabelValues(deliveryFailed).Inc()
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, h.maxWait)
	}
}

// post makes one attempt. retry says whether a failure is transient;
// retryAfter is the receiver's Retry-After, if any.
func (h *webhook) post(ctx context.Context, nt Notification, body []byte) (retry bool, retryAfter time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return false, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "pgdr-coordinator")
	req.Header.Set("X-Pgdr-Event", nt.Kind)
	req.Header.Set("X-Pgdr-Delivery", nt.ID)
	if len(h.secret) > 0 {
		req.Header.Set("X-Pgdr-Signature", "sha256="+notify.Sign(h.secret, body))
	}
	resp, err := h.client.Do(req)
	if err != nil {
		// The URL may hold a token: report the error without it.
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) && ue.Unwrap() != nil {
			err = ue.Unwrap()
		}
		return true, 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, 0, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		if s, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After"))); err == nil && s > 0 {
			retryAfter = time.Duration(s) * time.Second
		}
		return true, retryAfter, fmt.Errorf("HTTP %s", resp.Status)
	default:
		return false, 0, fmt.Errorf("HTTP %s", resp.Status)
	}
}

// notifyEvent enqueues a recorded event when this coordinator leads and
// the kind is notified. recordEvent calls it after a successful record.
func (s *Server) notifyEvent(cluster, kind, node string, epoch uint64, msg string, details map[string]string) {
	if !s.notify.wants(kind) || !s.isLeader() {
		return
	}
	d := make(map[string]string, len(details))
	for k, v := range details {
		d[k] = v
	}
	s.notify.enqueue(Notification{
		Cluster: cluster, Kind: kind, Node: node, Epoch: epoch, Message: msg, Details: d,
		Time: time.Now().UTC(), Coordinator: s.cfg.Name,
	})
}
