package server

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

func TestFailsafeRefusal(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	rep := func(ackAgo time.Duration, primary string) *pgdrv1.HealthReport {
		return &pgdrv1.HealthReport{Time: timestamppb.New(t0), FailsafeAckedAt: timestamppb.New(t0.Add(-ackAgo)), FailsafePrimary: primary, FailsafeEpoch: 3}
	}
	ttl := 5 * time.Second
	if got := failsafeRefusal(rep(2*time.Second, "a"), "a", ttl); !strings.Contains(got, "acknowledged a's failsafe ping 2s ago") {
		t.Errorf("fresh ack: %q", got)
	}
	for name, r := range map[string]*pgdrv1.HealthReport{
		"older than the TTL":    rep(5*time.Second, "a"),
		"acked another primary": rep(time.Second, "b"),
		"never acked":           {Time: timestamppb.New(t0)},
		"no report":             nil,
	} {
		if got := failsafeRefusal(r, "a", ttl); got != "" {
			t.Errorf("%s: %q", name, got)
		}
	}
	// Any primary (a switchover's target, a runbook's view): the agent
	// refuses promotion after acknowledging any primary's ping.
	if got := failsafeRefusal(rep(time.Second, "b"), "", ttl); !strings.Contains(got, "acknowledged b's failsafe ping 1s ago") {
		t.Errorf("any primary, fresh ack of b: %q", got)
	}
	if got := failsafeRefusal(rep(6*time.Second, "b"), "", ttl); got != "" {
		t.Errorf("any primary, ack older than the TTL: %q", got)
	}
	// A member that acknowledged a primary with a longer lease TTL reports
	// its longer refusal window; the leader holds back for it too.
	long := rep(7*time.Second, "a")
	long.FailsafeRefuseMs = 10000
	if got := failsafeRefusal(long, "a", ttl); !strings.Contains(got, "acknowledged a's failsafe ping 7s ago") {
		t.Errorf("ack 7s ago, member refuses for 10s, leader's TTL 5s: %q", got)
	}
	if !isFailsafeRefusal("refuses promotion: acknowledged a's failsafe ping 1.2s ago") || isFailsafeRefusal("refusing to promote: this node is fenced") {
		t.Error("isFailsafeRefusal")
	}
}

// TestRevokeExpired: a failover revokes only an expired lease, atomically,
// so that a primary renewing under failsafe and a promotion never overlap.
func TestRevokeExpired(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	ttl := 5 * time.Second
	l := newLeases()
	l.ensure("main", "a", 2, t0, ttl)
	if l.revokeExpired("main", 2, t0.Add(4*time.Second)) {
		t.Fatal("revoked a live lease")
	}
	// Expired, then renewed (failsafe primary back): not revoked.
	if got := l.renew("main", "a", 2, "a", 2, t0.Add(8*time.Second), ttl); got != "" {
		t.Fatalf("renewal after expiry with no failover: %q", got)
	}
	if l.revokeExpired("main", 2, t0.Add(9*time.Second)) {
		t.Fatal("revoked a renewed lease")
	}
	// Expired and revoked first: the renewal is refused.
	if !l.revokeExpired("main", 2, t0.Add(14*time.Second)) {
		t.Fatal("did not revoke an expired lease")
	}
	if got := l.renew("main", "a", 2, "a", 2, t0.Add(14*time.Second), ttl); !strings.Contains(got, "revoked") {
		t.Fatalf("renewal after the revocation: %q", got)
	}
}
