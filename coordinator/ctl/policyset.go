package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pgdr/pgdr/coordinator/policy"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// PolicyShowJSON is what `policy show` and `policy set` print with --json.
type PolicyShowJSON struct {
	Cluster string     `json:"cluster"`
	Policy  PolicyJSON `json:"policy"`
	// Failsafe: a primary that cannot renew its lease keeps serving while
	// every member acknowledges its failsafe ping (policy failsafe_disabled
	// is its negation).
	Failsafe bool `json:"failsafe"`
	// Backup is the cluster's backup policy (absent when the coordinators
	// predate backup policies).
	Backup *BackupPolicyJSON `json:"backup,omitempty"`
}

// defaultMaxLag mirrors the coordinators' default maximum_lag_on_failover.
const defaultMaxLag = 1 << 20

func cmdPolicy(ctx context.Context, e env, cf *connFlags, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "show":
			return cmdPolicyShow(ctx, e, cf, args[1:])
		case "set":
			return cmdPolicySet(ctx, e, cf, args[1:])
		case "apply":
			return cmdPolicyApply(ctx, e, cf, args[1:])
		case "--help", "-help", "-h", "help":
			fmt.Fprint(e.stderr, policyUsage)
			return flag.ErrHelp
		}
		return usagef("unknown policy command %q (want show, set or apply)", args[0])
	}
	return usagef("policy needs a subcommand: show, set or apply")
}

const policyUsage = `Usage: pgdrctl policy show --cluster C [--json | --yaml]
       pgdrctl policy set --cluster C [--synchronous off|on|"quorum N"] [--maximum-lag BYTES]
                          [--preferred-regions r1,r2] [--failsafe on|off] [--json]
       pgdrctl policy set --cluster C [--pitr-window DURATION] [--target-rto D] [--target-rpo D]
                          [--target-failover D] [--target-write-availability PCT] [--json]
       pgdrctl policy set --cluster C --backup-defaults [--json]
       pgdrctl policy apply -f FILE [--cluster C] [--dry-run] [--json]

A cluster's failover policy and backup policy, recorded in Raft. 'show'
reads both (role read; --yaml prints the backup policy as a file for
'apply'). 'set' changes the settings given and keeps the others (role
admin). 'apply' replaces the backup policy (tiers, schedules, retention,
repositories, PITR window) with a YAML file's (role admin). Pause and
resume are separate commands. See docs/policy.md.
`

// currentPolicy reads a cluster's policy through Status.
func currentPolicy(ctx context.Context, cl *client, cluster string) (*pgdrv1.Policy, error) {
	var resp *pgdrv1.StatusResponse
	if _, err := cl.call(ctx, "Status", func(ctx context.Context, c pgdrv1.AdminServiceClient) error {
		var err error
		resp, err = c.Status(ctx, &pgdrv1.StatusRequest{Cluster: cluster})
		return err
	}); err != nil {
		return nil, err
	}
	for _, c := range resp.GetClusters() {
		if c.GetName() == cluster {
			if c.GetPolicy() == nil {
				return &pgdrv1.Policy{Paused: c.GetPaused(), PausedReason: c.GetPausedReason()}, nil
			}
			return c.GetPolicy(), nil
		}
	}
	return nil, fmt.Errorf("the coordinators did not report cluster %s", cluster)
}

func cmdPolicyShow(ctx context.Context, e env, cf *connFlags, args []string) error {
	f := newCmdFlags(e, "policy show", "policy show --cluster C [--json | --yaml]",
		`Prints a cluster's failover policy and its backup policy (tiers with their
next run; the defaults when none was set). Needs role read.`, cf)
	cluster := f.String("cluster", "", "the cluster (required)")
	asYAML := f.Bool("yaml", false, "print only the backup policy, as a file for 'policy apply -f'")
	if _, err := f.parse(args, 0); err != nil {
		return err
	}
	if *cluster == "" {
		return usagef("--cluster is required")
	}
	if *asYAML && f.json() {
		return usagef("--json and --yaml exclude each other")
	}
	cl, err := cf.client()
	if err != nil {
		return err
	}
	bp, ok, err := getBackupPolicy(ctx, cl, *cluster)
	if err != nil {
		return err
	}
	if *asYAML {
		if !ok {
			return errors.New("the coordinators do not support backup policies; upgrade them")
		}
		b, err := policy.MarshalFile(*cluster, policy.FromProto(bp.GetPolicy()))
		if err != nil {
			return err
		}
		_, err = e.stdout.Write(b)
		return err
	}
	p, err := currentPolicy(ctx, cl, *cluster)
	if err != nil {
		return err
	}
	var backup *BackupPolicyJSON
	if ok {
		v := backupPolicyView(bp.GetPolicy(), bp.GetIsDefault(), time.Now())
		backup = &v
	}
	return writePolicyShow(e.stdout, f.json(), *cluster, p, backup)
}

func cmdPolicySet(ctx context.Context, e env, cf *connFlags, args []string) error {
	f := newCmdFlags(e, "policy set", `policy set --cluster C [--synchronous off|on|"quorum N"] [--maximum-lag BYTES] [--preferred-regions r1,r2] [--failsafe on|off] [--json]
       pgdrctl policy set --cluster C [--pitr-window DURATION] [--target-rto D] [--target-rpo D] [--target-failover D] [--target-write-availability PCT] [--json]
       pgdrctl policy set --cluster C --backup-defaults [--json]`,
		`Changes the settings given and keeps the others; recorded in Raft and in the
history. The failover settings and the backup ones (--pitr-window,
--backup-defaults) are set by separate commands. Backup tiers are changed
with 'policy apply -f FILE'. Needs role admin.`, cf)
	cluster := f.String("cluster", "", "the cluster (required)")
	syncMode := f.String("synchronous", "", `off, on or "quorum N" (also quorum:N); in synchronous mode only a standby holding every acknowledged commit is promoted`)
	maxLag := f.String("maximum-lag", "", "maximum_lag_on_failover: bytes, or with kB, MB or GB (1024-based); 0 = the default 1MB")
	regions := f.String("preferred-regions", "", "comma-separated regions, preferred first, for choosing among equal candidates ('' clears)")
	failsafe := f.String("failsafe", "", "on or off: keep a primary serving through a coordinator outage while every member acknowledges it")
	pitr := f.String("pitr-window", "", "backup policy: how far back point-in-time recovery must stay possible (7d, 36h, 2w)")
	backupDefaults := f.Bool("backup-defaults", false, "backup policy: forget the cluster's backup policy; the defaults apply")
	rto := f.String("target-rto", "", "recovery target: longest restore from backup (default 15m)")
	rpo := f.String("target-rpo", "", "recovery target: longest data loss, as the age of WAL not in a repository or the best candidate's lag (default 5m)")
	foTarget := f.String("target-failover", "", "recovery target: longest failover or switchover, detection to writable new primary (default 5m)")
	waTarget := f.String("target-write-availability", "", "write-availability target over 28 days: a percentage (99.95%) or a ratio (default 99.99%; docs/slo.md)")
	pos, err := f.parse(args, -1)
	if err != nil {
		return err
	}
	set := map[string]bool{}
	f.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	// `--synchronous quorum 2` leaves the 2 as an argument.
	if len(pos) == 1 && strings.TrimSpace(*syncMode) == "quorum" {
		*syncMode, pos = "quorum "+pos[0], nil
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if *cluster == "" {
		return usagef("--cluster is required")
	}
	failover := set["synchronous"] || set["maximum-lag"] || set["preferred-regions"] || set["failsafe"]
	targets := set["target-rto"] || set["target-rpo"] || set["target-failover"] || set["target-write-availability"]
	backup := set["pitr-window"] || set["backup-defaults"] || targets
	switch {
	case !failover && !backup:
		return usagef("nothing to set: give --synchronous, --maximum-lag, --preferred-regions, --failsafe, --pitr-window, --target-rto, --target-rpo, --target-failover, --target-write-availability or --backup-defaults")
	case failover && backup:
		return usagef("the failover settings and the backup policy (--pitr-window, --target-*, --backup-defaults) are set by separate commands")
	case (set["pitr-window"] || targets) && *backupDefaults:
		return usagef("--pitr-window and --target-* exclude --backup-defaults")
	case set["backup-defaults"] && !*backupDefaults:
		return usagef("--backup-defaults=false sets nothing")
	case set["pitr-window"] && strings.TrimSpace(*pitr) == "":
		return usagef("--pitr-window: empty")
	case set["target-rto"] && strings.TrimSpace(*rto) == "", set["target-rpo"] && strings.TrimSpace(*rpo) == "",
		set["target-failover"] && strings.TrimSpace(*foTarget) == "":
		return usagef("--target-*: empty")
	case backup:
		return setBackupSettings(ctx, e, cf, f.json(), *cluster, backupSettings{pitr: *pitr, rto: *rto, rpo: *rpo, failover: *foTarget, writeAvailability: *waTarget}, *backupDefaults)
	}
	var sync string
	if set["synchronous"] {
		if sync, err = normalizeSynchronous(*syncMode); err != nil {
			return usagef("--synchronous: %v", err)
		}
	}
	var lag uint64
	if set["maximum-lag"] {
		if lag, err = parseBytes(*maxLag); err != nil {
			return usagef("--maximum-lag: %v", err)
		}
	}
	var regionList []string
	if set["preferred-regions"] {
		seen := map[string]bool{}
		for _, r := range strings.Split(*regions, ",") {
			if r = strings.TrimSpace(r); r == "" {
				continue
			}
			if seen[r] {
				return usagef("--preferred-regions: %q is listed twice", r)
			}
			seen[r] = true
			regionList = append(regionList, r)
		}
	}
	var failsafeOff bool
	if set["failsafe"] {
		switch strings.ToLower(strings.TrimSpace(*failsafe)) {
		case "on":
		case "off":
			failsafeOff = true
		default:
			return usagef("--failsafe: want on or off, got %q", *failsafe)
		}
	}
	cl, err := cf.client()
	if err != nil {
		return err
	}
	cur, err := currentPolicy(ctx, cl, *cluster)
	if err != nil {
		return err
	}
	p := proto.Clone(cur).(*pgdrv1.Policy)
	if set["synchronous"] {
		p.Synchronous = sync
	}
	if set["maximum-lag"] {
		p.MaximumLagOnFailover = lag
	}
	if set["preferred-regions"] {
		p.PreferredRegions = regionList
	}
	if set["failsafe"] {
		p.FailsafeDisabled = failsafeOff
	}
	var resp *pgdrv1.SetPolicyResponse
	if _, err := cl.call(ctx, "SetPolicy", func(ctx context.Context, c pgdrv1.AdminServiceClient) error {
		var err error
		resp, err = c.SetPolicy(ctx, &pgdrv1.SetPolicyRequest{Cluster: *cluster, Policy: p})
		return err
	}); err != nil {
		return err
	}
	return writePolicyShow(e.stdout, f.json(), *cluster, resp.GetPolicy(), nil)
}

// normalizeSynchronous accepts off, on, "quorum N", quorum:N and quorum=N.
func normalizeSynchronous(s string) (string, error) {
	v := strings.ToLower(strings.TrimSpace(s))
	switch v {
	case "off", "on":
		return v, nil
	}
	if rest, ok := strings.CutPrefix(v, "quorum"); ok {
		rest = strings.TrimLeft(rest, " :=")
		n, err := strconv.ParseUint(rest, 10, 31)
		if err != nil || n < 1 {
			return "", fmt.Errorf("%q: quorum needs a number N >= 1", s)
		}
		return fmt.Sprintf("quorum %d", n), nil
	}
	return "", fmt.Errorf("want off, on or \"quorum N\", got %q", s)
}

// parseBytes reads 1048576, 512kB, 16MB or 1GB (1024-based, as PostgreSQL).
func parseBytes(s string) (uint64, error) {
	v := strings.TrimSpace(s)
	mult := uint64(1)
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"kb", 1 << 10}, {"mb", 1 << 20}, {"gb", 1 << 30}, {"b", 1}} {
		if strings.HasSuffix(strings.ToLower(v), u.suffix) {
			v, mult = strings.TrimSpace(v[:len(v)-len(u.suffix)]), u.mult
			break
		}
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size in bytes (e.g. 1048576, 512kB, 16MB)", s)
	}
	return n * mult, nil
}

func writePolicyShow(w io.Writer, asJSON bool, cluster string, p *pgdrv1.Policy, backup *BackupPolicyJSON) error {
	v := PolicyShowJSON{Cluster: cluster, Policy: policyView(p), Failsafe: !p.GetFailsafeDisabled(), Backup: backup}
	if asJSON {
		return printJSON(w, v)
	}
	paused := "no"
	if v.Policy.Paused {
		paused = fmt.Sprintf("YES (maintenance mode: %s, by %s since %s)", dash(v.Policy.PausedReason), dash(v.Policy.PausedBy), dash(v.Policy.PausedAt))
	}
	sync := v.Policy.Synchronous
	if sync == "" {
		sync = "off"
	}
	lag := fmt.Sprintf("%d bytes", v.Policy.MaximumLagOnFailover)
	if v.Policy.MaximumLagOnFailover == 0 {
		lag = fmt.Sprintf("%d bytes (the default)", defaultMaxLag)
	}
	regions := strings.Join(v.Policy.PreferredRegions, ", ")
	fs := "on"
	if !v.Failsafe {
		fs = "off"
	}
	_, err := fmt.Fprintf(w, "cluster %s policy:\n  paused:                  %s\n  synchronous:             %s\n  maximum_lag_on_failover: %s\n  preferred_regions:       %s\n  failsafe:                %s\n",
		cluster, paused, sync, lag, dash(regions), fs)
	if err != nil || backup == nil {
		return err
	}
	return writeBackupPolicy(w, cluster, *backup)
}
