package expire

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/pgdr/pgdr/pkg/duration"
	"github.com/pgdr/pgdr/pkg/wal"
)

// Backup types (as in the backup manifest).
const (
	TypeFull = "full"
	TypeDiff = "diff"
	TypeIncr = "incr"
)

// DefaultPITRWindow is the PITR window when none is given.
const DefaultPITRWindow = 7 * 24 * time.Hour

// PITRSkewMargin is how much earlier than the PITR window's start the
// anchor backup must have stopped, by default (Spec.PITRMargin): backup
// times come from the backup host's clock, which may be ahead of the
// expiring host's.
const PITRSkewMargin = 10 * time.Minute

// Backup is what the decision needs to know of one backup.
type Backup struct {
	ID          string
	Type        string // full, diff or incr
	Parent      string // "" for a full backup
	Tier        string // "" when taken outside a tier
	StartTime   time.Time
	StopTime    time.Time
	StartLSN    wal.LSN
	StopLSN     wal.LSN
	Timeline    uint32
	SegmentSize uint64
	Pinned      bool
	PinNote     string
	// Untrusted, when not empty, says why the manifest is not trusted
	// (not signed where signing is configured): such a backup is never
	// expired and never counted against a rule.
	Untrusted string
}

// Rule is the retention of one tier or backup type: the newest Count
// backups and those younger than Age are kept (either keeps a backup when
// both are set). A zero field is not set.
type Rule struct {
	Count int           `json:"count,omitempty"`
	Age   time.Duration `json:"age,omitempty"`
}

func (r Rule) set() bool { return r.Count > 0 || r.Age > 0 }

func (r Rule) String() string {
	var p []string
	if r.Count > 0 {
		p = append(p, fmt.Sprintf("count %d", r.Count))
	}
	if r.Age > 0 {
		p = append(p, "age "+duration.Format(r.Age))
	}
	return strings.Join(p, ", ")
}

// Spec is a retention specification. A backup is ruled by its tier's rule
// when its tier has one, else by its type's rule. A full backup no rule
// covers is kept; a diff/incr backup no rule covers follows the full
// backup its chain starts from.
type Spec struct {
	Tiers map[string]Rule `json:"tiers,omitempty"`
	Types map[string]Rule `json:"types,omitempty"`
	// PITRWindow keeps every point in time since now − PITRWindow
	// restorable; 0 keeps no window.
	PITRWindow time.Duration `json:"pitr_window"`
	// PITRMargin is how much earlier than the window's start its anchor
	// must have stopped; 0 is PITRSkewMargin.
	PITRMargin time.Duration `json:"pitr_margin,omitempty"`
}

// Validate checks the spec; errors name the field.
func (s Spec) Validate() error {
	if s.PITRWindow < 0 {
		return fmt.Errorf("pitr window %s is negative", s.PITRWindow)
	}
	if s.PITRMargin < 0 {
		return fmt.Errorf("pitr margin %s is negative", s.PITRMargin)
	}
	check := func(what string, r Rule) error {
		if r.Count < 0 {
			return fmt.Errorf("%s: count %d is negative", what, r.Count)
		}
		if r.Age < 0 {
			return fmt.Errorf("%s: age %s is negative", what, r.Age)
		}
		if !r.set() {
			return fmt.Errorf("%s: neither a count nor an age", what)
		}
		return nil
	}
	for t, r := range s.Types {
		if t != TypeFull && t != TypeDiff && t != TypeIncr {
			return fmt.Errorf("type %q: unknown backup type (full, diff or incr)", t)
		}
		if err := check("type "+t, r); err != nil {
			return err
		}
	}
	for t, r := range s.Tiers {
		if t == "" {
			return errors.New("tier with an empty name")
		}
		if err := check("tier "+t, r); err != nil {
			return err
		}
	}
	if len(s.Types) == 0 && len(s.Tiers) == 0 {
		return errors.New("no retention rule: give a count or an age for a tier or a backup type")
	}
	return nil
}

// Input is everything the decision looks at.
type Input struct {
	Backups []Backup
	// WAL holds the base names of the archived WAL files.
	WAL []string
	// Partials holds the segment names of the WAL receiver's stream
	// partials (repo.StreamPartialKey).
	Partials []string
	// History holds the parsed history files of timelines whose history
	// object is signed and verified; a timeline missing here is treated
	// as reachable from every backup (which keeps more WAL).
	History map[uint32][]wal.HistoryEntry
	Spec    Spec
	Now     time.Time
	// InProgress names the backup IDs being taken now (fresh
	// reservations): while one runs no backup is expired, since it may be
	// building on any of them.
	InProgress []string
}

// Decision is the fate of one backup and the reason for it.
type Decision struct {
	ID     string `json:"id"`
	Type   string `json:"type"`
	Tier   string `json:"tier,omitempty"`
	Reason string `json:"reason"`
}

// WALRange is a run of archived WAL files on one timeline, by segment.
type WALRange struct {
	Timeline uint32 `json:"timeline"`
	First    string `json:"first"`
	Last     string `json:"last"`
	Files    int    `json:"files"`
	Reason   string `json:"reason"`
}

// Plan is the decision: what goes and what stays, each with its reason.
type Plan struct {
	Delete []Decision `json:"delete"`
	Keep   []Decision `json:"keep"`
	// WALDelete lists the runs of WAL files to delete; WALDeleteNames has
	// every name, ascending.
	WALDelete      []WALRange `json:"wal_delete"`
	WALDeleteNames []string   `json:"-"`
	// WALKeep says, per timeline, from where WAL is kept and why.
	WALKeep []WALRange `json:"wal_keep"`
	// PITRAnchor is the backup that keeps the PITR window restorable.
	PITRAnchor string `json:"pitr_anchor,omitempty"`
	// PartialDelete lists the stream partials to delete: their segment
	// is archived (the partial is a prefix of it), or it lies before the
	// WAL kept on its timeline (a partial never outlives the retention
	// of the WAL it would extend).
	PartialDelete []PartialDecision `json:"stream_partial_delete,omitempty"`
}

// PartialDecision is a stream partial to delete and why.
type PartialDecision struct {
	Segment  string `json:"segment"`
	Reason   string `json:"reason"`
	archived bool
}

// keepKind says how strongly a kept backup is kept, for the WAL it needs.
type keepKind int

const (
	keepNone keepKind = iota
	// keepConsistent: kept as data (a parent, pinned, untrusted): WAL from
	// its start to its stop only (none for an untrusted one).
	keepConsistent
	// keepContinuous: kept by a rule, as newest full or PITR anchor: all
	// WAL from its start on.
	keepContinuous
)

type state struct {
	b      Backup
	kind   keepKind
	reason []string
	// ruled: the rule that decided it, "" when none
	ruleDrop string
}

func (s *state) keep(k keepKind, why string) {
	if k > s.kind {
		s.kind = k
	}
	s.reason = append(s.reason, why)
}

// Decide computes the retention plan for in. It fails only on input it
// cannot reason about safely (duplicate IDs, an invalid spec).
func Decide(in Input) (*Plan, error) {
	if err := in.Spec.Validate(); err != nil {
		return nil, err
	}
	byID := map[string]*state{}
	all := make([]*state, 0, len(in.Backups))
	for _, b := range in.Backups {
		if _, dup := byID[b.ID]; dup {
			return nil, fmt.Errorf("backup %s listed twice", b.ID)
		}
		s := &state{b: b}
		byID[b.ID] = s
		all = append(all, s)
	}
	// Newest first, for counts and for "newest" searches.
	sort.SliceStable(all, func(i, j int) bool {
		if !all[i].b.StartTime.Equal(all[j].b.StartTime) {
			return all[i].b.StartTime.After(all[j].b.StartTime)
		}
		return all[i].b.ID > all[j].b.ID
	})
	trusted := func(s *state) bool { return s.b.Untrusted == "" }
	// root is the full backup a chain starts from, nil when the chain is
	// broken (a parent missing, a loop).
	root := func(s *state) *state {
		cur := s
		for range len(all) + 1 {
			if cur.b.Type == TypeFull {
				return cur
			}
			p, ok := byID[cur.b.Parent]
			if !ok || cur.b.Parent == "" {
				return nil
			}
			cur = p
		}
		return nil
	}

	// Rules, per group (tier or type), over trusted backups only.
	ruleOf := func(b Backup) (string, Rule, bool) {
		if b.Tier != "" {
			if r, ok := in.Spec.Tiers[b.Tier]; ok {
				return "tier " + b.Tier, r, true
			}
		}
		if r, ok := in.Spec.Types[b.Type]; ok {
			return b.Type + " backups", r, true
		}
		return "", Rule{}, false
	}
	rank := map[string]int{}
	ruled := map[*state]bool{}
	for _, s := range all {
		if !trusted(s) {
			continue
		}
		group, r, ok := ruleOf(s.b)
		if !ok {
			continue
		}
		ruled[s] = true
		rank[group]++
		n := rank[group]
		age := in.Now.Sub(s.b.StartTime)
		var kept []string
		if r.Count > 0 && n <= r.Count {
			kept = append(kept, fmt.Sprintf("%s: newest %d of %d kept", group, n, r.Count))
		}
		if r.Age > 0 && age <= r.Age {
			kept = append(kept, fmt.Sprintf("%s: %s old, within %s", group, duration.Format(age), duration.Format(r.Age)))
		}
		if len(kept) > 0 {
			s.keep(keepContinuous, strings.Join(kept, "; "))
			continue
		}
		var why []string
		if r.Count > 0 {
			why = append(why, fmt.Sprintf("%s: number %d by age, keep count %d", group, n, r.Count))
		}
		if r.Age > 0 {
			why = append(why, fmt.Sprintf("%s: %s old, keep age %s", group, duration.Format(age), duration.Format(r.Age)))
		}
		s.ruleDrop = strings.Join(why, "; ")
	}
	// No rule: a full stays (a diff/incr follows its full, below).
	for _, s := range all {
		if trusted(s) && !ruled[s] && s.b.Type == TypeFull {
			s.keep(keepContinuous, "no retention rule covers "+ruleName(s.b))
		}
	}
	// The newest trusted full backup.
	for _, s := range all {
		if trusted(s) && s.b.Type == TypeFull {
			s.keep(keepContinuous, "newest full backup")
			break
		}
	}
	// The PITR window's anchor: the newest restorable backup that was
	// consistent (stopped) at or before the window's start less
	// PITRSkewMargin, else the oldest restorable one. A backup restores
	// only targets after its stop, so one that starts before the edge but
	// ends after it cannot anchor the window.
	plan := &Plan{}
	if in.Spec.PITRWindow > 0 {
		edge := in.Now.Add(-in.Spec.PITRWindow)
		margin := in.Spec.PITRMargin
		if margin == 0 {
			margin = PITRSkewMargin
		}
		limit := edge.Add(-margin)
		var anchor, oldest *state
		for _, s := range all {
			if !trusted(s) || root(s) == nil || !chainTrusted(s, byID) {
				continue
			}
			oldest = s
			if anchor == nil && !s.b.StopTime.IsZero() && !s.b.StopTime.After(limit) {
				anchor = s
			}
		}
		if anchor != nil {
			anchor.keep(keepContinuous, fmt.Sprintf("PITR window %s: newest backup consistent (stopped) at or before %s (the window's start less %s)",
				duration.Format(in.Spec.PITRWindow), limit.UTC().Format(time.RFC3339), margin))
		} else if oldest != nil {
			anchor = oldest
			anchor.keep(keepContinuous, fmt.Sprintf("PITR window %s: no backup stopped before %s, so the oldest one anchors it", duration.Format(in.Spec.PITRWindow), limit.UTC().Format(time.RFC3339)))
		}
		if anchor != nil {
			plan.PITRAnchor = anchor.b.ID
		}
	}
	// No rule: a diff/incr follows the full its chain starts from.
	for _, s := range all {
		if !trusted(s) || ruled[s] || s.b.Type == TypeFull {
			continue
		}
		r := root(s)
		switch {
		case r == nil:
			s.keep(keepContinuous, "no retention rule covers "+ruleName(s.b)+" and its chain has no full backup here")
		case r.kind == keepContinuous:
			s.keep(keepContinuous, "no retention rule covers "+ruleName(s.b)+"; its full backup "+r.b.ID+" is kept")
		default:
			s.ruleDrop = "no retention rule covers " + ruleName(s.b) + "; it follows its full backup " + r.b.ID + ", which expires"
		}
	}
	if len(in.InProgress) > 0 {
		for _, s := range all {
			if trusted(s) {
				s.keep(keepContinuous, "a backup is in progress ("+strings.Join(in.InProgress, ", ")+") and may build on it: no backup expires now")
			}
		}
	}
	for _, s := range all {
		if s.b.Pinned {
			why := "pinned"
			if s.b.PinNote != "" {
				why += ": " + s.b.PinNote
			}
			s.keep(keepConsistent, why)
		}
		if !trusted(s) {
			s.keep(keepConsistent, "manifest not trusted ("+s.b.Untrusted+"): never expired nor counted by pgdr")
		}
	}
	// Dependencies: a kept backup keeps its chain.
	for _, s := range all {
		if s.kind == keepNone {
			continue
		}
		child := s
		for range len(all) {
			p, ok := byID[child.b.Parent]
			if child.b.Parent == "" || !ok {
				break
			}
			p.keep(keepConsistent, "parent of kept backup "+child.b.ID)
			child = p
		}
	}
	for i := len(all) - 1; i >= 0; i-- { // oldest first in the plan
		s := all[i]
		d := Decision{ID: s.b.ID, Type: s.b.Type, Tier: s.b.Tier}
		if s.kind != keepNone {
			d.Reason = strings.Join(s.reason, "; ")
			plan.Keep = append(plan.Keep, d)
			continue
		}
		d.Reason = s.ruleDrop
		plan.Delete = append(plan.Delete, d)
	}
	archived := map[string]bool{}
	for _, n := range in.WAL {
		archived[n] = true
	}
	for _, n := range in.Partials {
		if archived[n] {
			plan.PartialDelete = append(plan.PartialDelete, PartialDecision{Segment: n, Reason: "its segment is archived", archived: true})
		}
	}
	decideWAL(in, all, plan)
	if len(in.InProgress) > 0 {
		// Only those whose segment is archived: the others go with the
		// WAL, not now.
		plan.PartialDelete = slices.DeleteFunc(plan.PartialDelete, func(p PartialDecision) bool { return !p.archived })
	}
	if len(in.InProgress) > 0 && len(plan.WALDeleteNames) > 0 {
		// A backup in progress may need WAL from before every kept
		// backup's start (a standby's backup starts at its last
		// restartpoint, which may be far behind).
		plan.WALKeep = append(plan.WALKeep, WALRange{Files: len(plan.WALDeleteNames),
			Reason: "a backup is in progress (" + strings.Join(in.InProgress, ", ") + ") and may need older WAL: no WAL expires now"})
		plan.WALDelete, plan.WALDeleteNames = nil, nil
	}
	return plan, nil
}

// chainTrusted reports whether every backup of s's chain is trusted.
func chainTrusted(s *state, byID map[string]*state) bool {
	cur := s
	for range len(byID) + 1 {
		if cur.b.Untrusted != "" {
			return false
		}
		if cur.b.Parent == "" {
			return true
		}
		p, ok := byID[cur.b.Parent]
		if !ok {
			return false
		}
		cur = p
	}
	return false
}

func ruleName(b Backup) string {
	if b.Tier != "" {
		return "tier " + b.Tier + " (" + b.Type + ")"
	}
	return b.Type + " backups"
}

// need is WAL a kept backup needs: from StartLSN on (continuous) or up to
// StopLSN, on Timeline.
type need struct {
	id         string
	tli        uint32
	start      wal.LSN
	stop       wal.LSN
	continuous bool
}

// maxUntrustedWAL bounds the WAL an untrusted backup's own start..stop may
// keep (4 TiB): far more than any real backup's, small enough that a forged
// manifest cannot keep a repository's whole archive.
const maxUntrustedWAL = 4 << 40

// decideWAL fills the plan's WAL decisions. WAL is kept:
//   - on every timeline from the oldest start of the continuous needs that
//     may reach it (all of them unless a verified history file shows the
//     timeline branched off before the need's start);
//   - from the oldest continuous need's start on timelines no need
//     reaches (a dead branch is kept above that point, never guessed at);
//   - inside every kept backup's own start..stop range (an untrusted
//     one's too, when at most maxUntrustedWAL wide).
//
// History files and names that are not WAL are never deleted; nothing is
// deleted when no trusted full backup is kept (no segment size, no anchor).
func decideWAL(in Input, all []*state, plan *Plan) {
	var needs []need
	var segSize uint64
	for _, s := range all {
		if s.kind == keepNone {
			continue
		}
		// An untrusted manifest's WAL positions are whatever its writer
		// chose (a forged range of 2^62 bytes, a start of 0): it never
		// anchors WAL kept from its start on, nor sets the segment size.
		// But a legacy unsigned backup (signing with require: false) must
		// stay restorable: its own start..stop is kept when plausible, at
		// most maxUntrustedWAL wide (a forger then keeps at most that
		// much more, kept as intervals, never as lists of names).
		if s.b.Untrusted != "" {
			if s.b.Timeline != 0 && s.b.StopLSN >= s.b.StartLSN && s.b.StopLSN-s.b.StartLSN <= maxUntrustedWAL {
				needs = append(needs, need{id: s.b.ID + " (not trusted)", tli: s.b.Timeline, start: s.b.StartLSN, stop: s.b.StopLSN})
			}
			continue
		}
		if s.b.SegmentSize != 0 && segSize == 0 {
			segSize = s.b.SegmentSize
		}
		needs = append(needs, need{id: s.b.ID, tli: s.b.Timeline, start: s.b.StartLSN, stop: s.b.StopLSN, continuous: s.kind == keepContinuous})
	}
	var global *need
	for i := range needs {
		if needs[i].continuous && (global == nil || needs[i].start < global.start) {
			global = &needs[i]
		}
	}
	if segSize == 0 || global == nil {
		return
	}
	segOf := func(l wal.LSN) uint64 { return uint64(l) / segSize }
	type tliKeep struct {
		from wal.LSN
		by   string
	}
	keepFrom := map[uint32]tliKeep{}
	timelineOf := map[uint32]bool{}
	type file struct {
		name wal.Name
		seg  uint64
	}
	var files []file
	for _, n := range in.WAL {
		w, err := wal.ParseName(n)
		if err != nil || w.Kind == wal.KindHistory {
			continue
		}
		files = append(files, file{w, w.SegNo(segSize)})
		timelineOf[w.Timeline] = true
	}
	for _, n := range needs {
		timelineOf[n.tli] = true
	}
	for tli := range timelineOf {
		best := tliKeep{from: ^wal.LSN(0)}
		for _, n := range needs {
			if !n.continuous {
				continue
			}
			from, ok := reach(n, tli, in.History)
			if ok && from < best.from {
				best = tliKeep{from: from, by: n.id}
			}
		}
		if best.by == "" {
			best = tliKeep{from: global.start, by: global.id + " (no kept backup reaches this timeline; kept from the oldest continuous start)"}
		}
		keepFrom[tli] = best
	}
	// Kept ranges per timeline, for the report.
	tlis := make([]uint32, 0, len(keepFrom))
	for t := range keepFrom {
		tlis = append(tlis, t)
	}
	sort.Slice(tlis, func(i, j int) bool { return tlis[i] < tlis[j] })
	for _, t := range tlis {
		k := keepFrom[t]
		plan.WALKeep = append(plan.WALKeep, WALRange{Timeline: t, First: k.from.Segment(t, segSize),
			Reason: fmt.Sprintf("kept from %s on: needed by backup %s", k.from, k.by)})
	}
	// Every kept backup's own start..stop, as merged segment intervals
	// per timeline (never as lists of names: a range's size is only
	// bounded by the manifest).
	type interval struct{ first, last uint64 }
	spans := map[uint32][]interval{}
	for _, n := range needs {
		first, last := segOf(n.start), segOf(maxLSN(n.start, n.stop-1))
		spans[n.tli] = append(spans[n.tli], interval{first, last})
		if n.continuous {
			continue
		}
		plan.WALKeep = append(plan.WALKeep, WALRange{Timeline: n.tli, First: wal.SegmentName(n.tli, first, segSize),
			Last: wal.SegmentName(n.tli, last, segSize), Files: int(min(last-first+1, uint64(1)<<31)),
			Reason: "start to stop of kept backup " + n.id})
	}
	for tli, iv := range spans {
		sort.Slice(iv, func(i, j int) bool { return iv[i].first < iv[j].first })
		merged := iv[:1]
		for _, x := range iv[1:] {
			if l := &merged[len(merged)-1]; x.first <= l.last || x.first == l.last+1 {
				l.last = max(l.last, x.last)
				continue
			}
			merged = append(merged, x)
		}
		spans[tli] = merged
	}
	inConsistency := func(tli uint32, seg uint64) bool {
		iv := spans[tli]
		i := sort.Search(len(iv), func(i int) bool { return iv[i].last >= seg })
		return i < len(iv) && iv[i].first <= seg
	}
	sort.Slice(files, func(i, j int) bool {
		if files[i].name.Timeline != files[j].name.Timeline {
			return files[i].name.Timeline < files[j].name.Timeline
		}
		if files[i].seg != files[j].seg {
			return files[i].seg < files[j].seg
		}
		return files[i].name.Raw < files[j].name.Raw
	})
	var cur *WALRange
	var curSeg uint64
	for _, f := range files {
		t := f.name.Timeline
		k := keepFrom[t]
		if f.seg >= segOf(k.from) || inConsistency(t, f.seg) {
			cur = nil
			continue
		}
		plan.WALDeleteNames = append(plan.WALDeleteNames, f.name.Raw)
		if cur != nil && cur.Timeline == t && f.seg <= curSeg+1 {
			cur.Last, cur.Files = f.name.Raw, cur.Files+1
			curSeg = f.seg
			continue
		}
		plan.WALDelete = append(plan.WALDelete, WALRange{Timeline: t, First: f.name.Raw, Last: f.name.Raw, Files: 1,
			Reason: fmt.Sprintf("before %s, where timeline %d's WAL is first needed (backup %s)", k.from, t, k.by)})
		cur, curSeg = &plan.WALDelete[len(plan.WALDelete)-1], f.seg
	}
	sort.Strings(plan.WALDeleteNames)
	archived := map[string]bool{}
	for _, n := range in.WAL {
		archived[n] = true
	}
	for _, n := range in.Partials {
		w, err := wal.ParseName(n)
		if err != nil || w.Kind != wal.KindSegment || archived[n] {
			continue
		}
		k, ok := keepFrom[w.Timeline]
		if seg := w.SegNo(segSize); ok && seg < segOf(k.from) && !inConsistency(w.Timeline, seg) {
			plan.PartialDelete = append(plan.PartialDelete, PartialDecision{Segment: n,
				Reason: fmt.Sprintf("before %s, where timeline %d's WAL is first needed (backup %s)", k.from, w.Timeline, k.by)})
		}
	}
}

func maxLSN(a, b wal.LSN) wal.LSN {
	if a > b {
		return a
	}
	return b
}

// reach says from where need n, restored to the latest point, needs WAL of
// timeline tli: its own timeline from its start; a later timeline from
// where it branched off n's line, when that is at or after n's start.
// Without a (verified) history file for tli it is assumed reachable from
// n's start, which keeps more.
func reach(n need, tli uint32, hist map[uint32][]wal.HistoryEntry) (wal.LSN, bool) {
	if tli == n.tli {
		return n.start, true
	}
	if tli < n.tli {
		// An older timeline: recovery from n never reads it.
		return 0, false
	}
	h, ok := hist[tli]
	if !ok {
		return n.start, true
	}
	for _, e := range h {
		if e.Timeline == n.tli {
			if e.Switch >= n.start {
				return maxLSN(n.start, e.Switch), true
			}
			return 0, false // branched off before the backup started
		}
	}
	return 0, false // n's timeline is not among tli's ancestors
}

// ParseDuration parses a retention or window duration in pkg/duration's
// forms (36h, 30d, 12w, 7y, 1d12h); it must be positive ("0" aside).
func ParseDuration(s string) (time.Duration, error) {
	d, err := duration.Parse(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: want e.g. 36h, 30d, 12w or 1d12h", s)
	}
	if d <= 0 && strings.TrimSpace(s) != "0" {
		return 0, fmt.Errorf("duration %q must be positive", s)
	}
	return d, nil
}
