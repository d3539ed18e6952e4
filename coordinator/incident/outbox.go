package incident

import (
	"fmt"
	"slices"
)

// Send is one notification the leader owes: the incident's current status
// to the channels of one escalation level. ID is the same for the same
// send whoever computes it (a new leader resending after a crash), so that
// receivers can drop a duplicate.
type Send struct {
	ID       string
	Incident string
	Level    int
	Status   Status
	Channels []string
}

// MaxDeliveries bounds the delivery lines one record of the outbox may
// carry (one per channel of a Due call): the coordinators' config allows
// no more channels than this.
const MaxDeliveries = 64

// Mark is what the outbox holds once every Send of a Due call went out.
type Mark struct {
	NotifiedLevels int
	NotifiedStatus Status
}

// Due returns the notifications the incident is owed under the policy and
// the mark to record once they went out (rule 6 of the package doc):
//
//   - every level in [NotifiedLevels, EscalationLevel] that was never
//     notified is sent the current status (an incident acknowledged before
//     its level 0 went out still tells level 0, with its status);
//   - when the status changed since the last notification, every level
//     already notified is sent the new status (acknowledged, resolved);
//   - a channel named by several levels of one Due call is sent once.
//
// Nothing is due when the outbox is up to date, nor for an incident
// resolved before any level was told (channels configured since: a
// running cluster's kept incidents are not announced as resolved). A
// level beyond the policy
// (the policy was shortened) is clamped to its last level.
func Due(in Incident, p EscalationPolicy) ([]Send, Mark) {
	mark := Mark{NotifiedLevels: in.NotifiedLevels, NotifiedStatus: in.NotifiedStatus}
	if len(p.Levels) == 0 || in.Status == Resolved && in.NotifiedLevels <= 0 {
		return nil, mark
	}
	top := min(max(in.EscalationLevel, 0), len(p.Levels)-1)
	seen := map[string]bool{}
	var out []Send
	add := func(level int) {
		var chs []string
		for _, c := range p.Levels[level].Channels {
			if !seen[c] {
				seen[c] = true
				chs = append(chs, c)
			}
		}
		if len(chs) == 0 {
			return
		}
		out = append(out, Send{ID: fmt.Sprintf("%s/%s/L%d", in.ID, in.Status, level), Incident: in.ID,
			Level: level, Status: in.Status, Channels: chs})
	}
	notified := min(max(in.NotifiedLevels, 0), top+1)
	if in.NotifiedStatus != in.Status {
		for l := 0; l < notified; l++ {
			add(l)
		}
	}
	for l := notified; l <= top; l++ {
		add(l)
	}
	mark = Mark{NotifiedLevels: max(in.NotifiedLevels, top+1), NotifiedStatus: in.Status}
	if mark.NotifiedLevels == in.NotifiedLevels && mark.NotifiedStatus == in.NotifiedStatus {
		return nil, mark
	}
	return out, mark
}

// Channels returns every channel the levels in [0, level] name, once each,
// in level order (the Alertmanager re-sends go to these while open).
func (p EscalationPolicy) Channels(level int) []string {
	var out []string
	for l := 0; l <= level && l < len(p.Levels); l++ {
		for _, c := range p.Levels[l].Channels {
			if !slices.Contains(out, c) {
				out = append(out, c)
			}
		}
	}
	return out
}
