package server

import (
	"strings"
	"testing"
	"time"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

func TestLeaseRenewal(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	ttl := 5 * time.Second
	l := newLeases()
	st := &pgdrv1.State{Clusters: map[string]*pgdrv1.Cluster{"main": {Primary: "a", Epoch: 2}}}
	l.assumeHeld(st, t0, ttl)
	if le, _ := l.get("main"); le.holder != "a" || !le.expires.Equal(t0.Add(ttl)) {
		t.Fatalf("a new leader must assume the primary holds a full TTL: %+v", le)
	}
	steps := []struct {
		name     string
		holder   string
		epoch    uint64
		primary  string
		current  uint64
		at       time.Duration
		refusal  string // "" = granted
		expireAt time.Duration
	}{
		{"#1 no primary recorded yet", "a", 0, "", 0, 0, "no primary recorded", 5 * time.Second},
		{"#2 the primary renews in time", "a", 2, "a", 2, time.Second, "", 6 * time.Second},
		{"#3 another member asks", "b", 2, "a", 2, 2 * time.Second, "recorded primary of cluster main is a", 6 * time.Second},
		{"#4 the primary with a stale epoch", "a", 1, "a", 2, 2 * time.Second, "stale epoch 1", 6 * time.Second},
		{"#5 renewed again", "a", 2, "a", 2, 5 * time.Second, "", 10 * time.Second},
		{"#6 late (failsafe): the lease expired, no failover began: renewed", "a", 2, "a", 2, 10 * time.Second, "", 15 * time.Second},
	}
	for _, s := range steps {
		got := l.renew("main", s.holder, s.epoch, s.primary, s.current, t0.Add(s.at), ttl)
		if (s.refusal == "") != (got == "") || (s.refusal != "" && !strings.Contains(got, s.refusal)) {
			t.Fatalf("%s: got %q, want refusal %q", s.name, got, s.refusal)
		}
		if le, _ := l.get("main"); !le.expires.Equal(t0.Add(s.expireAt)) {
			t.Fatalf("%s: lease expires %v, want +%v", s.name, le.expires.Sub(t0), s.expireAt)
		}
	}
	// A revoked lease is never renewed, even before it expires.
	l.assumeHeld(st, t0, ttl)
	l.revoke("main", 2)
	if got := l.renew("main", "a", 2, "a", 2, t0.Add(time.Second), ttl); !strings.Contains(got, "revoked") {
		t.Fatalf("renewal of a revoked lease: %q", got)
	}
	// A new primary at a new epoch gets a fresh lease.
	if got := l.renew("main", "b", 3, "b", 3, t0.Add(time.Second), ttl); got != "" {
		t.Fatalf("new primary refused: %q", got)
	}
}

func TestLeaseEnsure(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	l := newLeases()
	// A primary recorded after this leader took over has no lease: it
	// gets a full TTL from when the leader first looks, not an expired one.
	l.ensure("main", "a", 1, t0, 5*time.Second)
	if le, ok := l.get("main"); !ok || !le.expires.Equal(t0.Add(5*time.Second)) {
		t.Fatalf("ensure: %+v %v", le, ok)
	}
	// Ensuring again does not extend it.
	l.ensure("main", "a", 1, t0.Add(3*time.Second), 5*time.Second)
	if le, _ := l.get("main"); !le.expires.Equal(t0.Add(5 * time.Second)) {
		t.Fatalf("ensure extended a lease: %+v", le)
	}
	// A new epoch gets its own.
	l.ensure("main", "b", 2, t0.Add(3*time.Second), 5*time.Second)
	if le, _ := l.get("main"); le.holder != "b" || !le.expires.Equal(t0.Add(8*time.Second)) {
		t.Fatalf("ensure for a new epoch: %+v", le)
	}
}
