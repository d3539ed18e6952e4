package failover

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	mib = 1 << 20
	// base is the primary's last known LSN in most incidents: 0/5000000.
	base = 0x5000000
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// primary is a healthy primary on timeline 3.
func primary(name string) Member {
	return Member{Name: name, Region: "eu-west-1", Fresh: true, PostmasterAlive: true, Connectable: true,
		Timeline: 3, ReceiveLSN: base, ReplayLSN: base}
}

// dead is a primary whose host is gone: its last report went stale.
func dead(name string) Member {
	m := primary(name)
	m.Fresh, m.PostmasterAlive, m.Connectable = false, false, false
	return m
}

// replica is a healthy streaming standby on timeline 3 that received lsn.
func replica(name string, lsn uint64, opts ...func(*Member)) Member {
	m := Member{Name: name, Region: "eu-west-1", Priority: 1, Fresh: true, PostmasterAlive: true, Connectable: true,
		InRecovery: true, Streaming: true, Timeline: 3, ReceiveLSN: lsn, ReplayLSN: lsn}
	for _, o := range opts {
		o(&m)
	}
	return m
}

func region(r string) func(*Member)  { return func(m *Member) { m.Region = r } }
func prio(p int32) func(*Member)     { return func(m *Member) { m.Priority = p } }
func tl(t uint32) func(*Member)      { return func(m *Member) { m.Timeline = t } }
func tags(t ...string) func(*Member) { return func(m *Member) { m.Tags = t } }
func refuses(why string) func(*Member) {
	return func(m *Member) { m.RefusesPromotion = why }
}
func stale(m *Member)    { m.Fresh = false }
func fenced(m *Member)   { m.Fenced = true }
func sync(m *Member)     { m.Synchronous = true }
func noConn(m *Member)   { m.Connectable = false }
func noPM(m *Member)     { m.PostmasterAlive, m.Connectable = false, false }
func promoted(m *Member) { m.InRecovery = false }

func members(ms ...Member) map[string]Member {
	out := make(map[string]Member, len(ms))
	for _, m := range ms {
		out[m.Name] = m
	}
	return out
}

// lost is the usual incident: primary a's host is gone and its lease ran
// out a second ago; the caller adds replicas and adjusts.
func lost(ms ...Member) Input {
	return Input{
		Cluster: "main", Primary: "a", Epoch: 7,
		LeaseExpiresAt: t0.Add(-time.Second),
		Members:        members(append([]Member{dead("a")}, ms...)...),
		PrimaryLastLSN: base,
		Now:            t0,
	}
}

func with(in Input, f func(*Input)) Input { f(&in); return in }

type incident struct {
	n         int
	what      string
	in        Input
	action    Action
	candidate string
	// reason: substrings the reason must contain.
	reason []string
	// rejected must equal Decision.Rejected exactly (nil and empty are equal).
	rejected map[string]string
	// ranked, when set, must equal Decision.Ranked.
	ranked []string
}

func incidents() []incident {
	return []incident{
		{n: 1, what: "cluster being bootstrapped, no primary recorded yet → none",
			in:     Input{Cluster: "main", Members: members(replica("b", base)), Now: t0},
			action: ActionNone, reason: []string{"no primary recorded"}},

		{n: 2, what: "quiet day: primary healthy, both replicas streaming → none",
			in:     with(lost(replica("b", base), replica("c", base)), func(in *Input) { in.Members["a"] = primary("a") }),
			action: ActionNone, reason: []string{"primary a healthy"}},

		{n: 3, what: "primary healthy while a replica refuses and another lags, lease long gone → none, nothing judged",
			in: with(lost(replica("b", base, refuses("acknowledged the primary's failsafe ping 1s ago")), replica("c", 0)),
				func(in *Input) { in.Members["a"] = primary("a") }),
			action: ActionNone, reason: []string{"primary a healthy"}},

		{n: 4, what: "primary's postmaster killed during a maintenance window (paused) → none, reported not acted on",
			in: with(lost(replica("b", base)), func(in *Input) {
				in.Paused = true
				p := primary("a")
				p.PostmasterAlive, p.Connectable = false, false
				in.Members["a"] = p
			}),
			action: ActionNone, reason: []string{"paused", "primary a is unhealthy", "postmaster not running", "not acted on"}},

		{n: 5, what: "primary host lost, its lease still runs 3.5s → wait, names the time left",
			in:     with(lost(replica("b", base)), func(in *Input) { in.LeaseExpiresAt = t0.Add(3500 * time.Millisecond) }),
			action: ActionWait, reason: []string{"3.5s more", "no fresh report", "2025-03-01T12:00:03.5Z"}},

		{n: 6, what: "primary host lost, lease ends at exactly this instant → promote the only replica",
			in:     with(lost(replica("b", base)), func(in *Input) { in.LeaseExpiresAt = t0 }),
			action: ActionPromote, candidate: "b", ranked: []string{"b"},
			reason: []string{"primary a is unhealthy (no fresh report)", "lease has expired", "promoting b", "receive LSN 0/5000000"}},

		{n: 7, what: "primary lease expired, best replica lags 20 MB over the limit → none, names the lag",
			in:     lost(replica("b", base-21*mib)),
			action: ActionNone, reason: []string{"no candidate: b: lags 22020096 bytes, limit 1048576"},
			rejected: map[string]string{"b": "lags 22020096 bytes, limit 1048576"}},

		{n: 8, what: "primary's member was deregistered (no entry at all), lease expired → promote",
			in:     with(lost(replica("b", base)), func(in *Input) { delete(in.Members, "a") }),
			action: ActionPromote, candidate: "b", reason: []string{"no report from it"}},

		{n: 9, what: "primary self-fenced after losing the coordinators, lease expired → promote",
			in: with(lost(replica("b", base)), func(in *Input) {
				p := primary("a")
				p.Fenced = true
				in.Members["a"] = p
			}),
			action: ActionPromote, candidate: "b", reason: []string{"(fenced)"}},

		{n: 10, what: "primary (promoted at this epoch) restarted in recovery (someone demoted it by hand), lease expired → promote",
			in: with(lost(replica("b", base)), func(in *Input) {
				p := primary("a")
				p.InRecovery = true
				in.Members["a"] = p
				in.PrimaryPromoted = true
			}),
			action: ActionPromote, candidate: "b", reason: []string{"(in recovery)"}},

		{n: 11, what: "flapping primary: last failover 30s ago, min interval 5m → none, names when the next may happen",
			in: with(lost(replica("b", base)), func(in *Input) {
				in.Policy.MinInterval = 5 * time.Minute
				in.LastFailoverAt = t0.Add(-30 * time.Second)
			}),
			action: ActionNone, reason: []string{"last failover was 30s ago", "2025-03-01T12:04:30Z", "in 4m30s"}},

		{n: 12, what: "flapping guard ends exactly now (last failover 5m ago) → promote",
			in: with(lost(replica("b", base)), func(in *Input) {
				in.Policy.MinInterval = 5 * time.Minute
				in.LastFailoverAt = t0.Add(-5 * time.Minute)
			}),
			action: ActionPromote, candidate: "b"},

		{n: 13, what: "min interval set but the cluster never failed over → promote",
			in:     with(lost(replica("b", base)), func(in *Input) { in.Policy.MinInterval = time.Hour }),
			action: ActionPromote, candidate: "b"},

		{n: 14, what: "lease still running and the cluster paused: paused is reported first → none",
			in: with(lost(replica("b", base)), func(in *Input) {
				in.Paused = true
				in.LeaseExpiresAt = t0.Add(time.Second)
			}),
			action: ActionNone, reason: []string{"paused"}},

		{n: 15, what: "two replicas: the one that received more WAL wins over a higher priority",
			in:     lost(replica("b", base-100, prio(9)), replica("c", base)),
			action: ActionPromote, candidate: "c", ranked: []string{"c", "b"}},

		{n: 16, what: "two replicas with the same LSN: higher priority wins",
			in:     lost(replica("b", base), replica("c", base, prio(5))),
			action: ActionPromote, candidate: "c", ranked: []string{"c", "b"}, reason: []string{"priority 5"}},

		{n: 17, what: "same LSN, same priority: the preferred region wins over name order",
			in: with(lost(replica("b", base, region("us-east-1")), replica("c", base, region("eu-west-1"))),
				func(in *Input) { in.Policy.PreferredRegions = []string{"eu-west-1", "us-east-1"} }),
			action: ActionPromote, candidate: "c", ranked: []string{"c", "b"}, reason: []string{`region "eu-west-1"`}},

		{n: 18, what: "same LSN and priority, one region not listed: the listed region wins",
			in: with(lost(replica("b", base, region("ap-south-1")), replica("c", base, region("us-east-1"))),
				func(in *Input) { in.Policy.PreferredRegions = []string{"eu-west-1", "us-east-1"} }),
			action: ActionPromote, candidate: "c", ranked: []string{"c", "b"}},

		{n: 19, what: "three identical replicas, regions unlisted: name ascending, always the same",
			in:     lost(replica("d", base), replica("c", base), replica("b", base)),
			action: ActionPromote, candidate: "b", ranked: []string{"b", "c", "d"}},

		{n: 20, what: "most advanced replica tagged no-failover → next best promoted, tag named",
			in:     lost(replica("b", base, tags("backup", TagNoFailover)), replica("c", base-10)),
			action: ActionPromote, candidate: "c",
			rejected: map[string]string{"b": "tagged no-failover"}},

		{n: 21, what: "primary cut off from the coordinators only; b acknowledged its failsafe ping → none, primary alive, wins over candidate c",
			in: lost(replica("b", base, refuses("acknowledged the primary's failsafe ping 2s ago")),
				replica("c", base)),
			action: ActionNone, reason: []string{"primary alive per b's failsafe acknowledgement; no failover"}, ranked: []string{"c"},
			rejected: map[string]string{"b": "refuses promotion: acknowledged the primary's failsafe ping 2s ago"}},

		{n: 22, what: "two replicas both acknowledge the failsafe ping → none, the first by name is cited",
			in: lost(replica("c", base, refuses("acknowledged the primary's failsafe ping 1s ago")),
				replica("b", base, refuses("acknowledged the primary's failsafe ping 2s ago"))),
			action: ActionNone, reason: []string{"primary alive per b's failsafe acknowledgement"},
			rejected: map[string]string{
				"b": "refuses promotion: acknowledged the primary's failsafe ping 2s ago",
				"c": "refuses promotion: acknowledged the primary's failsafe ping 1s ago"}},

		{n: 23, what: "region lost with primary and replica b, b's last (stale) report refused; c in another region → promote c",
			in: lost(replica("b", base, stale, refuses("acknowledged the primary's failsafe ping 1s ago")),
				replica("c", base-10, region("us-east-1"))),
			action: ActionPromote, candidate: "c",
			rejected: map[string]string{"b": "no fresh report"}},

		{n: 24, what: "replica b never followed the last failover (timeline 2), c is on 3 → promote c, names the timeline",
			in:     lost(replica("b", base, tl(2)), replica("c", base-10)),
			action: ActionPromote, candidate: "c",
			rejected: map[string]string{"b": "timeline 2 behind 3"}},

		{n: 25, what: "a stale replica on timeline 9 does not raise the bar for fresh ones → promote c",
			in:     lost(replica("b", base, tl(9), stale), replica("c", base)),
			action: ActionPromote, candidate: "c",
			rejected: map[string]string{"b": "no fresh report"}},

		{n: 26, what: "synchronous on: async c received more WAL than sync b → promote b",
			in: with(lost(replica("b", base-10, sync), replica("c", base)),
				func(in *Input) { in.Policy.Synchronous = "on" }),
			action: ActionPromote, candidate: "b",
			rejected: map[string]string{"c": "not a synchronous standby"}},

		{n: 27, what: "synchronous quorum 1: the only sync standby is fenced → none, both rejections named",
			in: with(lost(replica("b", base, sync, fenced), replica("c", base)),
				func(in *Input) { in.Policy.Synchronous = "quorum 1" }),
			action: ActionNone, reason: []string{"no candidate: b: fenced; c: not a synchronous standby"},
			rejected: map[string]string{"b": "fenced", "c": "not a synchronous standby"}},

		{n: 28, what: "policy synchronous set to an unknown value: treated as synchronous, async replica not promoted",
			in: with(lost(replica("b", base)),
				func(in *Input) { in.Policy.Synchronous = "remote_apply" }),
			action: ActionNone, rejected: map[string]string{"b": "not a synchronous standby"}},

		{n: 29, what: "synchronous off: the async replica is promoted",
			in: with(lost(replica("b", base)),
				func(in *Input) { in.Policy.Synchronous = "off" }),
			action: ActionPromote, candidate: "b"},

		{n: 30, what: "every replica unfit in its own way → none, rejections listed in name order",
			in: lost(
				replica("f", base, promoted),
				replica("b", base, noConn),
				replica("e", base, noPM),
				replica("c", base, stale),
				replica("d", base, fenced)),
			action: ActionNone,
			reason: []string{"no candidate: b: not connectable; c: no fresh report; d: fenced; e: postmaster not running; f: not in recovery"},
			rejected: map[string]string{"b": "not connectable", "c": "no fresh report", "d": "fenced",
				"e": "postmaster not running", "f": "not in recovery"}},

		{n: 31, what: "primary's last LSN unknown (never seen writable at this epoch): the lag cannot be checked → none, names it",
			in:     with(lost(replica("b", 0x100)), func(in *Input) { in.PrimaryLastLSN = 0 }),
			action: ActionNone, reason: []string{"no candidate: b: lag unknown", "--force"},
			rejected: map[string]string{"b": UnknownPrimaryLSN}},

		{n: 32, what: "replica received past the primary's last known LSN: lag 0 → promote",
			in:     lost(replica("b", base+mib*64)),
			action: ActionPromote, candidate: "b"},

		{n: 33, what: "default limit: b lags exactly 1 MiB (allowed), c 1 MiB + 1 byte (not) → promote b",
			in:     lost(replica("b", base-mib), replica("c", base-mib-1, prio(100))),
			action: ActionPromote, candidate: "b",
			rejected: map[string]string{"c": "lags 1048577 bytes, limit 1048576"}},

		{n: 34, what: "maximum_lag_on_failover 32 MiB lets a replica 20 MB behind be promoted",
			in: with(lost(replica("b", base-20*mib)),
				func(in *Input) { in.Policy.MaxLagOnFailover = 32 * mib }),
			action: ActionPromote, candidate: "b"},

		{n: 35, what: "single-node cluster lost its primary → none, no other member",
			in:     lost(),
			action: ActionNone, reason: []string{"no candidate", "no other member"}},

		{n: 36, what: "whole primary region lost including the only replica → none, no candidate",
			in:     lost(replica("b", base, stale)),
			action: ActionNone, reason: []string{"no candidate: b: no fresh report"},
			rejected: map[string]string{"b": "no fresh report"}},

		{n: 37, what: "a replica that already promoted itself (rogue, timeline 4) is rejected and does not raise the bar",
			in:     lost(replica("b", base, promoted, tl(4)), replica("c", base)),
			action: ActionPromote, candidate: "c",
			rejected: map[string]string{"b": "not in recovery"}},

		{n: 38, what: "a no-failover replica that also refuses: the tag is named, and the refusal still keeps the primary",
			in:     lost(replica("b", base, tags(TagNoFailover), refuses("acknowledged the primary's failsafe ping 3s ago")), replica("c", base)),
			action: ActionNone, reason: []string{"primary alive per b's"}, ranked: []string{"c"},
			rejected: map[string]string{"b": "tagged no-failover"}},

		{n: 39, what: "primary's PostgreSQL OOM-killed, its agent still reports (fresh, postmaster not running); last known LSN 600 MB, the only replica at 100 MB → none, names the lag",
			in: with(lost(replica("b", 100*mib)), func(in *Input) {
				p := primary("a")
				p.PostmasterAlive, p.Connectable, p.ReceiveLSN, p.ReplayLSN = false, false, 0, 0
				in.Members["a"] = p
				in.PrimaryLastLSN = 600 * mib
			}),
			action: ActionNone, reason: []string{"no candidate: b: lags 524288000 bytes, limit 1048576"},
			rejected: map[string]string{"b": "lags 524288000 bytes, limit 1048576"}},

		{n: 40, what: "primary's disk-full PANIC, new coordinator leader, LSN unknown to it; two replicas → none, both named, nothing guessed",
			in: with(lost(replica("b", base), replica("c", base-mib)), func(in *Input) {
				p := primary("a")
				p.PostmasterAlive, p.Connectable = false, false
				in.Members["a"] = p
				in.PrimaryLastLSN = 0
			}),
			action: ActionNone, reason: []string{"b: lag unknown", "c: lag unknown"},
			rejected: map[string]string{"b": UnknownPrimaryLSN, "c": UnknownPrimaryLSN}},

		{n: 41, what: "operator's failover --force with the primary's LSN unknown → the best replica is promoted",
			in: with(lost(replica("b", 0x100), replica("c", 0x200)), func(in *Input) {
				in.PrimaryLastLSN = 0
				in.Forced = true
			}),
			action: ActionPromote, candidate: "c", ranked: []string{"c", "b"}},

		{n: 42, what: "--force with the primary's LSN known does not lift the lag limit → none, names the lag",
			in:     with(lost(replica("b", base-21*mib)), func(in *Input) { in.Forced = true }),
			action: ActionNone, rejected: map[string]string{"b": "lags 22020096 bytes, limit 1048576"}},

		{n: 43, what: "synchronous on, the primary's LSN unknown: the sync standby is not promoted either → none",
			in: with(lost(replica("b", base, sync)), func(in *Input) {
				in.Policy.Synchronous = "on"
				in.PrimaryLastLSN = 0
			}),
			action: ActionNone, rejected: map[string]string{"b": UnknownPrimaryLSN}},

		// Issue 12, item 2: the recorded primary is a replica that was
		// never promoted (its order lost, a failed promote, the leader
		// gone before the order). It is ordered to promote again, never
		// passed over.
		{n: 44, what: "the recorded primary b was never promoted and the old primary a is dead: b is ordered to promote again",
			in: with(lost(replica("b", base), replica("c", base)), func(in *Input) {
				in.Primary = "b"
				in.Members["a"] = dead("a")
			}),
			action: ActionRepromote, candidate: "b", reason: []string{"primary b is recorded at epoch 7 but still in recovery", "promote again"}},
		{n: 45, what: "a two-member cluster: the only other member is the dead old primary; the recorded one is promoted again, not left as a replica",
			in:     with(lost(replica("b", base)), func(in *Input) { in.Primary = "b" }),
			action: ActionRepromote, candidate: "b"},
		{n: 46, what: "synchronous mode: the recorded set holds the dead old primary, so no member is Synchronous; the recorded primary is still promoted again",
			in: with(lost(replica("b", base), replica("c", base)), func(in *Input) {
				in.Primary = "b"
				in.Policy.Synchronous = "on"
			}),
			action: ActionRepromote, candidate: "b"},
		{n: 47, what: "promoted again whatever its lease and min_interval (this is not a new failover)",
			in: with(lost(replica("b", base)), func(in *Input) {
				in.Primary = "b"
				in.LeaseExpiresAt = t0.Add(time.Minute)
				in.LastFailoverAt = t0.Add(-time.Second)
				in.Policy.MinInterval = time.Hour
			}),
			action: ActionRepromote, candidate: "b"},
		{n: 48, what: "paused: the unpromoted primary is reported, and how to promote it by hand",
			in: with(lost(replica("b", base)), func(in *Input) {
				in.Primary = "b"
				in.Paused = true
			}),
			action: ActionNone, reason: []string{"cluster paused", "still in recovery", "pgdrctl failover --to b"}},
		{n: 49, what: "the unpromoted primary refuses promotion (failsafe): nothing, and nobody else either",
			in: with(lost(replica("b", base, refuses("acknowledged a's failsafe ping 1s ago")), replica("c", base)), func(in *Input) {
				in.Primary = "b"
			}),
			action: ActionNone, reason: []string{"refuses promotion", "acknowledged a's failsafe ping"}},
		{n: 50, what: "a fenced recorded primary in recovery is not promoted again: the ordinary judgement replaces it",
			in: with(lost(replica("b", base, fenced), replica("c", base)), func(in *Input) {
				in.Primary = "b"
				in.Members["a"] = replica("a", base-mib, stale)
			}),
			action: ActionPromote, candidate: "c"},
		{n: 51, what: "a stale report of the recorded primary in recovery: the ordinary judgement (here: c)",
			in: with(lost(replica("b", base, stale), replica("c", base)), func(in *Input) {
				in.Primary = "b"
				in.Members["a"] = replica("a", base-mib, stale)
			}),
			action: ActionPromote, candidate: "c"},
		{n: 52, what: "the same view as #44, but the recorded primary is known to have been promoted at this epoch (then demoted by hand): the ordinary judgement",
			in: with(lost(replica("b", base), replica("c", base-mib/2)), func(in *Input) {
				in.Primary = "b"
				in.Members["a"] = dead("a")
				in.PrimaryPromoted = true
			}),
			action: ActionPromote, candidate: "c", reason: []string{"primary b is unhealthy (in recovery)"}},
	}
}

func TestDecideIncidents(t *testing.T) {
	seen := map[int]bool{}
	for _, tc := range incidents() {
		if seen[tc.n] {
			t.Fatalf("incident #%d numbered twice", tc.n)
		}
		seen[tc.n] = true
		t.Run(fmt.Sprintf("#%02d", tc.n), func(t *testing.T) {
			before := cloneInput(tc.in)
			got := Decide(tc.in)
			t.Logf("#%d %s\n  decided %s %s: %s", tc.n, tc.what, got.Action, got.Candidate, got.Reason)
			if !reflect.DeepEqual(tc.in, before) {
				t.Fatalf("#%d Decide modified its input", tc.n)
			}
			if got.Action != tc.action || got.Candidate != tc.candidate {
				t.Fatalf("#%d %s\n got %s %q (%s)\nwant %s %q", tc.n, tc.what, got.Action, got.Candidate, got.Reason, tc.action, tc.candidate)
			}
			if got.Reason == "" {
				t.Fatalf("#%d empty reason", tc.n)
			}
			for _, s := range tc.reason {
				if !strings.Contains(got.Reason, s) {
					t.Errorf("#%d reason %q lacks %q", tc.n, got.Reason, s)
				}
			}
			if tc.rejected != nil && !maps.Equal(got.Rejected, tc.rejected) {
				t.Errorf("#%d rejected = %v, want %v", tc.n, got.Rejected, tc.rejected)
			}
			if tc.ranked != nil && !slices.Equal(got.Ranked, tc.ranked) {
				t.Errorf("#%d ranked = %v, want %v", tc.n, got.Ranked, tc.ranked)
			}
			if got.Action == ActionPromote && (len(got.Ranked) == 0 || got.Ranked[0] != got.Candidate) {
				t.Errorf("#%d candidate %q is not first in %v", tc.n, got.Candidate, got.Ranked)
			}

			// Determinism: the same view, its members map rebuilt in other
			// insertion orders (and Go's randomized iteration), decides the same.
			rng := rand.New(rand.NewPCG(uint64(tc.n), 1))
			for i := range 8 {
				again := cloneInput(tc.in)
				again.Members = shuffled(rng, tc.in.Members)
				if d := Decide(again); !reflect.DeepEqual(d, got) {
					t.Fatalf("#%d run %d differs:\n%+v\n%+v", tc.n, i, d, got)
				}
			}
		})
	}
	if len(seen) < 25 {
		t.Fatalf("only %d incidents; the decision table needs at least 25", len(seen))
	}
}

// TestDecideInvariants throws random views at Decide and checks what must
// hold whatever the view: a promotion is never of an unfit member, never
// while the lease runs, never while paused, never against a fresh refusal,
// never when no primary is recorded, never over a recorded primary that
// was never promoted and can be; in synchronous mode every eligible member
// (and so the one promoted) holds every quorum-acknowledged commit.
func TestDecideInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 7))
	names := []string{"a", "b", "c", "d", "e"}
	regions := []string{"", "eu-west-1", "us-east-1", "ap-south-1"}
	syncs := []string{"", "off", "on", "quorum 1", "quorum 2"}
	coin := func(p float64) bool { return rng.Float64() < p }
	for iter := range 5000 {
		in := Input{
			Cluster: "main", Primary: names[rng.IntN(len(names))], Epoch: 3,
			Paused:         coin(0.1),
			LeaseExpiresAt: t0.Add(time.Duration(rng.IntN(7)-4) * time.Second),
			Members:        map[string]Member{},
			Policy: Policy{
				MaxLagOnFailover: uint64(rng.IntN(3)) * mib,
				PreferredRegions: []string{"us-east-1", "eu-west-1"},
				Synchronous:      syncs[rng.IntN(len(syncs))],
				MinInterval:      time.Duration(rng.IntN(3)) * time.Minute,
			},
			PrimaryLastLSN: uint64(rng.IntN(3)) * base,
			Now:            t0,
		}
		if coin(0.5) {
			in.LastFailoverAt = t0.Add(-time.Duration(rng.IntN(240)) * time.Second)
		}
		if coin(0.05) {
			in.Primary = ""
		}
		in.Forced = coin(0.1)
		in.PrimaryPromoted = coin(0.5)
		for _, n := range names {
			if coin(0.15) {
				continue
			}
			m := Member{Name: n, Region: regions[rng.IntN(len(regions))], Priority: int32(rng.IntN(3)),
				Fresh: coin(0.85), PostmasterAlive: coin(0.9), Connectable: coin(0.9), InRecovery: coin(0.8),
				Streaming: coin(0.8), Fenced: coin(0.1), Timeline: uint32(2 + rng.IntN(2)),
				ReceiveLSN: base - uint64(rng.IntN(4))*mib/2, Synchronous: coin(0.5)}
			if coin(0.1) {
				m.Tags = []string{TagNoFailover}
			}
			if coin(0.1) {
				m.RefusesPromotion = "acknowledged the primary's failsafe ping 1s ago"
			}
			in.Members[n] = m
		}
		// Synchronous mode: a ground truth of durable positions on the
		// recorded standbys R, every acknowledged commit on at least N of
		// them; the members' Synchronous flags come from SyncCandidates as
		// the leader computes them, some positions unknown.
		var acked uint64
		truePos := map[string]uint64{}
		if SynchronousMode(in.Policy.Synchronous) {
			var rec []string
			for _, n := range names {
				if n != in.Primary && coin(0.7) {
					rec = append(rec, n)
				}
			}
			view := SyncView{Recorded: rec, Quorum: min(max(SyncQuorum(in.Policy.Synchronous), 1), max(len(rec), 1)), Positions: map[string]uint64{}}
			var all []uint64
			for _, r := range rec {
				truePos[r] = base - uint64(rng.IntN(4))*mib/2
				all = append(all, truePos[r])
				if coin(0.8) {
					view.Positions[r] = truePos[r]
				}
			}
			if len(rec) > 0 {
				// The newest commit on at least Quorum members: the
				// Quorum-th highest position.
				slices.Sort(all)
				acked = all[len(all)-view.Quorum]
			}
			eligible, _, _ := SyncCandidates(view)
			for r := range eligible {
				if truePos[r] < acked {
					t.Fatalf("iter %d: %s is eligible in synchronous mode but holds %s, short of the quorum-acknowledged commit %s (view %+v)",
						iter, r, FormatLSN(truePos[r]), FormatLSN(acked), view)
				}
			}
			for n, m := range in.Members {
				m.Synchronous = eligible[n]
				if p, ok := truePos[n]; ok {
					m.ReceiveLSN = p
				}
				in.Members[n] = m
			}
		}
		d := Decide(in)
		if d.Reason == "" {
			t.Fatalf("iter %d: empty reason for %+v", iter, in)
		}
		if d2 := Decide(in); !reflect.DeepEqual(d, d2) {
			t.Fatalf("iter %d: not deterministic", iter)
		}
		if d.Rejected != nil {
			// Judged: every non-primary member is either ranked or rejected.
			for n := range in.Members {
				_, rej := d.Rejected[n]
				if n != in.Primary && rej == slices.Contains(d.Ranked, n) {
					t.Fatalf("iter %d: member %s rejected=%v ranked=%v", iter, n, rej, d.Ranked)
				}
			}
		}
		if in.Primary == "" && d.Action != ActionNone {
			t.Fatalf("iter %d: %s %q with no primary recorded", iter, d.Action, d.Candidate)
		}
		if d.Action == ActionRepromote {
			p := in.Members[in.Primary]
			switch {
			case d.Candidate != in.Primary:
				t.Fatalf("iter %d: repromote of %q, primary %q", iter, d.Candidate, in.Primary)
			case in.Paused:
				t.Fatalf("iter %d: repromote while paused", iter)
			case !p.Fresh || !p.PostmasterAlive || !p.Connectable || !p.InRecovery || p.Fenced || p.RefusesPromotion != "":
				t.Fatalf("iter %d: repromote of an unfit recorded primary %+v", iter, p)
			}
		}
		if d.Action != ActionPromote {
			continue
		}
		if pm, ok := in.Members[in.Primary]; ok && !in.PrimaryPromoted && UnpromotedPrimary(pm) {
			t.Fatalf("iter %d: promoted %s over the recorded primary %s, a replica that can still be promoted", iter, d.Candidate, in.Primary)
		}
		c, ok := in.Members[d.Candidate]
		maxLag := in.Policy.MaxLagOnFailover
		if maxLag == 0 {
			maxLag = DefaultMaxLag
		}
		switch {
		case in.PrimaryLastLSN == 0 && !in.Forced:
			t.Fatalf("iter %d: promoted %q with the primary's last LSN unknown, not forced", iter, d.Candidate)
		case !ok || d.Candidate == in.Primary:
			t.Fatalf("iter %d: promoted %q, primary %q", iter, d.Candidate, in.Primary)
		case in.Paused || in.Now.Before(in.LeaseExpiresAt):
			t.Fatalf("iter %d: promoted while paused or under lease", iter)
		case PrimaryHealthy(in.Members[in.Primary]):
			t.Fatalf("iter %d: promoted over a healthy primary", iter)
		case !in.LastFailoverAt.IsZero() && in.Now.Sub(in.LastFailoverAt) < in.Policy.MinInterval:
			t.Fatalf("iter %d: promoted inside min_interval", iter)
		case !c.Fresh || !c.Connectable || !c.PostmasterAlive || !c.InRecovery || c.Fenced ||
			slices.Contains(c.Tags, TagNoFailover) || c.RefusesPromotion != "":
			t.Fatalf("iter %d: promoted unfit member %+v", iter, c)
		case SynchronousMode(in.Policy.Synchronous) && !c.Synchronous:
			t.Fatalf("iter %d: promoted async member in synchronous mode", iter)
		case SynchronousMode(in.Policy.Synchronous) && truePos[d.Candidate] < acked:
			t.Fatalf("iter %d: promoted %s holding %s, short of the quorum-acknowledged commit %s", iter, d.Candidate, FormatLSN(truePos[d.Candidate]), FormatLSN(acked))
		case Lag(in.PrimaryLastLSN, c.ReceiveLSN) > maxLag:
			t.Fatalf("iter %d: promoted member over the lag limit", iter)
		}
		for n, m := range in.Members {
			if n != in.Primary && m.Fresh && m.RefusesPromotion != "" {
				t.Fatalf("iter %d: promoted although %s refuses", iter, n)
			}
			if n != in.Primary && m.Fresh && m.InRecovery && m.Timeline > c.Timeline {
				t.Fatalf("iter %d: promoted timeline %d over fresh replica on %d", iter, c.Timeline, m.Timeline)
			}
			if slices.Contains(d.Ranked, n) && m.ReceiveLSN > c.ReceiveLSN {
				t.Fatalf("iter %d: candidate %s has more WAL than the chosen %s", iter, n, d.Candidate)
			}
		}
	}
}

func TestActionString(t *testing.T) {
	for a, want := range map[Action]string{ActionNone: "none", ActionWait: "wait", ActionPromote: "promote", Action(9): "Action(9)"} {
		if got := a.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(a), got, want)
		}
	}
}

func TestPrimaryHealthy(t *testing.T) {
	cases := []struct {
		what string
		m    Member
		want bool
	}{
		{"serving primary", primary("a"), true},
		{"stale report", func() Member { m := primary("a"); m.Fresh = false; return m }(), false},
		{"postmaster gone", func() Member { m := primary("a"); m.PostmasterAlive = false; return m }(), false},
		{"not connectable", func() Member { m := primary("a"); m.Connectable = false; return m }(), false},
		{"in recovery", func() Member { m := primary("a"); m.InRecovery = true; return m }(), false},
		{"fenced", func() Member { m := primary("a"); m.Fenced = true; return m }(), false},
		{"zero member", Member{}, false},
	}
	for _, c := range cases {
		if got := PrimaryHealthy(c.m); got != c.want {
			t.Errorf("%s: PrimaryHealthy = %v, want %v", c.what, got, c.want)
		}
	}
}

func TestHelpers(t *testing.T) {
	for _, c := range []struct{ p, r, want uint64 }{{0, 5, 0}, {5, 7, 0}, {7, 5, 2}, {5, 5, 0}} {
		if got := Lag(c.p, c.r); got != c.want {
			t.Errorf("Lag(%d, %d) = %d, want %d", c.p, c.r, got, c.want)
		}
	}
	for s, want := range map[string]bool{"": false, "off": false, " OFF ": false, "on": true, "quorum 2": true, "bogus": true} {
		if got := SynchronousMode(s); got != want {
			t.Errorf("SynchronousMode(%q) = %v, want %v", s, got, want)
		}
	}
	if got := FormatLSN(0x1_0300_0060); got != "1/3000060" {
		t.Errorf("FormatLSN = %q", got)
	}
}

func cloneInput(in Input) Input {
	out := in
	out.Policy.PreferredRegions = slices.Clone(in.Policy.PreferredRegions)
	if in.Members != nil {
		out.Members = make(map[string]Member, len(in.Members))
		for n, m := range in.Members {
			m.Tags = slices.Clone(m.Tags)
			out.Members[n] = m
		}
	}
	return out
}

func shuffled(rng *rand.Rand, ms map[string]Member) map[string]Member {
	keys := slices.Collect(maps.Keys(ms))
	slices.Sort(keys)
	rng.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	out := make(map[string]Member, len(ms))
	for _, k := range keys {
		m := ms[k]
		m.Tags = slices.Clone(m.Tags)
		out[k] = m
	}
	return out
}
