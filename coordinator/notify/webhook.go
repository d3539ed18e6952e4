package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
	"time"
)

// Webhook sends pgdr's signed webhook format, the one coordinator/server
// sends for history events: a JSON body with id, cluster, kind, node,
// epoch, message, details, time and coordinator, headers X-Pgdr-Event,
// X-Pgdr-Delivery and, with a secret, X-Pgdr-Signature "sha256=" + hex
// HMAC-SHA256 of the body. The kind is "incident_" + status.
// The format (Notification, Sign) is defined here and coordinator/server
// sends its history events in it.
type Webhook struct {
	name   string
	url    string
	secret []byte
}

func (w *Webhook) Name() string      { return w.name }
func (w *Webhook) Type() string      { return TypeWebhook }
func (w *Webhook) String() string    { return "webhook " + w.name }
func (w *Webhook) secrets() []string { return []string{string(w.secret)} }

// Notification is the signed webhook's JSON body: coordinator/server sends
// history events in it, the Webhook channel incidents.
type Notification struct {
	ID          string            `json:"id"`
	Cluster     string            `json:"cluster"`
	Kind        string            `json:"kind"`
	Node        string            `json:"node"`
	Epoch       uint64            `json:"epoch"`
	Message     string            `json:"message"`
	Details     map[string]string `json:"details"`
	Time        time.Time         `json:"time"`
	Coordinator string            `json:"coordinator"`
}

// webhookDeliveryID identifies one state of one incident: receivers dedupe
// retried deliveries by it.
func webhookDeliveryID(ev Event) string {
	if ev.SendID != "" {
		return ev.SendID
	}
	return ev.IncidentID + "-" + string(ev.Status) + "-" + ev.when().UTC().Format("20060102T150405.000000000Z")
}

func webhookPayload(ev Event) Notification {
	d := map[string]string{
		"incident_id": ev.IncidentID,
		"title":       ev.Title,
		"category":    ev.Category,
		"severity":    string(ev.Severity),
		"status":      string(ev.Status),
	}
	if ev.DedupKey != "" {
		d["dedup_key"] = ev.DedupKey
	}
	d["escalation_level"] = strconv.Itoa(ev.Level)
	if ev.Link != "" {
		d["link"] = ev.Link
	}
	msg := ev.Title
	if ev.Timeline != "" {
		msg += ": " + ev.Timeline
	}
	return Notification{
		ID:          webhookDeliveryID(ev),
		Cluster:     ev.Cluster,
		Kind:        "incident_" + string(ev.Status),
		Message:     msg,
		Details:     d,
		Time:        ev.when().UTC(),
		Coordinator: ev.Source,
	}
}

// Sign is the hex HMAC-SHA256 of body under secret (the X-Pgdr-Signature
// header is "sha256=" + Sign).
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// Request renders ev in the signed webhook format.
func (w *Webhook) Request(ctx context.Context, ev Event) (*http.Request, error) {
	b := webhookPayload(ev)
	req, body, err := jsonRequest(ctx, w.url, b)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Pgdr-Event", b.Kind)
	req.Header.Set("X-Pgdr-Delivery", b.ID)
	if len(w.secret) > 0 {
		req.Header.Set("X-Pgdr-Signature", "sha256="+Sign(w.secret, body))
	}
	return req, nil
}
