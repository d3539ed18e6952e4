package ctl

import (
	"context"
	"fmt"
	"io"
	"time"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// ChangeTimeout is the default --timeout of switchover and failover: they
// stop, wait for and start PostgreSQL servers, which takes longer than a
// read. An explicit --timeout other than the 10s default wins.
const ChangeTimeout = 5 * time.Minute

// PrimaryChangeJSON is what switchover and failover print with --json.
type PrimaryChangeJSON struct {
	Cluster string `json:"cluster"`
	Primary string `json:"primary"`
	Epoch   uint64 `json:"epoch"`
	// Steps: what was done, in order, as recorded in the history.
	Steps []string `json:"steps"`
}

func writePrimaryChange(w io.Writer, asJSON bool, what string, v PrimaryChangeJSON) error {
	if v.Steps == nil {
		v.Steps = []string{}
	}
	if asJSON {
		return printJSON(w, v)
	}
	if _, err := fmt.Fprintf(w, "%s of cluster %s: %s is primary at epoch %d\n", what, v.Cluster, v.Primary, v.Epoch); err != nil {
		return err
	}
	for i, s := range v.Steps {
		if _, err := fmt.Fprintf(w, "  %2d. %s\n", i+1, s); err != nil {
			return err
		}
	}
	return nil
}

func cmdSwitchover(ctx context.Context, e env, cf *connFlags, args []string) error {
	f := newCmdFlags(e, "switchover", "switchover --cluster C [--to NODE] [--json]", `Planned change of primary with zero data loss: the coordinator leader
checkpoints the primary and stops it cleanly (fast shutdown), waits until the
target has received the shutdown checkpoint, records the target as primary
(a new epoch), promotes it, re-points the other replicas, and rejoins the old
primary as a replica. Without --to the best healthy streaming replica is
chosen (highest received LSN, then priority, then preferred region). If the
target does not receive the checkpoint within 30s nothing is promoted and
the result says what to do. Allowed while the cluster is paused (it is an
operator action). Every step is in 'pgdrctl history'. Needs role admin.
The default --timeout of this command is 5m.`, cf)
	cluster := f.String("cluster", "", "the cluster (required)")
	to := f.String("to", "", "the replica to promote (default: the best candidate)")
	if _, err := f.parse(args, 0); err != nil {
		return err
	}
	if *cluster == "" {
		return usagef("--cluster is required")
	}
	if cf.timeout == DefaultTimeout {
		cf.timeout = ChangeTimeout
	}
	cl, err := cf.client()
	if err != nil {
		return err
	}
	var resp *pgdrv1.SwitchoverResponse
	if _, err := cl.call(ctx, "Switchover", func(ctx context.Context, c pgdrv1.AdminServiceClient) error {
		var err error
		resp, err = c.Switchover(ctx, &pgdrv1.SwitchoverRequest{Cluster: *cluster, To: *to})
		return err
	}); err != nil {
		return err
	}
	return writePrimaryChange(e.stdout, f.json(), "switchover", PrimaryChangeJSON{
		Cluster: *cluster, Primary: resp.GetPrimary(), Epoch: resp.GetEpoch(), Steps: resp.GetSteps()})
}

func cmdFailover(ctx context.Context, e env, cf *connFlags, args []string) error {
	f := newCmdFlags(e, "failover", "failover --cluster C --to NODE [--force] [--json]", `Manual failover for when the primary is gone: promotes NODE at a new epoch
and re-points the other replicas; the old primary rejoins as a replica when
it comes back. Refused while the primary is healthy (use 'pgdrctl
switchover' for a planned change: it loses nothing) or while its lease has
not expired. Allowed while the cluster is paused. Needs role admin.
NODE may be the recorded primary itself when it is still a running replica
that was never promoted (its promote order was lost or failed): it is then
ordered to promote at the current epoch and nobody else is.

A replica lagging the primary's last known LSN by more than
maximum_lag_on_failover is refused, and so is every replica while that LSN is
unknown (the primary was never seen writable at its epoch).

--force promotes even though the primary looks healthy or holds its lease,
  or its last LSN is unknown (the lag limit still applies when it is known).
  WARNING: commits the old primary acknowledged but had not sent to NODE are
  LOST. The coordinator revokes the old primary's lease, orders it to fence
  and waits the lease out before promoting, so that two primaries never take
  writes at once, but a primary whose agent is dead while PostgreSQL still
  runs must be stopped by other means first.
  Without --force, a member whose promotion was never confirmed (its
  pg_promote still pending, or no answer) is fenced before NODE is promoted,
  and the failover waits while it cannot be fenced; --force promotes NODE
  anyway: stop that member's PostgreSQL by other means first.
The default --timeout of this command is 5m.`, cf)
	cluster := f.String("cluster", "", "the cluster (required)")
	to := f.String("to", "", "the replica to promote (required)")
	force := f.Bool("force", false, "promote even though the primary seems alive, holds its lease or its last LSN is unknown (DATA LOSS possible; see above)")
	if _, err := f.parse(args, 0); err != nil {
		return err
	}
	if *cluster == "" {
		return usagef("--cluster is required")
	}
	if *to == "" {
		return usagef("--to is required (the replica to promote)")
	}
	if cf.timeout == DefaultTimeout {
		cf.timeout = ChangeTimeout
	}
	cl, err := cf.client()
	if err != nil {
		return err
	}
	if *force {
		fmt.Fprintf(e.stderr, "pgdrctl failover: --force: promoting %s even though the primary may be alive; commits it has not sent to %s are lost\n", *to, *to)
	}
	var resp *pgdrv1.FailoverResponse
	if _, err := cl.call(ctx, "Failover", func(ctx context.Context, c pgdrv1.AdminServiceClient) error {
		var err error
		resp, err = c.Failover(ctx, &pgdrv1.FailoverRequest{Cluster: *cluster, To: *to, Force: *force})
		return err
	}); err != nil {
		return err
	}
	return writePrimaryChange(e.stdout, f.json(), "manual failover", PrimaryChangeJSON{
		Cluster: *cluster, Primary: resp.GetPrimary(), Epoch: resp.GetEpoch(), Steps: resp.GetSteps()})
}
