package failover

import (
	"slices"
	"testing"
	"time"
)

// TestRefusedReasons: every decision against failing over an unhealthy
// primary names one of the fixed Refused codes; a decision that acts, or
// a healthy primary, names none.
func TestRefusedReasons(t *testing.T) {
	cases := []struct {
		name string
		in   Input
		want string
	}{
		{"promotes", lost(replica("b", base)), ""},
		{"healthy primary", with(lost(replica("b", base)), func(in *Input) { in.Members["a"] = primary("a") }), ""},
		{"lease running", with(lost(replica("b", base)), func(in *Input) { in.LeaseExpiresAt = t0.Add(time.Second) }), ""},
		{"paused", with(lost(replica("b", base)), func(in *Input) { in.Paused = true }), RefusedPaused},
		{"paused, unpromoted primary", with(lost(replica("b", base)), func(in *Input) {
			in.Paused = true
			in.Members["a"] = replica("a", base)
		}), RefusedPaused},
		{"unpromoted primary refuses", with(lost(replica("b", base)), func(in *Input) {
			in.Members["a"] = replica("a", base, refuses("acked"))
		}), RefusedFailsafe},
		{"failsafe ack", lost(replica("b", base, refuses("acknowledged a's failsafe ping"))), RefusedFailsafe},
		{"min interval", with(lost(replica("b", base)), func(in *Input) {
			in.LastFailoverAt, in.Policy.MinInterval = t0.Add(-time.Second), time.Minute
		}), RefusedMinInterval},
		{"no other member", lost(), RefusedNoCandidate},
		{"all stale or fenced", lost(replica("b", base, stale), replica("c", base, fenced)), RefusedNoCandidate},
		{"lags", lost(replica("b", base-2*mib), replica("c", base, stale)), RefusedLag},
		{"primary LSN unknown", with(lost(replica("b", base)), func(in *Input) { in.PrimaryLastLSN = 0 }), RefusedLag},
		{"not synchronous", with(lost(replica("b", base), replica("c", base, noConn)), func(in *Input) { in.Policy.Synchronous = "on" }), RefusedNotSynchronous},
		{"lag outranks not synchronous", with(lost(replica("b", base), replica("c", base-2*mib, sync)), func(in *Input) { in.Policy.Synchronous = "on" }), RefusedLag},
	}
	codes := []string{"", RefusedPaused, RefusedFailsafe, RefusedMinInterval, RefusedLag, RefusedNotSynchronous, RefusedNoCandidate}
	for _, c := range cases {
		d := Decide(c.in)
		if d.Refused != c.want {
			t.Errorf("%s: Refused %q, want %q (%s: %s)", c.name, d.Refused, c.want, d.Action, d.Reason)
		}
		if !slices.Contains(codes, d.Refused) {
			t.Errorf("%s: Refused %q is not one of the fixed set", c.name, d.Refused)
		}
	}
}

// TestCandidates: the members a failover would promote now, best first,
// whatever the primary's health, a pause or a recent failover.
func TestCandidates(t *testing.T) {
	in := lost(replica("b", base-100), replica("c", base), replica("d", base, stale), replica("e", base-2*mib), replica("f", base, tags(TagNoFailover)))
	in.Members["a"] = primary("a")
	in.Paused, in.LastFailoverAt, in.Policy.MinInterval = true, t0, time.Hour
	if got := Candidates(in); !slices.Equal(got, []string{"c", "b"}) {
		t.Fatalf("Candidates = %v, want [c b]", got)
	}
	in.PrimaryLastLSN = 0
	if got := Candidates(in); len(got) != 0 {
		t.Fatalf("Candidates with the primary's LSN unknown = %v, want none", got)
	}
}
