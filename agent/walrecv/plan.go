package walrecv

import (
	"fmt"

	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/wal"
)

// AppNameSuffix follows the node name in the receiver's application_name.
const AppNameSuffix = config.ReceiveAppNameSuffix

// AppName is the application_name the receiver of node connects with
// (config.ReceiveAppName: "<node>_walrecv", the node name cut so the whole
// fits 63 bytes): the name synchronous_standby_names uses for it. It
// differs from the node's own PostgreSQL walreceiver's (the node name).
func AppName(node string) string { return config.ReceiveAppName(node) }

// DefaultSlot is wal.receive.slot's default for node (config.DefaultReceiveSlot).
func DefaultSlot(node string) string { return config.DefaultReceiveSlot(node) }

// Start is where a connection streams from: timeline TLI from LSN.
type Start struct {
	TLI uint32
	LSN wal.LSN
	// Diverged is how many bytes of the spool's timeline lie past its
	// switch point (WAL an old primary wrote after the fork): they stay
	// under the old timeline's names and are not streamed over.
	Diverged uint64
	// Fresh: the spool is not continued (it is empty, or its timeline is
	// not in the server's history): streaming starts at the beginning of
	// the server's current segment.
	Fresh bool
}

// Plan decides where to stream from, given the spool's end sp, the
// server's timeline srvTLI and WAL position srvPos (IDENTIFY_SYSTEM), and
// hist, the history of srvTLI (needed only when sp's timeline is older).
//
//   - An empty spool starts at the beginning of the server's segment (so
//     that every spool file and upload holds its segment from the start).
//   - The spool on the server's timeline continues from its end.
//   - The spool on an older timeline S: when its file ends before S's
//     switch point, S is finished first (the server streams S up to the switch point and ends
//     the stream); at or past it, the timeline after S starts at the
//     beginning of the segment holding the switch point: the new
//     timeline's file of that segment holds S's WAL up to the switch point
//     and the new timeline's after it. S's WAL past the switch point is
//     never written under the new timeline's name.
//   - A spool on a newer timeline than the server's is an error (the
//     server is an old primary or a replica that did not follow yet).
//   - A spool timeline absent from the history (a branch the server never
//     saw) starts afresh, reported through Fresh.
func Plan(sp spoolEnd, srvTLI uint32, srvPos wal.LSN, hist []wal.HistoryEntry, segSize uint64) (Start, error) {
	floor := func(l wal.LSN) wal.LSN { return l - l%wal.LSN(segSize) }
	fresh := Start{TLI: srvTLI, LSN: floor(srvPos), Fresh: true}
	switch {
	case !sp.Has:
		return fresh, nil
	case sp.TLI == srvTLI:
		return Start{TLI: sp.TLI, LSN: sp.End}, nil
	case sp.TLI > srvTLI:
		return Start{}, fmt.Errorf("the server is on timeline %d, older than the spool's %d (an old primary, or a replica that has not followed the new one yet)", srvTLI, sp.TLI)
	}
	for i, h := range hist {
		if h.Timeline != sp.TLI {
			continue
		}
		if sp.Raw < h.Switch {
			return Start{TLI: sp.TLI, LSN: sp.End}, nil
		}
		next := srvTLI
		if i+1 < len(hist) {
			next = hist[i+1].Timeline
		}
		return Start{TLI: next, LSN: floor(h.Switch), Diverged: uint64(sp.Raw - h.Switch)}, nil
	}
	return fresh, nil
}
