package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/agent/expire"
	"github.com/pgdr/pgdr/pkg/duration"
	"github.com/pgdr/pgdr/pkg/keys"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/tiername"
)

// durationFlag is a flag.Value taking expire.ParseDuration's forms.
type durationFlag struct {
	d   time.Duration
	set bool
}

func (f *durationFlag) String() string {
	if !f.set {
		return ""
	}
	return duration.Format(f.d)
}

func (f *durationFlag) Set(s string) error {
	d, err := expire.ParseDuration(s)
	if err != nil {
		return err
	}
	f.d, f.set = d, true
	return nil
}

// tierRules is the repeatable --keep-tier NAME=COUNT|AGE[,COUNT|AGE].
type tierRules map[string]expire.Rule

func (t tierRules) String() string {
	var out []string
	for n, r := range t {
		out = append(out, n+"="+r.String())
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func (t tierRules) Set(s string) error {
	name, spec, ok := strings.Cut(s, "=")
	if !ok || !tiername.Valid(name) {
		return fmt.Errorf("%q: want NAME=COUNT, NAME=AGE or NAME=COUNT,AGE (a tier name is %s)", s, tiername.Rule)
	}
	if _, dup := t[name]; dup {
		return fmt.Errorf("tier %s given twice", name)
	}
	var r expire.Rule
	for _, p := range strings.Split(spec, ",") {
		if n, err := strconv.Atoi(p); err == nil {
			if n < 1 || r.Count != 0 {
				return fmt.Errorf("tier %s: count %q: want one count of at least 1", name, p)
			}
			r.Count = n
			continue
		}
		d, err := expire.ParseDuration(p)
		if err != nil || r.Age != 0 {
			return fmt.Errorf("tier %s: %q is neither a count nor an age (like 7, 30d, 12w, 36h), or a second age", name, p)
		}
		r.Age = d
	}
	t[name] = r
	return nil
}

func cmdExpire(ctx context.Context, e env, args []string) int {
	f := newFlags(e, "expire", "expire --config FILE [--keep-full N] [--keep-diff N] [--keep-incr N] [--keep-age DUR] [--keep-full-age DUR] [--keep-diff-age DUR] [--keep-incr-age DUR] [--keep-tier NAME=N|DUR[,N|DUR]]... [--pitr-window DUR] [--pitr-margin DUR] [--grace DUR] [--repo NAME] [--parallel N] [--trust-unsigned] [--dry-run] [--json]",
		`Expires backups and archived WAL by retention rules, in every repository
(or --repo's), and says why each backup stays or goes (see docs/backup.md,
"Retention"). Give at least one rule:

  --keep-full 4 --keep-incr 24     the newest 4 full and 24 incremental backups
  --keep-full-age 30d              full backups started in the last 30 days
  --keep-tier daily=7,30d          backups of tier "daily" (backup --tier):
                                   the newest 7 and any under 30 days old

A count and an age for the same backups keep a backup either one keeps. A
backup's tier rule, when its tier has one, replaces its type's rule. A full
backup no rule covers stays; a diff/incr no rule covers goes with its full.
Whatever the rules say, these stay: pinned backups (backup-pin), the newest
full backup, every backup a kept one builds on, and what keeps the PITR
window restorable (the newest backup that stopped before now - --pitr-window
- --pitr-margin, and all WAL after its start). WAL is kept from the start of the oldest
backup kept by a rule, on every timeline, and from start to stop for every
other kept backup. Backups whose manifest is not signed (where signing is
configured) are never expired nor counted, and keep their own start to stop
WAL (when at most 4 TiB); an unreadable manifest stops expiry of that
repository (the others are still expired; exit 1). Without signing configured, a run that deletes
needs --trust-unsigned: any writer of the repository could forge backups.

The expired backups' manifests are deleted before their data and any WAL, so
an interrupted run leaves no backup that looks complete but is not; the
next run removes what was left once older than --grace (at least 6h; a
running backup refreshes its reservation every 30m, so it is never taken for
a stale one). Expiry and backups running at the same time coordinate through
markers under <cluster>/expiry/ (see docs/backup.md); a run (not --dry-run)
removes markers of an interrupted run once older than 1h. Durations: 36h, 30d, 12w, 1d12h.`, true).withJSON()
	keepFull := f.Int("keep-full", 0, "keep the newest N full backups")
	keepDiff := f.Int("keep-diff", 0, "keep the newest N differential backups")
	keepIncr := f.Int("keep-incr", 0, "keep the newest N incremental backups")
	var keepAge, fullAge, diffAge, incrAge durationFlag
	f.Var(&keepAge, "keep-age", "keep backups of every type started within DUR (a type's own --keep-TYPE-age wins)")
	f.Var(&fullAge, "keep-full-age", "keep full backups started within DUR")
	f.Var(&diffAge, "keep-diff-age", "keep differential backups started within DUR")
	f.Var(&incrAge, "keep-incr-age", "keep incremental backups started within DUR")
	tiers := tierRules{}
	f.Var(tiers, "keep-tier", "NAME=COUNT, NAME=AGE or NAME=COUNT,AGE: the rule of backups taken with --tier NAME (repeatable)")
	window := durationFlag{d: expire.DefaultPITRWindow}
	f.Var(&window, "pitr-window", "keep every point of the last DUR restorable (0 for none; default 7d)")
	margin := durationFlag{d: expire.PITRSkewMargin}
	f.Var(&margin, "pitr-margin", "the window's anchor must have stopped DUR before the window's start, for clock skew between hosts (default 10m)")
	grace := durationFlag{d: expire.DefaultGrace}
	f.Var(&grace, "grace", "objects of a backup without a manifest are removed only when older than DUR (default 1d, at least 6h)")
	repoName := f.String("repo", "", "expire only this repository (pins are read from all)")
	parallel := f.Int("parallel", expire.DefaultParallel, "deletes at once per repository")
	dry := f.Bool("dry-run", false, "print what would be deleted and why; delete nothing")
	trustUnsigned := f.Bool("trust-unsigned", false, "delete even where signing is not configured (every manifest, even a forged one, then counts against the rules)")
	if _, code, ok := f.parse(args, 0); !ok {
		return code
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(e.stderr, "pgdr-agent expire: "+format+"\n", a...)
		return ExitUsage
	}
	spec := expire.Spec{Types: map[string]expire.Rule{}, Tiers: map[string]expire.Rule(tiers), PITRWindow: window.d, PITRMargin: margin.d}
	for _, t := range []struct {
		typ   string
		count int
		age   durationFlag
	}{{backup.TypeFull, *keepFull, fullAge}, {backup.TypeDiff, *keepDiff, diffAge}, {backup.TypeIncr, *keepIncr, incrAge}} {
		if t.count < 0 {
			return usageErr("--keep-%s %d: want a count of at least 1", t.typ, t.count)
		}
		r := expire.Rule{Count: t.count, Age: t.age.d}
		if !t.age.set && keepAge.set {
			r.Age = keepAge.d
		}
		if (t.age.set || keepAge.set) && r.Age <= 0 {
			return usageErr("--keep-%s-age / --keep-age: want an age above 0 (like 30d)", t.typ)
		}
		if r.Count > 0 || r.Age > 0 {
			spec.Types[t.typ] = r
		}
	}
	if len(spec.Types) == 0 && len(spec.Tiers) == 0 {
		return usageErr("no retention rule: give --keep-full, --keep-diff, --keep-incr, --keep-age, --keep-TYPE-age or --keep-tier (see --help)")
	}
	if *parallel < 1 || *parallel > 256 {
		return usageErr("--parallel %d: want 1 to 256", *parallel)
	}
	if margin.d <= 0 {
		return usageErr("--pitr-margin must be above 0")
	}
	if grace.d < expire.MinGrace {
		return usageErr("--grace %s: at least %s (a running backup refreshes its reservation every %s)", duration.Format(grace.d), duration.Format(expire.MinGrace), backup.ReservationRefresh)
	}
	if err := spec.Validate(); err != nil {
		return usageErr("%v", err)
	}
	cfg, log, code := f.config(e)
	if cfg == nil {
		return code
	}
	repos, err := repo.OpenAll(ctx, cfg)
	if err != nil {
		log.Error("expire", "err", err)
		return ExitFailure
	}
	all := repos
	if *repoName != "" {
		repos = nil
		for _, r := range all {
			if r.Name == *repoName {
				repos = append(repos, r)
			}
		}
		if len(repos) == 0 {
			var names []string
			for _, r := range all {
				names = append(names, r.Name)
			}
			fmt.Fprintf(e.stderr, "pgdr-agent expire: --repo %s: no such repository (configured: %s)\n", *repoName, strings.Join(names, ", "))
			return ExitUsage
		}
	}
	// An async repository that cannot be read now (its region is down, or
	// the copier has not reached it yet) is left for the next run unless
	// named with --repo: it must not stop expiry in the sync repositories.
	// Pins are written to every repository, so the sync ones hold them all.
	skip := func(r repo.Repo) bool { return r.Async && *repoName == "" }
	repos = slices.Clone(repos) // all may share its array
	for _, r := range slices.Clone(repos) {
		if err := repo.CheckClusterInfo(ctx, r, cfg.Cluster); err != nil {
			if skip(r) {
				log.Warn("expire: skipping the async repository, which cannot be read now; a later run expires it", "repo", r.Name, "err", err)
				repos = slices.DeleteFunc(repos, func(o repo.Repo) bool { return o.Name == r.Name })
				all = slices.DeleteFunc(slices.Clone(all), func(o repo.Repo) bool { return o.Name == r.Name })
				continue
			}
			log.Error("expire refused", "err", err)
			return ExitFailure
		}
	}
	// Pins count from every repository, even with --repo.
	pins, err := expire.LoadPins(ctx, all, cfg.Cluster)
	if err != nil {
		log.Error("expire", "err", err)
		return ExitFailure
	}
	ids, _ := keys.Identities(cfg) // without them timeline history is not followed (keeps more)
	results, err := expire.Run(ctx, expire.Deps{Cluster: cfg.Cluster, Repos: repos, Identities: ids, Log: log, Pins: pins, PinRepos: all},
		expire.Options{Spec: spec, DryRun: *dry, Grace: grace.d, Parallel: *parallel, TrustUnsigned: *trustUnsigned})
	if *f.jsonOut {
		out := map[string]any{"cluster": cfg.Cluster, "dry_run": *dry, "spec": spec, "results": results}
		if results == nil {
			out["results"] = []expire.Result{}
		}
		if err != nil {
			out["error"] = err.Error()
		}
		printJSON(e.stdout, out)
	} else {
		for _, r := range results {
			printExpire(e.stdout, r)
		}
	}
	if err != nil {
		log.Error("expire failed", "err", err)
		return ExitFailure
	}
	return 0
}

func printExpire(w io.Writer, r expire.Result) {
	verb := "deleted"
	if r.DryRun {
		verb = "would delete"
	}
	p := r.Plan
	if p == nil {
		fmt.Fprintf(w, "repository %s: nothing decided\n", r.Repo)
		return
	}
	walN := len(p.WALDeleteNames)
	if !r.DryRun {
		walN = r.WALDeleted
	}
	fmt.Fprintf(w, "repository %s: %s %d of %d backups, %d WAL files, %d leftovers\n", r.Repo, verb, len(p.Delete), len(p.Delete)+len(p.Keep), walN, len(r.Leftovers))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, d := range p.Delete {
		fmt.Fprintf(tw, "  DELETE\t%s\t%s\t%s\t%s\n", d.ID, d.Type, dash(d.Tier), d.Reason)
	}
	for _, d := range p.Keep {
		fmt.Fprintf(tw, "  KEEP\t%s\t%s\t%s\t%s\n", d.ID, d.Type, dash(d.Tier), d.Reason)
	}
	tw.Flush()
	for _, g := range p.WALDelete {
		fmt.Fprintf(w, "  WAL DELETE  timeline %d  %s..%s (%d files): %s\n", g.Timeline, g.First, g.Last, g.Files, g.Reason)
	}
	for _, g := range p.WALKeep {
		if g.First == "" {
			fmt.Fprintf(w, "  WAL KEEP    all: %s\n", g.Reason)
		} else if g.Last == "" {
			fmt.Fprintf(w, "  WAL KEEP    timeline %d  from %s: %s\n", g.Timeline, g.First, g.Reason)
		} else {
			fmt.Fprintf(w, "  WAL KEEP    timeline %d  %s..%s: %s\n", g.Timeline, g.First, g.Last, g.Reason)
		}
	}
	for _, sp := range p.PartialDelete {
		fmt.Fprintf(w, "  PARTIAL DELETE  stream partial of %s: %s\n", sp.Segment, sp.Reason)
	}
	if r.WALSkipped != "" {
		fmt.Fprintf(w, "  WAL SKIPPED %s\n", r.WALSkipped)
	}
	for _, id := range r.DataLeft {
		fmt.Fprintf(w, "  DATA LEFT   %s: its manifest was deleted, not all its data; the next run removes the rest\n", id)
	}
	for _, l := range r.Leftovers {
		fmt.Fprintf(w, "  LEFTOVER    %s: objects without a manifest, older than the grace period\n", l)
	}
	for _, id := range r.DivergenceDeleted {
		fmt.Fprintf(w, "  DIVERGENCE  %s: a divergence report past retention (its raw WAL with it)\n", id)
	}
}

func cmdBackupPin(ctx context.Context, e env, args []string) int {
	f := newFlags(e, "backup-pin", "backup-pin --config FILE --note TEXT ID",
		`Pins a backup: expire never deletes it (nor the backups it builds on, nor
the WAL from its start to its stop). The pin is written, signed when
signing.key_file is set, to every repository; a pin found in any one pins the
backup in all. Remove it with backup-unpin.`, true)
	note := f.String("note", "", "why the backup is kept (required; shown by backup-list and expire)")
	pos, code, ok := f.parse(args, 1)
	if !ok {
		return code
	}
	if strings.TrimSpace(*note) == "" {
		fmt.Fprintln(e.stderr, "pgdr-agent backup-pin: --note TEXT is required: say why the backup is kept")
		return ExitUsage
	}
	if !backup.ValidID(pos[0]) {
		fmt.Fprintf(e.stderr, "pgdr-agent backup-pin: %q is not a backup ID (like 20261126T081700F)\n", pos[0])
		return ExitUsage
	}
	cfg, log, code := f.config(e)
	if cfg == nil {
		return code
	}
	repos, err := repo.OpenAll(ctx, cfg)
	if err != nil {
		log.Error("backup-pin", "err", err)
		return ExitFailure
	}
	signer, err := keys.Signer(cfg)
	if err != nil {
		log.Error("backup-pin", "err", err)
		return ExitFailure
	}
	p, err := expire.SetPin(ctx, repos, signer, cfg.Cluster, cfg.Node.Name, pos[0], *note, time.Now())
	if err != nil {
		log.Error("backup-pin failed", "err", err)
		return ExitFailure
	}
	fmt.Fprintf(e.stdout, "backup %s pinned in %s: %s\n", p.ID, strings.Join(p.Repos, ", "), p.Note)
	return 0
}

func cmdBackupUnpin(ctx context.Context, e env, args []string) int {
	f := newFlags(e, "backup-unpin", "backup-unpin --config FILE ID",
		"Removes a backup's pin from every repository: expire's rules apply to it again.", true)
	pos, code, ok := f.parse(args, 1)
	if !ok {
		return code
	}
	if !backup.ValidID(pos[0]) {
		fmt.Fprintf(e.stderr, "pgdr-agent backup-unpin: %q is not a backup ID (like 20261126T081700F)\n", pos[0])
		return ExitUsage
	}
	cfg, log, code := f.config(e)
	if cfg == nil {
		return code
	}
	repos, err := repo.OpenAll(ctx, cfg)
	if err != nil {
		log.Error("backup-unpin", "err", err)
		return ExitFailure
	}
	pins, err := expire.LoadPins(ctx, repos, cfg.Cluster)
	if err != nil {
		log.Error("backup-unpin", "err", err)
		return ExitFailure
	}
	if _, ok := pins[pos[0]]; !ok {
		fmt.Fprintf(e.stderr, "pgdr-agent backup-unpin: backup %s is not pinned\n", pos[0])
		return ExitFailure
	}
	if err := expire.Unpin(ctx, repos, cfg.Cluster, pos[0]); err != nil {
		log.Error("backup-unpin failed", "err", err)
		return ExitFailure
	}
	fmt.Fprintf(e.stdout, "backup %s unpinned\n", pos[0])
	return 0
}
