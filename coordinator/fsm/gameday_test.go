package fsm

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/policy"
	"github.com/pgdr/pgdr/coordinator/runbook"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

func gdCmd(op any) *pgdrv1.RunbookCommand {
	c := &pgdrv1.RunbookCommand{}
	switch o := op.(type) {
	case *pgdrv1.GameDayStart:
		c.Op = &pgdrv1.RunbookCommand_GameDayStart{GameDayStart: o}
	case *pgdrv1.GameDayMeasured:
		c.Op = &pgdrv1.RunbookCommand_GameDayMeasured{GameDayMeasured: o}
	case *pgdrv1.GameDayEnd:
		c.Op = &pgdrv1.RunbookCommand_GameDayEnd{GameDayEnd: o}
	}
	return c
}

func gameDayPolicy() *pgdrv1.BackupPolicy {
	p := policy.Default()
	p.GameDays = []policy.GameDay{{Name: "regional", Schedule: "0 10 * * 3", Window: time.Hour,
		Runbooks: []policy.GameDayRunbook{
			{Name: "regional-evacuation", Params: map[string]string{"region": "us-east-1"}},
			{Name: "regional-failback", Params: map[string]string{"region": "us-east-1"}},
		},
		Probe: policy.GameDayProbe{DSN: "host=127.0.0.1 port=5432 dbname=postgres user=postgres"}}}
	p.Normalize()
	return policy.ToProto(p)
}

// TestGameDayRecords: a game day starts only when the policy has it and
// none of the cluster is in flight; its runbooks start at the next
// position only, as the policy names them; each run is measured once;
// its end needs every runbook for ok, records the measured RTO, and
// happens once; the records are bounded and refusals change nothing.
func TestGameDayRecords(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	startIncidents(h)
	start := &pgdrv1.GameDayStart{Cluster: "main", Name: "regional"}
	if res := h.apply(tRunbook, gdCmd(start)); res.GetOk() || !strings.Contains(res.GetError(), "not in the policy") {
		t.Fatalf("game day not in the policy: %+v", res)
	}
	h.mustApply(tBackupPolicy, &pgdrv1.SetBackupPolicy{Cluster: "main", Policy: gameDayPolicy()})
	h.mustApply(tRunbook, gdCmd(start))
	if res := h.apply(tRunbook, gdCmd(start)); res.GetOk() || !strings.Contains(res.GetError(), "one at a time") {
		t.Fatalf("second game day: %+v", res)
	}
	gds := h.f.GameDayRuns("main")["main"]
	if len(gds) != 1 || gds[0].GetResult() != "" || len(gds[0].GetRunbooks()) != 2 || gds[0].GetRtoMs() != -1 ||
		!gds[0].GetDeadline().AsTime().Equal(gds[0].GetStarted().AsTime().Add(time.Hour)) {
		t.Fatalf("game day %+v", gds)
	}
	id := gds[0].GetId()
	text := func(name string) string {
		b, _ := runbook.BuiltinText(name)
		return string(b)
	}
	rb := func(name string, pos uint32) *pgdrv1.RunbookStart {
		return &pgdrv1.RunbookStart{Cluster: "main", Runbook: name, Params: map[string]string{"region": "us-east-1"}, Yaml: text(name), GameDay: id, GameDayPosition: pos}
	}
	for _, bad := range []struct {
		s    *pgdrv1.RunbookStart
		want string
	}{
		{rb("regional-failback", 0), "position 0 is regional-evacuation"},
		{rb("regional-failback", 1), "the next one is 0"},
		{&pgdrv1.RunbookStart{Cluster: "main", Runbook: "regional-evacuation", Params: map[string]string{"region": "us-east-1"}, Yaml: text("regional-evacuation"), GameDay: "GD-1"}, "not found"},
	} {
		if res := h.apply(tRunbook, rbCmd(bad.s)); res.GetOk() || !strings.Contains(res.GetError(), bad.want) {
			t.Errorf("start %+v: %+v, want %q", bad.s, res, bad.want)
		}
	}
	if len(h.f.RunbookRuns("main", "")) != 0 {
		t.Fatalf("a refused start left a run")
	}
	h.mustApply(tRunbook, rbCmd(rb("regional-evacuation", 0)))
	run := h.f.RunbookRuns("main", "")[0].GetId()
	if res := h.apply(tRunbook, rbCmd(rb("regional-evacuation", 0))); res.GetOk() {
		t.Fatalf("the same position started twice")
	}
	measure := func(runID string, gap int64) *pgdrv1.RunbookCommand {
		return gdCmd(&pgdrv1.GameDayMeasured{Cluster: "main", Id: id, Measure: &pgdrv1.GameDayMeasure{RunId: runID, Runbook: "regional-evacuation", LongestGapMs: gap, UnavailableMs: gap, Gaps: 1, Measured: true}})
	}
	if res := h.apply(tRunbook, measure("RB-999", 10)); res.GetOk() || !strings.Contains(res.GetError(), "not one of its runs") {
		t.Fatalf("measure of another run: %+v", res)
	}
	h.mustApply(tRunbook, measure(run, 1500))
	if res := h.apply(tRunbook, measure(run, 10)); res.GetOk() || !strings.Contains(res.GetError(), "measured already") {
		t.Fatalf("second measure: %+v", res)
	}
	end := func(result string) *pgdrv1.RunbookCommand {
		return gdCmd(&pgdrv1.GameDayEnd{Cluster: "main", Id: id, Result: result, Message: "m"})
	}
	for _, bad := range []struct{ result, want string }{{"ok", "runbooks not run"}, {"great", "want ok, failed or timeout"}} {
		if res := h.apply(tRunbook, end(bad.result)); res.GetOk() || !strings.Contains(res.GetError(), bad.want) {
			t.Errorf("end %s: %+v", bad.result, res)
		}
	}
	h.mustApply(tRunbook, end("failed"))
	g := h.f.GameDayRuns("main")["main"][0]
	if g.GetResult() != "failed" || g.GetRtoMs() != 1500 || g.GetEnded() == nil || len(g.GetRuns()) != 1 {
		t.Fatalf("ended game day %+v", g)
	}
	if res := h.apply(tRunbook, end("timeout")); res.GetOk() || !strings.Contains(res.GetError(), "already ended") {
		t.Fatalf("second end: %+v", res)
	}
	// The ended game day's run is still in flight (a window that ended
	// mid-runbook): no game day starts on top of it.
	if res := h.apply(tRunbook, gdCmd(start)); res.GetOk() || !strings.Contains(res.GetError(), "in flight") {
		t.Fatalf("game day started while run %s of the cluster is in flight: %+v", run, res)
	}
	h.mustApply(tRunbook, decide(t, run, runbook.Decision{Kind: runbook.KindRunFailed, Reason: "test"}))
	for i := 0; i < MaxGameDayRuns+5; i++ {
		h.mustApply(tRunbook, gdCmd(start))
		last := h.f.GameDayRuns("main")["main"]
		id = last[len(last)-1].GetId()
		h.mustApply(tRunbook, end("timeout"))
	}
	if n := len(h.f.GameDayRuns("main")["main"]); n != MaxGameDayRuns {
		t.Fatalf("%d game days kept, want %d", n, MaxGameDayRuns)
	}
	// A scheduled slot runs once: a second start of a slot recorded (a
	// proposal retried, a stale leader's) is refused, an older one too.
	slot := timestamppb.New(time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC))
	h.mustApply(tRunbook, gdCmd(&pgdrv1.GameDayStart{Cluster: "main", Name: "regional", Slot: slot}))
	last := h.f.GameDayRuns("main")["main"]
	id = last[len(last)-1].GetId()
	h.mustApply(tRunbook, end("timeout"))
	// Operators' game days (no slot) do not push the newest scheduled
	// record out: its slot would be due again and run a second time.
	for i := 0; i < MaxGameDayRuns+2; i++ {
		h.mustApply(tRunbook, gdCmd(start))
		last := h.f.GameDayRuns("main")["main"]
		id = last[len(last)-1].GetId()
		h.mustApply(tRunbook, end("timeout"))
	}
	gds = h.f.GameDayRuns("main")["main"]
	if !slices.ContainsFunc(gds, func(r *pgdrv1.GameDayRun) bool { return r.GetSlot() != nil }) || len(gds) != MaxGameDayRuns {
		t.Fatalf("after %d operators' game days: %d kept, the scheduled one kept: %v", MaxGameDayRuns+2, len(gds), slices.ContainsFunc(gds, func(r *pgdrv1.GameDayRun) bool { return r.GetSlot() != nil }))
	}
	for _, s := range []*timestamppb.Timestamp{slot, timestamppb.New(slot.AsTime().Add(-time.Hour))} {
		if res := h.apply(tRunbook, gdCmd(&pgdrv1.GameDayStart{Cluster: "main", Name: "regional", Slot: s})); res.GetOk() || !strings.Contains(res.GetError(), "slot") {
			t.Fatalf("slot %s started again: %+v", s.AsTime(), res)
		}
	}
}
