package ctl

import (
	"context"
	"fmt"
	"io"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// PolicyResultJSON is what pause and resume print with --json.
type PolicyResultJSON struct {
	Cluster string     `json:"cluster"`
	Policy  PolicyJSON `json:"policy"`
}

func cmdPause(ctx context.Context, e env, cf *connFlags, args []string) error {
	f := newCmdFlags(e, "pause", "pause --cluster C [--reason R] [--json]", `Puts a cluster in maintenance mode, recorded in Raft and in the history: the
coordinators take no automatic action for it (no failover, no fencing orders)
until 'pgdrctl resume'. Agents keep reporting and status keeps showing health.
Needs role admin.`, cf)
	cluster := f.String("cluster", "", "the cluster to pause (required)")
	reason := f.String("reason", "", "why, for the history and status")
	if _, err := f.parse(args, 0); err != nil {
		return err
	}
	if *cluster == "" {
		return usagef("--cluster is required")
	}
	cl, err := cf.client()
	if err != nil {
		return err
	}
	var resp *pgdrv1.PauseResponse
	if _, err := cl.call(ctx, "Pause", func(ctx context.Context, c pgdrv1.AdminServiceClient) error {
		var err error
		resp, err = c.Pause(ctx, &pgdrv1.PauseRequest{Cluster: *cluster, Reason: *reason})
		return err
	}); err != nil {
		return err
	}
	// Pausing a paused cluster changes nothing (retries are harmless), so a
	// new reason is not recorded: say so rather than drop it silently.
	if p := resp.GetPolicy(); p.GetPaused() && *reason != "" && p.GetPausedReason() != *reason {
		fmt.Fprintf(e.stderr, "pgdrctl: cluster %s was already paused: the reason stays %q (resume, then pause again to record a new one)\n", *cluster, p.GetPausedReason())
	}
	return writePolicy(e.stdout, f.json(), *cluster, resp.GetPolicy())
}

func cmdResume(ctx context.Context, e env, cf *connFlags, args []string) error {
	f := newCmdFlags(e, "resume", "resume --cluster C [--json]", `Takes a cluster out of maintenance mode: the coordinators act on it again
(failover included). Recorded in Raft and in the history. Needs role admin.`, cf)
	cluster := f.String("cluster", "", "the cluster to resume (required)")
	if _, err := f.parse(args, 0); err != nil {
		return err
	}
	if *cluster == "" {
		return usagef("--cluster is required")
	}
	cl, err := cf.client()
	if err != nil {
		return err
	}
	var resp *pgdrv1.ResumeResponse
	if _, err := cl.call(ctx, "Resume", func(ctx context.Context, c pgdrv1.AdminServiceClient) error {
		var err error
		resp, err = c.Resume(ctx, &pgdrv1.ResumeRequest{Cluster: *cluster})
		return err
	}); err != nil {
		return err
	}
	return writePolicy(e.stdout, f.json(), *cluster, resp.GetPolicy())
}

func writePolicy(w io.Writer, asJSON bool, cluster string, p *pgdrv1.Policy) error {
	v := PolicyResultJSON{Cluster: cluster, Policy: policyView(p)}
	if asJSON {
		return printJSON(w, v)
	}
	pol := v.Policy
	var err error
	if pol.Paused {
		_, err = fmt.Fprintf(w, "cluster %s: PAUSED (maintenance mode: no automatic action)\n  reason: %s\n  by:     %s\n  since:  %s\n",
			cluster, dash(pol.PausedReason), dash(pol.PausedBy), dash(pol.PausedAt))
	} else {
		_, err = fmt.Fprintf(w, "cluster %s: active (automatic failover enabled)\n", cluster)
	}
	return err
}
