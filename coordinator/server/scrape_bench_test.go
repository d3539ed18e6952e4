package server

import (
	"bytes"
	"fmt"
	"io"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// scrapeFleet gives s (before it leads) a state of clusters × members,
// each cluster with the default policy's tiers, 200 backup runs, 10
// drills and 200 history events, and after startInmemRaft a fresh report
// of every member.
func scrapeFleet(b testing.TB, s *Server, clusters, members int) {
	st := &pgdrv1.State{Clusters: map[string]*pgdrv1.Cluster{}, Coordinators: map[string]*pgdrv1.Coordinator{}, NextSeq: 1,
		TotalsSinceIndex: 1} // counting the totals (StartTotals applied)
	now := time.Now()
	for c := 0; c < clusters; c++ {
		name := fmt.Sprintf("c%02d", c)
		cl := &pgdrv1.Cluster{Name: name, Members: map[string]*pgdrv1.Member{}, Primary: name + "-m000", Epoch: 3, Policy: &pgdrv1.Policy{},
			Totals: &pgdrv1.ClusterTotals{Failovers: 2, Switchovers: 1, CountedEpoch: 3}}
		for m := 0; m < members; m++ {
			n := fmt.Sprintf("%s-m%03d", name, m)
			cl.Members[n] = &pgdrv1.Member{Name: n, Cluster: name, Region: "r1", Dsn: "host=" + n, ApiUrl: "http://" + n + ":8008"}
		}
		for i := 0; i < 200; i++ {
			tier := []string{"hourly", "daily", "weekly", "monthly"}[i%4]
			cl.BackupRuns = append(cl.BackupRuns, &pgdrv1.BackupRun{Id: fmt.Sprintf("b%d", i), Tier: tier, Type: "full", Node: name + "-m001",
				Result: "ok", StartedAt: timestamppb.New(now.Add(-time.Hour)), FinishedAt: timestamppb.New(now)})
		}
		for _, tier := range []string{"hourly", "daily", "weekly", "monthly"} {
			cl.Totals.BackupTiers = append(cl.Totals.BackupTiers, &pgdrv1.BackupTierTotals{Tier: tier, Ok: 50, Failed: 1, LastSuccess: timestamppb.New(now)})
		}
		for i := 0; i < 10; i++ {
			cl.DrillRuns = append(cl.DrillRuns, &pgdrv1.DrillRun{Id: fmt.Sprintf("d%d", i), Node: name + "-m001", Result: "ok",
				FinishedAt: timestamppb.New(now), Report: &pgdrv1.DrillReport{Ok: true, Timings: &pgdrv1.DrillTimings{Total: 5}}})
		}
		for i := 0; i < 200; i++ {
			st.History = append(st.History, &pgdrv1.HistoryEvent{Seq: st.NextSeq, Cluster: name, Kind: "member-updated", Time: timestamppb.New(now)})
			st.NextSeq++
		}
		st.Clusters[name] = cl
	}
	data, err := proto.Marshal(st)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.fsm.Restore(io.NopCloser(bytes.NewReader(append([]byte("pgdr-fsm-snapshot v1\n"), data...)))); err != nil {
		b.Fatal(err)
	}
}

func reportFleet(s *Server, clusters, members int) {
	now := time.Now()
	for c := 0; c < clusters; c++ {
		name := fmt.Sprintf("c%02d", c)
		for m := 0; m < members; m++ {
			r := &pgdrv1.HealthReport{Cluster: name, Node: fmt.Sprintf("%s-m%03d", name, m), PostmasterAlive: true, Connectable: true,
				InRecovery: m > 0, Streaming: m > 0, Timeline: 1, CurrentLsn: 1 << 30, ReceiveLsn: 1 << 30, ReplayLsn: 1 << 30, Time: timestamppb.New(now)}
			if m == 0 {
				r.ArchiveRpo = []*pgdrv1.ArchiveRPO{{Repository: "local", Mode: "sync", Bytes: 1 << 20, Seconds: 2}}
			}
			s.ingestReport(r, now)
		}
	}
}

// BenchmarkMetricsScrape: one scrape of the leader's /metrics (gather and
// encode) with 50 clusters of 100 members (5,000 agents) reporting.
//
//	go test ./coordinator/server -run '^$' -bench MetricsScrape -benchtime 20x
func BenchmarkMetricsScrape(b *testing.B) {
	const clusters, members = 50, 100
	s := testServer(b, Options{})
	s.cfg.Health.StaleAfter.Duration = time.Hour // the reports stay fresh: no failover starts meanwhile
	scrapeFleet(b, s, clusters, members)
	startInmemRaft(b, s)
	reportFleet(s, clusters, members)
	for !s.caughtUpLeader() {
		time.Sleep(10 * time.Millisecond)
	}
	s.complianceTick(b.Context())
	h := s.httpHandler()
	size := 0
	// The machine may be shared: besides the wall time, the process's CPU
	// time per scrape, less what the leader's loop uses meanwhile
	// (measured idle first).
	idleStart, idleCPU := time.Now(), cpuTime(b)
	time.Sleep(2 * time.Second)
	idleRate := float64(cpuTime(b)-idleCPU) / float64(time.Since(idleStart))
	b.ResetTimer()
	start, cpu := time.Now(), cpuTime(b)
	for i := 0; i < b.N; i++ {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if rec.Code != 200 {
			b.Fatalf("status %d", rec.Code)
		}
		size = rec.Body.Len()
	}
	used := float64(cpuTime(b)-cpu) - idleRate*float64(time.Since(start))
	b.ReportMetric(float64(size), "bytes/scrape")
	b.ReportMetric(used/float64(b.N)/1e6, "cpu-ms/scrape")
}

// BenchmarkStatusPage: one status page built on the leader (Status, the
// backups per tier and the newest history) for the same fleet.
//
//	go test ./coordinator/server -run '^$' -bench StatusPage -benchtime 20x
func BenchmarkStatusPage(b *testing.B) {
	const clusters, members = 50, 100
	s := testServer(b, Options{})
	s.cfg.Health.StaleAfter.Duration = time.Hour
	scrapeFleet(b, s, clusters, members)
	startInmemRaft(b, s)
	reportFleet(s, clusters, members)
	for !s.caughtUpLeader() {
		time.Sleep(10 * time.Millisecond)
	}
	s.complianceTick(b.Context())
	b.ResetTimer()
	start, cpu := time.Now(), cpuTime(b)
	for i := 0; i < b.N; i++ {
		if d := s.statusPage(b.Context(), time.Now()); d.Unavailable != "" || len(d.Regions) == 0 {
			b.Fatalf("page: %+v", d.Unavailable)
		}
	}
	b.ReportMetric(float64(cpuTime(b)-cpu)/float64(b.N)/1e6, "cpu-ms/page")
	_ = start
}
