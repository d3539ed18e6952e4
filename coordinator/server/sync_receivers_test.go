package server

import (
	"slices"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/config"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestSyncInputReceivers: the primary waits only for the synchronous WAL
// receivers that stream from it. Every node runs wal.receive.synchronous;
// after a failover from a (its region lost) to b, b must not wait for a's
// receiver (it streamed from a and connects nowhere now) nor for its own
// (it streams from b itself: it holds nothing outside b).
func TestSyncInputReceivers(t *testing.T) {
	now := time.Now()
	s := &Server{cfg: &config.Config{Name: "c1"}}
	s.cfg.Health.StaleAfter.Duration = time.Minute
	cluster := func(reported string) (*pgdrv1.Cluster, map[memberKey]sample) {
		c := &pgdrv1.Cluster{Name: "main", Primary: "b", Policy: &pgdrv1.Policy{Synchronous: "on"}, SyncStandbys: []string{"c"},
			Members: map[string]*pgdrv1.Member{
				"a": {Name: "a", SyncReceiver: "a_walrecv"},
				"b": {Name: "b", SyncReceiver: "b_walrecv"},
				"c": {Name: "c", SyncReceiver: "c_walrecv"},
				"d": {Name: "d", SyncReceiver: "d_walrecv"},
			}}
		samples := map[memberKey]sample{
			{"main", "b"}: {at: now, report: &pgdrv1.HealthReport{PostmasterAlive: true, Connectable: true, CurrentLsn: 100, SynchronousStandbyNames: reported,
				Replicas: []*pgdrv1.ReplicaState{
					{ApplicationName: "c", State: "streaming", FlushLsn: 100},
					{ApplicationName: "c_walrecv", State: "streaming", FlushLsn: 100},
					{ApplicationName: "b_walrecv", State: "streaming", FlushLsn: 100},
					{ApplicationName: "d_walrecv", State: "startup"},
				}}},
			{"main", "c"}: {at: now, report: &pgdrv1.HealthReport{PostmasterAlive: true, Connectable: true, InRecovery: true, Streaming: true}},
			{"main", "d"}: {at: now, report: &pgdrv1.HealthReport{PostmasterAlive: true, Connectable: true, InRecovery: true}},
		}
		return c, samples
	}
	for _, tc := range []struct {
		name     string
		reported string
		edit     func(*pgdrv1.Cluster, map[memberKey]sample)
		want     []string
	}{
		{name: "after failover: only the receivers streaming from the primary, never its own", want: []string{"c_walrecv"}},
		{name: "named and away while its node is up: kept (commits wait, as for a synchronous standby)",
			reported: `FIRST 3 ("c_walrecv", "d_walrecv", "c")`, want: []string{"c_walrecv", "d_walrecv"}},
		{name: "named, its node lost: dropped", reported: `FIRST 3 ("c_walrecv", "d_walrecv", "c")`,
			edit: func(_ *pgdrv1.Cluster, sm map[memberKey]sample) { delete(sm, memberKey{"main", "d"}) }, want: []string{"c_walrecv"}},
		{name: "named, its node fenced: dropped", reported: `FIRST 3 ("c_walrecv", "d_walrecv", "c")`,
			edit: func(_ *pgdrv1.Cluster, sm map[memberKey]sample) {
				sm[memberKey{"main", "d"}] = sample{at: now, report: &pgdrv1.HealthReport{PostmasterAlive: true, Fenced: true}}
			}, want: []string{"c_walrecv"}},
		{name: "streaming but its node fenced: not named",
			edit: func(_ *pgdrv1.Cluster, sm map[memberKey]sample) {
				sm[memberKey{"main", "c"}] = sample{at: now, report: &pgdrv1.HealthReport{PostmasterAlive: true, Fenced: true}}
			}, want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, samples := cluster(tc.reported)
			if tc.edit != nil {
				tc.edit(c, samples)
			}
			in, ok := s.syncInputFor(c, samples, now)
			if !ok {
				t.Fatal("no input")
			}
			if !slices.Equal(in.Receivers, tc.want) {
				t.Fatalf("receivers %v, want %v", in.Receivers, tc.want)
			}
			if tc.edit == nil && tc.reported == "" {
				if p := planSync(in); p.Action == syncTell && p.Value != `FIRST 2 ("c_walrecv", "c")` {
					t.Fatalf("the primary b is told %s", p.Value)
				}
			}
		})
	}
}
