package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/walrecv"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
	"github.com/pgdr/pgdr/pkg/wal"
)

// TestRegionLossTrickleRPO (issue 21): a trickle of one commit a second
// on a primary with archive_command = wal-push and no archive_timeout; a
// WAL receiver runs in another "region" (the agent daemon of a standby,
// streaming from the primary through its slot). Right after a commit is
// acknowledged every process of the primary's server is killed with
// SIGKILL; the latest point is restored from the repository alone.
//   - synchronous receiver (named in synchronous_standby_names): every
//     acknowledged commit is there;
//   - asynchronous: what is missing is at most the upload interval plus
//     one commit.
func TestRegionLossTrickleRPO(t *testing.T) {
	skipShort(t)
	t.Run("synchronous", func(t *testing.T) { regionLossTrickle(t, true) })
	t.Run("asynchronous", func(t *testing.T) { regionLossTrickle(t, false) })
}

func regionLossTrickle(t *testing.T, synchronous bool) {
	const interval = time.Second
	l := newLab(t, labOpts{})
	l.pg.Exec(t, "CREATE TABLE trickle(i int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
	l.backup(t, l.cfg)
	sb := l.newStandby(t, nil)
	cfg := l.writeNodeConfig(t, "pg-a2.yaml", sb, []string{"file"})
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	rewriteFile(t, cfg, "wal: {push_concurrency: 4, prefetch: 4}",
		fmt.Sprintf("wal: {push_concurrency: 4, prefetch: 4, receive: {enabled: true, upload_interval: %s, synchronous: %t}}\nhealth: {listen: %q}", interval, synchronous, addr))
	logb := startDaemon(t, l, cfg)
	status := func() (walrecv.Status, error) {
		cl := http.Client{Timeout: 2 * time.Second}
		resp, err := cl.Get("http://" + addr + "/status")
		if err != nil {
			return walrecv.Status{}, err
		}
		defer resp.Body.Close()
		var b struct {
			WALReceiver *walrecv.Status `json:"wal_receiver"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&b); err != nil || b.WALReceiver == nil {
			return walrecv.Status{}, fmt.Errorf("/status: %v (receiver %v)", err, b.WALReceiver)
		}
		return *b.WALReceiver, nil
	}
	testutil.WaitFor(t, 60*time.Second, "the receiver streaming from the primary", func() (bool, error) {
		st, err := status()
		return err == nil && st.Connected, fmt.Errorf("%+v %v\n%s", st, err, tail(logb.String(), 3000))
	})
	app := walrecv.AppName("pg-a2")
	if synchronous {
		l.pg.Exec(t, fmt.Sprintf(`ALTER SYSTEM SET synchronous_standby_names = '"%s"'`, app))
		l.pg.Exec(t, "SELECT pg_reload_conf()")
		testutil.WaitFor(t, 30*time.Second, "the receiver synchronous", func() (bool, error) {
			s := l.pg.QueryString(t, fmt.Sprintf("SELECT coalesce(max(sync_state), '') FROM pg_stat_replication WHERE application_name = '%s'", app))
			return s == "sync", fmt.Errorf("sync_state %q", s)
		})
	}

	// The trickle: one commit a second, each acknowledged one noted.
	var acked []int
	var lastLSN wal.LSN
	for i := 1; i <= 8; i++ {
		if i > 1 {
			time.Sleep(time.Second) // the workload's pace, not a wait for a condition
		}
		l.pg.Exec(t, fmt.Sprintf("INSERT INTO trickle(i) VALUES (%d)", i))
		acked = append(acked, i)
	}
	lsnText := l.pg.QueryString(t, "SELECT pg_current_wal_insert_lsn()::text")
	if v, err := wal.ParseLSN(lsnText); err == nil {
		lastLSN = v
	}
	killServer(t, l.pg)
	killedAt := time.Now()

	// The surviving receiver uploads what it holds; then the repository
	// alone is restored. Synchronous: the receiver flushed every
	// acknowledged commit, so its upload reaches the last commit's LSN.
	testutil.WaitFor(t, 60*time.Second, "the receiver's upload of what it flushed", func() (bool, error) {
		st, err := status()
		if err != nil {
			return false, err
		}
		if synchronous && st.Flush < lastLSN {
			return false, fmt.Errorf("synchronous receiver flushed %s, the last acknowledged commit is before %s", st.Flush, lastLSN)
		}
		return st.Flush > 0 && st.Uploaded >= st.Flush, fmt.Errorf("status %+v\n%s", st, tail(logb.String(), 6000))
	})
	t.Logf("receiver uploaded everything it flushed %s after the kill", time.Since(killedAt).Round(time.Millisecond))
	c, out, _ := l.restorePartial(t, l.cfg)
	defer c.Stop(t, "fast")
	got := rows(t, c)
	n := 0
	if got != "" {
		n = strings.Count(got, ",") + 1
	}
	want := make([]string, len(acked))
	for i, a := range acked {
		want[i] = strconv.Itoa(a)
	}
	if !strings.HasPrefix(strings.Join(want, ","), got) {
		t.Fatalf("restored rows %q are not a prefix of the acknowledged %v", got, want)
	}
	missing := len(acked) - n
	t.Logf("synchronous=%t: %d of %d acknowledged commits restored (%d missing); partial %+v", synchronous, n, len(acked), missing, out.Restore.Partial)
	if synchronous && missing != 0 {
		t.Fatalf("synchronous receiver: %d acknowledged commits missing from the repository (restored %s)", missing, got)
	}
	// Asynchronous: at most the upload interval's commits (one a second)
	// plus one.
	if bound := int(interval/time.Second) + 1; missing > bound {
		t.Fatalf("asynchronous receiver: %d acknowledged commits missing, more than the upload interval plus one commit (%d)", missing, bound)
	}
}

// killServer kills every process of node's server with SIGKILL: the
// postmaster and all its children, as losing the host would.
func killServer(t *testing.T, node *pgtest.Cluster) {
	t.Helper()
	b, err := os.ReadFile(node.PGData + "/postmaster.pid")
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		t.Fatal(err)
	}
	children, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, c := range strings.Fields(string(children)) {
		if cp, err := strconv.Atoi(c); err == nil {
			syscall.Kill(cp, syscall.SIGKILL)
		}
	}
	testutil.WaitFor(t, 30*time.Second, "the postmaster gone", func() (bool, error) {
		return syscall.Kill(pid, 0) != nil, nil
	})
}
