package failover

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/pgdr/pgdr/pkg/syncnames"
)

// SyncSetting is a parsed synchronous_standby_names (pkg/syncnames).
type SyncSetting = syncnames.Setting

// ParseSyncStandbyNames parses a synchronous_standby_names value
// (syncnames.Parse).
func ParseSyncStandbyNames(s string) (SyncSetting, bool) { return syncnames.Parse(s) }

// SyncQuorum is how many synchronous standbys a policy.synchronous value
// asks to acknowledge each commit: 1 for "on", N for "quorum N", 0 for
// "", "off" and values it cannot read.
func SyncQuorum(policy string) int {
	p := strings.ToLower(strings.TrimSpace(policy))
	if p == "on" {
		return 1
	}
	if n, ok := strings.CutPrefix(p, "quorum "); ok {
		if v, err := strconv.Atoi(strings.TrimSpace(n)); err == nil && v >= 1 {
			return v
		}
	}
	return 0
}

// EffectiveSyncQuorum is SyncView.Quorum for a cluster: how many members
// of the recorded set hold every acknowledged commit. The quorum recorded
// in Raft (0 = unknown, read as 1) is what counts: the leader raises it
// only once that many members of the new set flushed the primary's LSN
// noted at the change, while the primary's setting (reported) may already
// ask for more. It is never more than the policy's or the reported number.
func EffectiveSyncQuorum(policy, reported string, recorded int) int {
	quorum := min(max(recorded, 1), max(SyncQuorum(policy), 1))
	if st, ok := ParseSyncStandbyNames(reported); ok {
		quorum = min(quorum, st.Num)
	}
	return quorum
}

// SyncView is what the synchronous-mode promotion rule needs.
type SyncView struct {
	// Recorded: the cluster's sync_standbys as recorded in Raft. Every
	// standby that may hold an acknowledged commit is in it: the leader
	// records a standby before the primary is told to wait for it, and
	// drops one only after the primary no longer waits for it and the
	// remaining ones have caught up.
	Recorded []string
	// Quorum: every acknowledged commit is on at least Quorum members of
	// Recorded (1 for "on"; N for ANY N). Values below 1 count as 1, the
	// strictest reading.
	Quorum int
	// Positions: the highest LSN each member durably holds (received and
	// flushed), for the members whose position is known to be final (a
	// fresh report taken after the old primary stopped writing). Members
	// missing here are unreachable for this rule.
	Positions map[string]uint64
}

// SyncCandidates applies the synchronous-mode rule: with M recorded
// standbys and every acknowledged commit on at least N of them, any
// M−N+1 of them include one holding each commit, so the one with the
// highest position among at least M−N+1 reachable recorded standbys holds
// every acknowledged commit. When N = M every recorded standby holds every
// commit and positions do not matter ("on" with one recorded standby).
// eligible lists the members that may be promoted; why gives, for a
// recorded member that may not be, the reason (general applies to every
// member outside Recorded and, when set, to all of them).
func SyncCandidates(v SyncView) (eligible map[string]bool, why map[string]string, general string) {
	eligible, why = map[string]bool{}, map[string]string{}
	rec := slices.Clone(v.Recorded)
	slices.Sort(rec)
	rec = slices.Compact(rec)
	m := len(rec)
	if m == 0 {
		return eligible, why, "no synchronous standby is recorded"
	}
	n := min(max(v.Quorum, 1), m)
	need := m - n + 1
	list := strings.Join(rec, ", ")
	if need == 1 {
		for _, r := range rec {
			eligible[r] = true
		}
		return eligible, why, fmt.Sprintf("not among the recorded synchronous standbys (%s)", list)
	}
	var known []string
	var top uint64
	for _, r := range rec {
		if p, ok := v.Positions[r]; ok {
			known = append(known, r)
			top = max(top, p)
		}
	}
	if len(known) < need {
		general = fmt.Sprintf("only %d of the %d recorded synchronous standbys (%s) report a final position (%s); with every commit on at least %d of them, %d are needed to know who holds every acknowledged commit",
			len(known), m, list, strings.Join(known, ", "), n, need)
		if len(known) == 0 {
			general = fmt.Sprintf("none of the %d recorded synchronous standbys (%s) reports a final position; with every commit on at least %d of them, %d are needed to know who holds every acknowledged commit",
				m, list, n, need)
		}
		for _, r := range rec {
			why[r] = general
		}
		return eligible, why, general
	}
	for _, r := range known {
		if v.Positions[r] == top {
			eligible[r] = true
		} else {
			why[r] = fmt.Sprintf("holds %s, behind %s among %d reachable recorded synchronous standbys", FormatLSN(v.Positions[r]), FormatLSN(top), len(known))
		}
	}
	for _, r := range rec {
		if _, ok := v.Positions[r]; !ok {
			why[r] = "a recorded synchronous standby without a final position"
		}
	}
	return eligible, why, fmt.Sprintf("not among the recorded synchronous standbys (%s)", list)
}

// notSynchronous is the rejection of a member that is not a synchronous
// standby in synchronous mode.
func notSynchronous(m Member) string {
	if m.SyncNote != "" {
		return "not a synchronous standby: " + m.SyncNote
	}
	return "not a synchronous standby"
}
