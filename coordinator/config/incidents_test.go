package config

import (
	"fmt"
	"strings"
	"testing"
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
