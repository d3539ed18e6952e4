package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pgdr/pgdr/coordinator/compliance"
	"github.com/pgdr/pgdr/coordinator/policy"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"

	"github.com/pgdr/pgdr/pkg/duration"
)

// BackupPolicyJSON is a cluster's backup policy as `policy show --json`
// (under "backup") and `policy apply --json` print it. Durations are
// given both as written in a policy file (7d) and in seconds.
type BackupPolicyJSON struct {
	// IsDefault: the cluster has no policy of its own; these are the
	// defaults.
	IsDefault         bool             `json:"is_default"`
	PITRWindow        string           `json:"pitr_window"`
	PITRWindowSeconds int64            `json:"pitr_window_seconds"`
	UpdatedAt         string           `json:"updated_at"`
	UpdatedBy         string           `json:"updated_by"`
	Tiers             []BackupTierJSON `json:"tiers"`
	// Targets: the recovery targets in effect (defaults filled in).
	Targets TargetsJSON `json:"targets"`
	// Drill: the scheduled restore drills (null: none; drills.go).
	Drill *DrillPolicyJSON `json:"drill"`
}

// TargetsJSON are recovery targets as durations and in seconds.
type TargetsJSON struct {
	RTO             string  `json:"rto"`
	RPO             string  `json:"rpo"`
	Failover        string  `json:"failover"`
	RTOSeconds      float64 `json:"rto_seconds"`
	RPOSeconds      float64 `json:"rpo_seconds"`
	FailoverSeconds float64 `json:"failover_seconds"`
	// WriteAvailability: the write-availability target (99.99%).
	WriteAvailability      string  `json:"write_availability"`
	WriteAvailabilityRatio float64 `json:"write_availability_ratio"`
}

func targetsView(t compliance.Targets) TargetsJSON {
	return TargetsJSON{RTO: duration.Format(t.RTO), RPO: duration.Format(t.RPO), Failover: duration.Format(t.Failover),
		RTOSeconds: t.RTO.Seconds(), RPOSeconds: t.RPO.Seconds(), FailoverSeconds: t.Failover.Seconds(),
		WriteAvailability: compliance.FormatPPM(t.WriteAvailabilityPPM), WriteAvailabilityRatio: t.WriteAvailability()}
}

// BackupTierJSON is one tier of a BackupPolicyJSON.
type BackupTierJSON struct {
	Name           string   `json:"name"`
	Type           string   `json:"type"`
	Schedule       string   `json:"schedule"`
	Timezone       string   `json:"timezone"`
	KeepCount      int64    `json:"keep_count"`
	KeepAge        string   `json:"keep_age"`
	KeepAgeSeconds int64    `json:"keep_age_seconds"`
	Repos          []string `json:"repos"`
	RunOn          string   `json:"run_on"`
	Timeout        string   `json:"timeout"`
	TimeoutSeconds int64    `json:"timeout_seconds"`
	// NextRun is the tier's next scheduled time after now (RFC 3339, UTC).
	NextRun string `json:"next_run"`
}

// PolicyApplyJSON is what `policy apply --json` prints.
type PolicyApplyJSON struct {
	Cluster string `json:"cluster"`
	// Changed: the policy differed from the cluster's (false for a dry run).
	Changed bool             `json:"changed"`
	DryRun  bool             `json:"dry_run"`
	Backup  BackupPolicyJSON `json:"backup"`
}

func backupPolicyView(bp *pgdrv1.BackupPolicy, isDefault bool, now time.Time) BackupPolicyJSON {
	p := policy.FromProto(bp)
	v := BackupPolicyJSON{IsDefault: isDefault, PITRWindow: duration.Format(p.PITRWindow),
		PITRWindowSeconds: bp.GetPitrWindowSeconds(), UpdatedAt: rfc3339(bp.GetUpdatedAt()), UpdatedBy: bp.GetUpdatedBy(),
		Tiers: []BackupTierJSON{}, Targets: targetsView(p.Targets.WithDefaults())}
	for _, t := range p.Tiers {
		tj := BackupTierJSON{Name: t.Name, Type: t.Type, Schedule: t.Schedule, Timezone: t.Timezone,
			KeepCount: t.KeepCount, KeepAgeSeconds: int64(t.KeepAge / time.Second), Repos: nonNil(t.Repos),
			RunOn: t.RunOn, Timeout: duration.Format(t.Timeout), TimeoutSeconds: int64(t.Timeout / time.Second)}
		if t.KeepAge > 0 {
			tj.KeepAge = duration.Format(t.KeepAge)
		}
		if next, err := t.NextRun(now); err == nil {
			tj.NextRun = next.UTC().Format(time.RFC3339)
		}
		v.Tiers = append(v.Tiers, tj)
	}
	v.Drill = drillPolicyView(p.Drill, now)
	return v
}

// writeBackupPolicy prints the human form: the PITR window and a table of
// tiers with their next run.
func writeBackupPolicy(w io.Writer, cluster string, v BackupPolicyJSON) error {
	origin := fmt.Sprintf("set by %s at %s", dash(v.UpdatedBy), dash(v.UpdatedAt))
	switch {
	case v.IsDefault:
		origin = "the defaults: none set"
	case v.UpdatedBy == "" && v.UpdatedAt == "":
		origin = "not applied"
	}
	fmt.Fprintf(w, "cluster %s backup policy (%s):\n  pitr_window: %s\n", cluster, origin, v.PITRWindow)
	fmt.Fprintf(w, "  targets:     rto %s, rpo %s, failover %s, write availability %s\n", v.Targets.RTO, v.Targets.RPO, v.Targets.Failover, v.Targets.WriteAvailability)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  TIER\tTYPE\tSCHEDULE\tTIMEZONE\tKEEP\tREPOS\tRUN ON\tTIMEOUT\tNEXT RUN")
	for _, t := range v.Tiers {
		var keep []string
		if t.KeepCount > 0 {
			keep = append(keep, "newest "+strconv.FormatInt(t.KeepCount, 10))
		}
		if t.KeepAge != "" {
			keep = append(keep, t.KeepAge)
		}
		repos := strings.Join(t.Repos, ",")
		if repos == "" {
			repos = "all"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, t.Type, t.Schedule, t.Timezone,
			strings.Join(keep, " or "), repos, t.RunOn, t.Timeout, dash(t.NextRun))
	}
	if d := v.Drill; d != nil {
		target := d.Target
		if target == "" {
			target = "latest"
		}
		fmt.Fprintf(tw, "  drill: %s %s, tier %s, node %s, target %s, timeout %s, %d checks; next %s\n", d.Schedule, d.Timezone,
			dash(d.Tier), d.Node, target, d.Timeout, len(d.Checks), dash(d.NextRun))
	}
	return tw.Flush()
}

// getBackupPolicy reads a cluster's effective backup policy. ok is false
// when the coordinators predate backup policies (Unimplemented).
func getBackupPolicy(ctx context.Context, cl *client, cluster string) (resp *pgdrv1.GetBackupPolicyResponse, ok bool, err error) {
	_, err = cl.call(ctx, "GetBackupPolicy", func(ctx context.Context, c pgdrv1.AdminServiceClient) error {
		var err error
		resp, err = c.GetBackupPolicy(ctx, &pgdrv1.GetBackupPolicyRequest{Cluster: cluster})
		return err
	})
	if status.Code(errors.Unwrap(err)) == codes.Unimplemented {
		return nil, false, nil
	}
	return resp, err == nil, err
}

// setBackupPolicy sends a whole policy (nil with reset) and returns the
// answer.
func setBackupPolicy(ctx context.Context, cl *client, cluster string, bp *pgdrv1.BackupPolicy, reset bool) (*pgdrv1.SetBackupPolicyResponse, error) {
	var resp *pgdrv1.SetBackupPolicyResponse
	_, err := cl.call(ctx, "SetBackupPolicy", func(ctx context.Context, c pgdrv1.AdminServiceClient) error {
		var err error
		resp, err = c.SetBackupPolicy(ctx, &pgdrv1.SetBackupPolicyRequest{Cluster: cluster, Policy: bp, ResetToDefaults: reset})
		return err
	})
	return resp, err
}

// readPolicyFile reads, parses and validates a policy file; every error
// names the file and the field. Nothing is sent when it fails.
func readPolicyFile(path string) (cluster string, p policy.Policy, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", p, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, policy.MaxFileSize+1))
	if err != nil {
		return "", p, fmt.Errorf("read %s: %w", path, err)
	}
	cluster, p, err = policy.ParseFile(data)
	if err == nil {
		err = p.Validate(policy.Options{})
	}
	if err != nil {
		return "", p, fmt.Errorf("%s: %w", path, err)
	}
	return cluster, p, nil
}

// policyFileExample is the file `policy apply --help` shows (a test
// checks that it applies).
const policyFileExample = `  cluster: main               # optional; must match --cluster if both are given
  pitr_window: 7d
  tiers:
    - name: nightly
      type: full                # full, diff or incr
      schedule: "0 2 * * *"     # 5 fields, or 6 with seconds first
      timezone: Europe/Berlin   # default UTC (or CRON_TZ=... in schedule)
      keep_age: 30d             # and/or keep_count: N
      repos: [local, s3-eu]     # default: every repository of the agent
      run_on: prefer-standby    # or standby-only, primary
      timeout: 12h              # default 12h for full, 2h for diff and incr`

func cmdPolicyApply(ctx context.Context, e env, cf *connFlags, args []string) error {
	f := newCmdFlags(e, "policy apply", "policy apply -f FILE [--cluster C] [--dry-run] [--json]",
		`Replaces a cluster's backup policy with the one in FILE (YAML; see
docs/policy.md): every tier, and the PITR window. The file is checked
before anything is sent, and the coordinators check it again; an error
names the field (tiers[1].schedule: ...) and changes nothing. Recorded in
Raft and in the history. Needs role admin. Example FILE:

`+policyFileExample, cf)
	file := f.String("f", "", "the policy file (required; also --file)")
	f.StringVar(file, "file", "", "the policy file (same as -f)")
	cluster := f.String("cluster", "", "the cluster (or cluster: in the file)")
	dryRun := f.Bool("dry-run", false, "check the file and print the policy it sets, without sending it")
	if _, err := f.parse(args, 0); err != nil {
		return err
	}
	if *file == "" {
		return usagef("-f FILE is required")
	}
	fileCluster, p, err := readPolicyFile(*file)
	if err != nil {
		return err
	}
	switch {
	case *cluster == "" && fileCluster == "":
		return usagef("--cluster is required (or cluster: in %s)", *file)
	case *cluster != "" && fileCluster != "" && *cluster != fileCluster:
		return usagef("--cluster %s but %s is for cluster %s", *cluster, *file, fileCluster)
	case *cluster == "":
		*cluster = fileCluster
	}
	bp := policy.ToProto(p)
	if *dryRun {
		v := PolicyApplyJSON{Cluster: *cluster, DryRun: true, Backup: backupPolicyView(bp, false, time.Now())}
		if f.json() {
			return printJSON(e.stdout, v)
		}
		fmt.Fprintf(e.stdout, "%s is valid; not sent (--dry-run)\n", *file)
		return writeBackupPolicy(e.stdout, *cluster, v.Backup)
	}
	cl, err := cf.client()
	if err != nil {
		return err
	}
	resp, err := setBackupPolicy(ctx, cl, *cluster, bp, false)
	if err != nil {
		return err
	}
	return writeApplied(e.stdout, f.json(), resp)
}

func writeApplied(w io.Writer, asJSON bool, resp *pgdrv1.SetBackupPolicyResponse) error {
	v := PolicyApplyJSON{Cluster: resp.GetCluster(), Changed: resp.GetChanged(), Backup: backupPolicyView(resp.GetPolicy(), resp.GetIsDefault(), time.Now())}
	if asJSON {
		return printJSON(w, v)
	}
	if !v.Changed {
		fmt.Fprintf(w, "unchanged: cluster %s already had this backup policy\n", v.Cluster)
	}
	return writeBackupPolicy(w, v.Cluster, v.Backup)
}

// setBackupSettings is `policy set` for the backup policy: --pitr-window
// changes the window of the cluster's effective policy (the defaults'
// tiers become its own), --backup-defaults forgets the policy.
// backupSettings are policy set's flags that change the backup policy
// record (the PITR window, the recovery targets); "" = unchanged.
type backupSettings struct {
	pitr, rto, rpo, failover string
	// writeAvailability: a percentage or a ratio.
	writeAvailability string
}

func setBackupSettings(ctx context.Context, e env, cf *connFlags, asJSON bool, cluster string, bs backupSettings, reset bool) error {
	var window time.Duration
	if bs.pitr != "" {
		var err error
		if window, err = duration.Parse(bs.pitr); err != nil {
			return usagef("--pitr-window: %v", err)
		}
		if window < 0 {
			return usagef("--pitr-window: %s is negative", bs.pitr)
		}
	}
	targets := map[string]time.Duration{}
	for _, t := range []struct{ flag, v string }{{"target-rto", bs.rto}, {"target-rpo", bs.rpo}, {"target-failover", bs.failover}} {
		if t.v == "" {
			continue
		}
		d, err := duration.Parse(t.v)
		if err != nil {
			return usagef("--%s: %v", t.flag, err)
		}
		if d <= 0 {
			return usagef("--%s: %s is not a positive duration", t.flag, t.v)
		}
		targets[t.flag] = d
	}
	var ppm uint32
	if bs.writeAvailability != "" {
		var err error
		if ppm, err = policy.ParsePPM(bs.writeAvailability); err == nil {
			err = compliance.CheckWriteAvailability(ppm)
		}
		if err != nil {
			return usagef("--target-write-availability: %v", err)
		}
	}
	cl, err := cf.client()
	if err != nil {
		return err
	}
	var bp *pgdrv1.BackupPolicy
	if !reset {
		cur, ok, err := getBackupPolicy(ctx, cl, cluster)
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("the coordinators do not support backup policies; upgrade them")
		}
		p := policy.FromProto(cur.GetPolicy())
		if bs.pitr != "" {
			p.PITRWindow = window
		}
		if d, ok := targets["target-rto"]; ok {
			p.Targets.RTO = d
		}
		if d, ok := targets["target-rpo"]; ok {
			p.Targets.RPO = d
		}
		if d, ok := targets["target-failover"]; ok {
			p.Targets.Failover = d
		}
		if ppm != 0 {
			p.Targets.WriteAvailabilityPPM = ppm
		}
		if err := p.Validate(policy.Options{}); err != nil {
			return fmt.Errorf("cluster %s: %w", cluster, err)
		}
		bp = policy.ToProto(p)
	}
	resp, err := setBackupPolicy(ctx, cl, cluster, bp, reset)
	if err != nil {
		return err
	}
	return writeApplied(e.stdout, asJSON, resp)
}
