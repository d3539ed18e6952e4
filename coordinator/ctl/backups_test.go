package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/coordtest"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/tlsutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// fakeAgent speaks the agent protocol for one node: it reports a fixed
// health sample every 300ms and answers orders with answer (pings: ok).
type fakeAgent struct {
	mu     sync.Mutex
	answer func(cmd *pgdrv1.AgentCommand) []*pgdrv1.CommandResult
	orders []*pgdrv1.AgentCommand
}

func (a *fakeAgent) setAnswer(fn func(cmd *pgdrv1.AgentCommand) []*pgdrv1.CommandResult) {
	a.mu.Lock()
	a.answer = fn
	a.mu.Unlock()
}

func startFakeAgent(t *testing.T, ctx context.Context, cli pgdrv1.AgentServiceClient, r *pgdrv1.HealthReport) *fakeAgent {
	t.Helper()
	a := &fakeAgent{}
	if _, err := cli.Register(ctx, &pgdrv1.RegisterRequest{Member: &pgdrv1.Member{Cluster: "main", Name: r.Node, Region: "r1",
		Dsn: "host=127.0.0.1 port=5432"}}); err != nil {
		t.Fatalf("register %s: %v", r.Node, err)
	}
	go func() { // reports, reconnecting until ctx ends
		for ctx.Err() == nil {
			st, err := cli.Report(ctx)
			for err == nil {
				r.Time = timestamppb.Now()
				err = st.Send(r)
				select {
				case <-ctx.Done():
					return
				case <-time.After(300 * time.Millisecond):
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	go func() { // orders
		for ctx.Err() == nil {
			st, err := cli.Commands(ctx, &pgdrv1.CommandsRequest{Cluster: "main", Node: r.Node})
			for err == nil {
				var cmd *pgdrv1.AgentCommand
				if cmd, err = st.Recv(); err != nil {
					break
				}
				a.mu.Lock()
				a.orders = append(a.orders, cmd)
				answer := a.answer
				a.mu.Unlock()
				results := []*pgdrv1.CommandResult{{Id: cmd.GetId(), Cluster: "main", Node: r.Node, Ok: true, Output: "pong"}}
				if cmd.GetPing() == nil && answer != nil {
					results = answer(cmd)
				}
				for _, res := range results {
					if _, err := cli.CompleteCommand(ctx, res); err != nil && ctx.Err() == nil {
						t.Logf("complete %s: %v", cmd.GetId(), err)
					}
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	return a
}

// unknownOrder is today's agent's answer to an order it does not know
// (agent/daemon carryOutAt: "unknown command %T").
func unknownOrder(cmd *pgdrv1.AgentCommand) []*pgdrv1.CommandResult {
	return []*pgdrv1.CommandResult{{Id: cmd.GetId(), Cluster: cmd.GetCluster(), Node: cmd.GetNode(), Error: fmt.Sprintf("unknown command %T", cmd.GetKind())}}
}

// TestBackupCommands runs backups and backup run against a real
// coordinator whose agents are stand-ins speaking the agent protocol: the
// read token lists but cannot run; an unknown tier is refused naming the
// tiers; backup run --wait against today's agent (which does not know the
// order) fails with its error; against an agent that carries it out it
// ends ok with the sizes; a second run while one runs is refused naming
// it; backups lists every run, in a table and as JSON.
func TestBackupCommands(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{N: 1, Agents: []string{"pg-a1", "pg-a2"}})
	leader := c.WaitLeader(60 * time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	startFakeAgent(t, ctx, pgdrv1.NewAgentServiceClient(c.Conn(leader, "pg-a1")), &pgdrv1.HealthReport{Cluster: "main", Node: "pg-a1",
		PostmasterAlive: true, Connectable: true, CurrentLsn: 5000, Timeline: 1})
	replica := startFakeAgent(t, ctx, pgdrv1.NewAgentServiceClient(c.Conn(leader, "pg-a2")), &pgdrv1.HealthReport{Cluster: "main", Node: "pg-a2",
		PostmasterAlive: true, Connectable: true, InRecovery: true, Streaming: true, ReceiveLsn: 5000, ReplayLsn: 5000, Timeline: 1})
	pgdrctl := func(role string, args ...string) (int, string, string) {
		t.Helper()
		envs := map[string]string{"PGDR_ADDR": leader.APIAddr, "PGDR_CA": filepath.Join(c.CertDir, "ca.crt"), "PGDR_TOKEN": c.Tokens[role]}
		var out, errOut bytes.Buffer
		e := env{stdout: &out, stderr: &errOut, getenv: func(k string) string { return envs[k] }}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		return run(ctx, e, args), out.String(), errOut.String()
	}
	admin, read := tlsutil.RoleAdmin, tlsutil.RoleRead
	// Tiers that never fall due during the test: only the runs asked for.
	if code, out, errOut := pgdrctl(admin, "policy", "apply", "-f", writeFile(t, `cluster: main
tiers:
  - {name: yearly, type: full, schedule: "0 3 1 1 *", keep_count: 3}
  - {name: quick, type: incr, schedule: "0 4 1 1 *", keep_count: 3, timeout: 10m}
`)); code != ExitOK {
		t.Fatalf("policy apply: exit %d\n%s%s", code, out, errOut)
	}
	testutil.WaitFor(t, 30*time.Second, "pg-a1 recorded primary, both members healthy", func() (bool, error) {
		_, out, _ := pgdrctl(read, "status", "--json")
		var v StatusJSON
		if err := json.Unmarshal([]byte(out), &v); err != nil || len(v.Clusters) != 1 {
			return false, nil
		}
		healthy := 0
		for _, m := range v.Clusters[0].Members {
			if m.Healthy {
				healthy++
			}
		}
		return v.Clusters[0].Primary == "pg-a1" && healthy == 2, nil
	})

	code, out, errOut := pgdrctl(read, "backups")
	if code != ExitOK || !strings.Contains(out, "cluster main: 0 runs") {
		t.Fatalf("backups before any run: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut = pgdrctl(read, "backup", "run", "--tier", "yearly"); code != ExitFailure || !strings.Contains(errOut, "needs role admin") {
		t.Fatalf("backup run with the read token: exit %d, %s", code, errOut)
	}
	if code, _, errOut = pgdrctl(admin, "backup", "run", "--tier", "hourly"); code != ExitFailure ||
		!strings.Contains(errOut, `unknown tier "hourly": the cluster's tiers are yearly, quick`) {
		t.Fatalf("unknown tier: exit %d, %s", code, errOut)
	}
	if code, _, errOut = pgdrctl(admin, "backup", "run"); code != ExitUsage || !strings.Contains(errOut, "--tier is required") {
		t.Fatalf("no tier: exit %d, %s", code, errOut)
	}

	// Today's agent: the order is unknown to it, and the run fails with
	// its answer. --cluster may be left out: there is one cluster.
	replica.setAnswer(unknownOrder)
	code, out, errOut = pgdrctl(admin, "backup", "run", "--tier", "quick", "--wait")
	if code != ExitFailure || !strings.Contains(errOut, "(full) on pg-a2: failed: unknown command *pgdrv1.AgentCommand_Backup") {
		t.Fatalf("backup run against today's agent: exit %d\n%s%s", code, out, errOut)
	}

	// An agent that carries the order out: accepted, then done.
	replica.setAnswer(func(cmd *pgdrv1.AgentCommand) []*pgdrv1.CommandResult {
		return []*pgdrv1.CommandResult{
			{Id: cmd.GetId(), Cluster: "main", Node: "pg-a2", Pending: true, Output: "backup started"},
			{Id: cmd.GetId(), Cluster: "main", Node: "pg-a2", Ok: true, Backup: &pgdrv1.BackupReport{BackupId: "20260501T100000F",
				SizeBytes: 3 << 30, StoredBytes: 1 << 30, Expiry: &pgdrv1.BackupExpiry{BackupsDeleted: 2, WalDeleted: 31, ObjectsDeleted: 40}}},
		}
	})
	code, out, errOut = pgdrctl(admin, "backup", "run", "--tier", "yearly", "--cluster", "main", "--wait", "--json")
	var done BackupRunResultJSON
	if err := json.Unmarshal([]byte(out), &done); code != ExitOK || err != nil {
		t.Fatalf("backup run --wait: exit %d, %v\n%s%s", code, err, out, errOut)
	}
	if r := done.Run; r.Result != "ok" || r.Node != "pg-a2" || r.Type != "full" || r.SizeBytes != 3<<30 || r.StoredBytes != 1<<30 ||
		r.BackupID != "20260501T100000F" || r.Accepted == "" || r.RequestedBy != "admin:admin-token" ||
		r.Expiry == nil || r.Expiry.BackupsDeleted != 2 || r.Expiry.WALDeleted != 31 || r.Expiry.Error != "" {
		t.Fatalf("run carried out: %+v", r)
	}

	// An agent that holds the order: a second run is refused, naming it.
	replica.setAnswer(func(*pgdrv1.AgentCommand) []*pgdrv1.CommandResult { return nil })
	code, out, errOut = pgdrctl(admin, "backup", "run", "--tier", "quick", "--cluster", "main")
	if code != ExitOK || !strings.Contains(out, "backup run ") || !strings.Contains(out, "of tier quick (incr) ordered on pg-a2") {
		t.Fatalf("backup run: exit %d\n%s%s", code, out, errOut)
	}
	code, _, errOut = pgdrctl(admin, "backup", "run", "--tier", "yearly", "--cluster", "main")
	if code != ExitFailure || !strings.Contains(errOut, "another backup of the cluster is running: run ") || !strings.Contains(errOut, "of tier quick (incr) on pg-a2") {
		t.Fatalf("second run while one runs: exit %d, %s", code, errOut)
	}

	// Cancelled (review of issue 16): the read token cannot; the admin
	// token has the run in flight clean up, the agent gets a cancel order,
	// and its answer (the backup stopped, its objects removed) ends the
	// run as cancelled.
	if code, _, errOut = pgdrctl(read, "backup", "cancel"); code != ExitFailure || !strings.Contains(errOut, "needs role admin") {
		t.Fatalf("backup cancel with the read token: exit %d, %s", code, errOut)
	}
	replica.setAnswer(func(cmd *pgdrv1.AgentCommand) []*pgdrv1.CommandResult {
		if !cmd.GetBackup().GetCancel() {
			return nil
		}
		id := cmd.GetBackup().GetRunId()
		return []*pgdrv1.CommandResult{
			{Id: cmd.GetId(), Cluster: "main", Node: "pg-a2", Pending: true, Backup: &pgdrv1.BackupReport{RunId: id}},
			{Id: id, Cluster: "main", Node: "pg-a2", Error: "cancelled by the coordinator", Backup: &pgdrv1.BackupReport{RunId: id}},
		}
	})
	code, out, errOut = pgdrctl(admin, "backup", "cancel", "--note", "agent host lost", "--json")
	var cancelled BackupRunResultJSON
	if err := json.Unmarshal([]byte(out), &cancelled); code != ExitOK || err != nil || cancelled.Run.Result != "cleaning_up" ||
		cancelled.Run.CancelNote != "cancelled by admin:admin-token: agent host lost" {
		t.Fatalf("backup cancel: exit %d, %v\n%s%s", code, err, out, errOut)
	}
	testutil.WaitFor(t, 30*time.Second, "the cancelled run ended by its agent's answer", func() (bool, error) {
		code, out, errOut := pgdrctl(read, "backups", "--cluster", "main", "--json")
		var list BackupsJSON
		if err := json.Unmarshal([]byte(out), &list); code != ExitOK || err != nil || len(list.Clusters) != 1 {
			return false, fmt.Errorf("backups --json: exit %d, %v: %s", code, err, errOut)
		}
		for _, r := range list.Clusters[0].Runs {
			if r.ID == cancelled.Run.ID {
				return r.Result == "cancelled", nil
			}
		}
		return false, nil
	})
	testutil.WaitFor(t, 30*time.Second, "the cancel order at the agent", func() (bool, error) {
		replica.mu.Lock()
		defer replica.mu.Unlock()
		for _, o := range replica.orders {
			if o.GetBackup().GetCancel() && o.GetBackup().GetRunId() == cancelled.Run.ID {
				return true, nil
			}
		}
		return false, nil
	})
	if code, _, errOut = pgdrctl(admin, "backup", "cancel", cancelled.Run.ID); code != ExitFailure || !strings.Contains(errOut, "no backup run "+cancelled.Run.ID+" in flight") {
		t.Fatalf("second cancel: exit %d, %s", code, errOut)
	}

	code, out, errOut = pgdrctl(read, "backups", "--cluster", "main", "--json")
	var list BackupsJSON
	if err := json.Unmarshal([]byte(out), &list); code != ExitOK || err != nil || len(list.Clusters) != 1 {
		t.Fatalf("backups --json: exit %d, %v\n%s%s", code, err, out, errOut)
	}
	var results []string
	for _, r := range list.Clusters[0].Runs {
		results = append(results, r.Tier+"/"+r.Result)
	}
	if strings.Join(results, " ") != "quick/failed yearly/ok quick/cancelled" {
		t.Fatalf("runs listed: %v", results)
	}
	code, out, _ = pgdrctl(read, "backups")
	if code != ExitOK || !strings.Contains(out, "cluster main: 3 runs") || !strings.Contains(out, "3.0 GiB") ||
		!strings.Contains(out, "unknown command *pgdrv1.AgentCommand_Backup") || !strings.Contains(out, "cancelled by admin:admin-token") ||
		!strings.Contains(out, "2 backups, 31 WAL") {
		t.Fatalf("backups table:\n%s", out)
	}
}
