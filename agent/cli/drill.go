package cli

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/pgdr/pgdr/agent/drill"
	"github.com/pgdr/pgdr/agent/restore"
	"github.com/pgdr/pgdr/pkg/tiername"
)

func cmdDrill(ctx context.Context, e env, args []string) int {
	f := newFlags(e, "drill", "drill --config FILE [--backup ID|latest | --tier T] [--target-time T] [--scratch DIR] [--keep] [--checks FILE] [--source-dsn DSN] [--port N] [--parallel N] [--wait-timeout D] [--json]",
		`Runs a restore drill: restores a backup into a scratch directory, starts
PostgreSQL there on a free 127.0.0.1 port (no archiving, no primary_conninfo,
no synchronous standbys, its own pg_hba.conf and unix socket in the scratch
directory), replays WAL to the target and promotes, then checks the copy:
pg_amcheck --all --heapallindexed, the SQL checks of --checks FILE (a YAML list
of {name, database, sql, expect}: each query returns one value whose text must
equal expect) and every permanent user table's count(*), compared with the
source's (--source-dsn) when the drill replays to the latest WAL. Then it stops
the server and deletes the scratch copy, on failure and interruption too,
unless --keep.

The backup: --backup ID or latest, or --tier T (the newest backup of that
tier, ending before --target-time if given); by default the newest backup
ending before --target-time, else the latest. Without --target-time, recovery
replays all the archived WAL.

The scratch directory must be absent or empty, reachable by the user
PostgreSQL runs as, and outside the production data directory (postgres.pgdata),
its WAL directory and its tablespaces; by default a fresh directory under
$TMPDIR. A request that cannot run (a refused scratch path, an unknown backup,
a target before the backup or in the future) creates nothing.

The result reports the time of the restore's file phase (fetch and write), of
WAL replay and of the checks, and the RPO: the age of the last replayed
transaction (pg_last_xact_replay_timestamp) against the target time, or
against the drill's start for a drill to the latest WAL. Exit status: 0 the
drill passed, 1 it failed (the reason is printed) or could not run, 2 usage.
See docs/drill.md.`, true).withJSON()
	id := f.String("backup", "", "backup ID or latest (default: see above)")
	tier := f.String("tier", "", "drill the newest backup of this policy `tier`")
	tTime := f.String("target-time", "", "recover up to this time, with its zone: RFC 3339 (2026-11-26T08:17:00Z) or PostgreSQL's form ('2026-11-26 08:17:00+00', '… UTC')")
	scratch := f.String("scratch", "", "restore into this `DIR` (absent or empty; default: a new directory under $TMPDIR)")
	keep := f.Bool("keep", false, "keep the scratch copy (stopped) for debugging")
	checksFile := f.String("checks", "", "SQL checks: a YAML `FILE` listing {name, database, sql, expect}")
	sourceDSN := f.String("source-dsn", "", "compare the row counts with this source cluster's (only for a drill to the latest WAL)")
	port := f.Int("port", 0, "port for the scratch server on 127.0.0.1 (default: a free one)")
	parallel := f.Int("parallel", min(4, runtime.NumCPU()), "files restored at once, and pg_amcheck --jobs")
	waitTimeout := f.Duration("wait-timeout", time.Hour, "how long to wait for recovery to reach the target")
	if _, code, ok := f.parse(args, 0); !ok {
		return code
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(e.stderr, "pgdr-agent drill: "+format+"\n", a...)
		return ExitUsage
	}
	if *id != "" && *tier != "" {
		return usageErr("give --backup or --tier, not both")
	}
	if *tier != "" && !tiername.Valid(*tier) {
		return usageErr("--tier %q: a tier name is %s", *tier, tiername.Rule)
	}
	if *parallel < 1 {
		return usageErr("--parallel %d: at least 1", *parallel)
	}
	if *port < 0 || *port > 65535 {
		return usageErr("--port %d: not a port", *port)
	}
	if *waitTimeout <= 0 {
		return usageErr("--wait-timeout %s: must be positive", *waitTimeout)
	}
	var target *time.Time
	if *tTime != "" {
		t, err := restore.ParseTargetTime(*tTime)
		if err != nil {
			return usageErr("%v", err)
		}
		target = &t
	}
	var checks []drill.Check
	if *checksFile != "" {
		var err error
		if checks, err = drill.LoadChecks(*checksFile); err != nil {
			return usageErr("--checks: %v", err)
		}
	}
	cfg, log, code := f.config(e)
	if cfg == nil {
		return code
	}
	fail := func(err error) int {
		if *f.jsonOut {
			printJSON(e.stdout, map[string]any{"ok": false, "refused": true, "error": err.Error()})
		}
		fmt.Fprintf(e.stderr, "pgdr-agent drill: %v\n", err)
		return ExitFailure
	}
	deps, self, cfgPath, err := restoreDeps(ctx, cfg, log)
	if err != nil {
		return fail(err)
	}
	res, err := drill.Run(ctx, deps, drill.Options{
		BackupID: *id, Tier: *tier, TargetTime: target, Scratch: *scratch, Keep: *keep, Checks: checks, SourceDSN: *sourceDSN,
		Port: *port, Parallel: *parallel, ReplayTimeout: *waitTimeout, AgentPath: self, ConfigPath: cfgPath,
	})
	if err != nil {
		return fail(err)
	}
	if *f.jsonOut {
		printJSON(e.stdout, res)
	} else {
		printDrill(e, res)
	}
	if !res.OK {
		return ExitFailure
	}
	return ExitOK
}

// printDrill prints a drill's result for a person.
func printDrill(e env, r *drill.Result) {
	w := e.stdout
	verdict := "PASSED"
	if !r.OK {
		verdict = "FAILED: " + r.Reason
	}
	fmt.Fprintf(w, "drill %s\n", verdict)
	fmt.Fprintf(w, "backup %s (tier %s) to %s, in %s on port %d: %s\n", dash(r.Backup), dash(r.Tier), r.Target, r.Scratch, r.Port, r.Cleanup)
	tm := r.Timings
	fmt.Fprintf(w, "time: fetch/write %.1fs, WAL replay %.1fs, checks %.1fs, total %.1fs\n", tm.FetchWrite, tm.Replay, tm.Checks, tm.Total)
	if p := r.RPO; p != nil {
		last := "none"
		if p.NewestCommit != nil {
			last = p.NewestCommit.Format(time.RFC3339Nano)
		}
		fmt.Fprintf(w, "rpo: %.1fs (last replayed transaction %s, against %s)\n", p.Seconds, last, p.Against.Format(time.RFC3339Nano))
	}
	if a := r.Amcheck; a != nil {
		if a.OK {
			fmt.Fprintf(w, "pg_amcheck: ok (%.1fs)\n", a.Seconds)
		} else {
			fmt.Fprintf(w, "pg_amcheck: FAILED (exit %d)\n", a.ExitCode)
			for _, p := range a.Problems {
				fmt.Fprintf(w, "  %s\n", p)
			}
		}
	}
	for _, c := range r.Checks {
		switch {
		case c.OK:
			fmt.Fprintf(w, "check %s: ok\n", c.Name)
		case c.Error != "":
			fmt.Fprintf(w, "check %s: FAILED: %s\n", c.Name, c.Error)
		default:
			fmt.Fprintf(w, "check %s: FAILED: got %q, want %q\n", c.Name, c.Got, c.Want)
		}
	}
	if rc := r.RowCounts; rc != nil {
		fmt.Fprintf(w, "rows: %d in %d tables of %d databases; %s\n", rc.Rows, rc.Tables, rc.Databases, rc.Note)
		for _, m := range rc.Mismatches {
			src := "no such table"
			if m.SourceRows != nil && *m.SourceRows >= 0 {
				src = fmt.Sprint(*m.SourceRows)
			}
			fmt.Fprintf(w, "  %s %s: restored %d, source %s\n", m.Database, m.Table, m.Rows, src)
		}
	}
	for _, f := range r.Failures[min(1, len(r.Failures)):] {
		fmt.Fprintf(w, "also failed: %s\n", f)
	}
}
