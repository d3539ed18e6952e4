package notify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options tune delivery. Zero fields take the defaults.
type Options struct {
	MaxAttempts   int           // attempts per delivery (default 5)
	Backoff       time.Duration // wait before the 2nd attempt, doubled each retry (default 1s)
	MaxBackoff    time.Duration // cap on a computed backoff (default 16s)
	MaxRetryAfter time.Duration // cap on a receiver's Retry-After (default 60s)
	LogSize       int           // deliveries kept in the log (default 100)
	Client        *http.Client  // default: 10s timeout
	// Sleep waits d or until ctx is done (tests inject one that does not
	// sleep). Now reads the clock for the delivery log.
	Sleep func(ctx context.Context, d time.Duration) error
	Now   func() time.Time
	Log   *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 5
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 16 * time.Second
	}
	if o.MaxRetryAfter <= 0 {
		o.MaxRetryAfter = time.Minute
	}
	if o.LogSize <= 0 {
		o.LogSize = 100
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if o.Sleep == nil {
		o.Sleep = sleepCtx
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Delivery is one attempt to deliver an event to a channel.
type Delivery struct {
	Channel    string        `json:"channel"`
	Type       string        `json:"type"`
	EventID    string        `json:"event_id"` // the incident id
	Action     string        `json:"action"`   // the event's status
	Attempt    int           `json:"attempt"`  // 1-based
	StatusCode int           `json:"status_code,omitempty"`
	Error      string        `json:"error,omitempty"`
	Retry      bool          `json:"retry"`          // another attempt follows
	Wait       time.Duration `json:"wait,omitempty"` // before the next attempt
	Time       time.Time     `json:"time"`           // when the attempt ended
}

// Notifier delivers events to its channels and logs the last deliveries.
type Notifier struct {
	channels []Channel
	opts     Options

	mu   sync.Mutex
	ring []Delivery // bounded to opts.LogSize
	next int        // where the next entry goes once ring is full
}

// New returns a notifier for channels.
func New(opts Options, channels ...Channel) *Notifier {
	return &Notifier{channels: channels, opts: opts.withDefaults()}
}

// NewFromConfig validates cfg and builds its channels, reading their
// secret files.
func NewFromConfig(cfg Config, opts Options) (*Notifier, error) {
	if err := Validate(cfg); err != nil {
		return nil, fmt.Errorf("notify config: %w", err)
	}
	opts = opts.withDefaults()
	var chs []Channel
	for _, c := range cfg.Channels {
		ch, err := NewChannel(opts.Log, c)
		if err != nil {
			return nil, fmt.Errorf("notify config: %w", err)
		}
		chs = append(chs, ch)
	}
	return New(opts, chs...), nil
}

// Channels lists the notifier's channels.
func (n *Notifier) Channels() []Channel { return append([]Channel(nil), n.channels...) }

// Send delivers ev to every channel, one after the other, and returns the
// channels' errors joined.
func (n *Notifier) Send(ctx context.Context, ev Event) error {
	if err := ev.Validate(); err != nil {
		return err
	}
	var errs []error
	for _, ch := range n.channels {
		if err := n.Deliver(ctx, ch, ev); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Deliver delivers ev to ch with retries. The error names the channel and
// never holds its secrets.
func (n *Notifier) Deliver(ctx context.Context, ch Channel, ev Event) error {
	if err := ev.Validate(); err != nil {
		return err
	}
	var last error
	for attempt := 1; attempt <= n.opts.MaxAttempts; attempt++ {
		code, retry, retryAfter, err := n.attempt(ctx, ch, ev)
		d := Delivery{
			Channel: ch.Name(), Type: ch.Type(), EventID: ev.IncidentID, Action: string(ev.Status),
			Attempt: attempt, StatusCode: code, Time: n.opts.Now(),
		}
		if err == nil {
			n.record(d)
			return nil
		}
		msg := scrub(ch, err.Error())
		last = fmt.Errorf("notify %s %s: event %s: attempt %d: %s", ch.Type(), ch.Name(), ev.IncidentID, attempt, msg)
		d.Error = msg
		d.Retry = retry && attempt < n.opts.MaxAttempts && ctx.Err() == nil
		if d.Retry {
			d.Wait = n.wait(attempt, retryAfter)
		}
		n.record(d)
		n.opts.Log.Warn("notify: delivery failed", "channel", ch.Name(), "type", ch.Type(), "incident", ev.IncidentID,
			"action", ev.Status, "attempt", attempt, "status", code, "error", msg, "retry", d.Retry, "wait", d.Wait)
		if !d.Retry {
			if retry && ctx.Err() == nil {
				return transientError{last} // every attempt failed, each worth retrying
			}
			return last
		}
		if err := n.opts.Sleep(ctx, d.Wait); err != nil {
			return fmt.Errorf("%w (then %v)", last, err)
		}
	}
	return last
}

// transientError is a delivery whose every attempt failed with an error
// worth retrying (a network error, 5xx, 429).
type transientError struct{ error }

func (e transientError) Unwrap() error { return e.error }

// Transient reports whether Deliver's err says the receiver failed every
// attempt with errors worth retrying later (an outage), rather than
// refusing the request (4xx) or the caller giving up (ctx).
func Transient(err error) bool {
	var t transientError
	return errors.As(err, &t)
}

// wait is the pause after a failed attempt: the receiver's Retry-After
// (capped) when it gave one, else the exponential backoff (capped).
func (n *Notifier) wait(attempt int, retryAfter time.Duration) time.Duration {
	if retryAfter > 0 {
		return min(retryAfter, n.opts.MaxRetryAfter)
	}
	d := n.opts.Backoff
	for i := 1; i < attempt && d < n.opts.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, n.opts.MaxBackoff)
}

// attempt makes one request. retry says whether a failure is transient.
func (n *Notifier) attempt(ctx context.Context, ch Channel, ev Event) (code int, retry bool, retryAfter time.Duration, err error) {
	req, err := ch.Request(ctx, ev)
	if err != nil {
		return 0, false, 0, err
	}
	resp, err := n.opts.Client.Do(req)
	if err != nil {
		// *url.Error quotes the URL, which may be the secret (Slack).
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, ctx.Err() == nil, 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	code = resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return code, false, 0, nil
	case code == http.StatusTooManyRequests || code >= 500:
		return code, true, parseRetryAfter(resp.Header.Get("Retry-After"), n.opts.Now()), fmt.Errorf("HTTP %s", resp.Status)
	default:
		return code, false, 0, fmt.Errorf("HTTP %s", resp.Status)
	}
}

// parseRetryAfter reads delay-seconds or an HTTP date; 0 when absent or bad.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s > 0 {
			return time.Duration(s) * time.Second
		}
		return 0
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// scrub removes ch's secrets from s.
func scrub(ch Channel, s string) string {
	sc, ok := ch.(secrets)
	if !ok {
		return s
	}
	for _, sec := range sc.secrets() {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	return s
}

func (n *Notifier) record(d Delivery) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.ring) < n.opts.LogSize {
		n.ring = append(n.ring, d)
		return
	}
	n.ring[n.next] = d
	n.next = (n.next + 1) % len(n.ring)
}

// Deliveries returns the logged deliveries, oldest first.
func (n *Notifier) Deliveries() []Delivery {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]Delivery, 0, len(n.ring))
	out = append(out, n.ring[n.next:]...)
	return append(out, n.ring[:n.next]...)
}
