package fsm

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/coordinator/runbook"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

const tRunbook = pgdrv1.CommandType_COMMAND_TYPE_RUNBOOK

func rbCmd(op any) *pgdrv1.RunbookCommand {
	c := &pgdrv1.RunbookCommand{}
	switch o := op.(type) {
	case *pgdrv1.RunbookPut:
		c.Op = &pgdrv1.RunbookCommand_Put{Put: o}
	case *pgdrv1.RunbookStart:
		c.Op = &pgdrv1.RunbookCommand_Start{Start: o}
	case *pgdrv1.RunbookDecide:
		c.Op = &pgdrv1.RunbookCommand_Decide{Decide: o}
	case *pgdrv1.RunbookRecord:
		c.Op = &pgdrv1.RunbookCommand_Record{Record: o}
	}
	return c
}

func decide(t *testing.T, run string, d runbook.Decision) *pgdrv1.RunbookCommand {
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return rbCmd(&pgdrv1.RunbookDecide{RunId: run, DecisionJson: b})
}

// TestRunbookRecords: runbooks are refused before incidents start; a bad
// runbook is refused naming the field; a shipped one starts (one run per
// cluster at a time), its decisions and outcomes move its state, a stale
// one is refused and changes nothing, and every step is in history and on
// the incident the run belongs to.
func TestRunbookRecords(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	evac, _ := runbook.BuiltinText("regional-evacuation")
	start := &pgdrv1.RunbookStart{Cluster: "main", Runbook: "regional-evacuation", Params: map[string]string{"region": "us-east-1"}, Yaml: string(evac)}
	if res := h.apply(tRunbook, rbCmd(start)); res.GetOk() || !strings.Contains(res.GetError(), "not started") {
		t.Fatalf("before StartIncidents: %+v", res)
	}
	startIncidents(h)
	for _, bad := range []struct{ yaml, want string }{
		{"name: x\nsteps:\n  - {id: a, action: reboot}\n", "steps[0].action"},
		{"name: [\n", "yaml"},
	} {
		if res := h.apply(tRunbook, rbCmd(&pgdrv1.RunbookPut{Yaml: bad.yaml})); res.GetOk() || !strings.Contains(res.GetError(), bad.want) {
			t.Errorf("put %q: %+v, want an error naming %q", bad.yaml, res, bad.want)
		}
	}
	if len(h.f.Runbooks()) != 0 {
		t.Fatalf("refused runbooks stored")
	}
	if res := h.apply(tRunbook, rbCmd(&pgdrv1.RunbookStart{Cluster: "main", Runbook: "regional-evacuation", Yaml: string(evac)})); res.GetOk() || !strings.Contains(res.GetError(), "region") {
		t.Fatalf("start without the region parameter: %+v", res)
	}
	h.mustApply(tIncident, incCmd(&pgdrv1.IncidentObserve{DedupKey: "manual:dr", Title: "evacuate", Cluster: "main", Category: "manual", Severity: "high"}))
	inc := h.f.Incidents("", false, "")[0].GetId()
	start.Incident = inc
	h.mustApply(tRunbook, rbCmd(start))
	if res := h.apply(tRunbook, rbCmd(start)); res.GetOk() || !strings.Contains(res.GetError(), "one runbook per cluster") {
		t.Fatalf("second run of the cluster: %+v", res)
	}
	runs := h.f.RunbookRuns("main", "")
	if len(runs) != 1 {
		t.Fatalf("%d runs", len(runs))
	}
	id := runs[0].GetId()
	h.mustApply(tRunbook, decide(t, id, runbook.Decision{Kind: runbook.KindStart, Step: "announce", Body: runbook.Body{Action: runbook.ActionNotify}, Leader: "c1/2", Reason: "notify"}))
	rec := func(step string, ok bool) *pgdrv1.RunbookCommand {
		b, _ := json.Marshal(runbook.Outcome{OK: ok, Message: "delivered"})
		return rbCmd(&pgdrv1.RunbookRecord{RunId: id, Step: step, OutcomeJson: b})
	}
	h.mustApply(tRunbook, rec("announce", true))
	if res := h.apply(tRunbook, rec("announce", true)); res.GetOk() || !strings.Contains(res.GetError(), "stale") {
		t.Fatalf("a second outcome of the same step: %+v", res)
	}
	if res := h.apply(tRunbook, decide(t, id, runbook.Decision{Kind: runbook.KindWait, Step: "x"})); res.GetOk() {
		t.Fatalf("a wait was recorded")
	}
	rs, err := RunState(h.f.RunbookRuns("", id)[0])
	if err != nil {
		t.Fatal(err)
	}
	if rs.Steps[0].Status != runbook.StatusDone || rs.Steps[1].Status != runbook.StatusPending || rs.Params["region"] != "us-east-1" {
		t.Fatalf("run state: %+v", rs)
	}
	var steps int
	for _, e := range h.f.Incidents("", false, inc)[0].GetTimeline() {
		if e.GetKind() == "runbook" {
			steps++
		}
	}
	if steps != 3 {
		t.Errorf("%d runbook entries on the incident's timeline, want 3 (start, announce sent, announce done)", steps)
	}
}

// TestRunbookStartCarriesText: a run starts with the text the proposing
// leader checked, carried in the command, so that every voter stores the
// same run whatever runbooks its own binary ships (a rolling upgrade that
// changes a shipped runbook); a start without it, or whose text is not
// the applied runbook's any more, is refused and changes nothing.
func TestRunbookStartCarriesText(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	startIncidents(h)
	bare := &pgdrv1.RunbookStart{Cluster: "main", Runbook: "regional-evacuation", Params: map[string]string{"region": "us-east-1"}}
	if res := h.apply(tRunbook, rbCmd(bare)); res.GetOk() || !strings.Contains(res.GetError(), "text") {
		t.Fatalf("a start of a shipped runbook without its text: %+v (this binary's text would be used: voters of other versions store another run)", res)
	}
	// Another version's shipped text under the same name: stored as sent.
	other := "name: regional-evacuation\nparams:\n  - {name: region, required: true}\nsteps:\n  - {id: hold, action: pause}\n"
	mine := "name: mine\nsteps:\n  - {id: a, action: pause}\n"
	h.mustApply(tRunbook, rbCmd(&pgdrv1.RunbookPut{Yaml: mine}))
	for _, bad := range []struct {
		start *pgdrv1.RunbookStart
		want  string
	}{
		{&pgdrv1.RunbookStart{Cluster: "main", Runbook: "mine", Yaml: "name: mine\nsteps:\n  - {id: b, action: resume}\n"}, "changed since"},
		{&pgdrv1.RunbookStart{Cluster: "main", Runbook: "other", Yaml: mine}, "is runbook mine"},
	} {
		if res := h.apply(tRunbook, rbCmd(bad.start)); res.GetOk() || !strings.Contains(res.GetError(), bad.want) {
			t.Errorf("start %s: %+v, want an error naming %q", bad.start.GetRunbook(), res, bad.want)
		}
	}
	if n := len(h.f.RunbookRuns("", "")); n != 0 {
		t.Fatalf("%d runs after refused starts", n)
	}
	bare.Yaml = other
	h.mustApply(tRunbook, rbCmd(bare))
	runs := h.f.RunbookRuns("main", "")
	if len(runs) != 1 || runs[0].GetYaml() != other {
		t.Fatalf("runs %+v, want one with the text carried", runs)
	}
	if rs, err := RunState(runs[0]); err != nil || len(rs.Steps) != 1 || rs.Steps[0].ID != "hold" {
		t.Fatalf("run state %+v (%v), want the carried runbook's one step", rs, err)
	}
}

// TestRunbookRunsInFlight: the leader's tick reads only the runs in
// flight (each kept with its runbook's text, up to 64 KiB: copying every
// kept run twice a second cost the leader a copy of all of them).
func TestRunbookRunsInFlight(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	startIncidents(h)
	text := "name: mine\nsteps:\n  - {id: a, action: pause}\n"
	h.mustApply(tRunbook, rbCmd(&pgdrv1.RunbookPut{Yaml: text}))
	h.mustApply(tRunbook, rbCmd(&pgdrv1.RunbookStart{Cluster: "main", Runbook: "mine", Yaml: text}))
	first := h.f.RunbookRuns("main", "")[0].GetId()
	h.mustApply(tRunbook, decide(t, first, runbook.Decision{Kind: runbook.KindRunFailed, Reason: "test"}))
	h.mustApply(tRunbook, rbCmd(&pgdrv1.RunbookStart{Cluster: "main", Runbook: "mine", Yaml: text}))
	got := h.f.RunbookRunsInFlight("")
	if len(got) != 1 || got[0].GetId() == first {
		t.Fatalf("in flight: %v, want the second run only", got)
	}
	if len(h.f.RunbookRunsInFlight("other")) != 0 {
		t.Fatal("another cluster's runs")
	}
}

// TestRunbookPutIgnoresShippedNames: whether a name is taken by a shipped
// runbook depends on the binary (a newer one ships more), so the applier
// does not ask: voters of two versions must apply the same put alike (the
// leader's API refuses a shipped name; an applied runbook of that name
// wins over the shipped one wherever it is read).
func TestRunbookPutIgnoresShippedNames(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	startIncidents(h)
	text := "name: regional-evacuation\nsteps:\n  - {id: a, action: pause}\n"
	if res := h.apply(tRunbook, rbCmd(&pgdrv1.RunbookPut{Yaml: text})); !res.GetOk() {
		t.Fatalf("put under a shipped name: %+v (refused by this binary's shipped runbooks: a voter of another version applies it)", res)
	}
}
