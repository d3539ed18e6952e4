package server

import (
	"slices"
	"strings"
	"testing"
)

// TestPlanSync walks planSync through the steps of synchronous-mode
// management, each step fed the state the previous one produced.
func TestPlanSync(t *testing.T) {
	base := func() syncInput {
		return syncInput{Policy: "on", Primary: "a", Members: []string{"a", "b", "c"},
			NoSync: map[string]bool{}, Healthy: map[string]bool{"b": true, "c": true},
			Flush: map[string]uint64{"b": 100, "c": 90}, PrimaryLSN: 100}
	}
	expect := func(t *testing.T, what string, in syncInput, act syncAction, names []string, value string, note string) syncPlan {
		t.Helper()
		p := planSync(in)
		if p.Action != act || (act == syncRecord && !slices.Equal(p.Names, names)) || (act == syncTell && p.Value != value) {
			t.Fatalf("%s: plan %+v, want action %d names %v value %q", what, p, act, names, value)
		}
		if note != "" && !strings.Contains(p.Note, note) {
			t.Fatalf("%s: note %q lacks %q", what, p.Note, note)
		}
		return p
	}

	t.Run("on: switched on, then a standby replaced", func(t *testing.T) {
		in := base()
		expect(t, "1 record before telling", in, syncRecord, []string{"b"}, "", "before the primary uses them")
		in.Recorded = []string{"b"}
		expect(t, "2 tell", in, syncTell, nil, `FIRST 1 ("b")`, "")
		in.Reported = `FIRST 1 ("b")`
		expect(t, "3 converged", in, syncNone, nil, "", "")
		// b stops streaming: c is recorded (with b) first, then named.
		in.Healthy["b"] = false
		expect(t, "4 add c", in, syncRecord, []string{"b", "c"}, "", "")
		in.Recorded = []string{"b", "c"}
		expect(t, "5 tell c", in, syncTell, nil, `FIRST 1 ("c")`, "")
		in.Reported = `FIRST 1 ("c")`
		expect(t, "6 note the LSN", in, syncNoteLSN, nil, "", "")
		in.Confirm = &syncConfirm{value: `FIRST 1 ("c")`, lsn: 150}
		expect(t, "7 c behind: b stays recorded", in, syncNone, nil, "", "0 of the wanted standbys flushed 0/96")
		in.Flush["c"] = 150
		expect(t, "8 drop b", in, syncRecord, []string{"c"}, "", "")
		in.Recorded = []string{"c"}
		expect(t, "9 converged", in, syncNone, nil, "", "")
	})

	t.Run("on: synchronous WAL receivers are required besides the standby", func(t *testing.T) {
		in := base()
		in.Receivers = []string{"c_walrecv"}
		expect(t, "1 record the standby (not the receiver)", in, syncRecord, []string{"b"}, "", "before the primary uses them")
		in.Recorded = []string{"b"}
		expect(t, "2 tell: every receiver and the standby", in, syncTell, nil, `FIRST 2 ("c_walrecv", "b")`, "")
		in.Reported = `FIRST 2 ("c_walrecv", "b")`
		// Converged: the recorded quorum counts members only (1), though
		// the setting waits for 2 (the receiver is not a member, never
		// recorded, never promoted).
		expect(t, "3 converged", in, syncNone, nil, "", "")
		in.Quorum = 1
		expect(t, "4 converged", in, syncNone, nil, "", "")
		// The receiver's agent no longer runs it synchronously.
		in.Receivers = nil
		expect(t, "6 dropped from the setting", in, syncTell, nil, `FIRST 1 ("b")`, "")
		in.Reported = `FIRST 1 ("b")`
		expect(t, "7 converged", in, syncNone, nil, "", "")
	})

	t.Run("quorum: receivers are not named", func(t *testing.T) {
		in := base()
		in.Policy, in.Receivers = "quorum 2", []string{"c_walrecv"}
		in.Recorded, in.Quorum = []string{"b", "c"}, 2
		expect(t, "tell", in, syncTell, nil, `ANY 2 ("b", "c")`, "")
	})

	t.Run("on: no healthy replica keeps the setting", func(t *testing.T) {
		in := base()
		in.Healthy = map[string]bool{}
		in.Recorded, in.Reported = []string{"b"}, `FIRST 1 ("b")`
		expect(t, "keep", in, syncNone, nil, "", "keeping synchronous_standby_names")
		// Just switched on with nobody healthy: one is named anyway.
		in.Recorded, in.Reported = nil, ""
		expect(t, "name one", in, syncRecord, []string{"b"}, "", "")
	})

	t.Run("on: no-failover members are never synchronous", func(t *testing.T) {
		in := base()
		in.NoSync["b"] = true
		expect(t, "c", in, syncRecord, []string{"c"}, "", "")
	})

	t.Run("after a failover: primary c with the pre-promotion setting", func(t *testing.T) {
		in := base()
		in.Primary, in.Recorded, in.Reported = "c", []string{"a", "b"}, `ANY 1 ("a", "b")`
		in.Healthy = map[string]bool{"b": true}
		expect(t, "narrow to b", in, syncTell, nil, `FIRST 1 ("b")`, "")
		// The recorded set still names the new primary (no pre-promotion
		// step): it is dropped while b is added.
		in.Recorded, in.Reported = []string{"c"}, ""
		expect(t, "drop the primary", in, syncRecord, []string{"b"}, "", "")
	})

	t.Run("quorum", func(t *testing.T) {
		in := base()
		in.Policy = "quorum 2"
		in.Members = []string{"a", "b", "c", "d"}
		expect(t, "record b c", in, syncRecord, []string{"b", "c"}, "", "")
		in.Recorded = []string{"b", "c"}
		expect(t, "tell", in, syncTell, nil, `ANY 2 ("b", "c")`, "")
		in.Reported = `ANY 2 ("b", "c")`
		in.Healthy["d"] = true
		expect(t, "d healthy: add", in, syncRecord, []string{"b", "c", "d"}, "", "")
		in.Recorded = []string{"b", "c", "d"}
		expect(t, "tell 3", in, syncTell, nil, `ANY 2 ("b", "c", "d")`, "")
		in.Reported = `ANY 2 ("b", "c", "d")`
		// The recorded quorum (unknown: 1) is raised to 2 only once two of
		// the set flushed the LSN noted when the primary used ANY 2.
		expect(t, "note the LSN before raising the quorum", in, syncNoteLSN, nil, "", "")
		in.Confirm = &syncConfirm{value: `ANY 2 ("b", "c", "d")`, lsn: 100}
		expect(t, "c behind: the quorum stays", in, syncNone, nil, "", "1 of the wanted standbys flushed")
		in.Flush["c"] = 100
		if p := expect(t, "raise the quorum", in, syncRecord, []string{"b", "c", "d"}, "", ""); p.Quorum != 2 {
			t.Fatalf("raise the quorum: recorded %d, want 2", p.Quorum)
		}
		in.Quorum = 2
		expect(t, "converged", in, syncNone, nil, "", "")
		// Only b healthy: c and d stay named so commits wait for 2.
		in.Healthy = map[string]bool{"b": true}
		p := planSync(in)
		if p.Action != syncTell || p.Value != `ANY 2 ("b", "c")` {
			t.Fatalf("one healthy: %+v", p)
		}
		in.Members = []string{"a", "b"}
		in.Recorded, in.Reported = nil, ""
		expect(t, "impossible", in, syncNone, nil, "", "needs 2 standbys")
	})

	// Issue 12 item 4: from "on" (FIRST 1 (b)) to "quorum 2". The set grows
	// to {b,c,d} before the primary is told ANY 2, but the recorded quorum
	// stays 1 until two of them flushed the LSN noted at the change: a
	// commit that only b acknowledged under FIRST 1 is on one member.
	t.Run("raising the quorum waits for the catch-up", func(t *testing.T) {
		in := base()
		in.Members = []string{"a", "b", "c", "d"}
		in.Healthy["d"] = true
		in.Flush = map[string]uint64{"b": 0x5000, "c": 0x4000, "d": 0x4000}
		in.Recorded, in.Quorum, in.Reported = []string{"b"}, 1, `FIRST 1 ("b")`
		expect(t, "1 on: converged", in, syncNone, nil, "", "")
		in.Policy = "quorum 2"
		if p := expect(t, "2 record b c d", in, syncRecord, []string{"b", "c", "d"}, "", ""); p.Quorum != 1 {
			t.Fatalf("2: quorum %d recorded before the catch-up, want 1", p.Quorum)
		}
		in.Recorded = []string{"b", "c", "d"}
		expect(t, "3 tell ANY 2", in, syncTell, nil, `ANY 2 ("b", "c", "d")`, "")
		in.Reported, in.PrimaryLSN = `ANY 2 ("b", "c", "d")`, 0x5000
		expect(t, "4 note the LSN", in, syncNoteLSN, nil, "", "")
		in.Confirm = &syncConfirm{value: in.Reported, lsn: 0x5000}
		expect(t, "5 c and d behind: quorum stays 1", in, syncNone, nil, "", "1 of the wanted standbys flushed 0/5000, 2 needed")
		in.Flush["c"] = 0x5000
		if p := expect(t, "6 c caught up: quorum 2", in, syncRecord, []string{"b", "c", "d"}, "", ""); p.Quorum != 2 {
			t.Fatalf("6: quorum %d, want 2", p.Quorum)
		}
		in.Quorum = 2
		expect(t, "7 converged", in, syncNone, nil, "", "")
		// Back to "on": the quorum is lowered before the primary is told.
		in.Policy, in.Confirm = "on", nil
		if p := expect(t, "8 lower first", in, syncRecord, []string{"b", "c", "d"}, "", ""); p.Quorum != 1 {
			t.Fatalf("8: quorum %d, want 1 before FIRST 1 is told", p.Quorum)
		}
		in.Quorum = 1
		expect(t, "9 tell FIRST 1", in, syncTell, nil, `FIRST 1 ("b")`, "")
	})

	t.Run("off clears, then records nothing", func(t *testing.T) {
		in := base()
		in.Policy = "off"
		in.Recorded, in.Reported = []string{"b"}, `FIRST 1 ("b")`
		expect(t, "clear", in, syncTell, nil, "", "")
		in.Reported = ""
		expect(t, "record empty", in, syncRecord, []string{}, "", "")
		in.Recorded = nil
		expect(t, "done", in, syncNone, nil, "", "")
	})
}
