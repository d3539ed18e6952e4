package server

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/divergence"
	"github.com/pgdr/pgdr/pkg/testutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestRecordDivergence: the divergence report a rejoin order returns (even
// a failed one) becomes one history event of kind divergence at the
// order's epoch, its bounded summary in the details, and a note on the
// cluster's failover incident; the same report again (a rejoin tried
// again) is recorded once; a result without one records nothing; an
// unknown report says so.
func TestRecordDivergence(t *testing.T) {
	s := testServer(t, Options{})
	startInmemRaft(t, s)
	metricsCluster(t, s)
	ctx := t.Context()
	testutil.WaitFor(t, 30*time.Second, "incidents started", func() (bool, error) { return s.fsm.IncidentsStarted(), nil })
	s.recordEvent(ctx, "main", kindFailoverIntent, "pg-a2", 2, "promoting pg-a2", map[string]string{"old_primary": "pg-a1"})
	known := &pgdrv1.DivergenceSummary{Id: "20261208T000000Z-pg-a1", Status: "known", Timeline: 1, NewTimeline: 2, ForkLsn: "0/3000000",
		EndLsn: "0/3002000", Bytes: 8192, Committed: 2, Stored: true, Transactions: []*pgdrv1.DivergentTransaction{
			{Xid: 740, Relations: []*pgdrv1.DivergentRelation{{Relfilenode: 16384, Name: "public.orders", Inserts: 1}}},
			{Xid: 741, Relations: []*pgdrv1.DivergentRelation{{Relfilenode: 16384, Name: "public.orders", Updates: 2}}}}}
	s.recordDivergence(ctx, "main", "pg-a1", 2, &pgdrv1.CommandResult{Error: "pg_rewind failed", Divergence: known})
	s.recordDivergence(ctx, "main", "pg-a1", 2, &pgdrv1.CommandResult{Error: "pg_rewind failed again", Divergence: known})
	s.recordDivergence(ctx, "main", "pg-a1", 2, &pgdrv1.CommandResult{Ok: true})
	s.recordDivergence(ctx, "main", "pg-a1", 2, nil)
	unknown := &pgdrv1.DivergenceSummary{Id: "20261208T000100Z-pg-a3", Status: "unknown", Error: "this node's control data: no such directory"}
	s.recordDivergence(ctx, "main", "pg-a3", 2, &pgdrv1.CommandResult{Divergence: unknown})
	// A replica that received WAL past the fork: in the history, not
	// noted on the incident as lost commits.
	replica := &pgdrv1.DivergenceSummary{Id: "20261208T000200Z-pg-a4", Status: divergence.StatusReplica, Timeline: 1, NewTimeline: 2,
		ForkLsn: "0/3000000", EndLsn: "0/3001000", Bytes: 4096, Committed: 1}
	s.recordDivergence(ctx, "main", "pg-a4", 2, &pgdrv1.CommandResult{Divergence: replica})

	// A report id that is not one is refused; an oversized summary
	// makes a bounded message.
	s.recordDivergence(ctx, "main", "pg-a5", 2, &pgdrv1.CommandResult{Divergence: &pgdrv1.DivergenceSummary{Id: "../../etc/passwd", Status: "unknown"}})
	huge := &pgdrv1.DivergenceSummary{Id: "20261208T000300Z-pg-a6", Status: "known", ForkLsn: strings.Repeat("0/1", 1<<20), StoreError: strings.Repeat("e", 1<<20)}
	s.recordDivergence(ctx, "main", "pg-a6", 2, &pgdrv1.CommandResult{Divergence: huge})

	var got []*pgdrv1.HistoryEvent
	s.fsm.ScanHistory("main", func(ev *pgdrv1.HistoryEvent) {
		if ev.GetKind() == divergence.Kind {
			if ev.GetNode() == "pg-a5" {
				t.Errorf("a report with a bad id recorded: %v", ev)
			}
			if ev.GetNode() == "pg-a6" {
				if len(ev.GetMessage()) > 4096 {
					t.Errorf("the oversized report's message: %d bytes", len(ev.GetMessage()))
				}
				return
			}
			got = append(got, ev)
		}
	})
	if len(got) != 3 {
		t.Fatalf("%d divergence events, want 3: %v", len(got), got)
	}
	if ev := got[2]; ev.GetNode() != "pg-a4" || !strings.Contains(ev.GetMessage(), "a replica") || ev.GetDetails()[divergence.DetailRange] != "0/3000000..0/3001000" {
		t.Errorf("the replica's event: %v", ev)
	}
	if ev := got[0]; ev.GetNode() != "pg-a1" || ev.GetEpoch() != 2 || ev.GetDetails()[divergence.DetailID] != known.Id ||
		ev.GetDetails()[divergence.DetailRange] != "0/3000000..0/3002000" || !strings.Contains(ev.GetMessage(), "2 transactions committed") {
		t.Errorf("known report's event: %v", ev)
	}
	if s, err := divergence.FromEvent(got[0]); err != nil || len(s.GetTransactions()) != 2 || s.GetTransactions()[1].GetXid() != 741 {
		t.Errorf("its summary: %v, %v", s, err)
	}
	if ev := got[1]; ev.GetDetails()[divergence.DetailStatus] != "unknown" || !strings.Contains(ev.GetMessage(), "unknown") {
		t.Errorf("unknown report's event: %v", ev)
	}
	// The admin API finds them by kind, and one by its id.
	a := &adminAPI{s: s}
	if r, err := a.History(ctx, &pgdrv1.HistoryRequest{Cluster: "main", Kind: divergence.Kind, Limit: 10}); err != nil || len(r.GetEvents()) != 4 || r.GetEvents()[0].GetNode() != "pg-a1" {
		t.Errorf("history of kind divergence: %v, %v", r, err)
	}
	if r, err := a.History(ctx, &pgdrv1.HistoryRequest{Kind: divergence.Kind, DetailKey: divergence.DetailID, DetailValue: unknown.Id, Limit: 1}); err != nil ||
		len(r.GetEvents()) != 1 || r.GetEvents()[0].GetNode() != "pg-a3" {
		t.Errorf("history of report %s: %v, %v", unknown.Id, r, err)
	}
	var notes []string
	for _, in := range s.fsm.Incidents("main", true, "") {
		if in.GetDedupKey() == "failover:main" {
			for _, n := range in.GetNotes() {
				notes = append(notes, n.GetText())
			}
		}
	}
	if len(notes) != 3 || !strings.Contains(notes[0], known.Id) || !strings.Contains(notes[1], unknown.Id) || !strings.Contains(notes[2], huge.Id) {
		t.Errorf("failover incident notes: %s", fmt.Sprint(notes))
	}

	// After a switchover (no incident), a report is in the history only.
	s.recordEvent(ctx, "main", kindSwitchoverIntent, "pg-a3", 3, "switchover to pg-a3", map[string]string{"old_primary": "pg-a2"})
	after := &pgdrv1.DivergenceSummary{Id: "20261208T010000Z-pg-a2", Status: "known", Timeline: 2, NewTimeline: 3, ForkLsn: "0/4000000", EndLsn: "0/4000000"}
	s.recordDivergence(ctx, "main", "pg-a2", 3, &pgdrv1.CommandResult{Ok: true, Divergence: after})
	n := 0
	s.fsm.ScanHistory("main", func(ev *pgdrv1.HistoryEvent) {
		if ev.GetKind() == divergence.Kind && ev.GetNode() == "pg-a2" {
			n++
		}
	})
	if n != 1 {
		t.Errorf("the switchover's report: %d events", n)
	}
	for _, in := range s.fsm.Incidents("main", true, "") {
		for _, note := range in.GetNotes() {
			if strings.Contains(note.GetText(), after.Id) {
				t.Errorf("the switchover's report is noted on incident %s", in.GetId())
			}
		}
	}
}
