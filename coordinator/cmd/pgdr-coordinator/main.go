// Command pgdr-coordinator runs one member of pgdr's Raft coordinator
// cluster. See coordinator/server for what it does.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/pgdr/pgdr/coordinator/config"
	"github.com/pgdr/pgdr/coordinator/server"
	"github.com/pgdr/pgdr/pkg/buildinfo"
)

const usage = `pgdr-coordinator: the Raft-replicated control plane of pgdr.

Usage:
  pgdr-coordinator run --config FILE [--pid-file FILE] [--bootstrap] [--force-empty]
      Start the coordinator: Raft, gossip, the gRPC API and /metrics. Stops
      cleanly on SIGINT or SIGTERM. A coordinator with no Raft state in its
      data_dir first asks the peers of the config's bootstrap list whether
      their Raft configuration still lists it as a voter. If one does, it
      lost its data and refuses to start (exit status 1, nothing written):
      started empty it could vote without the entries it had acknowledged
      (listed as a non-voter, it is being added and starts). Rejoin it
      by remove-then-add: pgdrctl coordinator remove --name NAME, start it,
      then pgdrctl coordinator add (docs/coordinator-recovery.md). If a peer
      holding Raft state answers without listing it, it waits to be added
      (pgdrctl coordinator add). If no such peer answers, it cannot tell and
      refuses too; start it again once one answers. With no bootstrap list
      there is nobody to ask: it starts and waits, warning.
      --bootstrap: if no peer of the bootstrap list holds Raft state, form a
      new cluster from that list (if one does, join it). Pass it on the very
      first start of a new cluster only, never on a restart.
      --force-empty: start with an empty data_dir although a peer lists this
      coordinator or no peer answered, warning; only for a coordinator that
      never acknowledged anything (new, or removed, with peers that are
      stale or unreachable).
  pgdr-coordinator recover --config FILE [--voters NAME=HOST:PORT,...] [--force]
      With this coordinator stopped, rewrite its Raft configuration so that
      it alone (or the given voters, which must include it) forms the
      cluster, keeping its log and snapshots. The way out when a quorum of
      voters is lost for good; see docs/coordinator-recovery.md. Refused
      while another voter of the last configuration answers (it may still
      be part of a quorum: a second cluster would form) unless --force.
  pgdr-coordinator config check --config FILE
      Validate a configuration file; errors name the field.
  pgdr-coordinator version

The config file may also be given in PGDR_COORDINATOR_CONFIG.
For performance work, PGDR_PPROF_LISTEN=127.0.0.1:PORT serves Go's runtime
profiles at http://127.0.0.1:PORT/debug/pprof/ (no TLS, no authentication:
loopback only), e.g. go tool pprof http://127.0.0.1:PORT/debug/pprof/profile?seconds=30
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "--help" || args[0] == "-h" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmd := args[0]
	if cmd == "--version" || cmd == "-version" || cmd == "-V" {
		cmd = "version"
	}
	if cmd == "config" {
		if len(args) < 2 || args[1] != "check" {
			fmt.Fprint(stderr, "pgdr-coordinator: usage: config check --config FILE\n")
			return 2
		}
		cmd, args = "config check", args[1:]
	}
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", os.Getenv("PGDR_COORDINATOR_CONFIG"), "configuration file")
	pidFile := fs.String("pid-file", "", "write the process id here while running")
	bootstrap := fs.Bool("bootstrap", false, "run: form a new cluster from the bootstrap list if this node and its peers hold no Raft state (first start only)")
	voters := fs.String("voters", "", "recover: the new voters NAME=HOST:PORT,... (default: this coordinator alone)")
	force := fs.Bool("force", false, "recover: go on although other coordinators of the last configuration answer (they must no longer form a quorum)")
	forceEmpty := fs.Bool("force-empty", false, "run: start with an empty data_dir although a peer's raft configuration lists this coordinator as a voter or no peer answered (never for a member that lost its data)")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return 0
		}
		return 2
	}
	switch cmd {
	case "version":
		fmt.Fprintln(stdout, buildinfo.Line("pgdr-coordinator"))
		return 0
	case "run", "config check", "recover":
	default:
		fmt.Fprintf(stderr, "pgdr-coordinator: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if *cfgPath == "" {
		fmt.Fprintln(stderr, "pgdr-coordinator: --config is required")
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "pgdr-coordinator:", err)
		return 1
	}
	if cmd == "config check" {
		fmt.Fprintf(stdout, "%s: ok (coordinator %s, region %s, %d bootstrap peers)\n", *cfgPath, cfg.Name, cfg.Region, len(cfg.Bootstrap))
		return 0
	}
	if cmd == "recover" {
		return recoverCmd(cfg, *voters, *force, stdout, stderr)
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})).With("coordinator", cfg.Name)
	srv, err := server.New(cfg, log, server.Options{Bootstrap: *bootstrap, ForceEmpty: *forceEmpty})
	if err != nil {
		fmt.Fprintln(stderr, "pgdr-coordinator:", err)
		return 1
	}
	if *pidFile != "" {
		if err := os.WriteFile(*pidFile, fmt.Appendf(nil, "%d\n", os.Getpid()), 0o644); err != nil {
			fmt.Fprintln(stderr, "pgdr-coordinator: pid file:", err)
			return 1
		}
		defer os.Remove(*pidFile)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if addr := os.Getenv(pprofEnv); addr != "" {
		if err := startPprof(ctx, addr, log); err != nil {
			fmt.Fprintln(stderr, "pgdr-coordinator:", err)
			return 1
		}
	}
	if err := srv.Run(ctx); err != nil {
		log.Error("coordinator failed", "err", err)
		return 1
	}
	return 0
}

func recoverCmd(cfg *config.Config, voters string, force bool, stdout, stderr io.Writer) int {
	vs, err := server.ParseVoters(voters)
	if err != nil {
		fmt.Fprintln(stderr, "pgdr-coordinator: --voters:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("coordinator", cfg.Name)
	idx, err := server.Recover(cfg, log, vs, force)
	if err != nil {
		fmt.Fprintln(stderr, "pgdr-coordinator: recover:", err)
		return 1
	}
	who := cfg.Name + " alone"
	if len(vs) > 0 {
		who = voters
	}
	fmt.Fprintf(stdout, "recovered %s: the state up to index %d is kept and the voters are now %s.\n"+
		"Start it with `pgdr-coordinator run` (without --bootstrap); once it leads, add the other coordinators back\n"+
		"with empty data directories through `pgdrctl coordinator add`.\n", cfg.DataDir, idx, who)
	return 0
}
