package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/pgdr/pgdr/agent/agentsock"
	"github.com/pgdr/pgdr/agent/daemon"
	"github.com/pgdr/pgdr/agent/walship"
	"github.com/pgdr/pgdr/pkg/buildinfo"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/humanlog"
	"github.com/pgdr/pgdr/pkg/keys"
	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/repo"
)

// Exit statuses.
const (
	ExitOK       = 0
	ExitFailure  = 1 // also wal-fetch's "not in the archive"
	ExitUsage    = 2
	ExitNotFound = 1
	// ExitFatal is wal-fetch's status for a file that exists but cannot be
	// read, decrypted or verified: PostgreSQL aborts recovery on > 125.
	ExitFatal = 126
)

type env struct {
	stdout, stderr io.Writer
	// walFetchHook, when set (only by tests), runs in wal-fetch once its
	// configuration is loaded: a test makes it panic to see the exit status.
	walFetchHook func()
}

type command struct {
	name    string
	summary string
	usage   string
	run     func(ctx context.Context, e env, args []string) int
}

func commands() []command {
	return []command{
		{"run", "run the agent daemon (health checks and HTTP probes, coordinator reports, WAL push-ahead)", "run --config FILE", cmdRun},
		{"wal-push", "archive_command: push one WAL file to every repository", "wal-push --config FILE [--force] PATH", cmdWalPush},
		{"wal-repair", "show an archived WAL file that conflicts with the local one, and replace it on confirmation", "wal-repair --config FILE [--yes] [--force] [--json] NAME|PATH", cmdWalRepair},
		{"wal-fetch", "restore_command: fetch one WAL file from the archive", "wal-fetch --config FILE NAME DEST", cmdWalFetch},
		{"wal-list", "what the archive holds per timeline, with gaps", "wal-list --config FILE [--json]", cmdWalList},
		{"wal-verify", "read back and verify every archived WAL object", "wal-verify --config FILE [--json] [--parallel N]", cmdWalVerify},
		{"wal-prefetch", "fetch the segments after NAME into pg_wal/pgdr_prefetch (used by wal-fetch)", "wal-prefetch --config FILE --pgwal DIR --segment-size N NAME", cmdWalPrefetch},
		{"divergence-show", "print a former primary's divergence report from the repositories, every transaction listed", "divergence-show --config FILE [--json] ID", cmdDivergenceShow},
		{"backup", "take a base backup (full, diff or incr) of the running cluster", "backup --config FILE [--type T]", cmdBackup},
		{"backup-list", "list the backups in every repository", "backup-list --config FILE [--json]", cmdBackupList},
		{"backup-pin", "pin a backup so that expire never deletes it", "backup-pin --config FILE --note TEXT ID", cmdBackupPin},
		{"backup-unpin", "remove a backup's pin", "backup-unpin --config FILE ID", cmdBackupUnpin},
		{"expire", "expire backups and WAL by retention rules (keeps pins, chains and the PITR window)", "expire --config FILE [--keep-full N] ... [--dry-run]", cmdExpire},
		{"backup-verify", "re-read and verify a backup, its chain and the WAL it needs", "backup-verify --config FILE ID|latest", cmdBackupVerify},
		{"restore", "restore a backup and configure point-in-time recovery", "restore --config FILE --pgdata DIR [target]", cmdRestore},
		{"drill", "restore drill: restore into a scratch directory, replay, check (pg_amcheck, SQL, row counts), measure RTO/RPO, delete", "drill --config FILE [--backup ID|latest | --tier T] [--target-time T] [--checks FILE] [--json]", cmdDrill},
		{"keygen", "write a new age identity or signing key (mode 0600) and print its public key", "keygen [--signing] -o FILE", cmdKeygen},
		{"config", "check a configuration file", "config check --config FILE", cmdConfig},
		{"version", "print the version", "version", func(_ context.Context, e env, _ []string) int {
			fmt.Fprintln(e.stdout, buildinfo.Line("pgdr-agent"))
			return 0
		}},
	}
}

// Main runs pgdr-agent with args (without the program name) and returns the
// process exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	return run(env{stdout: stdout, stderr: stderr}, args)
}

func run(e env, args []string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(e.stderr)
		if len(args) == 0 {
			return ExitUsage
		}
		return 0
	}
	if isVersionFlag(args[0]) {
		args = append([]string{"version"}, args[1:]...)
	}
	for _, c := range append(commands(), internalCommands()...) {
		if c.name == args[0] {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return c.run(ctx, e, args[1:])
		}
	}
	fmt.Fprintf(e.stderr, "pgdr-agent: unknown command %q\n\n", args[0])
	usage(e.stderr)
	return ExitUsage
}

// isVersionFlag: --version, -version and -V are taken for the version command.
func isVersionFlag(a string) bool { return a == "--version" || a == "-version" || a == "-V" }

func usage(w io.Writer) {
	fmt.Fprintln(w, `pgdr-agent — the pgdr agent that runs next to each PostgreSQL server.

Usage: pgdr-agent COMMAND [flags] [args]

Commands:`)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range commands() {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
	}
	tw.Flush()
	fmt.Fprintln(w, `
Every command that needs a configuration takes --config FILE (or PGDR_CONFIG).
Run 'pgdr-agent COMMAND --help' for a command's flags.`)
}

// flags wraps a FlagSet that accepts flags anywhere among positional
// arguments ("wal-push PATH --config F" and "wal-push --config F PATH").
type flags struct {
	*flag.FlagSet
	cfgPath *string
	jsonOut *bool
}

func newFlags(e env, name, usageLine, about string, withConfig bool) *flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	f := &flags{FlagSet: fs}
	if withConfig {
		f.cfgPath = fs.String("config", os.Getenv("PGDR_CONFIG"), "configuration file (default $PGDR_CONFIG)")
	}
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: pgdr-agent %s\n\n%s\n\nFlags:\n", usageLine, about)
		fs.PrintDefaults()
	}
	return f
}

func (f *flags) withJSON() *flags {
	f.jsonOut = f.Bool("json", false, "print JSON for scripts")
	return f
}

// parse parses interspersed flags; it returns the positional arguments and
// ok=false (having printed the problem) on a usage error.
func (f *flags) parse(args []string, nargs int) ([]string, int, bool) {
	var pos []string
	for {
		if err := f.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, 0, false
			}
			return nil, ExitUsage, false
		}
		args = f.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if nargs >= 0 && len(pos) != nargs {
		fmt.Fprintf(f.Output(), "pgdr-agent %s: expected %d argument(s), got %d\n", f.Name(), nargs, len(pos))
		f.Usage()
		return nil, ExitUsage, false
	}
	return pos, 0, true
}

func (f *flags) config(e env) (*config.Config, *slog.Logger, int) {
	if *f.cfgPath == "" {
		fmt.Fprintf(e.stderr, "pgdr-agent %s: no configuration: pass --config FILE or set PGDR_CONFIG\n", f.Name())
		return nil, nil, ExitUsage
	}
	cfg, err := config.Load(*f.cfgPath)
	if err != nil {
		fmt.Fprintf(e.stderr, "pgdr-agent %s: %v\n", f.Name(), err)
		return nil, nil, ExitFailure
	}
	return cfg, logger(e.stderr, cfg.Agent.LogLevel, f.Name()), 0
}

// logger logs for a one-shot command: plain lines for a person when w is
// a terminal, slog's key=value text otherwise (archive_command's output in
// PostgreSQL's log, scripts, collectors). The daemon ("run") always uses
// the text format.
func logger(w io.Writer, level, component string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	if component != "run" && isTerminal(w) {
		return slog.New(humanlog.New(w, "pgdr-agent", lv)).With("component", component)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lv})).With("component", component)
}

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func cmdRun(ctx context.Context, e env, args []string) int {
	f := newFlags(e, "run", "run --config FILE [--pid-file FILE]", "Runs the agent daemon: checks the local PostgreSQL every health.interval and\nserves /health, /ready, /primary, /replica and /metrics on health.listen;\nregisters with and reports to the coordinator leader (coordinator.addresses)\nand joins the gossip pool (gossip.bind) when configured; pushes ready WAL\nahead of archive_command and serves one-shot wal-push/wal-fetch over the\nlocal socket (agent.socket). Stops cleanly on SIGTERM or SIGINT.", true)
	pidFile := f.String("pid-file", "", "write the daemon's process id here (removed on exit)")
	if _, code, ok := f.parse(args, 0); !ok {
		return code
	}
	cfg, log, code := f.config(e)
	if cfg == nil {
		return code
	}
	if *pidFile != "" {
		if err := os.WriteFile(*pidFile, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o644); err != nil {
			log.Error("pid file", "err", err)
			return ExitFailure
		}
		defer os.Remove(*pidFile)
	}
	sh, err := walship.New(ctx, cfg, log)
	if err != nil {
		log.Error("starting", "err", err)
		return ExitFailure
	}
	dm := daemon.New(cfg, sh, log)
	enableWatchdog(dm, *f.cfgPath, log)
	if err := dm.Run(ctx); err != nil {
		log.Error("daemon", "err", err)
		return ExitFailure
	}
	return 0
}

func cmdWalPush(ctx context.Context, e env, args []string) int {
	f := newFlags(e, "wal-push", "wal-push --config FILE [--force] PATH", `Pushes one WAL file (archive_command's %p) to every configured repository and
exits 0 only once it is durable in all of them. Pushing identical content again
succeeds; different content under an existing name fails and overwrites nothing
(see wal-repair).

A file in a pg_wal directory is refused unless PostgreSQL has marked it ready
(pg_wal/archive_status/NAME.ready, or .done once archived): run by hand on the
segment still being written, it would store an incomplete copy that makes
every later archive_command for that segment fail. archive_command is only
given ready files. A copy made elsewhere of a segment that postgres.pgdata's
pg_wal holds without that mark is refused too.

postgresql.conf:  archive_command = 'pgdr-agent wal-push --config /etc/pgdr/agent.yaml %p'`, true)
	force := f.Bool("force", false, "push a file in pg_wal that PostgreSQL has not marked ready (only if you know it is complete)")
	pos, code, ok := f.parse(args, 1)
	if !ok {
		return code
	}
	cfg, log, code := f.config(e)
	if cfg == nil {
		return code
	}
	abs, err := filepath.Abs(pos[0])
	if err != nil {
		log.Error("wal-push", "err", err)
		return ExitFailure
	}
	// A forced push works alone: the daemon's hand-off pushes only files
	// PostgreSQL marked ready.
	opts := walship.PushOptions{Force: *force}
	if !opts.Force && filepath.Dir(abs) == filepath.Join(cfg.Postgres.PGData, "pg_wal") {
		err := agentsock.Call(ctx, cfg.Agent.Socket, agentsock.Request{Op: "wal-push", Path: abs}, agentsock.TrustedUIDs(cfg.Postgres.PGData)...)
		if err == nil {
			return 0
		}
		if !errors.Is(err, agentsock.ErrNoDaemon) {
			log.Error("wal-push failed", "file", filepath.Base(abs), "err", err)
			return ExitFailure
		}
		if errors.Is(err, agentsock.ErrUntrustedSocket) {
			log.Warn("not handing the segment to the agent daemon: pushing it myself", "file", filepath.Base(abs), "reason", err)
		} else {
			log.Debug("working alone", "reason", err)
		}
	}
	sh, err := walship.New(ctx, cfg, log)
	if err != nil {
		log.Error("wal-push", "err", err)
		return ExitFailure
	}
	if err := sh.PushWith(ctx, abs, opts); err != nil {
		log.Error("wal-push failed", "file", filepath.Base(abs), "err", err)
		return ExitFailure
	}
	return 0
}

// cmdWalRepair shows a WAL file's archived copies next to the local file
// and, confirmed with --yes, replaces the conflicting ones: the way out
// when a hand push of the segment still being written blocks archiving.
func cmdWalRepair(ctx context.Context, e env, args []string) int {
	f := newFlags(e, "wal-repair", "wal-repair --config FILE [--yes] [--force] [--json] NAME|PATH", `Repairs a WAL file whose archived copy conflicts with the local file, the
state a hand push of the segment PostgreSQL was still writing leaves behind
(every archive_command for it then fails with "the archive holds a different
file under this name"). NAME is looked up in the configured pg_wal; a PATH
names the file directly.

Shows both versions: the local file (size, SHA-256, whether PostgreSQL marked
it ready) and, per repository, the stored object (size, SHA-256, when it was
stored). Without --yes it changes nothing and exits 1 while a conflict remains.
With --yes, given only once you are sure the stored copy was never complete,
every conflicting object is copied to <cluster>/wal-replaced/NAME.<time> and
replaced with the local file, which must be a whole segment of this cluster
marked ready or done by PostgreSQL (--force: also when not marked).
Exit 0: nothing to repair, or repaired.`, true).withJSON()
	yes := f.Bool("yes", false, "replace the conflicting stored objects (the stored copy was never complete)")
	force := f.Bool("force", false, "with --yes, accept a local file PostgreSQL has not marked ready")
	pos, code, ok := f.parse(args, 1)
	if !ok {
		return code
	}
	cfg, log, code := f.config(e)
	if cfg == nil {
		return code
	}
	path := pos[0]
	if !strings.ContainsRune(path, filepath.Separator) {
		path = filepath.Join(cfg.Postgres.PGData, "pg_wal", path)
	}
	sh, err := walship.New(ctx, cfg, log)
	if err != nil {
		log.Error("wal-repair", "err", err)
		return ExitFailure
	}
	rp := sh.Repairer()
	v, err := rp.Inspect(ctx, path)
	if err != nil {
		log.Error("wal-repair", "err", err)
		return ExitFailure
	}
	conflicting := v.Conflicting()
	out := map[string]any{"versions": v, "conflicting": conflicting, "changed": false}
	if !*f.jsonOut {
		printVersions(e.stdout, v)
	}
	switch {
	case len(conflicting) == 0:
		if *f.jsonOut {
			printJSON(e.stdout, out)
		} else {
			fmt.Fprintln(e.stdout, "\nOK: nothing to repair: no repository holds different content under this name (wal-push stores it where it is missing).")
		}
		return 0
	case !*yes:
		if *f.jsonOut {
			printJSON(e.stdout, out)
		} else {
			fmt.Fprintf(e.stdout, "\nCONFLICT in %s: nothing was changed.\n", strings.Join(conflicting, ", "))
			fmt.Fprintf(e.stdout, "If the stored copy was never complete (pushed while PostgreSQL was still writing the\nsegment) and the local file is the finished segment, run again with --yes to replace\nthe stored copy with it (the old one is kept under %s).\n", repo.WALReplacedPrefix(cfg.Cluster))
		}
		return ExitFailure
	}
	done, err := rp.Repair(ctx, path, *force)
	for _, r := range done {
		if !*f.jsonOut {
			fmt.Fprintf(e.stdout, "replaced %s in repository %s (the old object is kept as %s)\n", r.Key, r.Repo, r.KeptAs)
		}
	}
	if err != nil {
		log.Error("wal-repair", "file", v.Name, "err", err)
		if *f.jsonOut {
			out["changed"], out["replaced"], out["error"] = len(done) > 0, done, err.Error()
			printJSON(e.stdout, out)
		}
		return ExitFailure
	}
	if *f.jsonOut {
		out["changed"], out["replaced"] = true, done
		printJSON(e.stdout, out)
	} else {
		fmt.Fprintf(e.stdout, "OK: %s is archived as the local file in every repository.\n", v.Name)
	}
	return 0
}

func printVersions(w io.Writer, v *walship.Versions) {
	fmt.Fprintf(w, "WAL file %s\n", v.Name)
	ready := v.Local.Ready
	switch ready {
	case "":
		ready = "not in a pg_wal directory"
	case "ready", "done":
		ready = "marked " + ready + " by PostgreSQL"
	default:
		ready = "NOT marked ready by PostgreSQL (it may still be being written)"
	}
	fmt.Fprintf(w, "  local   %s\n          %d bytes, sha256 %s, %s\n", v.Local.Path, v.Local.Size, v.Local.SHA256, ready)
	if v.Local.Problem != "" {
		fmt.Fprintf(w, "          NOT a valid file to archive: %s\n", v.Local.Problem)
	}
	for _, sv := range v.Stored {
		fmt.Fprintf(w, "  stored  repository %s (%s) %s\n", sv.Repo, sv.URL, sv.Key)
		switch {
		case !sv.Present:
			fmt.Fprintln(w, "          absent")
		case sv.Error != "":
			fmt.Fprintf(w, "          %d bytes stored %s, header unreadable: %s  DIFFERENT\n", sv.StoredBytes, sv.Stored.Format(time.RFC3339), sv.Error)
		default:
			verdict := "DIFFERENT"
			if sv.Same {
				verdict = "same as local"
			}
			fmt.Fprintf(w, "          %d bytes, sha256 %s, stored %s (%d bytes in the repository)  %s\n", sv.Size, sv.SHA256, sv.Stored.Format(time.RFC3339), sv.StoredBytes, verdict)
		}
	}
}

// cmdWalFetch is restore_command. PostgreSQL reads any exit status below
// 126 as "not in the archive" and may end recovery there (and promote a
// cluster missing WAL), so exit 1 means exactly that and every other
// failure, usage errors and a recovered panic included, exits ExitFatal.
func cmdWalFetch(ctx context.Context, e env, args []string) (code int) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(e.stderr, "pgdr-agent wal-fetch: internal error (exit %d, so that recovery stops instead of ending early): %v\n%s", ExitFatal, r, debug.Stack())
			code = ExitFatal
		}
	}()
	f := newFlags(e, "wal-fetch", "wal-fetch --config FILE [--include-partial] NAME DEST", `Fetches one archived WAL file (restore_command's %f) into DEST (%p).
Exit 0: fetched and verified. Exit 1: not in the archive. Exit 126: any
other failure: it exists but cannot be read, decrypted or verified, a
repository does not hold the cluster (no <cluster>/cluster.json: not
mounted, moved), or the command line or configuration is wrong, or the command crashed (PostgreSQL
then aborts recovery instead of ending it early). Prefetches the following
segments.

--include-partial (written by restore for a recovery to the latest point):
a segment not in the archive is served from the WAL receiver's partial copy
of it, padded with zeros to the segment size, if its timeline is the
archive's newest (the highest with a history file, 1 when none) and nothing
of a later timeline exists; a partial of an older timeline is never served
(exit 1). A partial that does not verify exits 126.

postgresql.conf:  restore_command = 'pgdr-agent wal-fetch --config /etc/pgdr/agent.yaml %f %p'`, true)
	includePartial := f.Bool("include-partial", false, "serve the stream partial of a segment of the newest timeline that is not in the archive (see above)")
	pos, code, ok := f.parse(args, 2)
	if !ok {
		if code == 0 && len(args) == 1 {
			return 0 // "wal-fetch --help" on its own
		}
		// A usage error, or --help among arguments (a restore_command
		// that would otherwise exit 0 having fetched nothing).
		return ExitFatal
	}
	cfg, log, code := f.config(e)
	if cfg == nil {
		return ExitFatal
	}
	name, dest := pos[0], pos[1]
	if e.walFetchHook != nil {
		e.walFetchHook()
	}
	sh, err := walship.New(ctx, cfg, log)
	if err != nil {
		log.Error("wal-fetch", "file", name, "err", err)
		return ExitFatal
	}
	fetch := func() error { return sh.Fetch(ctx, name, dest) }
	var partial *walship.PartialUse
	if *includePartial {
		fetch = func() (err error) {
			partial, err = sh.FetchWithPartial(ctx, name, dest)
			return err
		}
	}
	if err := fetch(); err != nil {
		if errors.Is(err, walship.ErrNotInArchive) {
			log.Debug("not in the archive", "file", name)
			return ExitNotFound
		}
		log.Error("wal-fetch failed", "file", name, "err", err)
		return ExitFatal
	}
	if partial != nil {
		return 0 // nothing after a partial segment to prefetch
	}
	if pgwal, ok := sh.PrefetchPlan(name, dest); ok {
		startPrefetch(ctx, cfg, log, pgwal, name, dest)
	}
	return 0
}

// startPrefetch hands prefetching to the daemon, or else starts a detached
// wal-prefetch process that outlives this one.
func startPrefetch(ctx context.Context, cfg *config.Config, log *slog.Logger, pgwal, name, dest string) {
	var segSize uint64
	if fi, err := os.Stat(dest); err == nil {
		segSize = uint64(fi.Size())
	}
	req := agentsock.Request{Op: "wal-prefetch", PGWal: pgwal, After: name, SegmentSize: segSize}
	err := agentsock.Call(ctx, cfg.Agent.Socket, req, agentsock.TrustedUIDs(cfg.Postgres.PGData)...)
	if err == nil || !errors.Is(err, agentsock.ErrNoDaemon) {
		return
	}
	if errors.Is(err, agentsock.ErrUntrustedSocket) {
		log.Warn("not handing prefetching to the agent daemon", "reason", err)
	}
	self, err := os.Executable()
	if err != nil {
		return
	}
	cfgPath, _ := filepath.Abs(cfg.Path)
	cmd := exec.Command(self, "wal-prefetch", "--config", cfgPath, "--pgwal", pgwal, "--segment-size", fmt.Sprint(segSize), name)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return
	}
	defer devnull.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, devnull, devnull
	if err := cmd.Start(); err != nil {
		log.Debug("prefetch not started", "err", err)
		return
	}
	cmd.Process.Release()
}

func cmdWalPrefetch(ctx context.Context, e env, args []string) int {
	f := newFlags(e, "wal-prefetch", "wal-prefetch --config FILE --pgwal DIR [--segment-size N] NAME", "Fetches the segments after NAME into DIR/pgdr_prefetch (wal-fetch starts it).", true)
	pgwal := f.String("pgwal", "", "the pg_wal directory of the cluster in recovery")
	segSize := f.Uint64("segment-size", 16<<20, "WAL segment size in bytes")
	pos, code, ok := f.parse(args, 1)
	if !ok {
		return code
	}
	cfg, log, code := f.config(e)
	if cfg == nil {
		return code
	}
	if *pgwal == "" {
		fmt.Fprintln(e.stderr, "pgdr-agent wal-prefetch: --pgwal is required")
		return ExitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	sh, err := walship.New(ctx, cfg, log)
	if err != nil {
		log.Error("wal-prefetch", "err", err)
		return ExitFailure
	}
	if err := sh.Prefetch(ctx, *pgwal, pos[0], *segSize); err != nil {
		log.Error("wal-prefetch", "err", err)
		return ExitFailure
	}
	return 0
}

func cmdWalList(ctx context.Context, e env, args []string) int {
	f := newFlags(e, "wal-list", "wal-list --config FILE [--json]", "Lists what each repository's archive holds per timeline: first and last\nsegment, count, gaps, history, partial and backup-history files.", true).withJSON()
	if _, code, ok := f.parse(args, 0); !ok {
		return code
	}
	cfg, log, code := f.config(e)
	if cfg == nil {
		return code
	}
	sh, err := walship.New(ctx, cfg, log)
	if err != nil {
		log.Error("wal-list", "err", err)
		return ExitFailure
	}
	ls, err := sh.Lister().List(ctx)
	if err != nil {
		log.Error("wal-list", "err", err)
		return ExitFailure
	}
	if *f.jsonOut {
		printJSON(e.stdout, map[string]any{"cluster": cfg.Cluster, "repos": ls})
		return 0
	}
	for _, l := range ls {
		printListing(e.stdout, l)
		for _, msg := range l.Errors {
			fmt.Fprintf(e.stdout, "  ! %s\n", msg)
		}
	}
	return 0
}

func printListing(w io.Writer, l walship.RepoListing) {
	fmt.Fprintf(w, "repository %s (%s): %d objects\n", l.Repo, l.URL, l.Objects)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  TIMELINE\tFROM\tFIRST\tLAST\tSEGMENTS\tGAPS\tHISTORY\tPARTIAL\tBACKUP\tSTORED")
	for _, t := range l.Timelines {
		g := "none"
		if len(t.Gaps) > 0 {
			var parts []string
			for _, x := range t.Gaps {
				parts = append(parts, fmt.Sprintf("%s..%s (%d)", x.From, x.To, x.Count))
			}
			g = strings.Join(parts, ", ")
		}
		hist := "-"
		if t.History {
			hist = "yes"
		}
		from := "-"
		if t.Parent != 0 {
			from = fmt.Sprintf("%d at %s", t.Parent, t.SwitchLSN)
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%d\t%s\t%s\t%d\t%d\t%s\n", t.Timeline, from, dash(t.First), dash(t.Last), t.Segments, g, hist, len(t.Partial), len(t.BackupHistory), humanBytes(t.StoredBytes))
	}
	tw.Flush()
	for _, t := range l.Timelines {
		if t.Fork != "" {
			fmt.Fprintf(w, "  ! timeline %d is a fork: %s; a restore needs --target-timeline to choose a branch\n", t.Timeline, t.Fork)
		}
	}
	for _, sp := range l.StreamPartials {
		fmt.Fprintf(w, "  stream partial %s (timeline %d): %d bytes of WAL (%s stored), uploaded %s: the WAL receiver's copy, not archive\n",
			sp.Segment, sp.Timeline, sp.Bytes, humanBytes(sp.StoredBytes), sp.Uploaded.UTC().Format(time.RFC3339))
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func cmdWalVerify(ctx context.Context, e env, args []string) int {
	f := newFlags(e, "wal-verify", "wal-verify --config FILE [--json] [--parallel N] [--progress]", "Reads back, decrypts and verifies every archived WAL object in every\nrepository and reports gaps. Exits 0 only when everything verifies with no gap.", true).withJSON()
	parallel := f.Int("parallel", runtime.NumCPU(), "objects verified in parallel per repository")
	showProgress := f.Bool("progress", isTerminal(e.stderr), "print progress on stderr (default: when stderr is a terminal)")
	if _, code, ok := f.parse(args, 0); !ok {
		return code
	}
	cfg, log, code := f.config(e)
	if cfg == nil {
		return code
	}
	sh, err := walship.New(ctx, cfg, log)
	if err != nil {
		log.Error("wal-verify", "err", err)
		return ExitFailure
	}
	res, err := sh.Lister().Verify(ctx, *parallel, progressTo(e, *showProgress))
	if err != nil {
		log.Error("wal-verify", "err", err)
		return ExitFailure
	}
	ok := true
	for _, r := range res {
		ok = ok && r.OK()
	}
	if *f.jsonOut {
		printJSON(e.stdout, map[string]any{"cluster": cfg.Cluster, "ok": ok, "repos": res})
	} else {
		for _, r := range res {
			printListing(e.stdout, r.RepoListing)
			fmt.Fprintf(e.stdout, "  verified %d of %d objects\n", r.Verified, r.Objects)
			for _, fo := range r.Failed {
				fmt.Fprintf(e.stdout, "  FAILED %s: %s\n", fo.Key, fo.Error)
			}
			for _, msg := range r.Errors {
				fmt.Fprintf(e.stdout, "  ! %s\n", msg)
			}
		}
		if ok {
			fmt.Fprintln(e.stdout, "OK: every object verified, no gaps")
		} else {
			fmt.Fprintln(e.stdout, "FAILED: see above")
		}
	}
	if !ok {
		return ExitFailure
	}
	return 0
}

func cmdKeygen(_ context.Context, e env, args []string) int {
	f := newFlags(e, "keygen", "keygen [--signing] -o FILE [--owner USER]", "Writes a new age X25519 identity to FILE (mode 0600; an existing file is\nnever overwritten) and prints its public recipient (age1...) on stdout.\nPut the recipient in encryption.recipients on every writer, and the identity\nfile only where restores and fetches run.\n\nWith --signing, writes a new Ed25519 signing key instead and prints its\npublic key (pgdr-ed25519:...): put the key file in signing.key_file on the\nwriters (every agent that pushes WAL or takes backups) and the public key in\nsigning.public_keys on every reader (see docs/security.md).", false)
	out := f.String("o", "", "identity (or signing key) file to create")
	signing := f.Bool("signing", false, "make an Ed25519 signing key instead of an age identity")
	owner := f.String("owner", "", "give the file to this `USER` (as root): the user PostgreSQL runs as, who pushes and fetches WAL and restores")
	if _, code, ok := f.parse(args, 0); !ok {
		return code
	}
	if *out == "" {
		fmt.Fprintln(e.stderr, "pgdr-agent keygen: -o FILE is required")
		return ExitUsage
	}
	var uid, gid int
	if *owner != "" {
		u, err := user.Lookup(*owner)
		if err != nil {
			fmt.Fprintf(e.stderr, "pgdr-agent keygen: --owner %s: %v\n", *owner, err)
			return ExitUsage
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
	}
	var pub string
	var err error
	if *signing {
		var pk objstream.PublicKey
		pk, err = objstream.GenerateSigningKey(*out)
		pub = pk.String()
	} else {
		pub, err = objstream.GenerateIdentity(*out)
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "pgdr-agent keygen: %v\n", err)
		return ExitFailure
	}
	if *owner != "" {
		if err := os.Chown(*out, uid, gid); err != nil {
			fmt.Fprintf(e.stderr, "pgdr-agent keygen: %s was written, but giving it to %s failed: %v\n", *out, *owner, err)
			return ExitFailure
		}
	} else if os.Geteuid() == 0 {
		fmt.Fprintf(e.stderr, "pgdr-agent keygen: note: %s is readable by root only; the agent's commands run as the user PostgreSQL runs as: chown postgres: %s (or use --owner postgres)\n", *out, *out)
	}
	fmt.Fprintln(e.stdout, pub)
	return 0
}

func cmdConfig(ctx context.Context, e env, args []string) int {
	if len(args) == 0 || args[0] != "check" {
		fmt.Fprintln(e.stderr, "Usage: pgdr-agent config check --config FILE [--json]")
		return ExitUsage
	}
	f := newFlags(e, "config check", "config check --config FILE [--no-probe] [--json]", `Validates the configuration: every key, the recipients and identity file,
and that each repository works: it lists the cluster's objects, writes a small
test object at the repository's root, reads it back and deletes it (run it as
the user PostgreSQL runs as, since that user archives). Errors name the field
or the repository and say what is wrong (a missing bucket, a wrong secret, an
endpoint that does not answer). --no-probe checks the file alone.`, true).withJSON()
	noProbe := f.Bool("no-probe", false, "do not contact the repositories; check the file only")
	if _, code, ok := f.parse(args[1:], 0); !ok {
		return code
	}
	if *f.cfgPath == "" {
		fmt.Fprintln(e.stderr, "pgdr-agent config check: no configuration: pass --config FILE or set PGDR_CONFIG")
		return ExitUsage
	}
	problem := func(err error) int {
		if *f.jsonOut {
			printJSON(e.stdout, map[string]any{"ok": false, "error": err.Error()})
		} else {
			fmt.Fprintf(e.stderr, "pgdr-agent config check: %v\n", err)
		}
		return ExitFailure
	}
	cfg, err := config.Load(*f.cfgPath)
	if err != nil {
		return problem(err)
	}
	if _, err := keys.Recipients(cfg); err != nil {
		return problem(err)
	}
	if cfg.Encryption.IdentityFile != "" {
		if _, err := keys.Identities(cfg); err != nil {
			return problem(err)
		}
	}
	if _, err := keys.Signer(cfg); err != nil && cfg.Signing.KeyFile != "" {
		return problem(err)
	}
	if !cfg.Signing.Configured() {
		fmt.Fprintln(e.stderr, "pgdr-agent config check: warning: signing is not configured: backup manifests and WAL objects are not authenticated, so anyone able to write to the repository can forge them (see docs/security.md)")
	}
	repos, err := repo.OpenAll(ctx, cfg)
	if err != nil {
		return problem(err)
	}
	if !*noProbe {
		var errs []error
		for _, r := range repos {
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			if err := repo.Probe(pctx, r, cfg.Cluster); err != nil {
				errs = append(errs, err)
			}
			cancel()
		}
		if len(errs) > 0 {
			return problem(errors.Join(errs...))
		}
	}
	if *f.jsonOut {
		printJSON(e.stdout, map[string]any{"ok": true, "cluster": cfg.Cluster, "node": cfg.Node.Name, "repos": len(cfg.Repos)})
	} else {
		fmt.Fprintf(e.stdout, "%s: OK (cluster %s, node %s, %d repositories, encryption %s)\n", cfg.Path, cfg.Cluster, cfg.Node.Name, len(cfg.Repos), map[bool]string{true: "disabled", false: "age"}[cfg.Encryption.Disabled])
	}
	return 0
}
