package notify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/notify"
	"github.com/pgdr/pgdr/coordinator/server"
)

// TestWebhookSignatureMatchesServer: the webhook channel's body decodes
// strictly into the server's Notification and is signed as the server
// signs, so existing receivers verify it unchanged.
func TestWebhookSignatureMatchesServer(t *testing.T) {
	type got struct {
		body []byte
		sig  string
	}
	ch := make(chan got, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		ch <- got{b, r.Header.Get("X-Pgdr-Signature")}
	}))
	defer srv.Close()
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte("shared-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := notify.NewChannel(nil, notify.ChannelConfig{Name: "h", Type: notify.TypeWebhook, URL: srv.URL, SecretFile: key})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 7, 19, 0, 0, 0, time.UTC)
	ev := notify.Event{IncidentID: "inc-1", Cluster: "main", Title: "fenced", Category: "fencing",
		Severity: notify.SeverityHigh, Status: notify.StatusTriggered, OpenedAt: now, Source: "coord-1"}
	if err := notify.New(notify.Options{}, c).Send(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	g := <-ch
	if want := "sha256=" + server.Sign([]byte("shared-secret"), g.body); g.sig != want {
		t.Fatalf("signature %q, server would send %q", g.sig, want)
	}
	var n server.Notification
	d := json.NewDecoder(bytes.NewReader(g.body))
	d.DisallowUnknownFields()
	if err := d.Decode(&n); err != nil {
		t.Fatalf("body does not decode as server.Notification: %v", err)
	}
	if n.Cluster != "main" || n.Kind != "incident_triggered" || n.Details["incident_id"] != "inc-1" || !n.Time.Equal(now) {
		t.Fatalf("decoded %+v", n)
	}
}
