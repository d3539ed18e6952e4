package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/walship"
	"github.com/pgdr/pgdr/pkg/testutil"
)

// TestWALReceiverFollowsPrimary (issue 21): pg-b1's agent runs a WAL
// receiver (in the other region). Through a switchover (pg-a1 -> pg-a2)
// and then a failover (pg-a2 killed -9), the receiver follows the primary:
// its slot is active on each new primary, the new timelines' history
// files are archived, the slot left on the old primary (a replica now) is
// dropped by the coordinator leader, and the archive has no gap on any
// timeline.
func TestWALReceiverFollowsPrimary(t *testing.T) {
	if testing.Short() {
		t.Skip("lab e2e")
	}
	l := startLab(t, "PGDR_LAB_WAL_RECEIVE=pg-b1")
	epoch0 := l.wantPrimary(t, "pg-a1")
	slot := func(node string) (string, error) {
		return l.psql(node, "SELECT coalesce(string_agg(active::text, ','), 'none') FROM pg_replication_slots WHERE slot_name = 'pgdr_pg_b1'")
	}
	waitSlot := func(node, want string, timeout time.Duration) {
		t.Helper()
		testutil.WaitFor(t, timeout, fmt.Sprintf("pgdr_pg_b1 on %s: %s", node, want), func() (bool, error) {
			got, err := slot(node)
			return err == nil && got == want, fmt.Errorf("%q %v; pg-b1's agent:\n%s", got, err, l.agentLogTail("pg-b1", 1500))
		})
	}
	waitSlot("pg-a1", "true", 90*time.Second)
	if _, err := l.psql("pg-a1", "CREATE TABLE before_switchover AS SELECT 1 AS x"); err != nil {
		t.Fatal(err)
	}
	l.waitHealthyReplica(t, "pg-a2", 60*time.Second)
	if out, err := l.ctl("switchover", "--cluster", "main", "--to", "pg-a2", "--timeout", "2m"); err != nil {
		t.Fatalf("switchover: %v\n%s", err, out)
	}
	_, epoch1 := l.waitNewPrimary(t, "pg-a1", epoch0, 60*time.Second)
	waitSlot("pg-a2", "true", 90*time.Second)
	history := func(tli int) string {
		name := fmt.Sprintf("%08X.history", tli)
		return filepath.Join(l.dir, "repo", "main", "wal", name[:8], name)
	}
	testutil.WaitFor(t, 60*time.Second, "timeline 2's history archived", func() (bool, error) {
		_, err := os.Stat(history(2))
		return err == nil, err
	})
	// The old primary kept its slot when it was demoted: unused on a
	// replica, the leader drops it (after its one-minute grace).
	l.waitHealthyReplica(t, "pg-a1", 120*time.Second)
	waitSlot("pg-a1", "none", 4*time.Minute)

	if _, err := l.psql("pg-a2", "CREATE TABLE before_failover AS SELECT 1 AS x"); err != nil {
		t.Fatal(err)
	}
	l.waitTable(t, "pg-b1", "before_failover", 60*time.Second)
	l.killNode(t, "pg-a2")
	promoted, _ := l.waitNewPrimary(t, "pg-a2", epoch1, 90*time.Second)
	t.Logf("failover: %s promoted", promoted)
	waitSlot(promoted, "true", 90*time.Second)
	testutil.WaitFor(t, 60*time.Second, "timeline 3's history archived", func() (bool, error) {
		_, err := os.Stat(history(3))
		return err == nil, err
	})
	if _, err := l.psql(promoted, "CREATE TABLE after_failover AS SELECT 1 AS x; SELECT pg_switch_wal()"); err != nil {
		t.Fatal(err)
	}
	// No gap in the archive, on any timeline.
	testutil.WaitFor(t, 2*time.Minute, "an archive without gaps", func() (bool, error) {
		out, err := exec.Command(filepath.Join(l.dir, "bin", "pgdr-agent"), "wal-list", "--config", filepath.Join(l.dir, "pg-b1", "agent.yaml"), "--json").Output()
		if err != nil {
			return false, fmt.Errorf("wal-list: %v", err)
		}
		var ls struct {
			Repos []walship.RepoListing `json:"repos"`
		}
		if err := json.Unmarshal(out, &ls); err != nil {
			return false, err
		}
		tls := 0
		for _, r := range ls.Repos {
			for _, tl := range r.Timelines {
				tls++
				if len(tl.Gaps) > 0 {
					return false, fmt.Errorf("timeline %d has gaps %+v", tl.Timeline, tl.Gaps)
				}
			}
		}
		return tls >= 3, fmt.Errorf("%d timelines listed", tls)
	})
}
