package restore

import (
	"context"
	"errors"
	"fmt"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/agent/walship"
	"github.com/pgdr/pgdr/pkg/wal"
)

// PartialMode says whether recovery may use the WAL receiver's stream
// partial: its copy of the segment the primary was still writing
// (agent/walship/streampartial.go), the WAL after the archive's end when
// the primary's region is lost.
type PartialMode int

const (
	// PartialDefault is PartialOn for a restore to the latest point (no
	// target), PartialOff otherwise.
	PartialDefault PartialMode = iota
	PartialOn
	PartialOff
)

// partialMode resolves o.Partial. A target (time, LSN, XID, name,
// immediate) and --include-partial are refused together: a target is a
// point the operator chose inside the archived history (checkTarget
// refuses one beyond the archive), while the partial is the newest,
// unconfirmed tail a restore to the latest point adds after it; recovery
// to a target never needs it. A rejoining member (the daemon's re-clone)
// streams the rest from its primary and never uses one.
func partialMode(o Options) (PartialMode, error) {
	latest := o.Target.set() == 0 && !o.Rejoin
	switch o.Partial {
	case PartialDefault:
		if latest {
			return PartialOn, nil
		}
		return PartialOff, nil
	case PartialOn:
		if o.Rejoin {
			return 0, errors.New("--include-partial: a rejoining member streams from its primary and never uses a stream partial")
		}
		if !latest {
			return 0, errors.New("--include-partial is for a restore to the latest point: a recovery target lies inside the archived history, which a stream partial only extends")
		}
		return PartialOn, nil
	case PartialOff:
		return PartialOff, nil
	}
	return 0, fmt.Errorf("partial mode %d: unknown", o.Partial)
}

// restoreCommand is the restored cluster's restore_command.
func restoreCommand(o Options) string {
	partial := ""
	if o.Partial == PartialOn {
		partial = " --include-partial"
	}
	return fmt.Sprintf("%s wal-fetch --config %s%s %%f %%p", o.AgentPath, o.ConfigPath, partial)
}

// firstMissing is the first segment number at or after start that segs
// (ascending) does not hold: where the archive ends for recovery from
// start.
func firstMissing(segs []uint64, start uint64) uint64 {
	next := start
	for _, s := range segs {
		switch {
		case s < next:
		case s == next:
			next++
		default:
			return next
		}
	}
	return next
}

// planPartial finds, before anything is written, the stream partial
// recovery along timeline tli from backup m will get: the partial of the
// first segment of tli not in the archive, when tli is the archive's
// newest timeline (walship.PartialRefusal, the rule wal-fetch applies).
// It reads and verifies it, so that a forged or damaged partial stops the
// restore here (with the way around it) rather than recovery at its end.
// note says why there is none.
func planPartial(ctx context.Context, d Deps, g *tlGraph, m *backup.Manifest, tli uint32) (*walship.PartialUse, string, error) {
	v, err := walship.ScanTimelines(ctx, d.Repos, d.Cfg.Cluster, d.Log)
	if err != nil {
		return nil, "", err
	}
	if why := walship.PartialRefusal(tli, v); why != "" {
		d.Log.Info("recovery will use no stream partial", "reason", why)
		return nil, "no stream partial used: " + why, nil
	}
	start := m.StartLSN
	if es := g.hist[tli]; tli != m.Timeline && len(es) > 0 {
		start = es[len(es)-1].Switch
	}
	seg := wal.SegmentName(tli, firstMissing(g.segs[tli], uint64(start)/g.segSize), g.segSize)
	p, err := walship.LoadPartial(ctx, d.Repos, d.Cfg.Cluster, seg, d.Identities, d.Log)
	if err != nil {
		return nil, "", fmt.Errorf("%w; restore without it with --include-partial=false", err)
	}
	if p == nil {
		return nil, fmt.Sprintf("no stream partial of segment %s, the first of timeline %d not in the archive", seg, tli), nil
	}
	d.Log.Info("recovery will use the stream partial past the archive's end", "segment", p.Use.Segment, "timeline", p.Use.Timeline,
		"bytes", p.Use.Bytes, "from_lsn", p.Use.FromLSN.String(), "to_lsn", p.Use.ToLSN.String(), "repo", p.Use.Repo)
	return &p.Use, "", nil
}
