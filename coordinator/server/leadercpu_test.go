package server

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// benchFleet makes s the leader of clusters clusters of members members
// each (the first the primary, the others streaming replicas), every
// member reporting, as scripts/bench/coordinator.sh's 5,000 agents do,
// with the primaries' positions already in Raft.
func benchFleet(b *testing.B, clusters, members int) *Server {
	s := testServer(b, Options{})
	startInmemRaft(b, s)
	for c := range clusters {
		cl := fmt.Sprintf("bench-%03d", c)
		for m := range members {
			applyDirect(b, s, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
				Cluster: cl, Name: fmt.Sprintf("%s-n%03d", cl, m), Region: "r1", Dsn: "host=x", SystemIdentifier: 1}})
		}
		applyDirect(b, s, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: cl, Name: cl + "-n000"})
		applyDirect(b, s, pgdrv1.CommandType_COMMAND_TYPE_RECORD_PRIMARY_LSN, &pgdrv1.RecordPrimaryLSN{Cluster: cl, Primary: cl + "-n000", Epoch: 1, Lsn: 1 << 30})
	}
	now := time.Now()
	for c := range clusters {
		cl := fmt.Sprintf("bench-%03d", c)
		for m := range members {
			r := &pgdrv1.HealthReport{Cluster: cl, Node: fmt.Sprintf("%s-n%03d", cl, m), PostmasterAlive: true, Connectable: true,
				Timeline: 1, CurrentLsn: 1 << 30, SystemIdentifier: 1, Epoch: 1}
			if m > 0 {
				r.InRecovery, r.Streaming, r.ReceiveLsn, r.ReplayLsn = true, true, 1<<30, 1<<30
			}
			s.ingestReport(r, now)
		}
	}
	return s
}

// cpuPerOp reports the process's CPU time (user+system, every goroutine:
// GC and the leader's own loop included) per iteration, which the other
// processes on a loaded machine disturb less than ns/op. Call it when the
// measured loop is over, with what cpuTime returned before it.
func cpuPerOp(b *testing.B, before time.Duration) {
	b.ReportMetric(float64(cpuTime(b)-before)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLeaderSecond: one second of the leader loop at 5,000 members
// (50 clusters of 100): four 250 ms ticks and half a compliance run
// (every 2 s), i.e. the leader's own CPU per second of load, apart from
// receiving reports.
func BenchmarkLeaderSecond(b *testing.B) {
	s := benchFleet(b, 50, 100)
	ctx := context.Background()
	i := 0
	cpu0 := cpuTime(b)
	for b.Loop() {
		for range 4 {
			s.recordInitialPrimaries(ctx)
			s.recordPrimaryLSNs(ctx)
			s.failoverTick(ctx)
			s.syncTick(ctx)
		}
		if i%2 == 0 {
			s.comp.mu.Lock()
			s.comp.lastRun = time.Time{}
			s.comp.mu.Unlock()
			s.complianceTick(ctx)
		}
		i++
	}
	cpuPerOp(b, cpu0)
}

// BenchmarkLeaderScrape: one scrape of the leader's /metrics registry at
// 5,000 members.
func BenchmarkLeaderScrape(b *testing.B) {
	s := benchFleet(b, 50, 100)
	s.comp.mu.Lock()
	s.comp.lastRun = time.Time{}
	s.comp.mu.Unlock()
	s.complianceTick(context.Background())
	cpu0 := cpuTime(b)
	for b.Loop() {
		if _, err := s.metrics.reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
	cpuPerOp(b, cpu0)
}
