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
	// Slot: the scheduled slot it makes (zero: an operator's drill).
	Slot time.Time
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
		case in.Members[i].Role == schedule.RolePrimary:
			return "", "", fmt.Errorf("%w: node %s is the primary now, and a drill never runs on the primary (it restores a whole copy next to production: disk, memory, I/O); name a standby or a dedicated drill node", ErrNoNode, want)
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
		return "", "", fmt.Errorf("%w: no healthy standby with an open command stream, and a drill never runs on the primary %s (it restores a whole copy next to production)", ErrNoNode, primary.Name)
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

// Schedule is a cluster's drill schedule as Scheduled reads it.
type Schedule struct {
	// Next is the schedule's first slot after a time.
	Next func(after time.Time) (time.Time, error)
	// Since is when slots start counting when no scheduled drill was
	// recorded (the policy's update, else the cluster's creation).
	Since time.Time
	// Node is the drill node: a member name, or "" / "prefer-standby".
	Node string
}

// Decision is what Scheduled decided.
type Decision struct {
	Start bool
	// Slot is the newest due slot; Missed how many slots it covers (a
	// drill after an outage runs once, however many slots passed).
	Slot   time.Time
	Missed int
	Node   string
	Reason string
}

// maxSlots bounds the slots counted in one decision.
const maxSlots = 10000

// Scheduled decides whether a scheduled drill starts now: when a slot
// passed after the newest scheduled drill's slot (or Since), no drill of
// the cluster is in flight (it waits for an operator's drill to end, and
// then runs once), and Place finds a node. A run's Slot is zero for an
// operator's drill.
func Scheduled(in Input, s Schedule) (Decision, error) {
	last := s.Since
	for _, r := range in.Runs {
		if r.Slot.After(last) {
			last = r.Slot
		}
	}
	slot, missed, err := dueSlot(s.Next, last, in.Now)
	if err != nil {
		return Decision{}, err
	}
	if missed == 0 {
		return Decision{Reason: "no slot due since " + last.UTC().Format(time.RFC3339)}, nil
	}
	want := s.Node
	if want == "prefer-standby" {
		want = ""
	}
	d := Decision{Slot: slot, Missed: missed}
	node, why, err := Place(in, want)
	if err != nil {
		d.Reason = fmt.Sprintf("the drill of slot %s waits: %v", slot.UTC().Format(time.RFC3339), err)
		return d, nil
	}
	d.Start, d.Node = true, node
	d.Reason = fmt.Sprintf("scheduled slot %s", slot.UTC().Format(time.RFC3339))
	if missed > 1 {
		d.Reason += fmt.Sprintf(" (covering %d missed slots: run once)", missed)
	}
	d.Reason += "; " + why
	return d, nil
}

// dueSlot is the newest slot of next after last and at or before now, and
// how many there were (0: none); at most maxSlots are counted, the newest
// found from an hour before now when there are more.
func dueSlot(next func(time.Time) (time.Time, error), last, now time.Time) (time.Time, int, error) {
	var slot time.Time
	n := 0
	for t := last; ; {
		s, err := next(t)
		if err != nil {
			return time.Time{}, 0, err
		}
		if s.After(now) || s.IsZero() {
			return slot, n, nil
		}
		slot, t = s, s
		if n++; n == maxSlots {
			if t.Before(now.Add(-time.Hour)) {
				t = now.Add(-time.Hour)
			}
			for i := 0; i < maxSlots; i++ {
				if s, err = next(t); err != nil || s.After(now) || s.IsZero() {
					break
				}
				slot, t = s, s
			}
			return slot, n, nil
		}
	}
}

// DueSlot is the newest slot of next after last and at or before now, and
// how many slots passed (0: none); game days count their slots with it.
func DueSlot(next func(time.Time) (time.Time, error), last, now time.Time) (time.Time, int, error) {
	return dueSlot(next, last, now)
}
