package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgdr/pgdr/pkg/testutil"
)

// TestFreezeLeaseGated: issue 21's freeze test in the lab. Every process
// of the primary's node (PostgreSQL and all its children, the agent and
// its children: the watchdog; the commit gate runs in the agent) is
// stopped with SIGSTOP while clients hold open connections to it and
// write; the coordinators promote a replica, which takes a write; the old
// node is resumed (PostgreSQL first, the agent 3 seconds later, so that
// the writes in flight reach their commit before anything can fence).
// With failover.lease_gated_commits on, the old primary
// acknowledges none of the writes in flight (all of them would come after
// the new primary's first). With it off the same sequence shows the
// window: what the old primary acknowledged after the new primary's first
// write is reported, not asserted.
func TestFreezeLeaseGated(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	for _, gated := range []bool{true, false} {
		t.Run(fmt.Sprintf("gated=%v", gated), func(t *testing.T) {
			env := "PGDR_LAB_LEASE_GATED=off"
			if gated {
				env = "PGDR_LAB_LEASE_GATED=on"
			}
			l := startLab(t, env)
			epoch := l.wantPrimary(t, "pg-a1")
			for _, n := range []string{"pg-a2", "pg-b1"} {
				l.waitHealthyReplica(t, n, 90*time.Second)
			}
			if _, err := l.psql("pg-a1", "CREATE TABLE frozen_writes (node text, client int)"); err != nil {
				t.Fatal(err)
			}
			const clients = 3
			conns := make([]*pgx.Conn, clients)
			for i := range conns {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				c, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres", l.pgPort("pg-a1")))
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				conns[i] = c
				if _, err := c.Exec(context.Background(), "INSERT INTO frozen_writes VALUES ('pg-a1', $1)", i); err != nil {
					t.Fatalf("client %d's write before the freeze: %v", i, err)
				}
			}
			agentPid := readPid(t, filepath.Join(l.dir, "pg-a1", "agent.pid"))
			pmPid := readPid(t, filepath.Join(l.dir, "pg-a1", "pgdata", "postmaster.pid"))
			pgPids, agentPids := testutil.ProcessTree(pmPid), testutil.ProcessTree(agentPid)
			for _, p := range append(agentPids, pgPids...) {
				_ = syscall.Kill(p, syscall.SIGSTOP)
			}
			frozen := time.Now()
			resumed := map[int]bool{}
			resume := func(pids []int) {
				for _, p := range pids {
					if !resumed[p] {
						_ = syscall.Kill(p, syscall.SIGCONT)
						resumed[p] = true
					}
				}
			}
			defer resume(append(pgPids, agentPids...))
			type result struct {
				client int
				err    error
				at     time.Time
			}
			results := make(chan result, clients)
			for i, c := range conns {
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
					defer cancel()
					_, err := c.Exec(ctx, "INSERT INTO frozen_writes VALUES ('pg-a1', $1)", 100+i)
					results <- result{i, err, time.Now()}
				}()
			}
			newPrimary, _ := l.waitNewPrimary(t, "pg-a1", epoch, 2*time.Minute)
			var firstNew time.Time
			for end := time.Now().Add(time.Minute); ; {
				if l.tryWriteWithin(newPrimary, "frozen_writes", 2*time.Second) {
					firstNew = time.Now()
					break
				}
				if time.Now().After(end) {
					t.Fatalf("the new primary %s took no write within a minute", newPrimary)
				}
			}
			t.Logf("froze pg-a1 at %s; %s promoted and took its first write %s later", frozen.Format("15:04:05.000"), newPrimary, firstNew.Sub(frozen).Round(time.Millisecond))
			// PostgreSQL resumes first and runs for up to 3 seconds while
			// the agent (the gate, the lease loop, the watchdog) is still
			// stopped: the writes in flight reach their commit before
			// anything can fence (the hardest case for the gate, and the
			// window without it); then the agent resumes.
			resume(pgPids)
			var late []string
			collect := func(r result) {
				if r.err == nil {
					late = append(late, fmt.Sprintf("client %d at %s (%s after the new primary's first write)", r.client, r.at.Format("15:04:05.000"), r.at.Sub(firstNew).Round(time.Millisecond)))
				} else {
					t.Logf("client %d: not acknowledged: %v", r.client, r.err)
				}
			}
			n := 0
			for early := time.After(3 * time.Second); n < clients; n++ {
				var r result
				select {
				case r = <-results:
				case <-early:
				}
				if r.at.IsZero() {
					break
				}
				collect(r)
			}
			resume(agentPids)
			for ; n < clients; n++ {
				select {
				case r := <-results:
					collect(r)
				case <-time.After(2 * time.Minute):
					t.Fatal("a client's write neither returned nor failed within 2 minutes of the resume")
				}
			}
			for _, c := range conns {
				c.Close(context.Background())
			}
			switch {
			case gated && len(late) > 0:
				t.Fatalf("with lease-gated commits the old primary acknowledged writes after the new primary's first: %v", late)
			case !gated:
				t.Logf("WINDOW (gate off): the old primary acknowledged %d of %d writes in flight after the new primary's first: %v", len(late), clients, late)
			}
		})
	}
}
