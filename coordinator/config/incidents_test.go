package config

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestIncidentChannelsBounded: the leader records the deliveries of one
// notification in one command, which the state machine refuses beyond 64
// lines; more channels than that would leave the outbox unrecorded and
// every channel notified again each interval, so the config refuses them.
func TestIncidentChannelsBounded(t *testing.T) {
	conf := func(n int) string {
		var b strings.Builder
		b.WriteString(good + "incidents:\n  channels:\n")
		for i := range n {
			fmt.Fprintf(&b, "    - {name: am%d, type: alertmanager, url: \"http://am%d:9093\"}\n", i, i)
		}
		return b.String()
	}
	if _, err := Parse([]byte(conf(64))); err != nil {
		t.Fatalf("64 channels: %v", err)
	}
	if _, err := Parse([]byte(conf(65))); err == nil || !strings.Contains(err.Error(), "incidents.channels") {
		t.Errorf("65 channels: %v, want an error naming incidents.channels", err)
	}
}

// TestQuorumLostAfterAboveElections: quorum_lost_after shorter than an
// ordinary election (failure detection plus a randomized election timeout
// or two) would record every leader change as a lost quorum.
func TestQuorumLostAfterAboveElections(t *testing.T) {
	src := good + "incidents:\n  quorum_lost_after: 1s\n"
	if _, err := Parse([]byte(src)); err == nil || !strings.Contains(err.Error(), "incidents.quorum_lost_after") {
		t.Errorf("quorum_lost_after 1s with election_timeout 700ms: %v, want an error naming incidents.quorum_lost_after", err)
	}
	if _, err := Parse([]byte(good + "incidents:\n  quorum_lost_after: 3s\n")); err != nil {
		t.Errorf("quorum_lost_after 3s: %v", err)
	}
}

// TestQuorumLostAfterDefaultFollowsRaft: left out, quorum_lost_after is
// raised above slow raft timeouts instead of refusing the config.
func TestQuorumLostAfterDefaultFollowsRaft(t *testing.T) {
	src := strings.Replace(good, `raft: {bind: "127.0.0.1:7001"}`, `raft: {bind: "127.0.0.1:7001", election_timeout: 10s, heartbeat_timeout: 10s, leader_lease_timeout: 1s}`, 1)
	c, err := Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Incidents.QuorumLostAfter.Duration; got != 40*time.Second {
		t.Errorf("quorum_lost_after %s with 10s raft timeouts, want 40s", got)
	}
}
