package slots

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/pgdr/pgdr/pkg/config"
)

// Slot is one replication slot as a server reported it.
type Slot struct {
	Server   string // the member whose server holds it
	Primary  bool   // that server is the cluster's primary
	Name     string
	Active   bool
	Retained uint64 // bytes of WAL it keeps
	// UnusedSince is when the leader first saw it unused in the current
	// run of unused reports (zero: used now, or not known).
	UnusedSince time.Time
}

// View is what Decide looks at for one cluster.
type View struct {
	Now time.Time
	// Members are the registered member names of the cluster.
	Members []string
	// Receivers maps the slot a member's agent reports its WAL receiver
	// uses (a wal.receive.slot other than the default) to that member.
	Receivers map[string]string
	Slots     []Slot
	// DropAfter: an unused managed slot is dropped after this long (0:
	// never for being unused alone).
	DropAfter time.Duration
	// MaxRetained: an unused managed slot keeping more bytes is dropped
	// after Grace (0: no byte limit).
	MaxRetained uint64
	// Grace: no slot is dropped before it has been seen unused this long,
	// whatever the reason (a receiver between two connections, a member
	// whose receiver made its slot before it registered).
	Grace time.Duration
}

// Drop is one slot to drop and why.
type Drop struct {
	Server, Name, Reason string
}

// Managed reports whether pgdr manages a slot of this name.
func Managed(name string) bool { return strings.HasPrefix(name, config.SlotPrefix) }

// Decide returns the slots to drop, in server then name order.
func Decide(v View) []Drop {
	owners := map[string]string{}
	for _, m := range v.Members {
		owners[config.ReceiverSlot(m)] = m
	}
	for slot, m := range v.Receivers {
		if slices.Contains(v.Members, m) {
			owners[slot] = m
		}
	}
	var out []Drop
	for _, s := range v.Slots {
		if !Managed(s.Name) || s.Active {
			continue
		}
		if s.UnusedSince.IsZero() {
			continue
		}
		unused := v.Now.Sub(s.UnusedSince)
		if unused < v.Grace {
			continue
		}
		var why string
		owner, owned := owners[s.Name]
		switch {
		case !owned:
			why = fmt.Sprintf("unused for %s and no registered member's receiver uses this name (its member was removed)", unused.Round(time.Second))
		case !s.Primary:
			why = fmt.Sprintf("unused for %s on %s, a replica (a receiver streams from the primary; a former primary's slot keeps WAL after a rewind)", unused.Round(time.Second), s.Server)
		case v.MaxRetained > 0 && s.Retained > v.MaxRetained:
			why = fmt.Sprintf("unused, it keeps %d bytes of WAL, over slots.max_retained_bytes %d", s.Retained, v.MaxRetained)
		case v.DropAfter > 0 && unused >= v.DropAfter:
			why = fmt.Sprintf("unused for %s, past slots.drop_inactive_after %s (receiver %s is down)", unused.Round(time.Second), v.DropAfter, owner)
		default:
			continue
		}
		out = append(out, Drop{Server: s.Server, Name: s.Name, Reason: why})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Server != out[j].Server {
			return out[i].Server < out[j].Server
		}
		return out[i].Name < out[j].Name
	})
	return out
}
