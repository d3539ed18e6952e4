package fsm

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

const tIncident = pgdrv1.CommandType_COMMAND_TYPE_INCIDENT

func startIncidents(h *harness) {
	h.t.Helper()
	h.mustApply(tIncident, &pgdrv1.IncidentCommand{Op: &pgdrv1.IncidentCommand_Start{Start: &pgdrv1.StartIncidents{}}})
}

func event(kind, node, msg string, details map[string]string) *pgdrv1.RecordEvent {
	return &pgdrv1.RecordEvent{Event: &pgdrv1.HistoryEvent{Cluster: "main", Kind: kind, Node: node, Epoch: 1, Message: msg, Details: details}}
}

// TestIncidentsFromEvents: once started, a failover intent opens one
// incident, its repeats (a resuming leader, refusals every tick) fold into
// it, its result clears it; a target breach opens one cleared by its
// restore; a failed backup and a failed drill open theirs, a success
// clears them. Before StartIncidents nothing is derived. The incidents
// survive a snapshot.
func TestIncidentsFromEvents(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	h.mustApply(tRecordEvnt, event("failover-intent", "pg-a2", "promote pg-a2 in place of pg-a1", nil))
	if got := h.f.Incidents("", true, ""); len(got) != 0 {
		t.Fatalf("before StartIncidents: %d incidents, want 0", len(got))
	}
	startIncidents(h)
	for range 3 {
		h.mustApply(tRecordEvnt, event("failover-intent", "pg-a2", "promote pg-a2 in place of pg-a1", nil))
	}
	for range 5 {
		h.mustApply(tRecordEvnt, event("failover-refused", "pg-a2", "no candidate", nil))
	}
	got := h.f.Incidents("main", false, "")
	if len(got) != 2 {
		t.Fatalf("incidents after 3 intents and 5 refusals: %d, want 2 (one per condition): %v", len(got), got)
	}
	fo := got[0]
	if fo.GetCategory() != "failover" || fo.GetSeverity() != "critical" || fo.GetStatus() != "open" || fo.GetOccurrences() != 3 ||
		!strings.HasPrefix(fo.GetId(), "INC-") || fo.GetConditionCleared() {
		t.Fatalf("failover incident: %+v", fo)
	}
	if got[1].GetCategory() != "failover_refused" || got[1].GetOccurrences() != 5 {
		t.Fatalf("refused incident: %+v", got[1])
	}
	h.mustApply(tRecordEvnt, event("failover-result", "pg-a2", "done: pg-a2 is primary at epoch 2", nil))
	for _, in := range h.f.Incidents("main", false, "") {
		if !in.GetConditionCleared() || in.GetStatus() != "open" {
			t.Errorf("after the failover's result %s: cleared %v status %s, want cleared and still open", in.GetId(), in.GetConditionCleared(), in.GetStatus())
		}
	}

	d := map[string]string{"target": "rpo", "subject": "archive"}
	h.mustApply(tRecordEvnt, event("target-breached", "", "rpo 30s over 10s", d))
	h.mustApply(tRecordEvnt, event("target-restored", "", "back", d))
	h.mustApply(tBackupRun, intent("r1", "daily", "full", "pg-a2"))
	h.mustApply(tBackupRun, result("r1", RunFailed, "disk full"))
	h.mustApply(tBackupRun, intent("r2", "daily", "full", "pg-a2"))
	h.mustApply(tBackupRun, result("r2", RunOK, ""))
	byCat := map[string]*pgdrv1.Incident{}
	for _, in := range h.f.Incidents("main", false, "") {
		byCat[in.GetCategory()] = in
	}
	for _, cat := range []string{"target_breach", "backup_failed"} {
		in := byCat[cat]
		if in == nil || !in.GetConditionCleared() {
			t.Errorf("%s incident: %+v, want one, cleared", cat, in)
		}
	}
	if !strings.Contains(byCat["backup_failed"].GetTimeline()[0].GetMessage(), "disk full") {
		t.Errorf("backup incident timeline: %v", byCat["backup_failed"].GetTimeline())
	}

	fresh := New(quietLogger(), Options{})
	if err := fresh.Restore(io.NopCloser(bytes.NewReader(persist(t, h.f)))); err != nil {
		t.Fatal(err)
	}
	if a, b := len(fresh.Incidents("", true, "")), len(h.f.Incidents("", true, "")); a != b || a != 4 || !fresh.IncidentsStarted() {
		t.Errorf("restored: %d incidents (started %v), want %d", a, fresh.IncidentsStarted(), b)
	}
}

func incCmd(op any) *pgdrv1.IncidentCommand {
	c := &pgdrv1.IncidentCommand{}
	switch o := op.(type) {
	case *pgdrv1.IncidentObserve:
		c.Op = &pgdrv1.IncidentCommand_Observe{Observe: o}
	case *pgdrv1.IncidentEscalate:
		c.Op = &pgdrv1.IncidentCommand_Escalate{Escalate: o}
	case *pgdrv1.IncidentNotified:
		c.Op = &pgdrv1.IncidentCommand_Notified{Notified: o}
	case [2]string: // ack/resolve/note + id
		tr := &pgdrv1.IncidentTransition{Id: o[1], Note: "by hand"}
		switch o[0] {
		case "ack":
			c.Op = &pgdrv1.IncidentCommand_Ack{Ack: tr}
		case "resolve":
			c.Op = &pgdrv1.IncidentCommand_Resolve{Resolve: tr}
		default:
			c.Op = &pgdrv1.IncidentCommand_Note{Note: tr}
		}
	}
	return c
}

// TestIncidentCommands: operations are refused before StartIncidents; a
// manual incident opens; escalation moves one level once (a second
// proposal of the same move by a new leader changes nothing); the outbox
// mark moves forward only; ack and resolve follow the transitions, and bad
// requests are refused naming what is wrong, changing nothing.
func TestIncidentCommands(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	obs := &pgdrv1.IncidentObserve{DedupKey: "manual:1", Title: "disk noise", Cluster: "main", Category: "manual", Severity: "low"}
	if res := h.apply(tIncident, incCmd(obs)); res.GetOk() || !strings.Contains(res.GetError(), "not started") {
		t.Fatalf("before start: %+v", res)
	}
	startIncidents(h)
	h.mustApply(tIncident, incCmd(obs))
	id := h.f.Incidents("", false, "")[0].GetId()

	esc := &pgdrv1.IncidentEscalate{Id: id, From: 0, To: 1, Message: "escalated to lead"}
	h.mustApply(tIncident, incCmd(esc))
	h.mustApply(tIncident, incCmd(esc)) // a new leader proposing the same move
	in := h.f.Incidents("", false, id)[0]
	var escalations int
	for _, e := range in.GetTimeline() {
		if e.GetKind() == "escalated" {
			escalations++
		}
	}
	if in.GetEscalationLevel() != 1 || escalations != 1 {
		t.Fatalf("after the same escalation twice: level %d, %d timeline entries; want 1, 1", in.GetEscalationLevel(), escalations)
	}
	h.mustApply(tIncident, incCmd(&pgdrv1.IncidentNotified{Id: id, NotifiedLevels: 2, Status: "open", Deliveries: []string{"pd: ok"}}))
	h.mustApply(tIncident, incCmd(&pgdrv1.IncidentNotified{Id: id, NotifiedLevels: 1, Status: "open"})) // late, older
	if in = h.f.Incidents("", false, id)[0]; in.GetNotifiedLevels() != 2 {
		t.Fatalf("outbox mark went back: %d", in.GetNotifiedLevels())
	}
	h.mustApply(tIncident, incCmd([2]string{"ack", id}))
	if res := h.apply(tIncident, incCmd([2]string{"ack", id})); res.GetOk() {
		t.Fatalf("second ack accepted")
	}
	if res := h.apply(tIncident, incCmd(&pgdrv1.IncidentEscalate{Id: id, From: 1, To: 2})); !res.GetOk() {
		t.Fatalf("escalating an acknowledged incident should be a no-op, got %s", res.GetError())
	}
	if in = h.f.Incidents("", false, id)[0]; in.GetEscalationLevel() != 1 || in.GetStatus() != "acknowledged" {
		t.Fatalf("acknowledged incident escalated: %+v", in)
	}
	h.mustApply(tIncident, incCmd([2]string{"resolve", id}))
	if len(h.f.Incidents("", false, "")) != 0 || len(h.f.Incidents("", true, "")) != 1 {
		t.Fatalf("resolved incident still listed as open")
	}
	before := h.f.Incidents("", true, "")
	for _, bad := range []struct {
		cmd  *pgdrv1.IncidentCommand
		want string
	}{
		{incCmd([2]string{"ack", "INC-999"}), "INC-999"},
		{incCmd(&pgdrv1.IncidentObserve{DedupKey: "x", Title: "t", Cluster: "nope", Category: "failover", Severity: "high"}), `cluster "nope"`},
		{incCmd(&pgdrv1.IncidentObserve{DedupKey: "x", Title: "t", Cluster: "main", Category: "manual", Severity: "urgent"}), "severity"},
		{incCmd(&pgdrv1.IncidentEscalate{Id: id, From: 0, To: 3}), "one level"},
		{&pgdrv1.IncidentCommand{}, "no operation"},
	} {
		if res := h.apply(tIncident, bad.cmd); res.GetOk() || !strings.Contains(res.GetError(), bad.want) {
			t.Errorf("%v: %+v, want an error naming %q", bad.cmd, res, bad.want)
		}
	}
	after := h.f.Incidents("", true, "")
	if len(after) != len(before) || !proto.Equal(after[0], before[0]) {
		t.Errorf("refused commands changed the incidents:\n%v\n%v", before, after)
	}
}
