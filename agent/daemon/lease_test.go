package daemon

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/agent/lease"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestPrimaryFollowsLease: with coordinators configured /primary answers
// 200 only while a lease is granted and not expired; without them it
// answers from the report alone.
func TestPrimaryFollowsLease(t *testing.T) {
	report := func() *pgdrv1.HealthReport {
		return &pgdrv1.HealthReport{Cluster: "main", Node: "pg-a2", Time: timestamppb.Now(), PostmasterAlive: true, Connectable: true}
	}
	standalone := New(testConfig(t, ""), nil, slog.New(slog.DiscardHandler))
	standalone.monitor.SetLatest(report())
	if code, body := get(t, standalone.Handler(), "GET", "/primary"); code != 200 {
		t.Fatalf("standalone /primary: %d %s", code, body)
	}
	d := New(testConfig(t, "coordinator: {addresses: ['127.0.0.1:1'], ca_file: /ca, token_file: /tok}\nfailover: {loop: 100ms, lease_ttl: 2s, safety_margin: 500ms}\n"), nil, slog.New(slog.DiscardHandler))
	d.monitor.SetLatest(report())
	h := d.Handler()
	if code, body := get(t, h, "GET", "/primary"); code != 503 || !strings.Contains(body, "no primary lease granted") {
		t.Fatalf("/primary before any grant: %d %s", code, body)
	}
	d.lease.Update(func(l *lease.Lease) {
		l.Answer("pg-a2", 1, time.Now(), &pgdrv1.RenewLeaseResponse{Granted: true})
	})
	if code, body := get(t, h, "GET", "/primary"); code != 200 {
		t.Fatalf("/primary with a lease: %d %s", code, body)
	}
	d.lease.Update(func(l *lease.Lease) {
		l.Reset(time.Now().Add(-time.Hour))
		l.Answer("pg-a2", 1, time.Now().Add(-2*time.Second), &pgdrv1.RenewLeaseResponse{Granted: true})
	})
	if code, body := get(t, h, "GET", "/primary"); code != 503 || !strings.Contains(body, "expired") {
		t.Fatalf("/primary after the deadline: %d %s", code, body)
	}
	if code, _ := get(t, h, "GET", "/health"); code != 200 {
		t.Fatalf("/health follows the report, not the lease: %d", code)
	}
}
