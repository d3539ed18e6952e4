package runbook

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

var t0 = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

// twoRegions: a1, a2 in eu (a1 the primary), b1, b2 in us.
func twoRegions() View {
	return View{
		Cluster: "main", Leader: "c1@1", Primary: "a1",
		Members: []Member{
			{Name: "a1", Region: "eu", Role: RolePrimary, Healthy: true},
			{Name: "a2", Region: "eu", Role: RoleReplica, Healthy: true, LagBytes: 100},
			{Name: "b1", Region: "us", Role: RoleReplica, Healthy: true, LagBytes: 5000},
			{Name: "b2", Region: "us", Role: RoleReplica, Healthy: true, LagBytes: 900},
		},
		Repos: []Repo{{Name: "s3", CaughtUp: true}},
	}
}

// crash is where a leader dies around one sent action.
type crash int

const (
	noCrash     crash = iota
	afterApply        // the intent is recorded, the action not sent
	afterSend         // the action took effect, its outcome not recorded
	beforeApply       // the decision was taken, nothing recorded
)

// cluster plays the cluster and the leader's order sending for a test: it
// applies each sent action to its view and lists what was sent.
type cluster struct {
	v    View
	now  time.Time
	sent []string // "step:action[:target]" (rollbacks: "step/rollback:...")
	keys []string // the decision keys of the sends
	// fail: the step (or "step/rollback") whose action fails.
	fail map[string]string
	// tick changes the view as time passes (lag falling, say).
	tick func(c *cluster)
	// crashAt: the crash at the n-th send (0-based; -1: none).
	crashAt int
	crash   crash
	leaders int
	// result: how the run ended without a crash (TestResumeAtEveryStep).
	result Result
}

func newCluster(v View) *cluster {
	return &cluster{v: v, now: t0, fail: map[string]string{}, crashAt: -1}
}

func (c *cluster) name(d Decision) string {
	n := d.Step
	if d.Rollback {
		n += "/rollback"
	}
	return n
}

// carry sends an action: its effect on the view, and its outcome.
func (c *cluster) carry(d Decision) Outcome {
	n := c.name(d)
	s := n + ":" + string(d.Body.Action)
	if d.Target != "" {
		s += ":" + d.Target
	}
	c.sent, c.keys = append(c.sent, s), append(c.keys, d.Key)
	if msg, ok := c.fail[n]; ok {
		return Outcome{Message: msg}
	}
	switch d.Body.Action {
	case ActionPause:
		runID, _, _ := strings.Cut(d.Key, "/")
		c.v.Paused, c.v.PausedBy = true, "coordinator:sim for "+RunActor("sim", runID)
	case ActionResume:
		c.v.Paused, c.v.PausedBy = false, ""
	case ActionSwitchover:
		c.switchTo(d.Target)
	case ActionBackup:
		c.v.Jobs = append(c.v.Jobs, Job{ID: fmt.Sprintf("bk%d", len(c.v.Jobs)), Kind: "backup", Tier: d.Body.Tier, Started: c.now, Result: "ok"})
	}
	return Outcome{OK: true, Message: "ok"}
}

func (c *cluster) switchTo(node string) {
	for k, m := range c.v.Members {
		switch m.Name {
		case c.v.Primary:
			c.v.Members[k].Role, c.v.Members[k].LagBytes = RoleReplica, 0
		case node:
			c.v.Members[k].Role = RolePrimary
		}
	}
	c.v.Primary = node
}

// newLeader hands the run over to another leadership.
func (c *cluster) newLeader() {
	c.leaders++
	c.v.Leader = fmt.Sprintf("c%d@%d", c.leaders+1, c.leaders+1)
}

// drive runs the run to its end the way the leader will: decide, record
// the decision, send the action, record its outcome; each loop a second
// passes, a wait moves the clock to its deadline. It returns the ended
// run and the decisions in order.
func (c *cluster) drive(t *testing.T, rb Runbook, run RunState) (RunState, []Decision) {
	t.Helper()
	var log []Decision
	sends := 0
	for range 500 {
		if c.tick != nil {
			c.tick(c)
		}
		d := Next(rb, run, c.v, c.now)
		log = append(log, d)
		switch d.Kind {
		case KindEnded:
			return run, log
		case KindWait:
			c.now = c.now.Add(time.Second)
			if d.Until.After(c.now) {
				c.now = d.Until
			}
			continue
		}
		send := (d.Kind == KindStart || d.Kind == KindRollback) && d.Body.Action != ActionWait
		crashNow := send && sends == c.crashAt
		if send {
			sends++
		}
		if crashNow && c.crash == beforeApply {
			c.newLeader()
			continue
		}
		next, err := Apply(run, d, c.now)
		if err != nil {
			t.Fatalf("Apply %+v: %v", d, err)
		}
		run = next
		if crashNow && c.crash == afterApply {
			c.newLeader()
			continue
		}
		if send {
			o := c.carry(d)
			if crashNow && c.crash == afterSend {
				c.newLeader()
				continue
			}
			if run, err = Record(rb, run, d.Step, d.Rollback, o, c.now); err != nil {
				t.Fatalf("Record %s: %v", d.Step, err)
			}
		}
		c.now = c.now.Add(time.Second)
	}
	t.Fatalf("run %s did not end: %v", run.ID, kinds(log))
	return run, log
}

func kinds(ds []Decision) []string {
	var out []string
	for _, d := range ds {
		if d.Kind != KindWait {
			out = append(out, string(d.Kind)+" "+d.Step)
		}
	}
	return out
}

func mustParse(t *testing.T, doc string) Runbook {
	t.Helper()
	rb, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return rb
}

func mustRun(t *testing.T, rb Runbook, params map[string]string) RunState {
	t.Helper()
	run, err := NewRun(rb, "r1", params, t0)
	if err != nil {
		t.Fatal(err)
	}
	return run
}

func builtin(name string) Runbook {
	for _, rb := range Builtin() {
		if rb.Name == name {
			return rb
		}
	}
	panic(name)
}

// TestEvacuationRun: a normal run of regional-evacuation moves the
// primary to the least lagging replica outside eu, validates it, pauses
// failover, and ends done; every action is sent once, in order.
func TestEvacuationRun(t *testing.T) {
	rb := builtin("regional-evacuation")
	c := newCluster(twoRegions())
	run, log := c.drive(t, rb, mustRun(t, rb, map[string]string{"region": "eu"}))
	if run.Result != ResultDone {
		t.Fatalf("result %s (%s); decisions %v", run.Result, run.Reason, kinds(log))
	}
	want := []string{"announce:notify", "move-primary:switchover:b2", "keep-out:pause", "done:notify"}
	if !slices.Equal(c.sent, want) {
		t.Errorf("sent %v, want %v", c.sent, want)
	}
	if c.v.Primary != "b2" || !c.v.Paused {
		t.Errorf("primary %s paused %t", c.v.Primary, c.v.Paused)
	}
	for _, s := range run.Steps {
		if s.Status != StatusDone {
			t.Errorf("step %s %s", s.ID, s.Status)
		}
	}
	if s := run.Steps[2]; s.Previous != "a1" || s.Exec.Target != "b2" || !s.Applied {
		t.Errorf("move-primary recorded %+v", s)
	}
	if !strings.HasPrefix(run.Steps[2].Reason, "validated: primary_not_in_region") || run.Steps[2].ValidateStarted.IsZero() {
		t.Errorf("move-primary not validated: %+v", run.Steps[2])
	}
}

// TestFailbackRun: regional-failback waits for the region's replicas to
// catch up (lag falls over time), moves the primary back and resumes.
func TestFailbackRun(t *testing.T) {
	rb := builtin("regional-failback")
	v := twoRegions()
	c := newCluster(v)
	c.switchTo("b2")
	c.v.Paused = true
	for k := range c.v.Members {
		if c.v.Members[k].Region == "eu" {
			c.v.Members[k].LagBytes = 100 << 20
		}
	}
	c.tick = func(c *cluster) { // eu catches up after 3 minutes
		if c.now.Sub(t0) > 3*time.Minute {
			for k := range c.v.Members {
				if c.v.Members[k].Region == "eu" && c.v.Members[k].Role == RoleReplica {
					c.v.Members[k].LagBytes = 10
				}
			}
		}
	}
	run, log := c.drive(t, rb, mustRun(t, rb, map[string]string{"region": "eu"}))
	if run.Result != ResultDone {
		t.Fatalf("result %s (%s); decisions %v", run.Result, run.Reason, kinds(log))
	}
	want := []string{"announce:notify", "move-primary:switchover:a1", "resume-failover:resume", "done:notify"}
	if !slices.Equal(c.sent, want) || c.v.Paused || c.v.Primary != "a1" {
		t.Errorf("sent %v (want %v), paused %t, primary %s", c.sent, want, c.v.Paused, c.v.Primary)
	}
}

// steps3 pauses, switches over to b1 and then waits for something that
// never comes within its minute.
const steps3 = `
name: three
steps:
  - id: pause
    action: pause
    rollback: {action: resume}
  - id: note
    action: notify
    message: hello
  - id: move
    action: switchover
    to_node: b1
    rollback: {action: switchover, to_previous: true}
  - id: wait
    action: wait
    condition: healthy_replicas
    region: eu
    count: 5
    timeout: 1m
`

// TestWaitTimeoutRollsBackInReverse: a wait that times out fails its
// step; the completed steps roll back in reverse (the notify step has no
// rollback and is skipped); the run ends rolled_back.
func TestWaitTimeoutRollsBackInReverse(t *testing.T) {
	rb := mustParse(t, steps3)
	c := newCluster(twoRegions())
	run, log := c.drive(t, rb, mustRun(t, rb, nil))
	if run.Result != ResultRolledBack {
		t.Fatalf("result %s (%s); %v", run.Result, run.Reason, kinds(log))
	}
	want := []string{"pause:pause", "note:notify", "move:switchover:b1", "move/rollback:switchover:a1", "pause/rollback:resume"}
	if !slices.Equal(c.sent, want) {
		t.Errorf("sent %v, want %v", c.sent, want)
	}
	if c.v.Primary != "a1" || c.v.Paused {
		t.Errorf("not rolled back: primary %s paused %t", c.v.Primary, c.v.Paused)
	}
	if !strings.Contains(run.Reason, "step wait failed: healthy_replicas not met within 1m0s") {
		t.Errorf("reason %q", run.Reason)
	}
	st := map[string]Status{}
	for _, s := range run.Steps {
		st[s.ID] = s.Status
	}
	if st["pause"] != StatusRolledBack || st["move"] != StatusRolledBack || st["note"] != StatusDone || st["wait"] != StatusFailed {
		t.Errorf("statuses %v", st)
	}
	// The deadline is the wait's start plus its timeout, not sooner.
	for _, d := range log {
		if d.Kind == KindStepFailed && d.Step == "wait" {
			if started := run.Steps[3].Exec.Started; d.Reason == "" || started.IsZero() {
				t.Errorf("wait failed without its start recorded: %+v", run.Steps[3])
			}
		}
	}
}

// TestValidationFailureMidRun: a switchover whose validation fails is
// rolled back itself (its action took effect), then the steps before it,
// in reverse; the steps after it never run.
func TestValidationFailureMidRun(t *testing.T) {
	rb := mustParse(t, `
name: v
steps:
  - {id: pause, action: pause, rollback: {action: resume}}
  - id: move
    action: switchover
    to_node: b1
    validate: {condition: primary_in_region, region: eu, timeout: 30s}
    rollback: {action: switchover, to_previous: true}
  - {id: after, action: notify, message: never}
`)
	c := newCluster(twoRegions())
	run, log := c.drive(t, rb, mustRun(t, rb, nil))
	if run.Result != ResultRolledBack {
		t.Fatalf("result %s (%s); %v", run.Result, run.Reason, kinds(log))
	}
	want := []string{"pause:pause", "move:switchover:b1", "move/rollback:switchover:a1", "pause/rollback:resume"}
	if !slices.Equal(c.sent, want) {
		t.Errorf("sent %v, want %v", c.sent, want)
	}
	if !strings.Contains(run.Reason, "validation primary_in_region failed within 30s: the primary b1 is in region us") {
		t.Errorf("reason %q", run.Reason)
	}
	if run.Steps[2].Status != StatusPending {
		t.Errorf("the step after ran: %+v", run.Steps[2])
	}
}

// TestActionFailure: a failed action fails its step without a rollback
// of its own (it changed nothing) and rolls back the steps before it.
func TestActionFailure(t *testing.T) {
	rb := mustParse(t, steps3)
	c := newCluster(twoRegions())
	c.fail["move"] = "demoting a1: timeout; nothing was promoted"
	run, _ := c.drive(t, rb, mustRun(t, rb, nil))
	want := []string{"pause:pause", "note:notify", "move:switchover:b1", "pause/rollback:resume"}
	if run.Result != ResultRolledBack || !slices.Equal(c.sent, want) {
		t.Errorf("result %s, sent %v (want %v)", run.Result, c.sent, want)
	}
	if !strings.Contains(run.Reason, "step move failed: demoting a1") {
		t.Errorf("reason %q", run.Reason)
	}
}

// TestRollbackFailureEndsFailed: when a rollback fails the run ends
// failed with the reason, and the rollbacks before it are not run.
func TestRollbackFailureEndsFailed(t *testing.T) {
	rb := mustParse(t, steps3)
	c := newCluster(twoRegions())
	c.fail["move/rollback"] = "demoting b1: connection refused"
	run, log := c.drive(t, rb, mustRun(t, rb, nil))
	if run.Result != ResultFailed {
		t.Fatalf("result %s (%s); %v", run.Result, run.Reason, kinds(log))
	}
	for _, w := range []string{"step wait failed", "then the rollback of step move failed: demoting b1: connection refused", "the steps before it are not rolled back"} {
		if !strings.Contains(run.Reason, w) {
			t.Errorf("reason %q does not say %q", run.Reason, w)
		}
	}
	if slices.Contains(c.sent, "pause/rollback:resume") {
		t.Errorf("rolled back on after a failed rollback: %v", c.sent)
	}
	if d := Next(rb, run, c.v, c.now); d.Kind != KindEnded {
		t.Errorf("after the end: %+v", d)
	}

	// A rollback that cannot even start (the previous primary is gone).
	c = newCluster(twoRegions())
	c.tick = func(c *cluster) {
		if c.v.Primary == "b1" {
			c.v.Members[0].Healthy = false
		}
	}
	run, _ = c.drive(t, rb, mustRun(t, rb, nil))
	if run.Result != ResultFailed || !strings.Contains(run.Reason, "rollback of step move failed: to_previous: a1 is not a healthy replica") {
		t.Errorf("result %s: %s", run.Result, run.Reason)
	}
}

// TestNothingToDo: a step whose effect is already there is done without
// being sent, and is not rolled back (the run did not change it).
func TestNothingToDo(t *testing.T) {
	rb := mustParse(t, steps3)
	v := twoRegions()
	v.Paused = true
	c := newCluster(v)
	run, _ := c.drive(t, rb, mustRun(t, rb, nil))
	want := []string{"note:notify", "move:switchover:b1", "move/rollback:switchover:a1"}
	if run.Result != ResultRolledBack || !slices.Equal(c.sent, want) || !c.v.Paused {
		t.Errorf("result %s, sent %v (want %v), paused %t", run.Result, c.sent, want, c.v.Paused)
	}
}

// TestBackupStep: a backup step ends with the backup run it started.
func TestBackupStep(t *testing.T) {
	rb := mustParse(t, "name: b\nsteps:\n  - {id: b, action: backup, tier: daily}\n")
	c := newCluster(twoRegions())
	run, _ := c.drive(t, rb, mustRun(t, rb, nil))
	if run.Result != ResultDone || !slices.Equal(c.sent, []string{"b:backup"}) {
		t.Errorf("result %s, sent %v", run.Result, c.sent)
	}
	// The same, with the outcome lost in a leader change: judged by the
	// backup run, in flight (wait) then ok (done); never sent again.
	run = mustRun(t, rb, nil)
	v := twoRegions()
	d := Next(rb, run, v, t0)
	run, _ = Apply(run, d, t0)
	v.Leader = "c2@2"
	v.Jobs = []Job{{ID: "old", Kind: "backup", Tier: "daily", Started: t0.Add(-time.Hour), Result: "ok"}, {ID: "bk", Kind: "backup", Tier: "daily", Started: t0}}
	if d := Next(rb, run, v, t0.Add(time.Minute)); d.Kind != KindWait {
		t.Errorf("in flight: %+v", d)
	}
	v.Jobs[1].Result = "ok"
	if d := Next(rb, run, v, t0.Add(time.Minute)); d.Kind != KindStepDone || !strings.Contains(d.Reason, "backup bk ended ok") {
		t.Errorf("ended: %+v", d)
	}
	v.Jobs = v.Jobs[:1]
	if d := Next(rb, run, v, t0.Add(time.Minute)); d.Kind != KindStepFailed || !strings.Contains(d.Reason, "no backup run found: not started again") {
		t.Errorf("lost: %+v", d)
	}
}

// TestResumeAtEveryStep: a leader dies around every action of both
// shipped runbooks, at every point (before recording the decision, after
// recording it but before sending, after sending but before recording the
// outcome), and the next leader resumes the run. No action runs twice
// (a notify may be sent again with the same key, which its receivers
// drop), none is skipped: the run ends done with every effect in place,
// or — when a switchover's intent was recorded but never sent — the
// switchover is not sent blindly: the step fails and the run rolls back.
func TestResumeAtEveryStep(t *testing.T) {
	type setup struct {
		rb   Runbook
		view func() View
	}
	evac := setup{builtin("regional-evacuation"), twoRegions}
	back := setup{builtin("regional-failback"), func() View {
		v := twoRegions()
		c := newCluster(v)
		c.switchTo("b2")
		c.v.Paused = true
		return c.v
	}}
	// steps3 ends rolled back: the leader dies around its rollbacks too.
	rolled := setup{mustParse(t, strings.Replace(steps3, "name: three", "name: three\nparams: [{name: region}]", 1)), twoRegions}
	for _, s := range []setup{evac, back, rolled} {
		clean := newCluster(s.view())
		end, _ := clean.drive(t, s.rb, mustRun(t, s.rb, map[string]string{"region": "eu"}))
		clean.result = end.Result
		for at := range clean.sent {
			for _, cr := range []crash{beforeApply, afterApply, afterSend} {
				name := fmt.Sprintf("%s crash %d at send %d (%s)", s.rb.Name, cr, at, clean.sent[at])
				c := newCluster(s.view())
				c.crashAt, c.crash = at, cr
				run, log := c.drive(t, s.rb, mustRun(t, s.rb, map[string]string{"region": "eu"}))
				checkResumed(t, name, clean, c, run, log, at, cr)
			}
		}
	}
}

func checkResumed(t *testing.T, name string, clean, c *cluster, run RunState, log []Decision, at int, cr crash) {
	t.Helper()
	if c.leaders != 1 {
		t.Fatalf("%s: %d leader changes", name, c.leaders)
	}
	// Never twice: a repeat is only ever a notify with the same key.
	for i, s := range c.sent {
		if j := slices.Index(c.sent, s); j != i && !strings.HasSuffix(s, ":notify") {
			t.Errorf("%s: %s sent twice: %v", name, s, c.sent)
		}
	}
	dedup := slices.Compact(slices.Clone(c.keys))
	crashed := clean.sent[at]
	if cr == afterApply && strings.Contains(crashed, ":switchover") {
		// A rollback's switchover not sent ends the run failed; a step's
		// fails the step and the run rolls back.
		want := ResultRolledBack
		if strings.Contains(crashed, "/rollback") {
			want = ResultFailed
		}
		if run.Result != want || slices.Contains(c.sent, crashed) {
			t.Errorf("%s: result %s, sent %v; want the unsent switchover failed (%s)", name, run.Result, c.sent, want)
		}
		i := slices.IndexFunc(run.Steps, func(s StepState) bool { return s.Status == StatusFailed || s.RollbackStatus == StatusFailed })
		if i < 0 || !strings.Contains(run.Steps[i].Reason, "not sent again") {
			t.Errorf("%s: failed step %+v", name, run.Steps)
		}
		return
	}
	if run.Result != clean.result {
		t.Errorf("%s: result %s (%s); %v", name, run.Result, run.Reason, kinds(log))
		return
	}
	var sent []string
	for _, s := range c.sent {
		if len(sent) == 0 || sent[len(sent)-1] != s {
			sent = append(sent, s)
		}
	}
	if !slices.Equal(sent, clean.sent) || len(dedup) != len(clean.keys) {
		t.Errorf("%s: sent %v, want %v (keys %v)", name, c.sent, clean.sent, c.keys)
	}
	if c.v.Primary != clean.v.Primary || c.v.Paused != clean.v.Paused {
		t.Errorf("%s: primary %s paused %t, want %s %t", name, c.v.Primary, c.v.Paused, clean.v.Primary, clean.v.Paused)
	}
}

// TestResumeSwitchoverInFlight: a switchover a new leader finds in flight
// is awaited, not sent again, and judged by who is primary.
func TestResumeSwitchoverInFlight(t *testing.T) {
	rb := mustParse(t, steps3)
	v := twoRegions()
	v.Paused = true
	run := mustRun(t, rb, nil)
	now := t0
	for run.Steps[2].Status != StatusRunning {
		d := Next(rb, run, v, now)
		var err error
		if run, err = Apply(run, d, now); err != nil {
			t.Fatal(err)
		}
		if d.Kind == KindStart && d.Body.Action == ActionNotify {
			run, _ = Record(rb, run, d.Step, false, Outcome{OK: true}, now)
		}
	}
	v.Leader, v.SwitchoverInFlight = "c2@2", true
	d := Next(rb, run, v, now.Add(time.Minute))
	if d.Kind != KindWait || !strings.Contains(d.Reason, "a switchover is in flight") {
		t.Fatalf("in flight: %+v", d)
	}
	c := newCluster(v)
	c.switchTo("b1")
	c.v.SwitchoverInFlight = false
	if d := Next(rb, run, c.v, now.Add(2*time.Minute)); d.Kind != KindStepDone || !d.Applied {
		t.Errorf("landed: %+v", d)
	}
	// A late outcome from the old leader after the new one judged the
	// step changes nothing.
	judged, err := Apply(run, Next(rb, run, c.v, now.Add(2*time.Minute)), now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Record(rb, judged, "move", false, Outcome{Message: "lost"}, now); !errors.Is(err, ErrStale) {
		t.Errorf("late outcome: %v", err)
	}
}

// TestApplyRefusesStale: a decision that does not fit the record changes
// nothing.
func TestApplyRefusesStale(t *testing.T) {
	rb := mustParse(t, steps3)
	run := mustRun(t, rb, nil)
	v := twoRegions()
	d := Next(rb, run, v, t0)
	started, err := Apply(run, d, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Apply(started, d, t0); !errors.Is(err, ErrStale) {
		t.Errorf("started twice: %v", err)
	}
	if run.Steps[0].Status != StatusPending {
		t.Error("Apply changed its input")
	}
	if _, err := Apply(run, Decision{Kind: KindRollback, Step: "pause"}, t0); !errors.Is(err, ErrStale) {
		t.Errorf("rollback while running forward: %v", err)
	}
	if _, err := Apply(run, Decision{Kind: KindStart, Step: "nope"}, t0); !errors.Is(err, ErrStale) {
		t.Errorf("unknown step: %v", err)
	}
	long, err := Apply(run, Decision{Kind: KindRunFailed, Reason: strings.Repeat("x", 5000)}, t0)
	if err != nil || len(long.Reason) != MaxText {
		t.Errorf("a long reason is kept at %d bytes (%v), want %d", len(long.Reason), err, MaxText)
	}
	if r := clipText(strings.Repeat("é", 1000)); len(r) > MaxText || !utf8.ValidString(r) {
		t.Errorf("clipped to %d bytes, valid UTF-8 %t", len(r), utf8.ValidString(r))
	}
	if _, err := NewRun(rb, "", nil, t0); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty run id: %v", err)
	}
	other := mustParse(t, good)
	if d := Next(other, run, v, t0); d.Kind != KindRunFailed {
		t.Errorf("run of another runbook: %+v", d)
	}
}

// TestJudge: the resume rule of each action, for a step sent under a
// leadership that is gone (one row an action and what the new leader
// sees).
func TestJudge(t *testing.T) {
	rb := mustParse(t, `
name: j
steps:
  - {id: s, action: pause}
  - {id: r, action: resume}
  - {id: n, action: notify, message: hi}
  - {id: w, action: switchover, to_node: b1}
  - {id: c, action: command, node: a1, run: "true"}
  - {id: d, action: drill}
`)
	for _, tc := range []struct {
		step    string
		view    func(v *View)
		kind    Kind
		applied bool
		reissue bool
		says    string
	}{
		{"s", func(v *View) { v.Paused, v.PausedBy = true, "coordinator:c1 for "+RunActor("h", "r1") }, KindStepDone, true, false, "failover paused=true (by coordinator:c1 for runbook h (run r1)): done"},
		{"s", func(v *View) { v.Paused, v.PausedBy = true, "admin:bob" }, KindStepDone, false, false, "failover paused=true (by admin:bob): done"},
		{"s", nil, KindStart, false, true, "not in effect, sent again (idempotent)"},
		{"r", nil, KindStepDone, true, false, "failover paused=false (by none): done"},
		{"r", func(v *View) { v.Paused = true }, KindStart, false, true, "sent again"},
		{"n", nil, KindStart, false, true, "receivers drop a repeat by key"},
		{"w", func(v *View) { c := newCluster(*v); c.switchTo("b1"); *v = c.v }, KindStepDone, true, false, "b1 is the primary: done"},
		{"w", nil, KindStepFailed, false, false, "the primary is still a1, not b1: not sent again"},
		{"w", func(v *View) { c := newCluster(*v); c.switchTo("b2"); *v = c.v }, KindStepFailed, true, false, "the primary is b2, not b1: not sent again"},
		{"w", func(v *View) { v.SwitchoverInFlight = true }, KindWait, false, false, "a switchover is in flight"},
		{"c", nil, KindStart, false, true, "the agent is asked again (report only: never started twice)"},
		{"d", func(v *View) { v.Jobs = []Job{{ID: "d9", Kind: "drill", Started: t0, Result: "failed"}} }, KindStepFailed, false, false, "drill d9 ended failed"},
	} {
		run := mustRun(t, rb, nil)
		i := run.index(tc.step)
		for k := range run.Steps[:i] {
			run.Steps[k].Status = StatusDone
		}
		run.Steps[i].Status, run.Steps[i].Previous = StatusRunning, "a1"
		run.Steps[i].Exec = Exec{Started: t0, Leader: "c1@1", Target: "b1"}
		v := twoRegions()
		v.Leader = "c2@2"
		if tc.view != nil {
			tc.view(&v)
		}
		d := Next(rb, run, v, t0.Add(time.Second))
		if d.Kind != tc.kind || d.Applied != tc.applied || d.Reissue != tc.reissue || !strings.Contains(d.Reason, tc.says) {
			t.Errorf("%s: %+v; want %s applied=%t reissue=%t %q", tc.step, d, tc.kind, tc.applied, tc.reissue, tc.says)
			continue
		}
		if d.Kind == KindWait {
			continue
		}
		if _, err := Apply(run, d, t0.Add(time.Second)); err != nil {
			t.Errorf("%s: %v", tc.step, err)
		}
		// The same step under the leadership that sent it, before its
		// timeout, awaits its outcome instead.
		v.Leader = "c1@1"
		if d := Next(rb, run, v, t0.Add(time.Second)); d.Kind != KindWait && tc.step != "d" {
			t.Errorf("%s under its own leader: %+v", tc.step, d)
		}
	}
}

// TestWithRef: a drill step's run is found by its ref, not by time.
func TestWithRef(t *testing.T) {
	rb := mustParse(t, "name: d\nsteps:\n  - {id: d, action: drill}\n")
	run := mustRun(t, rb, nil)
	v := twoRegions()
	run, err := Apply(run, Next(rb, run, v, t0), t0)
	if err != nil {
		t.Fatal(err)
	}
	if run, err = WithRef(run, "d", false, "d2"); err != nil {
		t.Fatal(err)
	}
	v.Jobs = []Job{{ID: "d1", Kind: "drill", Started: t0, Result: "failed"}, {ID: "d2", Kind: "drill", Started: t0, Result: "ok"}}
	if d := Next(rb, run, v, t0.Add(time.Minute)); d.Kind != KindStepDone || !strings.Contains(d.Reason, "drill d2 ended ok") {
		t.Errorf("by ref: %+v", d)
	}
	if _, err := WithRef(run, "zz", false, "x"); !errors.Is(err, ErrStale) {
		t.Errorf("unknown step: %v", err)
	}
}

// TestRollbackSwitchoverWaitsForTarget: after a switchover whose
// validation failed, the old primary may still be rejoining: the
// rollback's switchover back to it waits for it to be a healthy replica
// (up to the switchover's timeout from when the run began rolling back),
// then goes; past the timeout it fails.
func TestRollbackSwitchoverWaitsForTarget(t *testing.T) {
	rb := mustParse(t, `
name: v
steps:
  - id: move
    action: switchover
    to_node: b1
    validate: {condition: primary_in_region, region: eu, timeout: 30s}
    rollback: {action: switchover, to_previous: true, timeout: 2m}
`)
	run := mustRun(t, rb, nil)
	v := twoRegions()
	step := func(d Decision, now time.Time) {
		t.Helper()
		var err error
		if run, err = Apply(run, d, now); err != nil {
			t.Fatalf("apply %s: %v", d.Kind, err)
		}
	}
	d := Next(rb, run, v, t0)
	step(d, t0)
	if run, _ = Record(rb, run, "move", false, Outcome{OK: true}, t0); run.Steps[0].Status != StatusValidating {
		t.Fatalf("after the switchover: %+v", run.Steps[0])
	}
	// The switchover happened: b1 primary, a1 rejoining (not healthy).
	v.Primary = "b1"
	v.Members[0].Role, v.Members[0].Healthy = RoleReplica, false
	v.Members[2].Role = RolePrimary
	failedAt := t0.Add(31 * time.Second)
	d = Next(rb, run, v, failedAt)
	if d.Kind != KindStepFailed {
		t.Fatalf("validation: %+v", d)
	}
	step(d, failedAt)
	if d = Next(rb, run, v, failedAt.Add(10*time.Second)); d.Kind != KindWait || !strings.Contains(d.Reason, "rollback's switchover target") ||
		!d.Until.Equal(failedAt.Add(2*time.Minute)) {
		t.Fatalf("a1 still rejoining: %+v, want a wait until %s", d, failedAt.Add(2*time.Minute))
	}
	if d = Next(rb, run, v, failedAt.Add(2*time.Minute)); d.Kind != KindRollbackFail {
		t.Fatalf("past the rollback's timeout: %+v", d)
	}
	v.Members[0].Healthy = true
	if d = Next(rb, run, v, failedAt.Add(time.Minute)); d.Kind != KindRollback || d.Target != "a1" {
		t.Fatalf("a1 healthy again: %+v, want the rollback's switchover to a1", d)
	}
}

// TestSettlingViewWaits: right after a leadership change the leader's
// view of the members is still filling: a switchover not yet sent waits
// instead of failing on a primary without a report.
func TestSettlingViewWaits(t *testing.T) {
	rb := mustParse(t, "name: s\nsteps:\n  - {id: move, action: switchover, to_node: b1}\n")
	run := mustRun(t, rb, nil)
	v := twoRegions()
	v.Settling = true
	if d := Next(rb, run, v, t0); d.Kind != KindWait || !strings.Contains(d.Reason, "still filling") {
		t.Fatalf("settling: %+v, want a wait", d)
	}
	v.Settling = false
	if d := Next(rb, run, v, t0); d.Kind != KindStart || d.Target != "b1" {
		t.Fatalf("settled: %+v, want the switchover to b1", d)
	}
}

// TestSettlingViewJudgesNoCondition: while a new leader's view is still
// filling, a wait or a validation is neither met nor failed on it: the
// repositories' state comes from the primary's report (none yet: "all 0
// repositories caught up" would pass the wait at once) and the replicas
// look unhealthy (a deadline passing then would fail the step).
func TestSettlingViewJudgesNoCondition(t *testing.T) {
	rb := mustParse(t, "name: s\nsteps:\n  - {id: repos, action: wait, condition: repos_caught_up, timeout: 1m}\n"+
		"  - {id: move, action: switchover, to_node: b1, validate: {condition: primary_in_region, region: us, timeout: 1m}}\n")
	run := mustRun(t, rb, nil)
	v := twoRegions()
	v.Settling, v.Repos = true, nil
	if d := Next(rb, run, v, t0); d.Kind != KindWait {
		t.Fatalf("pending wait on a settling view: %+v, want a wait", d)
	}
	// Begun under the previous leader, its deadline passed meanwhile.
	run.Steps[0].Status, run.Steps[0].Exec = StatusRunning, Exec{Started: t0.Add(-2 * time.Minute), Leader: "c0@1"}
	if d := Next(rb, run, v, t0); d.Kind != KindWait {
		t.Fatalf("running wait on a settling view: %+v, want a wait", d)
	}
	run.Steps[0].Status = StatusDone
	run.Steps[1].Status, run.Steps[1].ValidateStarted, run.Steps[1].Applied = StatusValidating, t0.Add(-2*time.Minute), true
	v.Members = nil
	if d := Next(rb, run, v, t0); d.Kind != KindWait {
		t.Fatalf("validation on a settling view: %+v, want a wait", d)
	}
}

// TestPauseByAnotherNotRolledBack: a pause step sent under a leadership
// that died finds the cluster paused, but by an operator (PausedBy names
// no run of this runbook): the step is done without Applied, so that a
// rollback does not resume the operator's pause (automatic failover back
// on in the middle of a maintenance).
func TestPauseByAnotherNotRolledBack(t *testing.T) {
	rb := mustParse(t, "name: p\nsteps:\n  - {id: hold, action: pause, rollback: {action: resume}}\n")
	run := mustRun(t, rb, nil)
	run.Steps[0].Status, run.Steps[0].Exec = StatusRunning, Exec{Started: t0, Leader: "c0@1"}
	v := twoRegions()
	v.Paused, v.PausedBy = true, "admin:bob"
	if d := Next(rb, run, v, t0.Add(time.Second)); d.Kind != KindStepDone || d.Applied {
		t.Fatalf("paused by admin:bob: %+v, want done without Applied", d)
	}
	v.PausedBy = "coordinator:c0 for " + RunActor("p", run.ID)
	if d := Next(rb, run, v, t0.Add(time.Second)); d.Kind != KindStepDone || !d.Applied {
		t.Fatalf("paused by the run: %+v, want done, Applied", d)
	}
	// The leader carrying the pause out found it paused already.
	out, err := Record(rb, run, "hold", false, Outcome{OK: true, Unchanged: true, Message: "already paused"}, t0.Add(time.Second))
	if err != nil || out.Steps[0].Status != StatusDone || out.Steps[0].Applied {
		t.Fatalf("unchanged outcome: %+v, %v; want done without Applied", out.Steps[0], err)
	}
}

// TestSwitchoverWaitsForTarget: a switchover step whose target is
// briefly unusable (here: the only replica of the region is unhealthy)
// waits for one, from the run's last recorded change up to the step's
// timeout, then fails; a usable target is switched to at once.
func TestSwitchoverWaitsForTarget(t *testing.T) {
	rb := mustParse(t, `
name: w
steps:
  - {id: note, action: notify, message: hi}
  - {id: move, action: switchover, to_region: us, timeout: 1m}
`)
	run := mustRun(t, rb, nil)
	v := twoRegions()
	var err error
	d := Next(rb, run, v, t0)
	if run, err = Apply(run, d, t0); err != nil {
		t.Fatal(err)
	}
	if run, err = Record(rb, run, "note", false, Outcome{OK: true}, t0); err != nil {
		t.Fatal(err)
	}
	v.Members[2].Healthy, v.Members[3].Healthy = false, false // b1, b2: no usable replica in us
	if d = Next(rb, run, v, t0.Add(10*time.Second)); d.Kind != KindWait || !strings.Contains(d.Reason, "waiting for a switchover target") ||
		!d.Until.Equal(t0.Add(time.Minute)) {
		t.Fatalf("no usable target yet: %+v, want a wait until %s", d, t0.Add(time.Minute))
	}
	if d = Next(rb, run, v, t0.Add(time.Minute)); d.Kind != KindStepFailed {
		t.Fatalf("past the step's timeout: %+v, want the step failed", d)
	}
	v.Members[3].Healthy = true
	if d = Next(rb, run, v, t0.Add(20*time.Second)); d.Kind != KindStart || d.Target != "b2" {
		t.Fatalf("b2 usable: %+v, want the switchover to b2", d)
	}
}
