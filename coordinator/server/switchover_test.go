package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/failover"
)

func TestShutdownCheckpointOutput(t *testing.T) {
	ckpt, end, err := shutdownCheckpoint("demoted: PostgreSQL stopped cleanly (fast shutdown) shutdown_checkpoint_lsn=0/5000028 shutdown_checkpoint_end_lsn=0/500009A timeline=1")
	if err != nil || ckpt != 0x5000028 || end != 0x500009A {
		t.Fatalf("got %x %x %v", ckpt, end, err)
	}
	// Without the end, the record's first byte past the start is required.
	if ckpt, end, err := shutdownCheckpoint("shutdown_checkpoint_lsn=1/0"); err != nil || ckpt != 1<<32 || end != 1<<32+1 {
		t.Fatalf("got %x %x %v", ckpt, end, err)
	}
	for _, bad := range []string{"", "stopped", "shutdown_checkpoint_lsn=zz"} {
		if _, _, err := shutdownCheckpoint(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestHistoryKinds(t *testing.T) {
	ctx := context.Background()
	if k := historyKind(ctx, kindFailoverIntent); k != "failover-intent" {
		t.Errorf("no prefix: %s", k)
	}
	mctx := withKindPrefix(ctx, manualPrefix)
	for in, want := range map[string]string{
		kindFailoverIntent: "manual-failover-intent", kindFailoverStep: "manual-failover-step",
		kindFailoverResult: "manual-failover-result", kindRejoin: "rejoin", kindSwitchoverStep: "switchover-step",
	} {
		if got := historyKind(mctx, in); got != want {
			t.Errorf("historyKind(manual, %s) = %s, want %s", in, got, want)
		}
	}
	if !countsAsFailover("failover-intent") || !countsAsFailover("manual-failover-intent") || countsAsFailover("switchover-intent") {
		t.Error("countsAsFailover: automatic and manual failovers count for min_interval, a switchover does not")
	}
	if !replacesPrimary("switchover-intent") || !replacesPrimary("manual-failover-intent") || replacesPrimary("switchover-step") {
		t.Error("replacesPrimary")
	}
}

func TestRankReplicas(t *testing.T) {
	now := time.Now()
	replica := func(lsn uint64, region string) failover.Member {
		return failover.Member{Region: region, Fresh: true, PostmasterAlive: true, Connectable: true, InRecovery: true, Streaming: true, Timeline: 1, ReceiveLSN: lsn}
	}
	in := failover.Input{
		Cluster: "main", Primary: "a1", Epoch: 3, Now: now, Paused: true,
		LeaseExpiresAt: now.Add(time.Minute), LastFailoverAt: now, PrimaryLastLSN: 1000,
		Policy: failover.Policy{MinInterval: time.Hour, Synchronous: "on"},
		Members: map[string]failover.Member{
			"a1": {Fresh: true, PostmasterAlive: true, Connectable: true, Timeline: 1},
			"a2": replica(900, "east"),
			"b1": replica(1000, "west"),
			"b2": func() failover.Member {
				m := replica(1000, "west")
				m.Tags = []string{failover.TagNoFailover}
				return m
			}(),
			"c1": func() failover.Member { m := replica(1000, "west"); m.Fenced = true; return m }(),
		},
	}
	// A healthy, paused primary holding its lease, a failover a moment ago,
	// synchronous mode: the replicas are judged anyway (switchover).
	ranked, rejected := rankReplicas(in, false)
	if strings.Join(ranked, ",") != "b1,a2" {
		t.Errorf("ranked %v, want b1,a2", ranked)
	}
	if !strings.Contains(rejected["b2"], "no-failover") || rejected["c1"] != "fenced" || rejected["a1"] != "" {
		t.Errorf("rejected %v", rejected)
	}
	// The caller's input is not modified.
	if !in.Members["a1"].Fresh || !in.Paused {
		t.Error("rankReplicas modified its input")
	}
	// Requiring synchronous mode: no member is a known synchronous standby.
	if ranked, rejected := rankReplicas(in, true); len(ranked) != 0 || !strings.Contains(rejected["b1"], "synchronous") {
		t.Errorf("synchronous: ranked %v rejected %v", ranked, rejected)
	}
	if got := rejectionList(map[string]string{"b": "fenced", "a": "lags"}); got != "a: lags; b: fenced" {
		t.Errorf("rejectionList %q", got)
	}
}
