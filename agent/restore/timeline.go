package restore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/wal"
)

// maxHistoryFile bounds a timeline history file read from the archive.
const maxHistoryFile = 16 << 20

// This file chooses the timeline recovery follows (recovery_target_timeline).
//
// Nothing records which timeline a cluster took: the repository's
// cluster.json holds only the system identifier, and a restore runs
// without the coordinator. What the archive holds is every timeline some
// server archived there, including one written by a restored copy or a
// former primary that went on writing: PostgreSQL's 'latest' follows the
// highest-numbered of them, and a stray one silently loses every write of
// the real cluster after its branch point (issue 11, item 9).
//
// So the restore follows the history the archive shows, and refuses where
// it forks. From the backup's timeline at its start LSN, each step goes to
// the one timeline that branches off the current one, but only if the
// current one did not go on after the branch point: no segment of it
// archived from the branch point on, and, in the archived segment holding
// the branch point, no WAL record at or after it. A failover (the old
// primary stopped, a standby promoted) gives exactly that, and is followed
// without a flag. Two timelines branching off one, or one that goes on
// after its child branched off (a copy promoted from a backup, or two
// primaries), is a fork: which branch is the cluster's cannot be told from
// the archive, and a wrong guess is silent data loss, so the restore
// refuses, names the branches, and asks for --target-timeline.
//
// The backup itself may lie on such a branch: taken on a timeline after a
// child branched off it (an old primary, not yet fenced, completing a
// backup after a standby's promotion). Recovery from it cannot follow the
// child, so it is refused without --target-timeline, and skipped when the
// backup is picked automatically (onPath). A timeline recovery from a
// backup follows must branch off the backup's timeline at or after the
// backup's end, where recovery from it is consistent. And a timeline with
// archived segments but no history file, above the one chosen, is refused
// too (missingHistory): recovery would silently stop at its parent's end.

// tlGraph is what the archive holds about timelines: the ancestry in each
// history file and the archived segments of each timeline, over all the
// repositories (as restore_command finds them).
type tlGraph struct {
	segSize uint64
	hist    map[uint32][]wal.HistoryEntry
	segs    map[uint32][]uint64 // segment numbers, ascending
}

// loadTimelines lists the archive and reads every history file in it.
func loadTimelines(ctx context.Context, a *walArchive, segSize uint64) (*tlGraph, error) {
	g := &tlGraph{segSize: segSize, hist: map[uint32][]wal.HistoryEntry{}, segs: map[uint32][]uint64{}}
	seen := map[string]bool{}
	var hists []uint32
	for _, r := range a.repos {
		err := r.Store.List(ctx, repo.WALPrefix(a.cluster), func(oi storage.ObjectInfo) error {
			base := oi.Key[strings.LastIndex(oi.Key, "/")+1:]
			if seen[base] {
				return nil
			}
			seen[base] = true
			n, err := wal.ParseName(base)
			if err != nil {
				return nil
			}
			switch n.Kind {
			case wal.KindSegment:
				g.segs[n.Timeline] = append(g.segs[n.Timeline], n.SegNo(segSize))
			case wal.KindHistory:
				hists = append(hists, n.Timeline)
			}
			return nil
		})
		if err != nil && r.Async && len(repo.Sync(a.repos)) > 0 {
			// Every archived file is in the sync repositories; an async
			// copy that cannot be listed (its region down) adds nothing.
			a.log.Warn("the archive's timelines read without the async repository, which cannot be listed now", "repo", r.Name, "err", err)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("listing the archive in repository %s: %w", r.Name, err)
		}
	}
	for _, s := range g.segs {
		slices.Sort(s)
	}
	for _, tli := range hists {
		name := wal.HistoryFileName(tli)
		var buf bytes.Buffer
		if err := a.readVerified(ctx, name, &buf, maxHistoryFile); err != nil {
			return nil, fmt.Errorf("reading %s from the archive: %w", name, err)
		}
		b := buf.Bytes()
		es, err := wal.ParseHistory(b, tli)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		g.hist[tli] = es
	}
	return g, nil
}

// history is the history recovery follows to timeline tli.
func (g *tlGraph) history(tli uint32) tlHistory { return spans(g.hist[tli], tli) }

// branch is a timeline and where it branched off its parent.
type branch struct {
	tli uint32
	at  wal.LSN
}

// children are the timelines branching off p after LSN after, lowest first.
func (g *tlGraph) children(p uint32, after wal.LSN) []branch {
	var out []branch
	for tli, es := range g.hist {
		if len(es) > 0 && es[len(es)-1].Timeline == p && es[len(es)-1].Switch > after {
			out = append(out, branch{tli: tli, at: es[len(es)-1].Switch})
		}
	}
	slices.SortFunc(out, func(x, y branch) int { return int(x.tli) - int(y.tli) })
	return out
}

// descends reports whether recovery from backup m can follow timeline
// tli: tli is m's timeline, or its history leaves m's timeline at or after
// the backup's end (where recovery from it is consistent; a switch before
// would replay the other branch over pages the backup copied from this
// one).
func (g *tlGraph) descends(tli uint32, m *backup.Manifest) bool {
	if tli == m.Timeline {
		return true
	}
	for _, e := range g.hist[tli] {
		if e.Timeline == m.Timeline {
			return e.Switch >= backupEnd(m)
		}
	}
	return false
}

// backupEnd is where recovery from m is consistent.
func backupEnd(m *backup.Manifest) wal.LSN { return max(m.StartLSN, m.StopLSN) }

// forkedBefore returns the first timeline that branched off m's timeline
// before the backup's end: the backup was taken on a timeline that went
// on after a child branched off it (an old primary, not yet fenced, that
// completed a backup after a standby was promoted), so the backup lies on
// an abandoned or at least forked branch, and recovery from it can follow
// neither that child nor any timeline descending from it.
func (g *tlGraph) forkedBefore(m *backup.Manifest) (branch, bool) {
	var first branch
	for _, k := range g.children(m.Timeline, 0) {
		if k.at < backupEnd(m) && (first.tli == 0 || k.at < first.at) {
			first = k
		}
	}
	return first, first.tli != 0
}

// usable reports whether recovery from m can follow the timeline want
// (--target-timeline) leads to, and if not, why.
func (g *tlGraph) usable(m *backup.Manifest, want string) (bool, string) {
	switch want {
	case "current", "latest":
		return true, ""
	case "":
		if k, ok := g.forkedBefore(m); ok {
			return false, fmt.Sprintf("taken on timeline %d after timeline %d branched off it at %s", m.Timeline, k.tli, k.at)
		}
		return true, ""
	}
	n, err := strconv.ParseUint(want, 10, 32)
	if err != nil || g.descends(uint32(n), m) {
		return true, "" // a bad number is chooseTimeline's to refuse
	}
	return false, fmt.Sprintf("timeline %s does not branch off timeline %d at or after the backup's end (%s)", want, m.Timeline, backupEnd(m))
}

// onPath are the backups of ms (picked automatically, without --backup)
// that recovery can take along the timeline want leads to (see usable);
// the others are skipped with a log line. It returns ms itself when no
// backup qualifies, so that the restore refuses naming the situation.
func onPath(ctx context.Context, d Deps, ms []*backup.Manifest, want string) ([]*backup.Manifest, error) {
	if len(ms) == 0 || want == "current" || want == "latest" {
		return ms, nil
	}
	segSize := ms[0].SegmentSize
	if segSize == 0 {
		segSize = wal.DefaultSegmentSize
	}
	a := &walArchive{cluster: d.Cfg.Cluster, repos: d.Repos, ids: d.Identities, log: d.Log}
	g, err := loadTimelines(ctx, a, segSize)
	if err != nil {
		return nil, err
	}
	var on []*backup.Manifest
	for _, m := range ms {
		if ok, why := g.usable(m, want); ok {
			on = append(on, m)
		} else {
			d.Log.Warn("backup skipped: recovery from it cannot follow the archive's timeline path", "backup", m.ID, "reason", why)
		}
	}
	if len(on) == 0 {
		return ms, nil
	}
	return on, nil
}

// newestSegment names timeline tli's newest archived segment, or "".
func (g *tlGraph) newestSegment(tli uint32) string {
	s := g.segs[tli]
	if len(s) == 0 {
		return ""
	}
	return wal.SegmentName(tli, s[len(s)-1], g.segSize)
}

// wentOn reports whether timeline p has WAL archived at or after at (where
// a child branched off it), and says what (wal.WentOn).
func (g *tlGraph) wentOn(ctx context.Context, a *walArchive, p uint32, at wal.LSN) (bool, string, error) {
	src := func(ctx context.Context, segNo uint64) (io.ReadCloser, error) {
		name := wal.SegmentName(p, segNo, g.segSize)
		rc, err := a.open(ctx, name, int64(g.segSize))
		if errors.Is(err, storage.ErrNotFound) {
			return nil, fmt.Errorf("%s is not in the archive: %w", name, wal.ErrNoSegment)
		}
		return rc, err
	}
	return wal.WentOn(ctx, src, g.segSize, p, g.segs[p], at)
}

// chooseTimeline returns the timeline recovery from m follows: want is
// --target-timeline ("" for the default, "current", "latest" or a
// number). limit, when not 0, is where recovery stops (an LSN target, or
// the backup's end for an immediate one): branches after it do not matter.
func chooseTimeline(ctx context.Context, g *tlGraph, a *walArchive, m *backup.Manifest, want string, limit wal.LSN) (uint32, error) {
	switch want {
	case "current":
		return m.Timeline, nil
	case "latest":
		best := m.Timeline
		for tli := range g.hist {
			if tli > best && g.descends(tli, m) {
				best = tli
			}
		}
		return best, nil
	case "":
	default:
		n, err := strconv.ParseUint(want, 10, 32)
		if err != nil || n == 0 {
			return 0, fmt.Errorf("--target-timeline %q: want a timeline number, current or latest", want)
		}
		tli := uint32(n)
		if tli == m.Timeline {
			return tli, nil
		}
		if _, ok := g.hist[tli]; !ok {
			return 0, fmt.Errorf("--target-timeline %d: timeline %d has no history file (%s) in the archive; timelines found: %s",
				tli, tli, wal.HistoryFileName(tli), g.describe())
		}
		if !g.descends(tli, m) {
			return 0, fmt.Errorf("--target-timeline %d: timeline %d does not branch from backup %s's timeline %d at or after the backup's end (%s), where recovery from it is consistent: its history is %s",
				tli, tli, m.ID, m.Timeline, backupEnd(m), g.history(tli))
		}
		return tli, nil
	}
	if k, ok := g.forkedBefore(m); ok {
		return 0, fmt.Errorf("backup %s was taken on timeline %d after timeline %d branched off it at %s (the backup starts at %s and ends at %s): "+
			"the backup lies on a branch that went on after another server was promoted (an old primary not yet fenced, or the source after a restored copy was promoted and archived here), "+
			"and recovery from it cannot follow timeline %d, so every write on it would be missing. Restore a backup taken before %s or on timeline %d (omit --backup to pick one), "+
			"or pass --target-timeline current to restore timeline %d's branch knowingly (the right choice if timeline %d is a stray copy's)",
			m.ID, m.Timeline, k.tli, k.at, m.StartLSN, m.StopLSN, k.tli, k.at, k.tli, m.Timeline, k.tli)
	}
	cur, from := m.Timeline, m.StartLSN
	for {
		kids := slices.DeleteFunc(g.children(cur, from), func(k branch) bool { return limit != 0 && k.at > limit })
		if len(kids) == 0 {
			return cur, g.missingHistory(m, cur, limit)
		}
		first := kids[0].at
		for _, k := range kids {
			first = min(first, k.at)
		}
		on, what, err := g.wentOn(ctx, a, cur, first)
		if err != nil {
			return 0, err
		}
		if len(kids) == 1 && !on {
			cur, from = kids[0].tli, kids[0].at
			continue
		}
		var branches []string
		if on {
			branches = append(branches, fmt.Sprintf("timeline %d goes on after %s (%s)", cur, first, what))
		}
		for _, k := range kids {
			s := fmt.Sprintf("timeline %d branches off timeline %d at %s", k.tli, cur, k.at)
			if n := g.newestSegment(k.tli); n != "" {
				s += " (newest segment " + n + ")"
			}
			branches = append(branches, s)
		}
		latest, _ := chooseTimeline(ctx, g, a, m, "latest", 0)
		return 0, fmt.Errorf("the archive forks after backup %s (timeline %d, start %s): %s. "+
			"A restored copy or a second primary archived into this repository, and nothing records which branch is the cluster's: "+
			"choose the timeline recovery follows with --target-timeline N, current (timeline %d, the backup's) or latest (timeline %d); wal-list shows the branches",
			m.ID, m.Timeline, m.StartLSN, strings.Join(branches, "; "), m.Timeline, latest)
	}
}

// missingHistory refuses, when recovery would follow timeline cur, a
// higher timeline with archived segments and no history file: recovery
// cannot know it branched off cur, and would stop at cur's end, short of
// everything written on it. Its branch point is in or after its oldest
// archived segment (a promotion copies the segment holding the switch to
// the new timeline), so one beginning after limit does not matter.
func (g *tlGraph) missingHistory(m *backup.Manifest, cur uint32, limit wal.LSN) error {
	var tlis []uint32
	for tli, s := range g.segs {
		if _, ok := g.hist[tli]; !ok && tli > cur && len(s) > 0 && (limit == 0 || s[0]*g.segSize <= uint64(limit)) {
			tlis = append(tlis, tli)
		}
	}
	if len(tlis) == 0 {
		return nil
	}
	slices.Sort(tlis)
	tli := tlis[0]
	accept := strconv.FormatUint(uint64(cur), 10)
	if cur == m.Timeline {
		accept = "current"
	}
	return fmt.Errorf("timeline %d has archived segments (%s to %s) but its history file %s is not in the archive: "+
		"recovery from backup %s cannot tell where it branched off and would stop at the end of timeline %d, short of everything written on timeline %d. "+
		"Archive %s again from the server that created timeline %d (its pg_wal), or pass --target-timeline %s to accept stopping at the end of timeline %d",
		tli, wal.SegmentName(tli, g.segs[tli][0], g.segSize), g.newestSegment(tli), wal.HistoryFileName(tli),
		m.ID, cur, tli, wal.HistoryFileName(tli), tli, accept, cur)
}

// newestFit is the newest backup of on (those on the timeline path,
// oldest first) that fits, or else the newest of all that does.
func newestFit(on, all []*backup.Manifest, fits func(*backup.Manifest) bool) *backup.Manifest {
	for _, l := range [][]*backup.Manifest{on, all} {
		for i := len(l) - 1; i >= 0; i-- {
			if fits(l[i]) {
				return l[i]
			}
		}
	}
	return nil
}

// describe lists the timelines found, for error messages.
func (g *tlGraph) describe() string {
	var tlis []uint32
	for tli := range g.hist {
		tlis = append(tlis, tli)
	}
	for tli := range g.segs {
		if _, ok := g.hist[tli]; !ok {
			tlis = append(tlis, tli)
		}
	}
	if len(tlis) == 0 {
		return "none"
	}
	slices.Sort(tlis)
	out := make([]string, len(tlis))
	for i, tli := range tlis {
		out[i] = strconv.FormatUint(uint64(tli), 10)
	}
	return strings.Join(out, ", ")
}

// followTimeline loads the archive's timelines and chooses the one
// recovery from m follows (see chooseTimeline).
func followTimeline(ctx context.Context, d Deps, m *backup.Manifest, o Options) (uint32, *tlGraph, error) {
	segSize := m.SegmentSize
	if segSize == 0 {
		segSize = wal.DefaultSegmentSize
	}
	a := &walArchive{cluster: d.Cfg.Cluster, repos: d.Repos, ids: d.Identities, log: d.Log}
	g, err := loadTimelines(ctx, a, segSize)
	if err != nil {
		return 0, nil, err
	}
	// Branches after where recovery stops do not matter.
	var limit wal.LSN
	switch {
	case o.Target.LSN != nil:
		limit = *o.Target.LSN
	case o.Target.Immediate:
		limit = m.StopLSN
	}
	tli, err := chooseTimeline(ctx, g, a, m, o.TargetTimeline, limit)
	if err != nil {
		return 0, nil, err
	}
	return tli, g, nil
}
