package config

import (
	"fmt"
	"net/url"
	"regexp"
	"time"
)

// DefaultNotificationKinds are the history kinds notified when
// notifications.kinds is left out: every failover, switchover, manual
// failover, refused failover, rejoin, failed restore drill, and every
// recovery target breach starting and ending (coordinator/compliance).
var DefaultNotificationKinds = []string{
	"failover-intent", "failover-result", "failover-refused",
	"switchover-intent", "switchover-result",
	"manual-failover-intent", "manual-failover-result",
	"rejoin",
	"target-breached", "target-restored",
	"drill-failed",
}

// Defaults of a webhook.
const (
	DefaultWebhookTimeout   = 5 * time.Second
	DefaultWebhookQueueSize = 1000
)

// Notifications sends history events to webhooks. Only the Raft leader
// sends; see coordinator/server/notify.go.
type Notifications struct {
	Webhooks []Webhook `yaml:"webhooks"`
	// Kinds lists the history kinds sent (default DefaultNotificationKinds).
	Kinds []string `yaml:"kinds"`
}

// Webhook is one HTTP(S) endpoint receiving a JSON POST per event.
type Webhook struct {
	URL string `yaml:"url"`
	// SecretFile holds a shared secret: the body is signed with
	// HMAC-SHA256, sent as X-Pgdr-Signature: sha256=<hex>. Optional.
	SecretFile string `yaml:"secret_file"`
	// Timeout bounds one delivery attempt (default 5s).
	Timeout Duration `yaml:"timeout"`
	// QueueSize bounds the events waiting for this webhook (default
	// 1000); when full the oldest is dropped and counted.
	QueueSize int `yaml:"queue_size"`
}

var kindRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

func (n *Notifications) defaults() {
	if n.Kinds == nil {
		n.Kinds = append([]string(nil), DefaultNotificationKinds...)
	}
	for i := range n.Webhooks {
		w := &n.Webhooks[i]
		if w.Timeout.Duration == 0 {
			w.Timeout.Duration = DefaultWebhookTimeout
		}
		if w.QueueSize == 0 {
			w.QueueSize = DefaultWebhookQueueSize
		}
	}
}

func (n *Notifications) validate() error {
	for i, w := range n.Webhooks {
		f := fmt.Sprintf("notifications.webhooks[%d]", i)
		if w.URL == "" {
			return &FieldError{f + ".url", "required (http:// or https://)"}
		}
		u, err := url.Parse(w.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			// The URL is not echoed: it may carry a token.
			return &FieldError{f + ".url", "not an http:// or https:// URL with a host"}
		}
		if w.Timeout.Duration < 100*time.Millisecond || w.Timeout.Duration > 5*time.Minute {
			return &FieldError{f + ".timeout", fmt.Sprintf("%s is out of range 100ms..5m", w.Timeout.Duration)}
		}
		if w.QueueSize < 1 || w.QueueSize > 1000000 {
			return &FieldError{f + ".queue_size", fmt.Sprintf("%d is out of range 1..1000000", w.QueueSize)}
		}
	}
	seen := map[string]bool{}
	for i, k := range n.Kinds {
		f := fmt.Sprintf("notifications.kinds[%d]", i)
		if !kindRE.MatchString(k) {
			return &FieldError{f, fmt.Sprintf("%q is not a history kind (lower case, digits and '-', e.g. failover-result)", k)}
		}
		if seen[k] {
			return &FieldError{f, fmt.Sprintf("%q is listed twice", k)}
		}
		seen[k] = true
	}
	if len(n.Webhooks) > 0 && len(n.Kinds) == 0 {
		return &FieldError{"notifications.kinds", "is empty: no event would be sent (leave it out for the default kinds)"}
	}
	return nil
}
