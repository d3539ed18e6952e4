package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/pgdr/pgdr/pkg/buildinfo"
)

// Exit statuses. ExitUsage means nothing was sent to any coordinator.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// env is what a command may touch of the outside world; tests substitute
// getenv instead of mutating the process environment.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e env, cf *connFlags, args []string) error
}

func commands() []command {
	return []command{
		{"status", "coordinators, and per cluster its members by region: role, health, timeline, LSN, lag", cmdStatus},
		{"members", "the registered members of every cluster (or one)", cmdMembers},
		{"history", "the audit history of decisions and changes, oldest first", cmdHistory},
		{"pause", "maintenance mode: the coordinators take no automatic action for a cluster", cmdPause},
		{"resume", "leave maintenance mode", cmdResume},
		{"switchover", "planned change of primary, zero data loss: stop cleanly, promote --to NODE, rejoin the old one", cmdSwitchover},
		{"failover", "manual failover --to NODE when the primary is gone (--force: even if it is not; data loss)", cmdFailover},
		{"policy", "policy show | set | apply -f FILE: failover settings (synchronous mode, maximum lag, regions, failsafe) and the backup policy (tiers, retention, PITR window)", cmdPolicy},
		{"backups", "the backup runs the scheduler recorded: tier, node, start, duration, sizes, result, error", cmdBackups},
		{"report", "the compliance report: recovery targets against measured RPO and failover/switchover times, backups per tier, drills, breaches", cmdReport},
		{"backup", "backup run --tier T [--wait]: have the leader run a backup tier now; backup cancel [RUN_ID]: end a run in flight", cmdBackup},
		{"drills", "the restore drills recorded: node, backup, target, timings, RPO, amcheck, checks, result, reason", cmdDrills},
		{"drill", "drill run [--tier T|--backup ID] [--target-time T] [--node N] [--wait]: have the leader order a restore drill now", cmdDrill},
		{"incidents", "the incidents kept: id, priority, status, cluster, category, escalation level, title (--all: resolved too)", cmdIncidents},
		{"divergence", "the divergence reports of rewound former primaries: the WAL range past the fork and the transactions committed in it (show ID: one, with its transactions)", cmdDivergence},
		{"incident", "incident open|show|ack|resolve|note: open one by hand, print one with its timeline, acknowledge, resolve or annotate it", cmdIncident},
		{"runbook", "runbook list|show|apply -f|run NAME [--dry-run] [--yes]|runs|status: business-continuity procedures executed by the leader step by step", cmdRunbook},
		{"gamedays", "the game days recorded: runbook runs, result, the write unavailability the probe measured and the measured RTO", cmdGameDays},
		{"gameday", "gameday run NAME [--wait]: have the leader start one of the policy's game days now", cmdGameDay},
		{"coordinator", "list, add or remove coordinators (Raft voters)", cmdCoordinator},
		{"tls", "tls init: create a development CA and certificates for a lab", cmdTLS},
		{"version", "print the version", cmdVersion},
		{"help", "help [COMMAND]: this text, or a command's", nil},
	}
}

// Main runs pgdrctl with args (without the program name) and returns the
// process exit status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return run(ctx, env{stdout: stdout, stderr: stderr, getenv: os.Getenv}, args)
}

func run(ctx context.Context, e env, args []string) int {
	cf := newConnFlags(e.getenv)
	global := flag.NewFlagSet("pgdrctl", flag.ContinueOnError)
	global.SetOutput(e.stderr)
	cf.register(global)
	global.Usage = func() { usage(e.stderr) }
	if len(args) > 0 && (args[0] == "--version" || args[0] == "-version" || args[0] == "-V") {
		args = append([]string{"version"}, args[1:]...)
	}
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	args = global.Args()
	if len(args) == 0 {
		usage(e.stderr)
		return ExitUsage
	}
	name, rest := args[0], args[1:]
	if name == "help" {
		if len(rest) == 0 {
			usage(e.stdout)
			return ExitOK
		}
		// "help X Y" is "X Y --help": the command prints its own text.
		name, rest = rest[0], append(slices.Clone(rest[1:]), "--help")
	}
	for _, c := range append(commands(), hiddenCommands()...) {
		if c.name == name && c.run != nil {
			return report(e, name, c.run(ctx, e, cf, rest))
		}
	}
	fmt.Fprintf(e.stderr, "pgdrctl: unknown command %q\n\n", name)
	usage(e.stderr)
	return ExitUsage
}

// report prints err the way its kind asks and maps it to an exit status.
func report(e env, cmd string, err error) int {
	var ue *usageError
	var re *rpcError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return ExitOK
	case errors.As(err, &ue):
		if ue.msg != "" {
			fmt.Fprintf(e.stderr, "pgdrctl %s: %s\nRun 'pgdrctl %s --help' for usage.\n", cmd, ue.msg, cmd)
		}
		return ExitUsage
	case errors.As(err, &re):
		fmt.Fprintf(e.stderr, "pgdrctl: %s\n", re.Error())
		return ExitFailure
	default:
		fmt.Fprintf(e.stderr, "pgdrctl %s: %v\n", cmd, err)
		return ExitFailure
	}
}

// usageError is a mistake in the command line; nothing was sent. An empty
// msg means the flag package has already said what is wrong.
type usageError struct{ msg string }

func (u *usageError) Error() string { return u.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, `pgdrctl — the operator's command line for pgdr coordinators.

Usage: pgdrctl [connection flags] COMMAND [flags]

Commands:`)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range commands() {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
	}
	tw.Flush()
	fmt.Fprint(w, `
Connection flags (before or after the command; each has an environment default):
  --address A,B,...  coordinator API addresses host:port, tried in order   PGDR_ADDR
  --ca FILE          CA that signed the coordinators' certificates          PGDR_CA
  --cert FILE        client certificate (its OU is the role)                PGDR_CERT
  --key FILE         client certificate's key                               PGDR_KEY
  --token-file FILE  bearer token, instead of a client certificate         PGDR_TOKEN_FILE
                     (or the token itself in PGDR_TOKEN)
  --timeout D        for the whole command (default 10s)

A read moves on to the next address when one does not answer. A write moves
on only when it cannot have been submitted, so it is never sent twice; when
its outcome is unknown the error says so: check 'pgdrctl history'.

Every command takes --json for scripts. Exit status: 0 success, 1 failure
(reported by a coordinator, or none answered), 2 usage error (nothing sent).
Run 'pgdrctl help COMMAND' for a command's flags.
`)
}

// cmdFlags is a subcommand's FlagSet: its own flags, --json, and (for
// commands that talk to a coordinator) the connection flags again, so that
// those may follow the command name too.
type cmdFlags struct {
	*flag.FlagSet
	jsonOut *bool
}

func newCmdFlags(e env, name, usageLine, about string, cf *connFlags) *cmdFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	f := &cmdFlags{FlagSet: fs}
	f.jsonOut = fs.Bool("json", false, "print JSON for scripts")
	if cf != nil {
		cf.register(fs)
	}
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: pgdrctl %s\n\n%s\n", usageLine, about)
		printFlags(w, "Flags", fs, func(n string) bool { return !isConnFlag(n) })
		if cf != nil {
			printFlags(w, "Connection flags (also accepted before the command; see 'pgdrctl help')", fs, isConnFlag)
		}
	}
	return f
}

// printFlags writes the flags keep selects in the --name form this CLI
// documents (flag.PrintDefaults would show a single dash).
func printFlags(w io.Writer, title string, fs *flag.FlagSet, keep func(string) bool) {
	var b strings.Builder
	fs.VisitAll(func(fl *flag.Flag) {
		if !keep(fl.Name) {
			return
		}
		typ, use := flag.UnquoteUsage(fl)
		b.WriteString("  --" + fl.Name)
		if typ != "" {
			b.WriteString(" " + typ)
		}
		b.WriteString("\n    \t" + strings.ReplaceAll(use, "\n", "\n    \t"))
		if fl.DefValue != "" && fl.DefValue != "false" && fl.DefValue != "0" {
			fmt.Fprintf(&b, " (default %s)", fl.DefValue)
		}
		b.WriteString("\n")
	})
	if b.Len() > 0 {
		fmt.Fprintf(w, "\n%s:\n%s", title, b.String())
	}
}

// parse parses flags interspersed with positional arguments and checks their
// number (nargs < 0: any).
func (f *cmdFlags) parse(args []string, nargs int) ([]string, error) {
	var pos []string
	for {
		if err := f.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &usageError{}
		}
		args = f.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if nargs >= 0 && len(pos) != nargs {
		if nargs == 0 {
			return nil, usagef("unexpected argument %q", pos[0])
		}
		return nil, usagef("expected %d argument(s), got %d", nargs, len(pos))
	}
	return pos, nil
}

func (f *cmdFlags) json() bool { return *f.jsonOut }

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("writing JSON: %w", err)
	}
	return nil
}

func cmdVersion(_ context.Context, e env, _ *connFlags, args []string) error {
	f := newCmdFlags(e, "version", "version [--json]", "Prints pgdrctl's version.", nil)
	if _, err := f.parse(args, 0); err != nil {
		return err
	}
	if f.json() {
		info := buildinfo.Get()
		return printJSON(e.stdout, map[string]string{"version": info.Version, "commit": info.Commit, "go": info.GoVersion, "platform": runtime.GOOS + "/" + runtime.GOARCH})
	}
	_, err := fmt.Fprintln(e.stdout, buildinfo.Line("pgdrctl"))
	return err
}
