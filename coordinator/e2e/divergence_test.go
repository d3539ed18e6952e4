package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgdr/pgdr/agent/divergence"
	"github.com/pgdr/pgdr/coordinator/ctl"
	"github.com/pgdr/pgdr/pkg/testutil"
)

// clientLog is what a client saw of its transactions: the xid of each
// commit acknowledged, and of the one whose COMMIT was sent and never
// answered (in flight when the primary died).
type clientLog struct {
	mu       sync.Mutex
	acked    map[uint32]string // xid → what it did
	inFlight map[uint32]bool
	rolled   uint32 // the transaction rolled back
}

// commit runs stmts in one transaction on conn and logs its xid.
func (c *clientLog) commit(ctx context.Context, conn *pgx.Conn, what string, stmts ...string) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	var xid string
	if err := tx.QueryRow(ctx, "SELECT pg_current_xact_id()::text").Scan(&xid); err != nil {
		return err
	}
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			return err
		}
	}
	n, _ := strconv.ParseUint(xid, 10, 32)
	c.mu.Lock()
	c.inFlight[uint32(n)] = true
	c.mu.Unlock()
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	c.mu.Lock()
	delete(c.inFlight, uint32(n))
	c.acked[uint32(n)] = what
	c.mu.Unlock()
	return nil
}

// TestDivergenceReportAfterAsyncFailover: an asynchronous failover with
// writes in flight. The primary's WAL senders are stopped (SIGSTOP), so
// that what it commits from then on reaches no replica; a client commits
// inserts, an update and a delete, rolls one back, and keeps inserting
// while pg-a1 is killed -9. A replica is promoted; pg-a1's agent comes
// back and the coordinators order it to rejoin. Before pg_rewind, its
// report lists exactly the client's acknowledged commits that the new
// primary does not have (and at most the one commit in flight at the kill,
// committed but never acknowledged), with their rows, not the rolled-back
// one; `pgdr-agent divergence-show` reads it whole from the repository,
// `pgdrctl divergence` lists it, `pgdrctl divergence show` prints the
// first of them the coordinators keep, and the failover incident carries
// its summary.
func TestDivergenceReportAfterAsyncFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	l := startLab(t)
	epoch0 := l.wantPrimary(t, "pg-a1")
	if _, err := l.psql("pg-a1", "CREATE TABLE lost_writes (id int PRIMARY KEY, v text); INSERT INTO lost_writes SELECT g, 'before' FROM generate_series(1, 5) g"); err != nil {
		t.Fatal(err)
	}
	lsn, err := l.psql("pg-a1", "SELECT pg_current_wal_lsn()")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"pg-a2", "pg-b1"} {
		testutil.WaitFor(t, 60*time.Second, n+" replays the table", func() (bool, error) {
			out, err := l.psql(n, fmt.Sprintf("SELECT pg_last_wal_replay_lsn() >= '%s'::pg_lsn", lsn))
			return err == nil && out == "t", fmt.Errorf("%s %v", out, err)
		})
	}
	// From here on nothing pg-a1 writes reaches a replica.
	out, err := l.psql("pg-a1", "SELECT pid FROM pg_stat_replication")
	if err != nil {
		t.Fatal(err)
	}
	var senders []int
	for _, f := range strings.Fields(out) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("pg_stat_replication pid %q", f)
		}
		senders = append(senders, pid)
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	if len(senders) == 0 {
		t.Fatal("pg-a1 has no WAL sender")
	}
	t.Cleanup(func() {
		for _, pid := range senders {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})

	ctx := t.Context()
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=5", l.pgPort("pg-a1"))
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	cl := &clientLog{acked: map[uint32]string{}, inFlight: map[uint32]bool{}}
	for i := range 10 {
		if err := cl.commit(ctx, conn, "insert", fmt.Sprintf("INSERT INTO lost_writes VALUES (%d, 'diverged')", 100+i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.commit(ctx, conn, "update", "UPDATE lost_writes SET v = 'updated' WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	if err := cl.commit(ctx, conn, "delete", "DELETE FROM lost_writes WHERE id = 2"); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var rolled string
	tx.QueryRow(ctx, "SELECT pg_current_xact_id()::text").Scan(&rolled)
	if _, err := tx.Exec(ctx, "INSERT INTO lost_writes VALUES (99, 'rolled back')"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.ParseUint(rolled, 10, 32)
	cl.rolled = uint32(n)

	// Writes in flight at the kill: one connection inserting back to back
	// until its server dies (at most 400), killed once 80 of them are
	// acknowledged.
	before := len(cl.acked)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for i := 0; i < 400; i++ {
			if cl.commit(ctx, conn, "insert", fmt.Sprintf("INSERT INTO lost_writes VALUES (%d, 'in flight')", 1000+i)) != nil {
				return
			}
		}
	}()
	acked := func() int {
		cl.mu.Lock()
		defer cl.mu.Unlock()
		return len(cl.acked)
	}
	// Polled every millisecond (WaitFor's 100 ms would let the writer
	// commit more than the coordinators list of a report).
	for deadline := time.Now().Add(30 * time.Second); acked() < before+80; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the writer committed %d in 30s", acked()-before)
		}
	}
	killed := l.killNode(t, "pg-a1")
	for _, pid := range senders {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	<-writerDone
	cl.mu.Lock()
	t.Logf("client: %d commits acknowledged on pg-a1 past the replicas, %d in flight at the kill", len(cl.acked), len(cl.inFlight))
	cl.mu.Unlock()

	newPrimary, _ := l.waitNewPrimary(t, "pg-a1", epoch0, 120*time.Second)
	t.Logf("%s is primary %.1fs after the kill", newPrimary, time.Since(killed).Seconds())
	// What the new primary has of the client's commits: committed before
	// the fork (none is expected, the senders were stopped, but the truth
	// is the new primary's).
	present := map[uint32]bool{}
	out, err = l.psql(newPrimary, "SELECT xmin::text FROM lost_writes")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range strings.Fields(out) {
		x, _ := strconv.ParseUint(f, 10, 32)
		present[uint32(x)] = true
	}
	if out, err := l.psql(newPrimary, "SELECT count(*) FROM lost_writes WHERE id = 2"); err != nil {
		t.Fatal(err)
	} else if out == "0" { // the delete is there: it has no row to show its xid
		for xid, what := range cl.acked {
			if what == "delete" {
				present[xid] = true
			}
		}
	}

	l.startAgent(t, "pg-a1")
	l.waitHealthyReplica(t, "pg-a1", 180*time.Second)

	var report ctl.DivergenceJSON
	testutil.WaitFor(t, 30*time.Second, "pgdrctl divergence lists pg-a1's report", func() (bool, error) {
		out, err := l.ctl("divergence", "--cluster", "main", "--json")
		if err != nil {
			return false, err
		}
		var v ctl.DivergencesJSON
		if err := json.Unmarshal(out, &v); err != nil {
			return false, fmt.Errorf("%v: %s", err, out)
		}
		for _, r := range v.Reports {
			if r.Node == "pg-a1" {
				report = r
				return true, nil
			}
		}
		return false, fmt.Errorf("reports %+v", v.Reports)
	})
	if report.Status != "known" || !report.Stored || report.Bytes == 0 || report.Timeline != 1 || report.NewTimeline != 2 {
		t.Fatalf("pg-a1's report: %+v", report)
	}
	// The whole report, from the repositories (the coordinators keep the
	// first transactions of it: 90 and more do not fit).
	cmd := exec.Command(filepath.Join(l.dir, "bin", "pgdr-agent"), "divergence-show", "--config", filepath.Join(l.dir, "pg-a1", "agent.yaml"), "--json", report.ID)
	js, err := cmd.Output()
	if err != nil {
		t.Fatalf("pgdr-agent divergence-show: %v\n%s", err, js)
	}
	var full divergence.Report
	if err := json.Unmarshal(js, &full); err != nil {
		t.Fatalf("%v: %s", err, js)
	}
	if full.ID != report.ID || full.Committed != len(full.Transactions) || uint64(full.Committed) != report.Committed || full.Fork != report.ForkLSN {
		t.Fatalf("the stored report: %s %s, %d committed, %d listed; the coordinators': %+v", full.ID, full.Fork, full.Committed, len(full.Transactions), report)
	}
	listed := map[uint32]divergence.Transaction{}
	for _, tx := range full.Transactions {
		for _, r := range tx.Relations {
			if r.Name == "public.lost_writes" {
				listed[tx.XID] = tx
			}
		}
	}
	// pgdrctl divergence show: the first of them, in the same order.
	js, err = l.ctl("divergence", "show", report.ID, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var shown ctl.DivergenceJSON
	if err := json.Unmarshal(js, &shown); err != nil {
		t.Fatalf("%v: %s", err, js)
	}
	if len(shown.Transactions) == 0 || len(shown.Transactions) >= len(full.Transactions) {
		t.Fatalf("pgdrctl divergence show lists %d of %d transactions", len(shown.Transactions), len(full.Transactions))
	}
	for i, tx := range shown.Transactions {
		if tx.XID != full.Transactions[i].XID {
			t.Fatalf("pgdrctl divergence show: transaction %d is xid %d, the stored report's %d", i, tx.XID, full.Transactions[i].XID)
		}
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	var missing, extra []uint32
	for xid, what := range cl.acked {
		if present[xid] {
			continue
		}
		tx, ok := listed[xid]
		if !ok {
			missing = append(missing, xid)
			continue
		}
		var rel divergence.Relation
		for _, r := range tx.Relations {
			if r.Name == "public.lost_writes" {
				rel = r
			}
		}
		want := map[string][3]uint64{"insert": {1, 0, 0}, "update": {0, 1, 0}, "delete": {0, 0, 1}}[what]
		if [3]uint64{rel.Inserts, rel.Updates, rel.Deletes} != want || rel.DatabaseName != "postgres" || rel.OID == 0 {
			t.Errorf("xid %d (%s): %+v", xid, what, rel)
		}
	}
	for xid := range listed {
		if _, ok := cl.acked[xid]; !ok && !cl.inFlight[xid] {
			extra = append(extra, xid)
		}
		if present[xid] {
			t.Errorf("xid %d is listed, and the new primary has it", xid)
		}
	}
	slices.Sort(missing)
	slices.Sort(extra)
	if len(missing) > 0 || len(extra) > 0 {
		t.Errorf("acknowledged commits the new primary lacks and the report does not list: %v; listed transactions the client never committed: %v", missing, extra)
	}
	if _, ok := listed[cl.rolled]; ok {
		t.Errorf("the rolled-back transaction %d is listed", cl.rolled)
	}
	if len(listed) < 12 {
		t.Errorf("the report lists %d transactions on lost_writes, want at least the 12 acknowledged before the writer started", len(listed))
	}
	table, err := l.ctl("divergence", "show", report.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, tx := range shown.Transactions {
		if !strings.Contains(string(table), fmt.Sprintf("\n%d ", tx.XID)) {
			t.Errorf("divergence show does not print xid %d:\n%s", tx.XID, table)
			break
		}
	}
	if !strings.Contains(string(table), "postgres:public.lost_writes") ||
		len(shown.Transactions) < len(full.Transactions) && !strings.Contains(string(table), fmt.Sprintf("The first %d of %d transactions", len(shown.Transactions), len(full.Transactions))) {
		t.Errorf("divergence show:\n%s", table)
	}
	t.Logf("report %s: %s..%s, %d bytes, %d committed (%d on lost_writes), %d aborted", report.ID, report.ForkLSN, report.EndLSN,
		report.Bytes, report.Committed, len(listed), report.Aborted)
	// The failover's incident carries the summary.
	js, err = l.ctl("incidents", "--all", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var iv ctl.IncidentsJSON
	if err := json.Unmarshal(js, &iv); err != nil {
		t.Fatal(err)
	}
	noted := false
	for _, in := range iv.Incidents {
		if in.Category != "failover" {
			continue
		}
		out, err := l.ctl("incident", "show", in.ID, "--json")
		if err != nil {
			t.Fatal(err)
		}
		noted = noted || strings.Contains(string(out), report.ID)
	}
	if !noted {
		t.Errorf("no failover incident notes report %s:\n%s", report.ID, js)
	}
}
