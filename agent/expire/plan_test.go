package expire

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/wal"
)

const seg = wal.DefaultSegmentSize

var now = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

func day(n float64) time.Time { return now.Add(time.Duration(n * float64(24*time.Hour))) }

// bk is a backup on timeline tli starting in segment startSeg and
// stopping in stopSeg, started at time t.
func bk(id, typ, parent string, t time.Time, tli uint32, startSeg, stopSeg uint64) Backup {
	return Backup{ID: id, Type: typ, Parent: parent, StartTime: t, StopTime: t.Add(time.Minute), Timeline: tli,
		StartLSN: wal.LSN(startSeg*seg + 40), StopLSN: wal.LSN(stopSeg*seg + 100), SegmentSize: seg}
}

func pinned(b Backup, note string) Backup { b.Pinned, b.PinNote = true, note; return b }
func untrusted(b Backup) Backup           { b.Untrusted = "unsigned"; return b }
func tier(b Backup, t string) Backup      { b.Tier = t; return b }

// segs names the segments from..to (inclusive) of timeline tli.
func segs(tli uint32, from, to uint64) []string {
	var out []string
	for s := from; s <= to; s++ {
		out = append(out, wal.SegmentName(tli, s, seg))
	}
	return out
}

func cat(parts ...[]string) []string { return slices.Concat(parts...) }

func fullRule(n int) Spec { return Spec{Types: map[string]Rule{TypeFull: {Count: n}}} }

func TestDecide(t *testing.T) {
	tests := []struct {
		name    string
		in      Input
		keep    []string
		del     []string
		walDel  []string // exact names expected to be deleted
		anchor  string
		reasons map[string]string // substring expected in the backup's reason
	}{
		{
			name: "#1 keep-full 2 of three fulls: the oldest goes with the WAL before the second",
			in: Input{Backups: []Backup{
				bk("F1", TypeFull, "", day(-3), 1, 2, 3),
				bk("F2", TypeFull, "", day(-2), 1, 5, 6),
				bk("F3", TypeFull, "", day(-1), 1, 8, 9),
			}, WAL: segs(1, 1, 10), Spec: fullRule(2)},
			keep: []string{"F2", "F3"}, del: []string{"F1"}, walDel: segs(1, 1, 4),
			reasons: map[string]string{"F1": "number 3 by age, keep count 2", "F3": "newest full backup"},
		},
		{
			name: "#2 a kept incremental keeps its whole chain back to the full",
			in: Input{Backups: []Backup{
				bk("F1", TypeFull, "", day(-5), 1, 2, 2),
				bk("I1", TypeIncr, "F1", day(-4), 1, 4, 4),
				bk("I2", TypeIncr, "I1", day(-3), 1, 6, 6),
				bk("F2", TypeFull, "", day(-1), 1, 9, 9),
			}, WAL: segs(1, 1, 10), Spec: Spec{Types: map[string]Rule{TypeFull: {Count: 1}, TypeIncr: {Count: 1}}}},
			// F1 and I1 are kept as data: WAL from start to stop only.
			keep: []string{"F1", "I1", "I2", "F2"}, walDel: cat(segs(1, 1, 1), segs(1, 3, 3), segs(1, 5, 5)),
			reasons: map[string]string{"F1": "parent of kept backup I1", "I1": "parent of kept backup I2"},
		},
		{
			name: "#3 incrementals no rule covers follow their full: they go with it",
			in: Input{Backups: []Backup{
				bk("F1", TypeFull, "", day(-5), 1, 2, 2),
				bk("I1", TypeIncr, "F1", day(-4), 1, 4, 4),
				bk("F2", TypeFull, "", day(-3), 1, 6, 6),
				bk("I2", TypeIncr, "F2", day(-2), 1, 8, 8),
			}, WAL: segs(1, 1, 9), Spec: fullRule(1)},
			keep: []string{"F2", "I2"}, del: []string{"F1", "I1"}, walDel: segs(1, 1, 5),
			reasons: map[string]string{"I1": "follows its full backup F1", "I2": "its full backup F2 is kept"},
		},
		{
			name: "#4 a pinned old full stays with the WAL from its start to its stop only",
			in: Input{Backups: []Backup{
				pinned(bk("F1", TypeFull, "", day(-400), 1, 2, 3), "audit 2025"),
				bk("F2", TypeFull, "", day(-3), 1, 10, 10),
				bk("F3", TypeFull, "", day(-1), 1, 12, 12),
			}, WAL: segs(1, 1, 13), Spec: fullRule(1)},
			keep: []string{"F1", "F3"}, del: []string{"F2"}, walDel: cat(segs(1, 1, 1), segs(1, 4, 11)),
			reasons: map[string]string{"F1": "pinned: audit 2025"},
		},
		{
			name: "#5 the newest full is never expired, even when its age rule would",
			in: Input{Backups: []Backup{
				bk("F1", TypeFull, "", day(-50), 1, 2, 2),
				bk("F2", TypeFull, "", day(-40), 1, 4, 4),
				bk("I1", TypeIncr, "F2", day(-39), 1, 6, 6),
			}, WAL: segs(1, 1, 7), Spec: Spec{Types: map[string]Rule{TypeFull: {Age: 30 * 24 * time.Hour}, TypeIncr: {Age: 30 * 24 * time.Hour}}}},
			keep: []string{"F2"}, del: []string{"F1", "I1"}, walDel: segs(1, 1, 3),
			reasons: map[string]string{"F2": "newest full backup", "F1": "50d old, keep age 30d"},
		},
		{
			name: "#6 PITR window 7d: the newest backup before its edge anchors it and keeps its WAL",
			in: Input{Backups: []Backup{
				bk("F1", TypeFull, "", day(-10), 1, 2, 2),
				bk("F2", TypeFull, "", day(-8), 1, 4, 4),
				bk("F3", TypeFull, "", day(-6), 1, 6, 6),
				bk("F4", TypeFull, "", day(-1), 1, 8, 8),
			}, WAL: segs(1, 1, 9), Spec: Spec{Types: map[string]Rule{TypeFull: {Count: 1}}, PITRWindow: 7 * 24 * time.Hour}},
			keep: []string{"F2", "F4"}, del: []string{"F1", "F3"}, walDel: segs(1, 1, 3), anchor: "F2",
			reasons: map[string]string{"F2": "PITR window 7d: newest backup consistent (stopped) at or before"},
		},
		{
			name: "#7 PITR window and the anchor is an incremental: its chain stays too",
			in: Input{Backups: []Backup{
				bk("F1", TypeFull, "", day(-12), 1, 2, 2),
				bk("I1", TypeIncr, "F1", day(-9), 1, 4, 4),
				bk("I2", TypeIncr, "I1", day(-8), 1, 6, 6),
				bk("F2", TypeFull, "", day(-1), 1, 8, 8),
			}, WAL: segs(1, 1, 9), Spec: Spec{Types: map[string]Rule{TypeFull: {Count: 1}}, PITRWindow: 8*24*time.Hour + 12*time.Hour}},
			keep: []string{"F1", "I1", "F2"}, del: []string{"I2"}, walDel: cat(segs(1, 1, 1), segs(1, 3, 3)), anchor: "I1",
		},
		{
			name: "#8 PITR window longer than the history: the oldest backup anchors it",
			in: Input{Backups: []Backup{
				bk("F1", TypeFull, "", day(-3), 1, 2, 2),
				bk("F2", TypeFull, "", day(-1), 1, 4, 4),
			}, WAL: segs(1, 1, 5), Spec: Spec{Types: map[string]Rule{TypeFull: {Count: 1}}, PITRWindow: 7 * 24 * time.Hour}},
			keep: []string{"F1", "F2"}, walDel: segs(1, 1, 1), anchor: "F1",
			reasons: map[string]string{"F1": "no backup stopped before"},
		},
		{
			name: "#9 a backup on timeline 1 restored to latest needs timeline 2 after the switch; no history: all of timeline 2 kept",
			in: Input{Backups: []Backup{
				bk("F1", TypeFull, "", day(-3), 1, 2, 2),
				bk("F2", TypeFull, "", day(-2), 1, 5, 5),
			}, WAL: cat(segs(1, 1, 8), segs(2, 8, 12), []string{"00000002.history"}), Spec: fullRule(1)},
			keep: []string{"F2"}, del: []string{"F1"}, walDel: segs(1, 1, 4),
		},
		{
			name: "#10 verified history: a timeline that branched before the kept backup started is kept only from the oldest continuous start",
			in: Input{Backups: []Backup{
				bk("F1", TypeFull, "", day(-3), 1, 2, 2),
				bk("F2", TypeFull, "", day(-2), 1, 10, 10),
				bk("F3", TypeFull, "", day(-1), 3, 20, 20),
			}, WAL: cat(segs(1, 1, 15), segs(2, 3, 8), segs(3, 15, 21), []string{"00000002.history", "00000003.history"}),
				History: map[uint32][]wal.HistoryEntry{
					2: {{Timeline: 1, Switch: wal.LSN(3*seg + 10)}},
					3: {{Timeline: 1, Switch: wal.LSN(15*seg + 10)}},
				}, Spec: fullRule(2)},
			// timeline 2 left timeline 1 before F2 started: no kept backup
			// reaches it, and it is kept from F2's start (segment 10) on:
			// everything it holds is older. Timeline 3 left after F2's start
			// and is kept from its switch point.
			keep: []string{"F2", "F3"}, del: []string{"F1"}, walDel: cat(segs(1, 1, 9), segs(2, 3, 8)),
		},
		{
			name: "#11 verified history: a later timeline is not kept before the backup that needs it",
			in: Input{Backups: []Backup{
				bk("F1", TypeFull, "", day(-3), 1, 10, 10),
				bk("F2", TypeFull, "", day(-1), 2, 30, 30),
			}, WAL: cat(segs(1, 9, 12), segs(2, 5, 31), []string{"00000002.history"}),
				History: map[uint32][]wal.HistoryEntry{2: {{Timeline: 1, Switch: wal.LSN(5*seg + 10)}}},
				Spec:    fullRule(1)},
			// F2 is on timeline 2, which left timeline 1 at segment 5, before
			// F1 started: F1 is gone, F2 needs timeline 2 from segment 30.
			keep: []string{"F2"}, del: []string{"F1"}, walDel: cat(segs(1, 9, 12), segs(2, 5, 29)),
		},
		{
			name: "#12 without that history file the same timeline 2 is kept from the oldest start",
			in: Input{Backups: []Backup{
				bk("F1", TypeFull, "", day(-3), 1, 10, 10),
				bk("F2", TypeFull, "", day(-1), 2, 30, 30),
			}, WAL: cat(segs(1, 9, 12), segs(2, 5, 31), []string{"00000002.history"}),
				Spec: Spec{Types: map[string]Rule{TypeFull: {Count: 2}}}},
			// Timeline 2's segments before F1's start are needed by nothing.
			keep: []string{"F1", "F2"}, walDel: cat(segs(1, 9, 9), segs(2, 5, 9)),
		},
		{
			name: "#13 an untrusted newer full neither displaces a trusted one nor is deleted",
			in: Input{Backups: []Backup{
				bk("F1", TypeFull, "", day(-3), 1, 2, 2),
				bk("F2", TypeFull, "", day(-2), 1, 5, 5),
				untrusted(bk("X1", TypeFull, "", day(-1), 1, 8, 8)),
				untrusted(bk("X2", TypeFull, "", day(-0.5), 1, 9, 9)),
			}, WAL: segs(1, 1, 10), Spec: fullRule(1)},
			keep: []string{"F2", "X1", "X2"}, del: []string{"F1"}, walDel: segs(1, 1, 4),
			reasons: map[string]string{"F2": "newest full backup", "X1": "manifest not trusted"},
		},
		{
			name: "#14 an untrusted incremental naming an old full as parent keeps it (a forged manifest only keeps more)",
			in: Input{Backups: []Backup{
				bk("F1", TypeFull, "", day(-3), 1, 2, 2),
				bk("F2", TypeFull, "", day(-2), 1, 5, 5),
				untrusted(bk("X1", TypeIncr, "F1", day(-1), 1, 8, 8)),
			}, WAL: segs(1, 1, 10), Spec: fullRule(1)},
			keep: []string{"F1", "F2", "X1"}, walDel: cat(segs(1, 1, 1), segs(1, 3, 4)),
		},
		{
			name: "#15 tiers: each tier keeps by its own rule; a backup of no tier falls back to its type's rule",
			in: Input{Backups: []Backup{
				tier(bk("M1", TypeFull, "", day(-60), 1, 1, 1), "monthly"),
				tier(bk("D1", TypeFull, "", day(-40), 1, 3, 3), "daily"),
				tier(bk("M2", TypeFull, "", day(-30), 1, 5, 5), "monthly"),
				tier(bk("D2", TypeFull, "", day(-20), 1, 7, 7), "daily"),
				bk("A1", TypeFull, "", day(-15), 1, 9, 9),
				bk("A2", TypeFull, "", day(-10), 1, 11, 11),
				tier(bk("D3", TypeFull, "", day(-1), 1, 13, 13), "daily"),
			}, WAL: segs(1, 0, 14), Spec: Spec{
				Tiers: map[string]Rule{"monthly": {Age: 365 * 24 * time.Hour}, "daily": {Age: 30 * 24 * time.Hour}},
				Types: map[string]Rule{TypeFull: {Count: 1}},
			}},
			keep: []string{"M1", "M2", "D2", "A2", "D3"}, del: []string{"D1", "A1"}, walDel: segs(1, 0, 0),
			reasons: map[string]string{"D1": "tier daily: 40d old, keep age 30d", "A1": "full backups: number 2 by age, keep count 1"},
		},
		{
			name: "#16 count and age together: either one keeps a backup",
			in: Input{Backups: []Backup{
				bk("F1", TypeFull, "", day(-20), 1, 1, 1),
				bk("F2", TypeFull, "", day(-6), 1, 3, 3),
				bk("F3", TypeFull, "", day(-5), 1, 5, 5),
				bk("F4", TypeFull, "", day(-1), 1, 7, 7),
			}, WAL: segs(1, 0, 8), Spec: Spec{Types: map[string]Rule{TypeFull: {Count: 2, Age: 7 * 24 * time.Hour}}}},
			keep: []string{"F2", "F3", "F4"}, del: []string{"F1"}, walDel: segs(1, 0, 2),
		},
		{
			name: "#17 history files, unknown names stay; .partial and .backup files go by position",
			in: Input{Backups: []Backup{
				bk("F1", TypeFull, "", day(-3), 1, 2, 2),
				bk("F2", TypeFull, "", day(-1), 2, 6, 6),
			}, WAL: cat(segs(1, 1, 3), []string{"000000010000000000000003.partial", "000000010000000000000002.00000028.backup",
				"00000002.history", "junk", "000000020000000000000007.00000028.backup"}), Spec: fullRule(1)},
			keep: []string{"F2"}, del: []string{"F1"},
			walDel: cat(segs(1, 1, 3), []string{"000000010000000000000002.00000028.backup", "000000010000000000000003.partial"}),
		},
		{
			name: "#18 a broken chain (its full missing) is kept, and so is its WAL",
			in: Input{Backups: []Backup{
				bk("I1", TypeIncr, "F0", day(-3), 1, 2, 2),
				bk("F1", TypeFull, "", day(-2), 1, 5, 5),
				bk("F2", TypeFull, "", day(-1), 1, 7, 7),
			}, WAL: segs(1, 1, 8), Spec: fullRule(1)},
			keep: []string{"I1", "F2"}, del: []string{"F1"}, walDel: segs(1, 1, 1),
		},
		{
			name: "#19 a pinned incremental keeps its chain but not a continuous WAL range",
			in: Input{Backups: []Backup{
				bk("F1", TypeFull, "", day(-30), 1, 2, 2),
				pinned(bk("I1", TypeIncr, "F1", day(-29), 1, 4, 5), ""),
				bk("F2", TypeFull, "", day(-1), 1, 9, 9),
			}, WAL: segs(1, 1, 10), Spec: fullRule(1)},
			keep: []string{"F1", "I1", "F2"}, walDel: cat(segs(1, 1, 1), segs(1, 3, 3), segs(1, 6, 8)),
		},
		{
			name: "#20 a backup in progress may build on any backup and need older WAL: none expires, no WAL goes",
			in: Input{Backups: []Backup{
				bk("F1", TypeFull, "", day(-3), 1, 2, 2),
				bk("I1", TypeIncr, "F1", day(-2), 1, 4, 4),
				bk("F2", TypeFull, "", day(-1), 1, 6, 6),
			}, WAL: segs(1, 1, 7), Spec: fullRule(1), InProgress: []string{"20261207T115900"}},
			keep: []string{"F1", "I1", "F2"}, walDel: nil,
			reasons: map[string]string{"I1": "a backup is in progress (20261207T115900)"},
		},
		{
			name: "#21 no trusted full backup: no WAL is deleted",
			in: Input{Backups: []Backup{
				untrusted(bk("X1", TypeFull, "", day(-3), 1, 5, 5)),
			}, WAL: segs(1, 1, 8), Spec: fullRule(1)},
			keep: []string{"X1"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			in.Now = now
			p, err := Decide(in)
			if err != nil {
				t.Fatal(err)
			}
			ids := func(ds []Decision) []string {
				var out []string
				for _, d := range ds {
					out = append(out, d.ID)
				}
				slices.Sort(out)
				return out
			}
			sorted := func(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }
			if got, want := ids(p.Keep), sorted(tc.keep); !slices.Equal(got, want) {
				t.Errorf("kept %v, want %v\nplan: %+v", got, want, p)
			}
			if got, want := ids(p.Delete), sorted(tc.del); !slices.Equal(got, want) {
				t.Errorf("deleted %v, want %v\nplan: %+v", got, want, p)
			}
			if got, want := p.WALDeleteNames, sorted(tc.walDel); !slices.Equal(got, want) {
				t.Errorf("WAL deleted %v,\nwant %v\nkeep: %+v", got, want, p.WALKeep)
			}
			if tc.anchor != "" && p.PITRAnchor != tc.anchor {
				t.Errorf("PITR anchor %s, want %s", p.PITRAnchor, tc.anchor)
			}
			for id, sub := range tc.reasons {
				found := false
				for _, d := range append(slices.Clone(p.Keep), p.Delete...) {
					if d.ID == id {
						found = true
						if !strings.Contains(d.Reason, sub) {
							t.Errorf("%s: reason %q lacks %q", id, d.Reason, sub)
						}
					}
				}
				if !found {
					t.Errorf("%s not in the plan", id)
				}
			}
			// Invariant 4: every kept backup's chain and its start..stop WAL
			// are kept.
			deleted := map[string]bool{}
			for _, d := range p.Delete {
				deleted[d.ID] = true
			}
			walGone := map[string]bool{}
			for _, n := range p.WALDeleteNames {
				walGone[n] = true
			}
			byID := map[string]Backup{}
			for _, b := range in.Backups {
				byID[b.ID] = b
			}
			for _, k := range p.Keep {
				b := byID[k.ID]
				for cur := b; cur.Parent != ""; cur = byID[cur.Parent] {
					if deleted[cur.Parent] {
						t.Errorf("kept %s depends on deleted %s", k.ID, cur.Parent)
					}
				}
				for _, s := range wal.SegmentsBetween(b.Timeline, b.StartLSN, b.StopLSN, seg) {
					if walGone[s] {
						t.Errorf("kept %s needs deleted WAL %s", k.ID, s)
					}
				}
			}
		})
	}
}

func TestDecideRefuses(t *testing.T) {
	b := bk("F1", TypeFull, "", day(-1), 1, 1, 1)
	for _, tc := range []struct {
		name string
		in   Input
		want string
	}{
		{"no rule", Input{Backups: []Backup{b}}, "no retention rule"},
		{"negative count", Input{Spec: Spec{Types: map[string]Rule{TypeFull: {Count: -1}}}}, "count -1 is negative"},
		{"empty rule", Input{Spec: Spec{Tiers: map[string]Rule{"daily": {}}}}, "tier daily: neither a count nor an age"},
		{"unknown type", Input{Spec: Spec{Types: map[string]Rule{"weekly": {Count: 1}}}}, `type "weekly": unknown backup type`},
		{"negative window", Input{Spec: Spec{Types: map[string]Rule{TypeFull: {Count: 1}}, PITRWindow: -time.Hour}}, "pitr window -1h0m0s is negative"},
		{"duplicate", Input{Backups: []Backup{b, b}, Spec: fullRule(1)}, "backup F1 listed twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decide(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"36h": 36 * time.Hour, "30d": 30 * 24 * time.Hour, "12w": 12 * 7 * 24 * time.Hour,
		"1d12h": 36 * time.Hour, "1w2d": 9 * 24 * time.Hour, "90m": 90 * time.Minute,
	} {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "-1d", "x", "1.5d", "30 days", "-5h"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) accepted", in)
		}
	}
}

// BenchmarkDecide is the decision on a large repository: 200 backups and
// 100,000 WAL segments.
func BenchmarkDecide(b *testing.B) {
	var in Input
	in.Now = now
	in.Spec = Spec{Types: map[string]Rule{TypeFull: {Count: 4}, TypeIncr: {Age: 7 * 24 * time.Hour}}, PITRWindow: 7 * 24 * time.Hour}
	parent := ""
	for i := range 200 {
		id, typ := fmt.Sprintf("B%03dF", i), TypeFull
		p := ""
		if i%10 != 0 {
			id, typ, p = fmt.Sprintf("B%03dI", i), TypeIncr, parent
		}
		in.Backups = append(in.Backups, bk(id, typ, p, day(float64(i-200)/2), 1, uint64(i*500), uint64(i*500+1)))
		parent = id
	}
	in.WAL = segs(1, 0, 99999)
	b.ResetTimer()
	for b.Loop() {
		if _, err := Decide(in); err != nil {
			b.Fatal(err)
		}
	}
}
