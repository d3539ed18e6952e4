package failover

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

func TestParseSyncStandbyNames(t *testing.T) {
	for _, c := range []struct {
		in     string
		ok     bool
		method string
		num    int
		names  []string
	}{
		{in: "", ok: false},
		{in: "   ", ok: false},
		{in: `FIRST 1 ("pg-a2")`, ok: true, method: "FIRST", num: 1, names: []string{"pg-a2"}},
		{in: `ANY 2 ("pg-a2", "pg-b1", "pg-a1")`, ok: true, method: "ANY", num: 2, names: []string{"pg-a2", "pg-b1", "pg-a1"}},
		{in: `any 1 (a,b)`, ok: true, method: "ANY", num: 1, names: []string{"a", "b"}},
		{in: `2 (a, b, c)`, ok: true, method: "FIRST", num: 2, names: []string{"a", "b", "c"}},
		{in: `a, b`, ok: true, method: "FIRST", num: 1, names: []string{"a", "b"}},
		{in: `*`, ok: true, method: "FIRST", num: 1, names: []string{"*"}},
		{in: `FIRST 1 ("we""ird")`, ok: true, method: "FIRST", num: 1, names: []string{`we"ird`}},
		{in: `ANY 0 (a)`, ok: false},
		{in: `ANY 1 ("a)`, ok: false},
		{in: `ANY 1 (a,,b)`, ok: false},
		{in: `ANY 1 ()`, ok: false},
	} {
		got, ok := ParseSyncStandbyNames(c.in)
		if ok != c.ok {
			t.Errorf("%q: ok %v, want %v (%+v)", c.in, ok, c.ok, got)
			continue
		}
		if ok && (got.Method != c.method || got.Num != c.num || !slices.Equal(got.Names, c.names)) {
			t.Errorf("%q: %+v, want %s %d %v", c.in, got, c.method, c.num, c.names)
		}
	}
	// What pgdr writes parses back to the same setting.
	for _, s := range []SyncSetting{
		{Method: "FIRST", Num: 1, Names: []string{"pg-a2"}},
		{Method: "ANY", Num: 2, Names: []string{"pg-a1", "pg-b1", `q"uote`}},
	} {
		back, ok := ParseSyncStandbyNames(s.String())
		if !ok || back.Method != s.Method || back.Num != s.Num || !slices.Equal(back.Names, s.Names) {
			t.Errorf("round trip of %+v via %q: %+v %v", s, s.String(), back, ok)
		}
	}
	if got := (SyncSetting{Method: "FIRST", Num: 1, Names: []string{"pg-a2"}}).String(); got != `FIRST 1 ("pg-a2")` {
		t.Errorf("String: %q", got)
	}
	if (SyncSetting{}).String() != "" {
		t.Error("an empty setting must write as \"\"")
	}
}

func TestSyncQuorum(t *testing.T) {
	for in, want := range map[string]int{"": 0, "off": 0, "on": 1, "ON": 1, "quorum 2": 2, "quorum 0": 0, "quorum x": 0, "remote_apply": 0} {
		if got := SyncQuorum(in); got != want {
			t.Errorf("SyncQuorum(%q) = %d, want %d", in, got, want)
		}
	}
}

// TestSyncCandidates reads like incidents in synchronous mode: who may be
// promoted given the recorded synchronous standbys, the quorum and the
// final positions of the reachable ones.
func TestSyncCandidates(t *testing.T) {
	for _, c := range []struct {
		what     string
		v        SyncView
		eligible []string
		why      map[string]string // substring per member
		general  string            // substring
	}{
		{what: "on: one recorded standby holds every commit, whatever the positions",
			v:        SyncView{Recorded: []string{"b"}, Quorum: 1},
			eligible: []string{"b"}, general: "not among the recorded synchronous standbys (b)"},
		{what: "nothing recorded: nobody (the primary never had a synchronous standby)",
			v:       SyncView{Quorum: 1},
			general: "no synchronous standby is recorded"},
		{what: "on, mid-change from b to c (both recorded): both must be reachable, the one further ahead wins",
			v:        SyncView{Recorded: []string{"b", "c"}, Quorum: 1, Positions: map[string]uint64{"b": 100, "c": 200}},
			eligible: []string{"c"}, why: map[string]string{"b": "behind"}},
		{what: "on, mid-change from b to c, b unreachable: c may lack commits only b acknowledged → nobody",
			v:       SyncView{Recorded: []string{"b", "c"}, Quorum: 1, Positions: map[string]uint64{"c": 200}},
			general: "only 1 of the 2 recorded synchronous standbys (b, c) report a final position (c)",
			why:     map[string]string{"b": "only 1 of the 2", "c": "only 1 of the 2"}},
		{what: "ANY 2 of 3: two reachable suffice; the one ahead of the other wins",
			v:        SyncView{Recorded: []string{"b", "c", "d"}, Quorum: 2, Positions: map[string]uint64{"b": 300, "d": 250}},
			eligible: []string{"b"}, why: map[string]string{"c": "without a final position", "d": "behind 0/12C"}},
		{what: "ANY 2 of 3, only one reachable: nobody can be sure to hold every commit",
			v:       SyncView{Recorded: []string{"b", "c", "d"}, Quorum: 2, Positions: map[string]uint64{"c": 300}},
			general: "2 are needed"},
		{what: "ANY 2 of 2: each holds every commit; one alive is enough",
			v:        SyncView{Recorded: []string{"b", "c"}, Quorum: 2},
			eligible: []string{"b", "c"}},
		{what: "ANY 1 of 3 (quorum read as unknown → strictest): all three must report",
			v:       SyncView{Recorded: []string{"b", "c", "d"}, Quorum: 0, Positions: map[string]uint64{"b": 1, "c": 2}},
			general: "3 are needed"},
		{what: "equal positions: every standby at the top is eligible",
			v:        SyncView{Recorded: []string{"b", "c"}, Quorum: 1, Positions: map[string]uint64{"b": 5, "c": 5}},
			eligible: []string{"b", "c"}},
		{what: "quorum above the recorded count reads as all of them (each holds every commit)",
			v:        SyncView{Recorded: []string{"b"}, Quorum: 3},
			eligible: []string{"b"}},
	} {
		el, why, general := SyncCandidates(c.v)
		got := slices.Sorted(maps.Keys(el))
		if !slices.Equal(got, c.eligible) && !(len(got) == 0 && len(c.eligible) == 0) {
			t.Errorf("%s: eligible %v, want %v (why %v, general %q)", c.what, got, c.eligible, why, general)
		}
		for m, sub := range c.why {
			if !strings.Contains(why[m], sub) {
				t.Errorf("%s: why[%s] = %q, want it to mention %q", c.what, m, why[m], sub)
			}
		}
		if !strings.Contains(general, c.general) {
			t.Errorf("%s: general %q, want it to mention %q", c.what, general, c.general)
		}
	}
}

// TestDecideSynchronousNotes: in synchronous mode the rejection of a
// member that is not a synchronous standby says why, and a recorded one
// further behind on LSN than an async member is still the one promoted.
func TestDecideSynchronousNotes(t *testing.T) {
	// 1. on: b recorded; c (async) received more → b promoted.
	in := with(lost(replica("b", base-mib/2), replica("c", base)), func(in *Input) { in.Policy.Synchronous = "on" })
	el, why, general := SyncCandidates(SyncView{Recorded: []string{"b"}, Quorum: 1})
	markSync(&in, el, why, general)
	d := Decide(in)
	if d.Action != ActionPromote || d.Candidate != "b" {
		t.Fatalf("on: %v %s (%s)", d.Action, d.Candidate, d.Reason)
	}
	if !strings.Contains(d.Rejected["c"], "not among the recorded synchronous standbys (b)") {
		t.Errorf("on: rejection of c: %q", d.Rejected["c"])
	}
	// 2. quorum 1 over b and c, c unreachable (stale): nobody, the reason says why.
	in = with(lost(replica("b", base), replica("c", base, stale)), func(in *Input) { in.Policy.Synchronous = "quorum 1" })
	el, why, general = SyncCandidates(SyncView{Recorded: []string{"b", "c"}, Quorum: 1, Positions: map[string]uint64{"b": base}})
	markSync(&in, el, why, general)
	d = Decide(in)
	if d.Action != ActionNone || !strings.Contains(d.Reason, "b: not a synchronous standby: only 1 of the 2 recorded synchronous standbys") {
		t.Fatalf("quorum 1, c unreachable: %v %s", d.Action, d.Reason)
	}
	// 3. quorum 2 over b, c, d: b and c reachable, c ahead → c promoted
	// even though b has the higher priority.
	in = with(lost(replica("b", base-100, prio(9)), replica("c", base), replica("d", base, stale)), func(in *Input) { in.Policy.Synchronous = "quorum 2" })
	el, why, general = SyncCandidates(SyncView{Recorded: []string{"b", "c", "d"}, Quorum: 2, Positions: map[string]uint64{"b": base - 100, "c": base}})
	markSync(&in, el, why, general)
	d = Decide(in)
	if d.Action != ActionPromote || d.Candidate != "c" {
		t.Fatalf("quorum 2: %v %s (%s)", d.Action, d.Candidate, d.Reason)
	}
}

// markSync sets Synchronous and SyncNote the way the leader does.
func markSync(in *Input, eligible map[string]bool, why map[string]string, general string) {
	for n, m := range in.Members {
		m.Synchronous = eligible[n]
		if !m.Synchronous {
			m.SyncNote = why[n]
			if m.SyncNote == "" {
				m.SyncNote = general
			}
		}
		in.Members[n] = m
	}
}

// TestSyncQuorumRaiseLosesNothing replays the sequence of issue 12 item 4:
// the policy goes from "on" (FIRST 1 (b)) to "quorum 2". The leader records
// {b,c,d} and tells the primary ANY 2 at once; a commit X acknowledged by b
// alone under FIRST 1 is on b only. Until N members of the new set have
// flushed the LSN noted at the change, the recorded quorum stays 1 (the
// leader raises it only then), so the promotion rule must not count ANY 2.
// Every step: the eligible members hold every acknowledged commit.
func TestSyncQuorumRaiseLosesNothing(t *testing.T) {
	const x = 0x5000 // the last commit acknowledged under FIRST 1 (b): on b only
	for _, c := range []struct {
		n         int
		what      string
		policy    string
		reported  string
		recorded  []string
		quorum    int // recorded in Raft
		positions map[string]uint64
		holders   []string // members holding every acknowledged commit
	}{
		{1, "on: FIRST 1 (b), primary dies, b reachable", "on", `FIRST 1 ("b")`, []string{"b"}, 1,
			map[string]uint64{"b": x, "c": 0x4000, "d": 0x4000}, []string{"b"}},
		{2, "raised to quorum 2, c and d not caught up, b unreachable", "quorum 2", `ANY 2 ("b", "c", "d")`, []string{"b", "c", "d"}, 1,
			map[string]uint64{"c": 0x4000, "d": 0x4000}, nil},
		{3, "raised to quorum 2, c and d not caught up, b reachable", "quorum 2", `ANY 2 ("b", "c", "d")`, []string{"b", "c", "d"}, 1,
			map[string]uint64{"b": x, "c": 0x4000, "d": 0x4000}, []string{"b"}},
		{4, "raised, quorum not yet recorded (unknown), b unreachable", "quorum 2", `ANY 2 ("b", "c", "d")`, []string{"b", "c", "d"}, 0,
			map[string]uint64{"c": 0x4000, "d": 0x4000}, nil},
		{5, "c and d flushed the noted LSN: quorum 2 recorded, b unreachable", "quorum 2", `ANY 2 ("b", "c", "d")`, []string{"b", "c", "d"}, 2,
			map[string]uint64{"c": x + 0x100, "d": x}, []string{"c"}},
	} {
		q := EffectiveSyncQuorum(c.policy, c.reported, c.quorum)
		eligible, _, general := SyncCandidates(SyncView{Recorded: c.recorded, Quorum: q, Positions: c.positions})
		for m := range eligible {
			if !slices.Contains(c.holders, m) {
				t.Errorf("#%d %s: %s is eligible (quorum %d) but lacks a commit acknowledged before (holders %v)", c.n, c.what, m, q, c.holders)
			}
		}
		if len(c.holders) > 0 && len(eligible) == 0 {
			t.Errorf("#%d %s: nobody eligible (%s), want one of %v", c.n, c.what, general, c.holders)
		}
	}
}
