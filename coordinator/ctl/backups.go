package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pgdr/pgdr/pkg/duration"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// BackupsJSON is `pgdrctl backups --json`: per cluster, its recorded
// backup runs oldest first.
type BackupsJSON struct {
	Clusters []ClusterBackupsJSON `json:"clusters"`
}

// ClusterBackupsJSON is one cluster's runs.
type ClusterBackupsJSON struct {
	Cluster string          `json:"cluster"`
	Runs    []BackupRunJSON `json:"runs"`
}

// BackupRunJSON is one run. Times are RFC 3339 in UTC ("" = not yet);
// Result is "running" while in flight, "cleaning_up" once a cancel order
// went out (Cancel* say when, with which result to come, and why);
// DurationSeconds is up to now for a run in flight. Expiry is the
// retention run after the backup (null: none).
type BackupRunJSON struct {
	ID              string      `json:"id"`
	Tier            string      `json:"tier"`
	Type            string      `json:"type"`
	Node            string      `json:"node"`
	Slot            string      `json:"slot"`
	Missed          uint32      `json:"missed"`
	Started         string      `json:"started"`
	Sent            string      `json:"sent"`
	Accepted        string      `json:"accepted"`
	Finished        string      `json:"finished"`
	DurationSeconds float64     `json:"duration_seconds"`
	TimeoutSeconds  float64     `json:"timeout_seconds"`
	Repositories    []string    `json:"repositories"`
	SizeBytes       uint64      `json:"size_bytes"`
	StoredBytes     uint64      `json:"stored_bytes"`
	BackupID        string      `json:"backup_id"`
	Result          string      `json:"result"`
	Error           string      `json:"error"`
	Reason          string      `json:"reason"`
	RequestedBy     string      `json:"requested_by"`
	CancelAt        string      `json:"cancel_at"`
	CancelResult    string      `json:"cancel_result"`
	CancelNote      string      `json:"cancel_note"`
	Expiry          *ExpiryJSON `json:"expiry"`
}

// ExpiryJSON is what the expiry after a backup did; Error is "" when it
// did not fail (a failed expiry does not fail the backup).
type ExpiryJSON struct {
	BackupsDeleted uint32 `json:"backups_deleted"`
	WALDeleted     uint64 `json:"wal_deleted"`
	ObjectsDeleted uint64 `json:"objects_deleted"`
	Error          string `json:"error"`
}

func backupRunView(r *pgdrv1.BackupRun, now time.Time) BackupRunJSON {
	v := BackupRunJSON{ID: r.GetId(), Tier: r.GetTier(), Type: r.GetType(), Node: r.GetNode(), Slot: rfc3339(r.GetSlot()),
		Missed: r.GetMissed(), Started: rfc3339(r.GetStartedAt()), Sent: rfc3339(r.GetSentAt()), Accepted: rfc3339(r.GetAcceptedAt()),
		Finished: rfc3339(r.GetFinishedAt()), TimeoutSeconds: float64(r.GetTimeoutMs()) / 1000,
		Repositories: append([]string{}, r.GetRepositories()...), SizeBytes: r.GetSizeBytes(), StoredBytes: r.GetStoredBytes(),
		BackupID: r.GetBackupId(), Result: r.GetResult(), Error: r.GetError(), Reason: r.GetReason(), RequestedBy: r.GetRequestedBy()}
	v.CancelAt, v.CancelResult, v.CancelNote = rfc3339(r.GetCancelAt()), r.GetCancelResult(), r.GetCancelNote()
	if e := r.GetExpiry(); e != nil {
		v.Expiry = &ExpiryJSON{BackupsDeleted: e.GetBackupsDeleted(), WALDeleted: e.GetWalDeleted(), ObjectsDeleted: e.GetObjectsDeleted(), Error: e.GetError()}
	}
	switch {
	case v.Result == "" && r.GetCancelAt() != nil:
		v.Result = "cleaning_up"
	case v.Result == "":
		v.Result = "running"
	}
	if s := r.GetStartedAt(); s != nil {
		end := now
		if f := r.GetFinishedAt(); f != nil {
			end = f.AsTime()
		}
		v.DurationSeconds = end.Sub(s.AsTime()).Seconds()
	}
	return v
}

func backupsView(resp *pgdrv1.ListBackupRunsResponse, now time.Time) BackupsJSON {
	v := BackupsJSON{Clusters: []ClusterBackupsJSON{}}
	for _, c := range resp.GetClusters() {
		cv := ClusterBackupsJSON{Cluster: c.GetCluster(), Runs: []BackupRunJSON{}}
		for _, r := range c.GetRuns() {
			cv.Runs = append(cv.Runs, backupRunView(r, now))
		}
		v.Clusters = append(v.Clusters, cv)
	}
	return v
}

func listBackups(ctx context.Context, cl *client, cluster string) (*pgdrv1.ListBackupRunsResponse, error) {
	var resp *pgdrv1.ListBackupRunsResponse
	_, err := cl.call(ctx, "ListBackupRuns", func(ctx context.Context, c pgdrv1.AdminServiceClient) error {
		var err error
		resp, err = c.ListBackupRuns(ctx, &pgdrv1.ListBackupRunsRequest{Cluster: cluster})
		return err
	})
	return resp, err
}

func cmdBackups(ctx context.Context, e env, cf *connFlags, args []string) error {
	f := newCmdFlags(e, "backups", "backups [--cluster C] [--json]", `Lists the backup runs the scheduler on the Raft leader recorded, oldest first:
tier, type (what was taken), node, start, duration, sizes, result (running,
cleaning_up, ok, failed, cancelled, timeout, skipped, not_started), error,
and what the expiry after the backup removed (or why it failed: the backup
stands). A diff or incr tier that had no full
to base on ran as a full (see --json's reason). Needs role read.`, cf)
	cluster := f.String("cluster", "", "only this cluster")
	if _, err := f.parse(args, 0); err != nil {
		return err
	}
	cl, err := cf.client()
	if err != nil {
		return err
	}
	resp, err := listBackups(ctx, cl, *cluster)
	if err != nil {
		return err
	}
	v := backupsView(resp, time.Now())
	if f.json() {
		return printJSON(e.stdout, v)
	}
	return writeBackups(e.stdout, v)
}

func writeBackups(w io.Writer, v BackupsJSON) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for i, c := range v.Clusters {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		fmt.Fprintf(tw, "cluster %s: %d runs\n", c.Cluster, len(c.Runs))
		if len(c.Runs) == 0 {
			continue
		}
		fmt.Fprintln(tw, "STARTED\tTIER\tTYPE\tNODE\tDURATION\tSIZE\tSTORED\tRESULT\tEXPIRY\tERROR")
		for _, r := range c.Runs {
			size, stored := "-", "-"
			if r.SizeBytes > 0 {
				size = humanBytes(int64(min(r.SizeBytes, 1<<62)))
			}
			if r.StoredBytes > 0 {
				stored = humanBytes(int64(min(r.StoredBytes, 1<<62)))
			}
			dur := duration.Format(time.Duration(r.DurationSeconds * float64(time.Second)).Round(time.Second))
			expiry := "-"
			switch e := r.Expiry; {
			case e == nil:
			case e.Error != "":
				expiry = "failed: " + oneLine(e.Error, historyMessageWidth)
			default:
				expiry = fmt.Sprintf("%d backups, %d WAL", e.BackupsDeleted, e.WALDeleted)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", dash(r.Started), r.Tier, r.Type, dash(r.Node), dur, size, stored,
				r.Result, expiry, dash(oneLine(r.Error, historyMessageWidth)))
		}
	}
	if len(v.Clusters) == 0 {
		fmt.Fprintln(tw, "No clusters.")
	}
	return tw.Flush()
}

// BackupRunResultJSON is `pgdrctl backup run --json`: the run as
// recorded when the command returned (with --wait, once it ended).
type BackupRunResultJSON struct {
	Cluster string        `json:"cluster"`
	Run     BackupRunJSON `json:"run"`
}

func cmdBackup(ctx context.Context, e env, cf *connFlags, args []string) error {
	if len(args) > 0 && args[0] == "cancel" {
		return cmdBackupCancel(ctx, e, cf, args[1:])
	}
	if len(args) == 0 || args[0] != "run" {
		if len(args) > 0 && (args[0] == "--help" || args[0] == "-h" || args[0] == "-help") {
			fmt.Fprintln(e.stdout, "Usage: pgdrctl backup run --tier T [--cluster C] [--wait] [--json]\n       pgdrctl backup cancel [--cluster C] [RUN_ID] [--note TEXT] [--json]\n\nRun 'pgdrctl backup run --help' or 'pgdrctl backup cancel --help' for their flags; 'pgdrctl backups' lists the runs.")
			return nil
		}
		return usagef("want 'backup run --tier T' or 'backup cancel [RUN_ID]' (the runs are listed by 'pgdrctl backups')")
	}
	f := newCmdFlags(e, "backup run", "backup run --tier T [--cluster C] [--wait] [--json]", `Has the Raft leader run a tier of the cluster's backup policy now, with the
scheduler's rules: a diff or incr with no full to base on runs as a full, on
the healthy replica with the least lag (or as the tier's run_on says).
Refused for an unknown tier (the error names the tiers), while another
backup of the cluster runs (the error names it), and when no member can take
it. Allowed while the cluster is paused. --wait waits until the run ends and
fails unless it ended ok. Needs role admin.`, cf)
	cluster := f.String("cluster", "", "the cluster (may be left out when there is only one)")
	tier := f.String("tier", "", "the tier to run (required)")
	wait := f.Bool("wait", false, "wait until the run ends; exit 1 unless it ended ok")
	if _, err := f.parse(args[1:], 0); err != nil {
		return err
	}
	if *tier == "" {
		return usagef("--tier is required")
	}
	cl, err := cf.client()
	if err != nil {
		return err
	}
	name, err := onlyCluster(ctx, cl, *cluster)
	if err != nil {
		return err
	}
	var resp *pgdrv1.RunBackupResponse
	if _, err := cl.call(ctx, "RunBackup", func(ctx context.Context, c pgdrv1.AdminServiceClient) error {
		var err error
		resp, err = c.RunBackup(ctx, &pgdrv1.RunBackupRequest{Cluster: name, Tier: *tier})
		return err
	}); err != nil {
		return err
	}
	run := resp.GetRun()
	if !*wait {
		return writeBackupRun(e, f.json(), name, run)
	}
	if run.GetResult() == "" && !f.json() {
		fmt.Fprintf(e.stderr, "pgdrctl: backup run %s of tier %s (%s) started on %s; waiting for it to end\n", run.GetId(), run.GetTier(), run.GetType(), run.GetNode())
	}
	for run.GetResult() == "" {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for backup run %s: %w (it goes on: see pgdrctl backups)", run.GetId(), ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
		list, err := listBackups(ctx, cl, name)
		if err != nil {
			return err
		}
		found := false
		for _, c := range list.GetClusters() {
			if i := slices.IndexFunc(c.GetRuns(), func(r *pgdrv1.BackupRun) bool { return r.GetId() == run.GetId() }); i >= 0 {
				run, found = c.GetRuns()[i], true
			}
		}
		if !found {
			return fmt.Errorf("backup run %s is no longer recorded", run.GetId())
		}
	}
	if err := writeBackupRun(e, f.json(), name, run); err != nil {
		return err
	}
	if run.GetResult() != "ok" {
		return errors.New(runEnd(run))
	}
	return nil
}

func runEnd(r *pgdrv1.BackupRun) string {
	s := fmt.Sprintf("backup run %s of tier %s (%s) on %s: %s", r.GetId(), r.GetTier(), r.GetType(), r.GetNode(), r.GetResult())
	if r.GetError() != "" {
		s += ": " + r.GetError()
	}
	return s
}

func writeBackupRun(e env, asJSON bool, cluster string, r *pgdrv1.BackupRun) error {
	v := BackupRunResultJSON{Cluster: cluster, Run: backupRunView(r, time.Now())}
	if asJSON {
		return printJSON(e.stdout, v)
	}
	var err error
	switch r.GetResult() {
	case "":
		_, err = fmt.Fprintf(e.stdout, "cluster %s: backup run %s of tier %s (%s) ordered on %s\n  reason: %s\n", cluster, r.GetId(), r.GetTier(), r.GetType(), r.GetNode(), r.GetReason())
	default:
		_, err = fmt.Fprintf(e.stdout, "cluster %s: %s (took %s)\n", cluster, runEnd(r), duration.Format(time.Duration(v.Run.DurationSeconds*float64(time.Second)).Round(time.Second)))
	}
	return err
}

// onlyCluster is cluster, or the only cluster the coordinators know.
func onlyCluster(ctx context.Context, cl *client, cluster string) (string, error) {
	if cluster != "" {
		return cluster, nil
	}
	resp, err := listBackups(ctx, cl, "")
	if err != nil {
		return "", err
	}
	var names []string
	for _, c := range resp.GetClusters() {
		names = append(names, c.GetCluster())
	}
	if len(names) != 1 {
		return "", usagef("--cluster is required: the coordinators know %d clusters (%s)", len(names), strings.Join(names, ", "))
	}
	return names[0], nil
}

func cmdBackupCancel(ctx context.Context, e env, cf *connFlags, args []string) error {
	f := newCmdFlags(e, "backup cancel", "backup cancel [--cluster C] [RUN_ID] [--note TEXT] [--json]", `Cancels a backup run in flight (with who asked and the note) and sends its
agent a cancel order: the agent stops the backup and removes what it wrote.
The run shows cleaning_up until the agent answers, or at most the clean-up
deadline (2 minutes), then ends as cancelled; no other backup of the cluster
starts meanwhile. The way out of a run that would otherwise wait for its
timeout, as when its agent is gone for good. RUN_ID defaults to the cluster's run in flight
(see pgdrctl backups). Needs role admin.`, cf)
	cluster := f.String("cluster", "", "the cluster (may be left out when there is only one)")
	note := f.String("note", "", "why (recorded with the run)")
	rest, err := f.parse(args, -1)
	if err != nil {
		return err
	}
	if len(rest) > 1 {
		return usagef("expected at most one RUN_ID, got %d arguments", len(rest))
	}
	runID := ""
	if len(rest) == 1 {
		runID = rest[0]
	}
	cl, err := cf.client()
	if err != nil {
		return err
	}
	name, err := onlyCluster(ctx, cl, *cluster)
	if err != nil {
		return err
	}
	var resp *pgdrv1.CancelBackupRunResponse
	if _, err := cl.call(ctx, "CancelBackupRun", func(ctx context.Context, c pgdrv1.AdminServiceClient) error {
		var err error
		resp, err = c.CancelBackupRun(ctx, &pgdrv1.CancelBackupRunRequest{Cluster: name, RunId: runID, Note: *note})
		return err
	}); err != nil {
		return err
	}
	return writeBackupRun(e, f.json(), name, resp.GetRun())
}
