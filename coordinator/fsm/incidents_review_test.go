package fsm

import (
	"fmt"
	"github.com/pgdr/pgdr/coordinator/incident"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
	"strings"
	"testing"
	"time"
)

// TestIncidentFromMultilineError: a failed backup whose error text has
// several lines (pg_basebackup's stderr) or other control characters still
// opens its incident; the text is kept, control characters made visible.
func TestIncidentFromMultilineError(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	startIncidents(h)
	h.mustApply(tBackupRun, intent("r1", "daily", "full", "pg-a2"))
	h.mustApply(tBackupRun, result("r1", RunFailed, "pg_basebackup: error: could not connect\r\nFATAL:\tno pg_hba.conf entry\x1b[0m"))
	h.mustApply(tRecordEvnt, event("failover-refused", "pg-a2", "no candidate:\n pg-a2 lags 3 GB", nil))
	got := h.f.Incidents("main", false, "")
	if len(got) != 2 {
		t.Fatalf("incidents after a failed backup and a refusal with multi-line messages: %d, want 2: %v", len(got), got)
	}
	if m := got[0].GetTimeline()[0].GetMessage(); !strings.Contains(m, "could not connect") || !strings.Contains(m, "no pg_hba.conf entry") {
		t.Errorf("backup incident message %q lost the error text", m)
	}
}

// fleetIncidents fills h's state with n incidents of other clusters (each
// with a full timeline), as a fleet-wide outage leaves them, half resolved.
func fleetIncidents(h *harness, n int) {
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	st := h.f.state
	for i := range n {
		seq := uint64(1_000_000 + i)
		in := &pgdrv1.Incident{Id: fmt.Sprintf("INC-%d", seq), Seq: seq, DedupKey: fmt.Sprintf("backup:c%d:daily", i), Title: "backup failed",
			Cluster: fmt.Sprintf("c%d", i), Category: "backup_failed", Severity: "high", Status: "open", Occurrences: 1,
			Opened: timestamppb.New(t0), LastSeen: timestamppb.New(t0)}
		if i%2 == 1 && i < 2*400 {
			in.Status, in.Resolved = "resolved", timestamppb.New(t0)
		}
		for j := range 50 {
			in.Timeline = append(in.Timeline, &pgdrv1.IncidentEntry{Time: timestamppb.New(t0), Actor: "coordinator:c1", Kind: "notified",
				Message: fmt.Sprintf("level 0 open to dba-slack (slack): delivered %d", j)})
		}
		st.Incidents = append(st.Incidents, in)
		st.IncidentLastSeq = seq
	}
}

// fleetHarness is a started harness keeping 5000 incidents, the timer
// reset.
func fleetHarness(b *testing.B) *harness {
	h := newHarness(&testing.T{}, Options{})
	baseline(h)
	startIncidents(h)
	fleetIncidents(h, 5000)
	b.ResetTimer()
	return h
}

// BenchmarkBackupResultAmongIncidents: recording a backup result of one
// cluster while 5000 incidents of other clusters are kept.
func BenchmarkBackupResultAmongIncidents(b *testing.B) {
	h := fleetHarness(b)
	for i := range b.N {
		id := fmt.Sprintf("r%d", i)
		h.mustApply(tBackupRun, intent(id, "daily", "full", "pg-a2"))
		r := RunOK
		if i%2 == 0 {
			r = RunFailed
		}
		h.mustApply(tBackupRun, result(id, r, "disk full"))
	}
}

// TestIncidentStoreCompactsAll: decisions see only the incidents they need,
// yet the stored state is what compacting the whole state gives: resolved
// incidents beyond MaxResolved dropped oldest first, every timeline capped
// (delivery records included), order by seq.
func TestIncidentStoreCompactsAll(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	startIncidents(h)
	lim := incident.DefaultLimits()
	n := lim.MaxResolved + 20
	for i := range n {
		h.mustApply(tIncident, incCmd(&pgdrv1.IncidentObserve{DedupKey: fmt.Sprintf("manual:%d", i), Title: "t", Cluster: "main", Category: "manual", Severity: "low"}))
		id := h.f.Incidents("main", false, "")[0].GetId()
		for range 3 {
			h.mustApply(tIncident, incCmd(&pgdrv1.IncidentNotified{Id: id, NotifiedLevels: 1, Status: "open", Deliveries: make([]string, 20)}))
		}
		h.mustApply(tIncident, incCmd([2]string{"resolve", id}))
	}
	all := h.f.Incidents("", true, "")
	if len(all) != lim.MaxResolved {
		t.Fatalf("%d incidents kept after resolving %d, want %d", len(all), n, lim.MaxResolved)
	}
	if all[0].GetDedupKey() != "manual:20" {
		t.Errorf("oldest kept %s, want manual:20 (the oldest resolved dropped first)", all[0].GetDedupKey())
	}
	st := h.f.IncidentState()
	again, c, err := incident.Compact(st, lim, t0.Add(time.Duration(h.index)*time.Second))
	if err != nil || len(c.Dropped) != 0 || c.EntriesDropped != 0 || len(again.Incidents) != len(st.Incidents) {
		t.Errorf("compacting the stored state again: %+v %v", c, err)
	}
	for i := 1; i < len(all); i++ {
		if all[i-1].GetSeq() >= all[i].GetSeq() {
			t.Fatalf("incidents out of seq order at %d", i)
		}
	}
}

// TestManualIncidentsLeaveRoomForFailover: however many incidents are
// opened by hand in a cluster, a failover there still opens its incident
// (manual ones are refused beyond half the per-cluster limit, naming it).
func TestManualIncidentsLeaveRoomForFailover(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	startIncidents(h)
	lim := incident.DefaultLimits()
	var refused *pgdrv1.ApplyResult
	for i := range lim.MaxOpen {
		res := h.apply(tIncident, incCmd(&pgdrv1.IncidentObserve{DedupKey: fmt.Sprintf("manual:main:%d", i), Title: "noise", Cluster: "main", Category: "manual", Severity: "low"}))
		if !res.GetOk() && refused == nil {
			refused = res
		}
	}
	h.mustApply(tRecordEvnt, event("failover-intent", "pg-a2", "promote pg-a2 in place of pg-a1", nil))
	var failover bool
	for _, in := range h.f.Incidents("main", false, "") {
		failover = failover || in.GetCategory() == "failover"
	}
	if !failover {
		t.Fatalf("after %d manual incidents the failover opened no incident", lim.MaxOpen)
	}
	if refused == nil || !strings.Contains(refused.GetError(), "manual") {
		t.Errorf("the manual incident beyond the limit: %v, want an error naming the manual limit", refused)
	}
}

// BenchmarkIncidentState: what the leader reads each round among 5000
// kept incidents.
func BenchmarkIncidentState(b *testing.B) {
	h := fleetHarness(b)
	for range b.N {
		_ = h.f.IncidentState()
	}
}

func BenchmarkIncidentStateTail(b *testing.B) {
	h := fleetHarness(b)
	for range b.N {
		_ = h.f.IncidentStateTail(5)
	}
}

// TestIncidentStateTail: the leader's read is the full state with the
// newest timeline entries only and no notes.
func TestIncidentStateTail(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	startIncidents(h)
	fleetIncidents(h, 3)
	h.mustApply(tIncident, incCmd([2]string{"note", "INC-1000000"}))
	full, tail := h.f.IncidentState(), h.f.IncidentStateTail(5)
	if len(full.Incidents) != len(tail.Incidents) || full.LastSeq != tail.LastSeq {
		t.Fatalf("tail: %d incidents (last seq %d), full %d (%d)", len(tail.Incidents), tail.LastSeq, len(full.Incidents), full.LastSeq)
	}
	for i, in := range tail.Incidents {
		f := full.Incidents[i]
		if len(in.Timeline) != 5 || len(in.Notes) != 0 || in.Timeline[4] != f.Timeline[len(f.Timeline)-1] || in.NotifiedLevels != f.NotifiedLevels || in.ID != f.ID {
			t.Errorf("tail of %s: %d entries, %d notes; last %+v, want %+v", f.ID, len(in.Timeline), len(in.Notes), in.Timeline[4], f.Timeline[len(f.Timeline)-1])
		}
	}
}

// TestDeliveryRecordKeepsTimeline: one delivery record (up to 64 channel
// lines) is one timeline entry, so it cannot push the escalations and
// acknowledgements out of the 50 entries kept.
func TestDeliveryRecordKeepsTimeline(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	startIncidents(h)
	h.mustApply(tIncident, incCmd(&pgdrv1.IncidentObserve{DedupKey: "manual:1", Title: "disk", Cluster: "main", Category: "manual", Severity: "low"}))
	id := h.f.Incidents("", false, "")[0].GetId()
	h.mustApply(tIncident, incCmd(&pgdrv1.IncidentEscalate{Id: id, From: 0, To: 1, Message: "escalated to lead"}))
	lines := make([]string, incident.MaxDeliveries)
	for i := range lines {
		lines[i] = fmt.Sprintf("level 1 open to hook%d (webhook): delivered", i)
	}
	h.mustApply(tIncident, incCmd(&pgdrv1.IncidentNotified{Id: id, NotifiedLevels: 2, Status: "open", Deliveries: lines}))
	in := h.f.Incidents("", false, id)[0]
	var escalated, notified int
	for _, e := range in.GetTimeline() {
		switch e.GetKind() {
		case "escalated":
			escalated++
		case "notified":
			notified++
			if !strings.Contains(e.GetMessage(), "hook0 (webhook): delivered") {
				t.Errorf("delivery entry %q lost the first line", e.GetMessage())
			}
		}
	}
	if escalated != 1 || notified != 1 {
		t.Errorf("after a record of %d deliveries: %d escalation and %d delivery entries, want 1 and 1", len(lines), escalated, notified)
	}
}
