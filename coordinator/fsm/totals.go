package fsm

import (
	"strings"

	"github.com/pgdr/pgdr/coordinator/policy"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// MaxTierTotals bounds the backup tiers a cluster's totals count: twice a
// policy's tiers, so that a policy change leaves room; when full, a tier
// the cluster's policy no longer has makes room for a new one.
const MaxTierTotals = 2 * policy.MaxTiers

// Result kinds of a completed primary change, as the leader records them
// (coordinator/server: failover-result, manual-failover-result,
// switchover-result with a message starting "done").
const (
	resultFailover       = "failover-result"
	resultManualFailover = "manual-failover-result"
	resultSwitchover     = "switchover-result"
)

// applyStartTotals starts counting the totals at index (once): every
// node applies the log from this command on, whatever snapshot it
// restored, so that every node counts the same commands. Totals held
// before (an earlier build counted from its own snapshot's index) are
// dropped, the same on every node.
func applyStartTotals(st *pgdrv1.State, _ *pgdrv1.Command, _ *pgdrv1.StartTotals, index uint64) error {
	if st.GetTotalsSinceIndex() != 0 {
		return nil
	}
	st.TotalsSinceIndex = index
	for _, cl := range st.GetClusters() {
		cl.Totals = nil
	}
	return nil
}

// counting reports whether the totals are counted (StartTotals applied).
func counting(st *pgdrv1.State) bool { return st.GetTotalsSinceIndex() != 0 }

func totalsOf(cl *pgdrv1.Cluster) *pgdrv1.ClusterTotals {
	if cl.Totals == nil {
		cl.Totals = &pgdrv1.ClusterTotals{}
	}
	return cl.Totals
}

// countPrimaryChange counts ev, just recorded, when it is the "done"
// result of a failover or switchover of a newer epoch than the newest
// counted (a resuming leader may record a result again), and not newer
// than the cluster's.
func countPrimaryChange(st *pgdrv1.State, ev *pgdrv1.HistoryEvent) {
	if !counting(st) {
		return
	}
	kind := ev.GetKind()
	if kind != resultFailover && kind != resultManualFailover && kind != resultSwitchover {
		return
	}
	cl := st.GetClusters()[ev.GetCluster()]
	if cl == nil || !strings.HasPrefix(ev.GetMessage(), "done") {
		return
	}
	// Counted once per epoch, and only at an epoch the cluster reached: a
	// result beyond it would also stop the counting of every later one.
	if ev.GetEpoch() > cl.GetEpoch() || ev.GetEpoch() <= cl.GetTotals().GetCountedEpoch() {
		return
	}
	t := totalsOf(cl)
	t.CountedEpoch = ev.GetEpoch()
	if kind == resultSwitchover {
		t.Switchovers++
	} else {
		t.Failovers++
	}
}

// countBackupRun counts run, whose result was just recorded, in its
// tier's totals (once StartTotals was applied).
func countBackupRun(st *pgdrv1.State, cl *pgdrv1.Cluster, run *pgdrv1.BackupRun) {
	if !counting(st) {
		return
	}
	t := totalsOf(cl)
	var tt *pgdrv1.BackupTierTotals
	for _, x := range t.BackupTiers {
		if x.GetTier() == run.GetTier() {
			tt = x
			break
		}
	}
	if tt == nil {
		if len(t.BackupTiers) >= MaxTierTotals {
			p, _ := policy.Effective(cl)
			i := -1
			for j, x := range t.BackupTiers {
				if _, ok := p.TierByName(x.GetTier()); !ok {
					i = j
					break
				}
			}
			if i < 0 {
				return // every counted tier is the policy's: cannot happen while MaxTierTotals > MaxTiers
			}
			t.BackupTiers = append(t.BackupTiers[:i], t.BackupTiers[i+1:]...)
		}
		tt = &pgdrv1.BackupTierTotals{Tier: run.GetTier()}
		t.BackupTiers = append(t.BackupTiers, tt)
	}
	switch run.GetResult() {
	case RunOK:
		tt.Ok++
		tt.LastSuccess = copyTime(run.GetFinishedAt())
	case RunFailed:
		tt.Failed++
	case RunTimeout:
		tt.Timeout++
	case RunCancelled:
		tt.Cancelled++
	case RunNotStarted:
		tt.NotStarted++
	}
}
