package cli

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/pgdr/pgdr/agent/daemon"
	"github.com/pgdr/pgdr/agent/watchdog"
)

// internalCommands are run by the agent itself (watchdog) or by the
// packaging (completion, man: scripts/dist.sh), and left out of the usage.
func internalCommands() []command {
	return []command{
		{"watchdog", "internal: the process watchdog `pgdr-agent run` starts (failover.watchdog)", "watchdog --config FILE", cmdWatchdog},
		{"completion", "internal: bash or zsh completion, generated from the command table", "completion bash|zsh", cmdDoc("completion")},
		{"man", "internal: the man page, generated from the command table", "man", cmdDoc("man")},
	}
}

func cmdWatchdog(ctx context.Context, e env, args []string) int {
	f := newFlags(e, "watchdog", "watchdog --config FILE", "INTERNAL: not for interactive use. `pgdr-agent run` starts this process itself\n(failover.watchdog, default true with coordinator.addresses) and writes it a\nheartbeat line on stdin every failover.loop. When the newest heartbeat's\ndeadline passes (the agent stalled, crashed or was killed while its node was\na primary), it stops PostgreSQL at once (pg_ctl stop -m immediate), writes the\npgdr.fenced marker and exits. SIGTERM/SIGINT: exit once nothing is left to\nguard (fencing first if the deadline passes); SIGUSR1: stand down without\nfencing (a restarted agent's own watchdog took over). See\nagent/watchdog.", true)
	if _, code, ok := f.parse(args, 0); !ok {
		return code
	}
	cfg, log, code := f.config(e)
	if cfg == nil {
		return code
	}
	standDown := make(chan os.Signal, 1)
	signal.Notify(standDown, syscall.SIGUSR1)
	defer signal.Stop(standDown)
	return watchdog.RunChild(ctx, cfg, os.Stdin, standDown, log)
}

// enableWatchdog gives the daemon its watchdog command: this executable,
// `watchdog --config` the same (absolute) file.
func enableWatchdog(d *daemon.Daemon, cfgPath string, log *slog.Logger) {
	exe, err := os.Executable()
	if err != nil {
		log.Warn("no watchdog: the agent's executable is unknown", "err", err)
		return
	}
	if abs, err := filepath.Abs(cfgPath); err == nil {
		cfgPath = abs
	}
	d.EnableWatchdog([]string{exe, "watchdog", "--config", cfgPath})
}
