package server

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pgdr/pgdr/coordinator/outcome"
)

// TestRaftErrorClassification (issue 12 item 12): only errors raft raises
// before an entry reaches the log say "not submitted" (a client may send
// the request elsewhere); the rest say the outcome is unknown, with a code
// no client retries.
func TestRaftErrorClassification(t *testing.T) {
	for _, tc := range []struct {
		err          error
		notSubmitted bool
	}{
		{raft.ErrNotLeader, true},
		{raft.ErrEnqueueTimeout, true},
		{raft.ErrLeadershipTransferInProgress, true},
		{fmt.Errorf("wrapped: %w", raft.ErrNotLeader), true},
		{raft.ErrLeadershipLost, false},
		{raft.ErrRaftShutdown, false},
		{raft.ErrAbortedByRestore, false},
		{errors.New("disk full"), false},
	} {
		got := raftError("raft apply", tc.err)
		if outcome.IsNotSubmitted(got) != tc.notSubmitted {
			t.Errorf("%v: classified %v, want not-submitted=%v", tc.err, got, tc.notSubmitted)
		}
		if !tc.notSubmitted {
			if status.Code(got) != codes.Unknown || !strings.Contains(got.Error(), "outcome is unknown") || !strings.Contains(got.Error(), "pgdrctl history") {
				t.Errorf("%v: got %v, want codes.Unknown saying the outcome is unknown", tc.err, got)
			}
		} else if status.Code(got) != codes.Unavailable {
			t.Errorf("%v: got %v, want Unavailable", tc.err, got)
		}
	}
	// A forwarded write: the leader's own answers pass through; a bare
	// Unavailable (the connection broke with the request out) is unknown.
	if err := outcome.Forwarded("forwarding", outcome.NotSubmitted("no leader")); !outcome.IsNotSubmitted(err) {
		t.Errorf("forwarded not-submitted became %v", err)
	}
	if err := outcome.Forwarded("forwarding", status.Error(codes.Unavailable, "transport is closing")); status.Code(err) != codes.Unknown {
		t.Errorf("forwarded bare Unavailable became %v, want Unknown", err)
	}
	if err := outcome.Forwarded("forwarding", status.Error(codes.FailedPrecondition, "rejected")); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("forwarded rejection became %v", err)
	}
}

// TestCheckRemovalQuorum (issue 12 item 8): the voters left after a
// removal must hold a majority the leader reaches.
func TestCheckRemovalQuorum(t *testing.T) {
	now := time.Now()
	down := func(names ...string) map[string]time.Time {
		m := map[string]time.Time{}
		for _, n := range names {
			m[n] = now.Add(-42 * time.Second)
		}
		return m
	}
	for _, tc := range []struct {
		name         string
		voters       []string
		remove, self string
		unreachable  map[string]time.Time
		refused      bool
		mentions     string
	}{
		{"#1 all reachable, remove a follower", []string{"c1", "c2", "c3"}, "c2", "c1", nil, false, ""},
		{"#2 c3 down, remove healthy c2: {c1,c3} needs both", []string{"c1", "c2", "c3"}, "c2", "c1", down("c3"), true, "c3 (last reached 42s ago)"},
		{"#3 c3 down, remove c3 itself: {c1,c2} both reached", []string{"c1", "c2", "c3"}, "c3", "c1", down("c3"), false, ""},
		{"#4 leader removes itself, c3 down: {c2,c3} reaches one", []string{"c1", "c2", "c3"}, "c1", "c1", down("c3"), true, "quorum of 2"},
		{"#5 five voters, one down, remove a healthy one: 3 of 4 reached", []string{"c1", "c2", "c3", "c4", "c5"}, "c2", "c1", down("c5"), false, ""},
		{"#6 five voters, two down, remove a healthy one: 2 of 4 reached", []string{"c1", "c2", "c3", "c4", "c5"}, "c2", "c1", down("c4", "c5"), true, "c4"},
		{"#7 two voters, remove the other", []string{"c1", "c2"}, "c2", "c1", down("c2"), false, ""},
		{"#8 never reached by this leader", []string{"c1", "c2", "c3"}, "c2", "c1", map[string]time.Time{"c3": {}}, true, "not reached by this leader"},
	} {
		err := checkRemovalQuorum(tc.voters, tc.remove, tc.self, tc.unreachable, now)
		if (err != nil) != tc.refused {
			t.Errorf("%s: got %v, refused=%v wanted", tc.name, err, tc.refused)
			continue
		}
		if err != nil && (status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), tc.mentions) || !strings.Contains(err.Error(), "--force")) {
			t.Errorf("%s: %v does not say why (%q) or mention --force", tc.name, err, tc.mentions)
		}
	}
}

// TestContactsFollowHeartbeats: a failed heartbeat marks a peer
// unreachable until one resumes; a leadership change starts afresh.
func TestContactsFollowHeartbeats(t *testing.T) {
	c := newContacts()
	last := time.Now().Add(-time.Minute)
	c.observe(raft.FailedHeartbeatObservation{PeerID: "c3", LastContact: last})
	c.observe(raft.FailedHeartbeatObservation{PeerID: "c3", LastContact: time.Now()})
	if got := c.unreachable(); !got["c3"].Equal(last) || len(got) != 1 {
		t.Fatalf("after failures: %v", got)
	}
	c.observe(raft.ResumedHeartbeatObservation{PeerID: "c3"})
	if got := c.unreachable(); len(got) != 0 {
		t.Fatalf("after resume: %v", got)
	}
	c.observe(raft.FailedHeartbeatObservation{PeerID: "c2"})
	c.observe(raft.PeerObservation{Peer: raft.Server{ID: "c2"}, Removed: true})
	if got := c.unreachable(); len(got) != 0 {
		t.Fatalf("after c2's replication stopped: %v", got)
	}
	c.observe(raft.FailedHeartbeatObservation{PeerID: "c2"})
	c.observe(raft.LeaderObservation{})
	if got := c.unreachable(); len(got) != 0 {
		t.Fatalf("after a leader change: %v", got)
	}
}
