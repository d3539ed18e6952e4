package e2e

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pgdr/pgdr/coordinator/coordtest"
	"github.com/pgdr/pgdr/pkg/testutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestBackupPolicyReplicated: a backup policy set through a follower is
// forwarded to the leader (even before the follower applied the cluster's
// registration), recorded under the operator's name, and read
// back from every coordinator; it survives kill -9 of the leader and a
// restart of all coordinators from their snapshots.
func TestBackupPolicyReplicated(t *testing.T) {
	if testing.Short() {
		t.Skip("starts coordinator processes")
	}
	c := coordtest.Start(t, coordtest.Options{SnapshotThreshold: 8, TrailingLogs: 4})
	leader := c.WaitLeader(60 * time.Second)
	if err := register(t, c, leader, "main", "pg-a1"); err != nil {
		t.Fatal(err)
	}
	follower := other(c, leader)
	set, err := c.Admin(follower).SetBackupPolicy(ctxT(t), &pgdrv1.SetBackupPolicyRequest{Cluster: "main", Policy: &pgdrv1.BackupPolicy{
		PitrWindowSeconds: 86400, Tiers: []*pgdrv1.BackupTier{
			{Name: "nightly", Type: "full", Schedule: "0 2 * * *", Timezone: "Asia/Tokyo", KeepCount: 7},
			{Name: "hourly", Type: "incr", Schedule: "0 * * * *", KeepAgeSeconds: 2 * 86400},
		}}})
	if err != nil {
		t.Fatalf("set via follower %s: %v", follower.Name, err)
	}
	want := set.GetPolicy()
	if !set.GetChanged() || want.GetUpdatedBy() != "admin:admin (via coordinator:"+follower.Name+")" || len(want.GetTiers()) != 2 {
		t.Fatalf("set answered %v", set)
	}
	everyNodeHas := func(nodes []*coordtest.Node) {
		t.Helper()
		for _, n := range nodes {
			testutil.WaitFor(t, 60*time.Second, n.Name+" has the backup policy", func() (bool, error) {
				got, err := c.Admin(n).GetBackupPolicy(ctxT(t), &pgdrv1.GetBackupPolicyRequest{Cluster: "main"})
				if err != nil {
					return false, err
				}
				return proto.Equal(got.GetPolicy(), want) && !got.GetIsDefault(), fmt.Errorf("%s has %v", n.Name, got)
			})
		}
	}
	everyNodeHas(c.Nodes)

	c.Kill(leader)
	newLeader := c.WaitLeader(30 * time.Second)
	everyNodeHas([]*coordtest.Node{newLeader})
	// Enough writes for every node to snapshot, then restart them all:
	// the policy comes back from the snapshots.
	c.StartNode(leader)
	for i := 0; i < 12; i++ {
		if err := register(t, c, newLeader, "main", fmt.Sprintf("pg-%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range c.Nodes {
		testutil.WaitFor(t, 60*time.Second, n.Name+" took a snapshot", func() (bool, error) {
			h, err := c.Health(n)
			if err != nil {
				return false, err
			}
			idx, _ := strconv.ParseUint(h.LastSnapshotIndex, 10, 64)
			return idx > 0, fmt.Errorf("last snapshot index %q", h.LastSnapshotIndex)
		})
	}
	for _, n := range c.Nodes {
		c.Stop(n)
	}
	for _, n := range c.Nodes {
		c.StartNode(n)
	}
	c.WaitLeader(60 * time.Second)
	everyNodeHas(c.Nodes)
}
