package fsm

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/pgdr/pgdr/coordinator/policy"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"

	"github.com/pgdr/pgdr/pkg/duration"
)

// KindBackupPolicySet is the history kind of a backup policy change
// (replaced, or reset to the defaults).
const KindBackupPolicySet = "backup-policy-set"

// applySetBackupPolicy replaces a cluster's backup policy, or with no
// policy forgets it (the defaults apply). The proposing server validated
// the schedules and zones; here only the checks that answer the same on
// every coordinator are repeated (policy.CheckBounds), so that a command
// written by a faulty or newer proposer cannot put unbounded state into
// every snapshot. A policy equal to the current one (stamps aside) is
// accepted without an event; the stamps say who set it and when.
func applySetBackupPolicy(st *pgdrv1.State, c *pgdrv1.Command, p *pgdrv1.SetBackupPolicy, index uint64) error {
	cl, err := findCluster(st, p.GetCluster())
	if err != nil {
		return fmt.Errorf("set backup policy: %w", err)
	}
	var np *pgdrv1.BackupPolicy
	if p.GetPolicy() != nil {
		np = proto.Clone(p.GetPolicy()).(*pgdrv1.BackupPolicy)
		np.UpdatedAt, np.UpdatedBy = nil, ""
		if err := policy.FromProto(np).CheckBounds(); err != nil {
			return fmt.Errorf("set backup policy for cluster %q: %w", cl.GetName(), err)
		}
	}
	if old := cl.GetBackupPolicy(); old == nil && np == nil {
		return nil
	} else if old != nil && np != nil {
		o := proto.Clone(old).(*pgdrv1.BackupPolicy)
		o.UpdatedAt, o.UpdatedBy = nil, ""
		if proto.Equal(o, np) {
			return nil
		}
	}
	ev := &pgdrv1.HistoryEvent{Kind: KindBackupPolicySet, Cluster: cl.GetName(), Epoch: cl.GetEpoch()}
	if np == nil {
		ev.Message = "backup policy reset to the defaults"
		ev.Details = map[string]string{"reset": "true"}
	} else {
		np.UpdatedAt, np.UpdatedBy = cmdTime(c), c.GetActor()
		var tiers []string
		for _, t := range np.GetTiers() {
			tiers = append(tiers, t.GetName()+" "+t.GetType())
		}
		ev.Message = fmt.Sprintf("backup policy set: %d tiers (%s), pitr_window %s", len(tiers), strings.Join(tiers, ", "),
			duration.Format(policy.FromProto(np).PITRWindow))
	}
	cl.BackupPolicy = np
	addEvent(st, c, index, ev)
	return nil
}
