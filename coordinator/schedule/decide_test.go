package schedule

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/policy"
)

func at(s string) time.Time {
	t, err := time.Parse("2006-01-02 15:04:05", s)
	if err != nil {
		panic(err)
	}
	return t
}

func tiers(ts ...policy.Tier) policy.Policy {
	p := policy.Policy{Tiers: ts, PITRWindow: policy.DefaultPITR}
	p.Normalize()
	return p
}

var (
	hourly  = policy.Tier{Name: "hourly", Type: policy.TypeIncr, Schedule: "0 * * * *", KeepAge: 7 * policy.Day}
	daily   = policy.Tier{Name: "daily", Type: policy.TypeFull, Schedule: "15 1 * * *", KeepAge: 30 * policy.Day}
	nightly = policy.Tier{Name: "nightly", Type: policy.TypeDiff, Schedule: "30 2 * * *", KeepAge: 30 * policy.Day,
		RunOn: policy.RunOnStandbyOnly, Repos: []string{"local", "s3-eu"}}
	onPrimary = policy.Tier{Name: "prim", Type: policy.TypeFull, Schedule: "0 4 * * *", KeepCount: 3, RunOn: policy.RunOnPrimary}
)

// Members of the usual three-node cluster: pg-1 primary, pg-2 and pg-3
// replicas, all healthy.
func healthy() []Member {
	return []Member{
		{Name: "pg-1", Role: RolePrimary, Healthy: true, Connectable: true, Timeline: 1, Stream: true},
		{Name: "pg-2", Role: RoleReplica, Healthy: true, Connectable: true, LagBytes: 4096, ReplayLag: 4096, Timeline: 1, Stream: true},
		{Name: "pg-3", Role: RoleReplica, Healthy: true, Connectable: true, LagBytes: 512, ReplayLag: 512, Timeline: 1, Stream: true},
	}
}

func with(ms []Member, name string, f func(*Member)) []Member {
	for i := range ms {
		if ms[i].Name == name {
			f(&ms[i])
		}
	}
	return ms
}

// cleaning is r with its cancel order sent at cancelAt.
func cleaning(r Run, cancelAt string) Run {
	r.CancelAt, r.CancelResult = at(cancelAt), ResultTimeout
	return r
}

// notStarted is n runs of tier that never started, a minute apart from
// first.
func notStarted(tier, first string, n int) []Run {
	var out []Run
	for i := range n {
		out = append(out, ran(tier, "incr", at(first).Add(time.Duration(i)*time.Minute).Format("2006-01-02 15:04:05"), ResultNotStarted))
	}
	return out
}

// due is r with the leader's own deadline.
func due(r Run, d string) Run {
	r.Due = at(d)
	return r
}

func fullOK(startedAt string) Run {
	s := at(startedAt)
	return Run{ID: "f-" + startedAt, Tier: "daily", Type: policy.TypeFull, Node: "pg-3", Slot: s, Started: s,
		Finished: s.Add(time.Hour), Result: ResultOK, Timeout: 12 * time.Hour}
}

func ran(tier, typ, startedAt, result string) Run {
	s := at(startedAt)
	r := Run{ID: tier + "-" + startedAt, Tier: tier, Type: typ, Node: "pg-3", Slot: s, Started: s, Result: result, Timeout: 2 * time.Hour}
	if Finished(result) {
		r.Finished = s.Add(time.Minute)
	}
	return r
}

// TestDecide reads like a list of incidents: what the leader knows of one
// cluster, and what it does about its backups, with the reason it gives.
func TestDecide(t *testing.T) {
	cases := []struct {
		name string
		in   Input
		// want is "action tier type node slot×missed" ("none" alone for
		// None; "cancel <run id> <result>" for Cancel).
		want string
		// why is a fragment of the reasons.
		why string
	}{
		{name: "#1 hourly incr due on time, a full exists: least-lagging replica pg-3",
			in: Input{Now: at("2026-05-01 10:00:03"), Policy: tiers(hourly, daily), Primary: "pg-1", Members: healthy(),
				Runs: []Run{fullOK("2026-05-01 01:15:00"), ran("hourly", "incr", "2026-05-01 09:00:01", ResultOK)}},
			want: "start hourly incr pg-3 2026-05-01T10:00:00Z×1", why: "on replica pg-3, on the primary's timeline 1, replay lag 512 bytes, the least"},
		{name: "#2 not yet: the last hourly run started after the slot",
			in: Input{Now: at("2026-05-01 10:30:00"), Policy: tiers(hourly, daily), Primary: "pg-1", Members: healthy(),
				Runs: []Run{fullOK("2026-05-01 01:15:00"), ran("hourly", "incr", "2026-05-01 10:00:01", ResultOK)}},
			want: "none", why: "nothing due; next: tier hourly at 2026-05-01T11:00:00Z"},
		{name: "#3 paused cluster: nothing, even with tiers due",
			in: Input{Now: at("2026-05-01 10:00:03"), Policy: tiers(hourly, daily), Primary: "pg-1", Members: healthy(), Paused: true,
				Runs: []Run{fullOK("2026-05-01 01:15:00"), ran("hourly", "incr", "2026-05-01 09:00:01", ResultOK)}},
			want: "none", why: "cluster paused"},
		{name: "#4 a run in flight within its timeout: never two backups at once",
			in: Input{Now: at("2026-05-01 10:00:03"), Policy: tiers(hourly, daily), Primary: "pg-1", Members: healthy(),
				Runs: []Run{fullOK("2026-05-01 01:15:00"), ran("daily", "full", "2026-05-01 09:30:00", ResultRunning)}},
			want: "none", why: "is in flight; never two backups of a cluster at once"},
		{name: "#5 a run in flight over its timeout (a dead leader's intent, or a silent agent): cancel as timed out",
			in: Input{Now: at("2026-05-01 11:30:00"), Policy: tiers(hourly, daily), Primary: "pg-1", Members: healthy(),
				Runs: []Run{fullOK("2026-05-01 01:15:00"), ran("hourly", "incr", "2026-05-01 09:00:00", ResultRunning)}},
			want: "cancel hourly-2026-05-01 09:00:00 timeout", why: "over its timeout of 2h"},
		{name: "#6 over the timeout but within the grace: still waiting for the agent's own answer",
			in: Input{Now: at("2026-05-01 11:00:30"), Policy: tiers(hourly, daily), Primary: "pg-1", Members: healthy(), Grace: time.Minute,
				Runs: []Run{fullOK("2026-05-01 01:15:00"), ran("hourly", "incr", "2026-05-01 09:00:00", ResultRunning)}},
			want: "none", why: "in flight"},
		{name: "#7 two-week outage: one catch-up run per tier, the one waiting longest first",
			in: Input{Now: at("2026-05-15 09:00:10"), Policy: tiers(hourly, daily), Primary: "pg-1", Members: healthy(),
				Runs: []Run{fullOK("2026-05-01 01:15:00"), ran("hourly", "incr", "2026-05-01 09:00:00", ResultOK)}},
			want: "start hourly incr pg-3 2026-05-01T10:00:00Z×336", why: "336 slots missed, one catch-up run"},
		{name: "#8 after the hourly's catch-up run, the daily catches up once too",
			in: Input{Now: at("2026-05-15 09:20:00"), Policy: tiers(hourly, daily), Primary: "pg-1", Members: healthy(),
				Runs: []Run{fullOK("2026-05-01 01:15:00"), ran("hourly", "incr", "2026-05-15 09:00:10", ResultOK)}},
			want: "start daily full pg-3 2026-05-02T01:15:00Z×14", why: "14 slots missed"},
		{name: "#8a same slot: the full before the incr",
			in: Input{Now: at("2026-05-01 01:00:00"), Policy: tiers(hourly, policy.Tier{Name: "d1", Type: policy.TypeFull, Schedule: "0 1 * * *", KeepCount: 3}), Primary: "pg-1", Members: healthy(),
				Runs: []Run{ran("d1", "full", "2026-04-30 01:00:00", ResultOK), ran("hourly", "incr", "2026-05-01 00:00:00", ResultOK)}},
			want: "start d1 full pg-3 2026-05-01T01:00:00Z×1"},
		{name: "#9 incr tier with no successful full anywhere: runs a full, and says why",
			in: Input{Now: at("2026-05-01 10:00:03"), Policy: tiers(hourly, daily), Primary: "pg-1", Members: healthy(),
				Runs: []Run{ran("daily", "full", "2026-05-01 01:15:00", ResultFailed), ran("hourly", "incr", "2026-05-01 09:00:01", ResultFailed)}},
			want: "start hourly full pg-3 2026-05-01T10:00:00Z×1", why: "runs a full instead of incr: no successful full backup is known"},
		{name: "#10 incr tier, no full among the runs but one known in the repository: stays incr",
			in: Input{Now: at("2026-05-01 10:00:03"), Policy: tiers(hourly, daily), Primary: "pg-1", Members: healthy(), FullKnown: true,
				Runs: []Run{ran("daily", "full", "2026-05-01 01:15:00", ResultFailed), ran("hourly", "incr", "2026-05-01 09:00:01", ResultOK)}},
			want: "start hourly incr pg-3 2026-05-01T10:00:00Z×1"},
		{name: "#11 prefer-standby, every replica unhealthy: the primary",
			in: Input{Now: at("2026-05-01 10:00:03"), Policy: tiers(hourly, daily), Primary: "pg-1",
				Members: with(with(healthy(), "pg-2", func(m *Member) { m.Healthy = false }), "pg-3", func(m *Member) { m.Fenced, m.Role = true, "fenced" }),
				Runs:    []Run{fullOK("2026-05-01 01:15:00"), ran("hourly", "incr", "2026-05-01 09:00:01", ResultOK)}},
			want: "start hourly incr pg-1 2026-05-01T10:00:00Z×1", why: "on the primary pg-1: no healthy replica (pg-2 is not a healthy replica (role replica), pg-3"},
		{name: "#12 prefer-standby, no healthy member at all: the tier waits (stays due, one run later)",
			in: Input{Now: at("2026-05-01 10:00:03"), Policy: tiers(hourly, daily), Primary: "pg-1",
				Members: with(with(with(healthy(), "pg-1", func(m *Member) { m.Connectable = false }), "pg-2", func(m *Member) { m.Healthy = false }), "pg-3", func(m *Member) { m.Healthy = false }),
				Runs:    []Run{fullOK("2026-05-01 01:15:00"), ran("hourly", "incr", "2026-05-01 09:00:01", ResultOK)}},
			want: "none", why: "stays due and runs once a member can take it"},
		{name: "#13 standby-only with no healthy replica: the slot is skipped and recorded",
			in: Input{Now: at("2026-05-01 02:30:01"), Policy: tiers(daily, nightly), Primary: "pg-1",
				Members: []Member{{Name: "pg-1", Role: RolePrimary, Healthy: true, Connectable: true}, {Name: "pg-2", Role: "stopped"}},
				Runs:    []Run{fullOK("2026-05-01 01:15:00"), ran("nightly", "diff", "2026-04-30 02:30:00", ResultOK)}},
			want: "skip nightly diff - 2026-05-01T02:30:00Z×1 [local s3-eu]", why: "run_on standby-only: no healthy replica (pg-2 is not a healthy replica (role stopped)); slot skipped"},
		{name: "#14 standby-only with a replica: it runs there, to the tier's repositories",
			in: Input{Now: at("2026-05-01 02:30:01"), Policy: tiers(daily, nightly), Primary: "pg-1", Members: healthy(),
				Runs: []Run{fullOK("2026-05-01 01:15:00"), ran("nightly", "diff", "2026-04-30 02:30:00", ResultOK)}},
			want: "start nightly diff pg-3 2026-05-01T02:30:00Z×1 [local s3-eu]"},
		{name: "#15 run_on primary: the primary although replicas are healthy",
			in: Input{Now: at("2026-05-01 04:00:00"), Policy: tiers(onPrimary), Primary: "pg-1", Members: healthy(),
				Runs: []Run{ran("prim", "full", "2026-04-30 04:00:00", ResultOK)}},
			want: "start prim full pg-1 2026-05-01T04:00:00Z×1", why: "run_on primary"},
		{name: "#16 run_on primary with the primary down (failover under way): waits",
			in: Input{Now: at("2026-05-01 04:00:00"), Policy: tiers(onPrimary), Primary: "pg-1",
				Members: with(healthy(), "pg-1", func(m *Member) { m.Healthy, m.Role = false, "stopped" }),
				Runs:    []Run{ran("prim", "full", "2026-04-30 04:00:00", ResultOK)}},
			want: "none", why: "run_on primary: the primary pg-1 is not healthy"},
		{name: "#17 a failed run counts as the tier's last: no retry loop before the next slot",
			in: Input{Now: at("2026-05-01 10:20:00"), Policy: tiers(hourly, daily), Primary: "pg-1", Members: healthy(),
				Runs: []Run{fullOK("2026-05-01 01:15:00"), ran("hourly", "incr", "2026-05-01 10:00:02", ResultFailed)}},
			want: "none", why: "next: tier hourly at 2026-05-01T11:00:00Z"},
		{name: "#18 the default policy on a cluster created at 09:30 that never ran: the next slot, not every tier at once",
			in:   Input{Now: at("2026-05-01 10:05:00"), Policy: policy.Default(), Since: at("2026-05-01 09:30:00"), Primary: "pg-1", Members: healthy()},
			want: "start hourly full pg-3 2026-05-01T10:05:00Z×1", why: "runs a full instead of incr"},
		{name: "#19 the default policy on a new cluster, before the first slot: nothing",
			in:   Input{Now: at("2026-05-01 09:40:00"), Policy: policy.Default(), Since: at("2026-05-01 09:30:00"), Primary: "pg-1", Members: healthy()},
			want: "none", why: "next: tier hourly at 2026-05-01T10:05:00Z"},
		{name: "#20 equal lag: replicas by name",
			in: Input{Now: at("2026-05-01 10:00:03"), Policy: tiers(hourly, daily), Primary: "pg-1",
				Members: with(healthy(), "pg-2", func(m *Member) { m.LagBytes, m.ReplayLag = 512, 512 }),
				Runs:    []Run{fullOK("2026-05-01 01:15:00"), ran("hourly", "incr", "2026-05-01 09:00:01", ResultOK)}},
			want: "start hourly incr pg-2 2026-05-01T10:00:00Z×1"},
		{name: "#21 a writable member that is not the recorded primary never runs it",
			in: Input{Now: at("2026-05-01 04:00:00"), Policy: tiers(onPrimary), Primary: "pg-2",
				Members: []Member{{Name: "pg-1", Role: RolePrimary, Healthy: true, Connectable: true}, {Name: "pg-2", Role: "stopped"}},
				Runs:    []Run{ran("prim", "full", "2026-04-30 04:00:00", ResultOK)}},
			want: "none", why: "the primary pg-2 is not healthy"},
		// Review of issue 16.
		{name: "#22 a replica off the primary's timeline is not preferred, however small its lag",
			in: Input{Now: at("2026-05-01 10:00:03"), Policy: tiers(hourly, daily), Primary: "pg-1",
				Members: with(with(healthy(), "pg-1", func(m *Member) { m.Timeline = 2 }), "pg-2", func(m *Member) { m.Timeline = 2 }),
				Runs:    []Run{fullOK("2026-05-01 01:15:00"), ran("hourly", "incr", "2026-05-01 09:00:01", ResultOK)}},
			want: "start hourly incr pg-2 2026-05-01T10:00:00Z×1", why: "on the primary's timeline 2, replay lag 4096 bytes"},
		{name: "#23 replay lag, not receive lag, orders the replicas",
			in: Input{Now: at("2026-05-01 10:00:03"), Policy: tiers(hourly, daily), Primary: "pg-1",
				Members: with(healthy(), "pg-2", func(m *Member) { m.ReplayLag = 100 }),
				Runs:    []Run{fullOK("2026-05-01 01:15:00"), ran("hourly", "incr", "2026-05-01 09:00:01", ResultOK)}},
			want: "start hourly incr pg-2 2026-05-01T10:00:00Z×1", why: "replay lag 100 bytes, the least"},
		{name: "#24 a replica whose agent has no command stream open comes after one that has",
			in: Input{Now: at("2026-05-01 10:00:03"), Policy: tiers(hourly, daily), Primary: "pg-1",
				Members: with(healthy(), "pg-3", func(m *Member) { m.Stream = false }),
				Runs:    []Run{fullOK("2026-05-01 01:15:00"), ran("hourly", "incr", "2026-05-01 09:00:01", ResultOK)}},
			want: "start hourly incr pg-2 2026-05-01T10:00:00Z×1"},
		{name: "#25 a run that never started does not take the tier's slot: tried again",
			in: Input{Now: at("2026-05-01 10:00:10"), Policy: tiers(hourly, daily), Primary: "pg-1", Members: healthy(),
				Runs: []Run{fullOK("2026-05-01 01:15:00"), ran("hourly", "incr", "2026-05-01 09:00:01", ResultOK),
					ran("hourly", "incr", "2026-05-01 10:00:02", ResultNotStarted)}},
			want: "start hourly incr pg-3 2026-05-01T10:00:00Z×1"},
		{name: "#25b a run that never started is tried again only after Retry",
			in: Input{Now: at("2026-05-01 10:00:20"), Policy: tiers(hourly, daily), Primary: "pg-1", Members: healthy(), Retry: 30 * time.Second,
				Runs: []Run{fullOK("2026-05-01 01:15:00"), ran("hourly", "incr", "2026-05-01 09:00:01", ResultOK),
					ran("hourly", "incr", "2026-05-01 10:00:02", ResultNotStarted)}},
			want: "none", why: "did not start (18s ago); tried again at 2026-05-01T10:00:32Z"},
		{name: "#25c refused again and again: the wait doubles with each run of the tier that never started since its last run (30s, 1m, 2m, 4m, 8m...), so an agent refusing every order does not flush the bounded record",
			in: Input{Now: at("2026-05-01 10:10:00"), Policy: tiers(hourly, daily), Primary: "pg-1", Members: healthy(), Retry: 30 * time.Second,
				Runs: []Run{fullOK("2026-05-01 01:15:00"), ran("hourly", "incr", "2026-05-01 09:00:01", ResultOK),
					ran("hourly", "incr", "2026-05-01 10:00:02", ResultNotStarted), ran("hourly", "incr", "2026-05-01 10:00:32", ResultNotStarted),
					ran("hourly", "incr", "2026-05-01 10:01:32", ResultNotStarted), ran("hourly", "incr", "2026-05-01 10:03:32", ResultNotStarted),
					ran("hourly", "incr", "2026-05-01 10:07:32", ResultNotStarted)}},
			want: "none", why: "tried again at 2026-05-01T10:15:32Z"},
		{name: "#25d the doubling stops at MaxRetry (an hour)",
			in: Input{Now: at("2026-05-01 12:00:10"), Policy: tiers(hourly, daily), Primary: "pg-1", Members: healthy(), Retry: 30 * time.Second,
				Runs: append(notStarted("hourly", "2026-05-01 09:00:02", 12), fullOK("2026-05-01 01:15:00"),
					ran("hourly", "incr", "2026-05-01 08:00:01", ResultOK), ran("hourly", "incr", "2026-05-01 11:30:00", ResultNotStarted))},
			want: "none", why: "tried again at 2026-05-01T12:30:00Z"},
		{name: "#26 a run cleaning up after its cancel blocks the cluster until its clean-up deadline",
			in: Input{Now: at("2026-05-01 12:02:00"), Policy: tiers(hourly, daily), Primary: "pg-1", Members: healthy(), Cleanup: 2 * time.Minute,
				Runs: []Run{fullOK("2026-05-01 01:15:00"), cleaning(ran("hourly", "incr", "2026-05-01 10:00:02", ResultRunning), "2026-05-01 12:01:02")}},
			want: "none", why: "is cleaning up after its cancel order"},
		{name: "#27 past its clean-up deadline without an answer: ended with the cancel's result",
			in: Input{Now: at("2026-05-01 12:03:02"), Policy: tiers(hourly, daily), Primary: "pg-1", Members: healthy(), Cleanup: 2 * time.Minute,
				Runs: []Run{fullOK("2026-05-01 01:15:00"), cleaning(ran("hourly", "incr", "2026-05-01 10:00:02", ResultRunning), "2026-05-01 12:01:02")}},
			want: "end hourly-2026-05-01 10:00:02 timeout", why: "no answer to its cancel order within the clean-up deadline"},
		{name: "#27b paused: a cleaning run past its clean-up deadline still ends (bookkeeping, not a backup; a manual run would wait for it forever)",
			in: Input{Now: at("2026-05-01 12:03:02"), Policy: tiers(hourly, daily), Primary: "pg-1", Members: healthy(), Cleanup: 2 * time.Minute, Paused: true,
				Runs: []Run{fullOK("2026-05-01 01:15:00"), cleaning(ran("hourly", "incr", "2026-05-01 10:00:02", ResultRunning), "2026-05-01 12:01:02")}},
			want: "end hourly-2026-05-01 10:00:02 timeout", why: "no answer to its cancel order within the clean-up deadline"},
		{name: "#28 a run on a member no longer in the cluster ends at once",
			in: Input{Now: at("2026-05-01 10:30:00"), Policy: tiers(hourly, daily), Primary: "pg-1", Members: healthy(), Known: []string{"pg-1", "pg-2"},
				Runs: []Run{fullOK("2026-05-01 01:15:00"), ran("hourly", "incr", "2026-05-01 10:00:02", ResultRunning)}},
			want: "end hourly-2026-05-01 10:00:02 cancelled", why: "pg-3 is no longer a member of the cluster"},
		{name: "#29 an inherited run is over its timeout when the leader's own deadline (Due) says so, not the old leader's start",
			in: Input{Now: at("2026-05-01 12:30:00"), Policy: tiers(hourly, daily), Primary: "pg-1", Members: healthy(), Grace: time.Minute,
				Runs: []Run{fullOK("2026-05-01 01:15:00"), due(ran("hourly", "incr", "2026-05-01 10:00:02", ResultRunning), "2026-05-01 12:29:30")}},
			want: "none", why: "is in flight"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.in)
			if got := show(d); got != tc.want {
				t.Errorf("decision %q, want %q (reasons: %s)", got, tc.want, d.Reason())
			}
			if !strings.Contains(d.Reason(), tc.why) {
				t.Errorf("reasons %q lack %q", d.Reason(), tc.why)
			}
			if len(d.Reasons) == 0 {
				t.Errorf("a decision without a reason")
			}
		})
	}
}

func show(d Decision) string {
	switch d.Action {
	case None:
		return "none"
	case Cancel, End:
		return fmt.Sprintf("%s %s %s", d.Action, d.RunID, d.Result)
	}
	node := d.Node
	if node == "" {
		node = "-"
	}
	s := fmt.Sprintf("%s %s %s %s %s×%d", d.Action, d.Tier, d.Type, node, d.Slot.UTC().Format(time.RFC3339), d.Missed)
	if len(d.Repos) > 0 {
		s += fmt.Sprintf(" %v", d.Repos)
	}
	return s
}

// TestManual: an operator's run now, and its refusals.
func TestManual(t *testing.T) {
	base := Input{Now: at("2026-05-01 10:30:00"), Policy: tiers(hourly, daily, nightly), Primary: "pg-1", Members: healthy(),
		Runs: []Run{fullOK("2026-05-01 01:15:00")}}
	d, err := Manual(base, "daily")
	if err != nil || show(d) != "start daily full pg-3 0001-01-01T00:00:00Z×0" {
		t.Fatalf("manual daily: %s, %v", show(d), err)
	}
	paused := base
	paused.Paused = true
	if _, err := Manual(paused, "hourly"); err != nil {
		t.Fatalf("a manual run is allowed while paused: %v", err)
	}
	_, err = Manual(base, "yearly")
	if !errors.Is(err, ErrUnknownTier) || !strings.Contains(err.Error(), "the cluster's tiers are hourly, daily, nightly") {
		t.Fatalf("unknown tier: %v", err)
	}
	busy := base
	busy.Runs = append(busy.Runs, ran("hourly", "incr", "2026-05-01 10:00:00", ResultRunning))
	_, err = Manual(busy, "daily")
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "run hourly-2026-05-01 10:00:00 of tier hourly (incr) on pg-3, started 30m ago") {
		t.Fatalf("busy: %v", err)
	}
	lone := base
	lone.Members = lone.Members[:1]
	_, err = Manual(lone, "nightly")
	if !errors.Is(err, ErrNoCandidate) || !strings.Contains(err.Error(), "run_on standby-only: no healthy replica") {
		t.Fatalf("standby-only without a replica: %v", err)
	}
	noFull := base
	noFull.Runs = nil
	d, err = Manual(noFull, "hourly")
	if err != nil || d.Type != policy.TypeFull || !strings.Contains(d.Reason(), "runs a full instead of incr") {
		t.Fatalf("manual incr with no full: %s %v", show(d), err)
	}
}
