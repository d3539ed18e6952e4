package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/policy"
	"github.com/pgdr/pgdr/pkg/duration"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// DrillsJSON is `pgdrctl drills --json`: per cluster, its recorded
// restore drills oldest first.
type DrillsJSON struct {
	Clusters []ClusterDrillsJSON `json:"clusters"`
}

// ClusterDrillsJSON is one cluster's drills.
type ClusterDrillsJSON struct {
	Cluster string      `json:"cluster"`
	Drills  []DrillJSON `json:"drills"`
}

// DrillJSON is one drill. Times are RFC 3339 in UTC ("" = not yet).
// Result is "running" while in flight. Backup is what the agent restored
// (else what was asked: Tier or BackupID). Timings are the agent's, in
// seconds (RTO evidence); RPOSeconds is the age of the newest restored
// commit against the target (-1: not measured); AmcheckOK is null when
// pg_amcheck did not run.
type DrillJSON struct {
	ID           string            `json:"id"`
	Node         string            `json:"node"`
	Tier         string            `json:"tier"`
	BackupID     string            `json:"backup_id"`
	Backup       string            `json:"backup"`
	Target       string            `json:"target"`
	Started      string            `json:"started"`
	Accepted     string            `json:"accepted"`
	Finished     string            `json:"finished"`
	Result       string            `json:"result"`
	Reason       string            `json:"reason"`
	Error        string            `json:"error"`
	RequestedBy  string            `json:"requested_by"`
	Timings      *DrillTimingsJSON `json:"timings"`
	RPOSeconds   float64           `json:"rpo_seconds"`
	AmcheckOK    *bool             `json:"amcheck_ok"`
	ChecksPassed uint32            `json:"checks_passed"`
	ChecksFailed uint32            `json:"checks_failed"`
}

// DrillTimingsJSON split a drill's time, in seconds.
type DrillTimingsJSON struct {
	FetchWrite float64 `json:"fetch_write_seconds"`
	Replay     float64 `json:"replay_seconds"`
	Checks     float64 `json:"checks_seconds"`
	Total      float64 `json:"total_seconds"`
}

func drillView(r *pgdrv1.DrillRun) DrillJSON {
	v := DrillJSON{ID: r.GetId(), Node: r.GetNode(), Tier: r.GetTier(), BackupID: r.GetBackupId(), Started: rfc3339(r.GetStartedAt()),
		Accepted: rfc3339(r.GetAcceptedAt()), Finished: rfc3339(r.GetFinishedAt()), Result: r.GetResult(), Error: r.GetError(),
		RequestedBy: r.GetRequestedBy(), Target: "latest", RPOSeconds: -1}
	if t := r.GetTargetTime(); t != nil {
		v.Target = rfc3339(t)
	}
	if v.Result == "" {
		v.Result = "running"
	}
	if rep := r.GetReport(); rep != nil {
		v.Backup, v.Reason, v.RPOSeconds = rep.GetBackup(), rep.GetReason(), rep.GetRpoSeconds()
		if rep.GetTarget() != "" {
			v.Target = rep.GetTarget()
		}
		if t := rep.GetTimings(); t != nil {
			v.Timings = &DrillTimingsJSON{FetchWrite: t.GetFetchWrite(), Replay: t.GetReplay(), Checks: t.GetChecks(), Total: t.GetTotal()}
		}
		if rep.GetAmcheckRun() {
			ok := rep.GetAmcheckOk()
			v.AmcheckOK = &ok
		}
		v.ChecksPassed, v.ChecksFailed = rep.GetChecksPassed(), rep.GetChecksFailed()
	}
	if v.Reason == "" && v.Result != "ok" {
		v.Reason = v.Error
	}
	return v
}

func listDrills(ctx context.Context, cl *client, cluster string) (*pgdrv1.ListDrillRunsResponse, error) {
	var resp *pgdrv1.ListDrillRunsResponse
	_, err := cl.call(ctx, "ListDrillRuns", func(ctx context.Context, c pgdrv1.AdminServiceClient) error {
		var err error
		resp, err = c.ListDrillRuns(ctx, &pgdrv1.ListDrillRunsRequest{Cluster: cluster})
		return err
	})
	return resp, err
}

func cmdDrills(ctx context.Context, e env, cf *connFlags, args []string) error {
	f := newCmdFlags(e, "drills", "drills [--cluster C] [--json]", `Lists the restore drills the Raft leader recorded, oldest first: node,
backup, target, start, result (running, ok, failed, timeout, cancelled,
not_started) and reason, the time split into fetch/write, replay and checks
(RTO evidence), the RPO figure (age of the newest restored commit against the
target), pg_amcheck's verdict and the SQL checks passed and failed. Needs role
read.`, cf)
	cluster := f.String("cluster", "", "only this cluster")
	if _, err := f.parse(args, 0); err != nil {
		return err
	}
	cl, err := cf.client()
	if err != nil {
		return err
	}
	resp, err := listDrills(ctx, cl, *cluster)
	if err != nil {
		return err
	}
	v := DrillsJSON{Clusters: []ClusterDrillsJSON{}}
	for _, c := range resp.GetClusters() {
		cv := ClusterDrillsJSON{Cluster: c.GetCluster(), Drills: []DrillJSON{}}
		for _, r := range c.GetRuns() {
			cv.Drills = append(cv.Drills, drillView(r))
		}
		v.Clusters = append(v.Clusters, cv)
	}
	if f.json() {
		return printJSON(e.stdout, v)
	}
	return writeDrills(e.stdout, v)
}

func secs(v float64) string {
	return duration.Format(time.Duration(v * float64(time.Second)).Round(100 * time.Millisecond))
}

func writeDrills(w io.Writer, v DrillsJSON) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for i, c := range v.Clusters {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		fmt.Fprintf(tw, "cluster %s: %d drills\n", c.Cluster, len(c.Drills))
		if len(c.Drills) == 0 {
			continue
		}
		fmt.Fprintln(tw, "STARTED\tNODE\tBACKUP\tTARGET\tFETCH/WRITE\tREPLAY\tCHECKS\tTOTAL\tRPO\tAMCHECK\tSQL\tRESULT\tREASON")
		for _, r := range c.Drills {
			fw, rp, ck, tot := "-", "-", "-", "-"
			if t := r.Timings; t != nil {
				fw, rp, ck, tot = secs(t.FetchWrite), secs(t.Replay), secs(t.Checks), secs(t.Total)
			}
			rpo, am := "-", "-"
			if r.RPOSeconds >= 0 {
				rpo = secs(r.RPOSeconds)
			}
			if r.AmcheckOK != nil {
				am = map[bool]string{true: "ok", false: "FAILED"}[*r.AmcheckOK]
			}
			backup := r.Backup
			if backup == "" {
				backup = r.BackupID
			}
			if backup == "" && r.Tier != "" {
				backup = "tier " + r.Tier
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\n", dash(r.Started), r.Node, dash(backup), r.Target,
				fw, rp, ck, tot, rpo, am, r.ChecksPassed, r.ChecksPassed+r.ChecksFailed, r.Result, dash(oneLine(r.Reason, historyMessageWidth)))
		}
	}
	if len(v.Clusters) == 0 {
		fmt.Fprintln(tw, "No clusters.")
	}
	return tw.Flush()
}

// DrillRunResultJSON is `pgdrctl drill run --json`: the drill as
// recorded when the command returned (with --wait, once it ended).
type DrillRunResultJSON struct {
	Cluster string    `json:"cluster"`
	Drill   DrillJSON `json:"drill"`
}

func cmdDrill(ctx context.Context, e env, cf *connFlags, args []string) error {
	if len(args) == 0 || args[0] != "run" {
		if len(args) > 0 && (args[0] == "--help" || args[0] == "-h" || args[0] == "-help") {
			fmt.Fprintln(e.stdout, "Usage: pgdrctl drill run [--cluster C] [--tier T|--backup ID] [--target-time T] [--node N] [--wait] [--json]\n\nRun 'pgdrctl drill run --help' for its flags; 'pgdrctl drills' lists the drills.")
			return nil
		}
		return usagef("want 'drill run' (the drills are listed by 'pgdrctl drills')")
	}
	f := newCmdFlags(e, "drill run", "drill run [--cluster C] [--tier T|--backup ID] [--target-time T] [--node N] [--wait] [--json]", `Has the Raft leader order a restore drill now: the drill node restores the
backup (the newest of --tier, --backup, or the latest) into a scratch directory
on a free port, replays WAL to --target-time (default: the end of the
archive), runs pg_amcheck and the checks, then removes the scratch copy. The
node is --node, else a healthy standby (prefer-standby), else the primary.
Refused while another drill of the cluster runs. --wait waits until the drill
ends and fails unless it passed. Needs role admin.`, cf)
	cluster := f.String("cluster", "", "the cluster (may be left out when there is only one)")
	tier := f.String("tier", "", "restore the newest backup of this tier")
	backup := f.String("backup", "", "restore this backup ID")
	target := f.String("target-time", "", "recover to this time (RFC 3339; default: the end of the archive)")
	node := f.String("node", "", "the drill node (default: a healthy standby)")
	wait := f.Bool("wait", false, "wait until the drill ends; exit 1 unless it passed")
	if _, err := f.parse(args[1:], 0); err != nil {
		return err
	}
	if *tier != "" && *backup != "" {
		return usagef("give --tier or --backup, not both")
	}
	req := &pgdrv1.RunDrillRequest{Tier: *tier, BackupId: *backup, Node: *node}
	if *target != "" {
		t, err := time.Parse(time.RFC3339Nano, *target)
		if err != nil {
			return usagef("--target-time %q: want RFC 3339 (2026-03-01T12:00:00Z)", *target)
		}
		req.TargetTime = timestamppb.New(t)
	}
	cl, err := cf.client()
	if err != nil {
		return err
	}
	if req.Cluster, err = onlyCluster(ctx, cl, *cluster); err != nil {
		return err
	}
	var resp *pgdrv1.RunDrillResponse
	if _, err := cl.call(ctx, "RunDrill", func(ctx context.Context, c pgdrv1.AdminServiceClient) error {
		var err error
		resp, err = c.RunDrill(ctx, req)
		return err
	}); err != nil {
		return err
	}
	run := resp.GetRun()
	if *wait && run.GetResult() == "" && !f.json() {
		fmt.Fprintf(e.stderr, "pgdrctl: drill %s ordered on %s; waiting for it to end\n", run.GetId(), run.GetNode())
	}
	for *wait && run.GetResult() == "" {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for drill %s: %w (it goes on: see pgdrctl drills)", run.GetId(), ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
		list, err := listDrills(ctx, cl, req.Cluster)
		if err != nil {
			return err
		}
		found := false
		for _, c := range list.GetClusters() {
			if i := slices.IndexFunc(c.GetRuns(), func(r *pgdrv1.DrillRun) bool { return r.GetId() == run.GetId() }); i >= 0 {
				run, found = c.GetRuns()[i], true
			}
		}
		if !found {
			return fmt.Errorf("drill %s is no longer recorded", run.GetId())
		}
	}
	v := DrillRunResultJSON{Cluster: req.Cluster, Drill: drillView(run)}
	if f.json() {
		err = printJSON(e.stdout, v)
	} else if run.GetResult() == "" {
		_, err = fmt.Fprintf(e.stdout, "cluster %s: drill %s ordered on %s\n  reason: %s\n", req.Cluster, run.GetId(), run.GetNode(), run.GetReason())
	} else {
		_, err = fmt.Fprintf(e.stdout, "cluster %s: %s\n", req.Cluster, drillEnd(v.Drill))
	}
	if err != nil {
		return err
	}
	if *wait && run.GetResult() != "ok" {
		return errors.New(drillEnd(v.Drill))
	}
	return nil
}

func drillEnd(d DrillJSON) string {
	s := fmt.Sprintf("drill %s on %s: %s", d.ID, d.Node, d.Result)
	if d.Timings != nil {
		s += fmt.Sprintf(" in %s (fetch/write %s, replay %s, checks %s)", secs(d.Timings.Total), secs(d.Timings.FetchWrite), secs(d.Timings.Replay), secs(d.Timings.Checks))
	}
	if d.Reason != "" && d.Result != "ok" {
		s += ": " + d.Reason
	}
	return s
}

// DrillPolicyJSON is a policy's drill section in `policy show --json`.
type DrillPolicyJSON struct {
	policy.FileDrill
	TimeoutSeconds int64 `json:"timeout_seconds"`
	// NextRun is the next scheduled drill after now (RFC 3339, UTC).
	NextRun string `json:"next_run"`
}

func drillPolicyView(d *policy.Drill, now time.Time) *DrillPolicyJSON {
	if d == nil {
		return nil
	}
	v := &DrillPolicyJSON{FileDrill: *policy.ToFile("", policy.Policy{Drill: d}).Drill, TimeoutSeconds: int64(d.Timeout / time.Second)}
	if next, err := d.NextRun(now); err == nil {
		v.NextRun = next.UTC().Format(time.RFC3339)
	}
	return v
}
