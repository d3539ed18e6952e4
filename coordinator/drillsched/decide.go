package drillsched

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/pgdr/pgdr/coordinator/schedule"
)

// Errors of Decide for a requested drill.
var (
	// ErrBusy: another drill of the cluster is in flight.
	ErrBusy = errors.New("a restore drill of the cluster is in flight: one at a time")
	// ErrNoNode: no member can run the drill now.
	ErrNoNode = errors.New("no member can run the drill")
)

// Run is a recorded drill as Decide reads it.
type Run struct {
	ID, Node string
	// Result: "" while in flight.
	Result string
	// Due: when its timeout passes.
	Due time.Time
}

// Input is what a decision reads. Members are the cluster's members as
// the leader judges them now; Grace is how long after its timeout a
// drill in flight is waited for before it is recorded timed out (the
// agent's own timeout fires at the timeout and cleans up).
type Input struct {
	Now     time.Time
	Members []schedule.Member
	Runs    []Run
	Grace   time.Duration
}

// Overdue is the drill in flight whose timeout and grace passed ("" =
// none): the leader records it timed out and sends its agent a cancel
// order.
func Overdue(in Input) string {
	for _, r := range in.Runs {
		if r.Result == "" && !r.Due.IsZero() && !in.Now.Before(r.Due.Add(in.Grace)) {
			return r.ID
		}
	}
	return ""
}

// Place picks the node a drill runs on: want when named (it must be a
// usable member whose agent's stream is open), else a healthy standby
// with an open stream (the least replay lag first; then by name), else
// the primary. It refuses while another drill is in flight (ErrBusy): a
// drill may run alongside a backup, never alongside another drill. The
// reason says why the node was chosen.
func Place(in Input, want string) (node, reason string, err error) {
	for _, r := range in.Runs {
		if r.Result == "" {
			return "", "", fmt.Errorf("%w: drill %s on %s", ErrBusy, r.ID, r.Node)
		}
	}
	if want != "" {
		i := slices.IndexFunc(in.Members, func(m schedule.Member) bool { return m.Name == want })
		switch {
		case i < 0:
			return "", "", fmt.Errorf("%w: node %q is not a member", ErrNoNode, want)
		case !usable(in.Members[i]):
			return "", "", fmt.Errorf("%w: node %s is not healthy (%s)", ErrNoNode, want, orUnknown(in.Members[i].Role))
		case !in.Members[i].Stream:
			return "", "", fmt.Errorf("%w: the agent of node %s has no command stream open on the leader", ErrNoNode, want)
		}
		return want, "node " + want + " as asked", nil
	}
	var standbys []schedule.Member
	var primary *schedule.Member
	for i, m := range in.Members {
		if !usable(m) || !m.Stream {
			continue
		}
		switch m.Role {
		case schedule.RoleReplica:
			standbys = append(standbys, m)
		case schedule.RolePrimary:
			primary = &in.Members[i]
		}
	}
	if len(standbys) > 0 {
		slices.SortFunc(standbys, func(a, b schedule.Member) int {
			la, lb := lagKey(a.ReplayLag), lagKey(b.ReplayLag)
			if la != lb {
				if la < lb {
					return -1
				}
				return 1
			}
			if a.Name < b.Name {
				return -1
			}
			return 1
		})
		return standbys[0].Name, "prefer-standby: healthy standby " + standbys[0].Name, nil
	}
	if primary != nil {
		return primary.Name, "prefer-standby: no healthy standby, the primary " + primary.Name + " restores into scratch", nil
	}
	return "", "", fmt.Errorf("%w: no healthy member with an open command stream", ErrNoNode)
}

func usable(m schedule.Member) bool { return m.Healthy && m.Connectable && !m.Fenced }

// lagKey orders an unknown lag (-1) last.
func lagKey(l int64) uint64 {
	if l < 0 {
		return ^uint64(0)
	}
	return uint64(l)
}

func orUnknown(s string) string {
	if s == "" {
		return "role unknown"
	}
	return "role " + s
}
