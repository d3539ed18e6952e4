package backuprun

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/agent/expire"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/conninfo"
	"github.com/pgdr/pgdr/pkg/keys"
	"github.com/pgdr/pgdr/pkg/repo"
)

// Taker returns the agent's TakeFunc: backup.Take with the agent's
// configuration, its recipients (loaded at each run, as `pgdr-agent
// backup` loads them) and log, as `pgdr-agent backup --tier` calls it
// (the other options at their defaults). The local server is
// asked whether it is a standby first: a standby is backed up with
// FromStandby, and with the primary's DSN that primaryDSN returns, or,
// when it is nil or returns "", the standby's own primary_conninfo (the
// orders write the primary's DSN there; conninfo.ForPgx drops what only
// libpq knows), so that the primary switches to
// a new WAL segment and the backup's last segment gets archived.
func Taker(cfg *config.Config, log *slog.Logger, primaryDSN func() string) TakeFunc {
	return func(ctx context.Context, repos []repo.Repo, o backup.Options) (*backup.Manifest, error) {
		recipients, err := keys.Recipients(cfg)
		if err != nil {
			return nil, err
		}
		standby, primaryConninfo, err := localRole(ctx, cfg.Postgres.DSN)
		if err != nil {
			return nil, err
		}
		if standby {
			o.FromStandby = true
			if primaryDSN != nil {
				o.PrimaryDSN = primaryDSN()
			}
			if o.PrimaryDSN == "" {
				// Written by libpq tools (pg_basebackup -R) it may hold
				// keywords pgx would send to the primary, which refuses them.
				o.PrimaryDSN = conninfo.ForPgx(primaryConninfo)
			}
		}
		return backup.Take(ctx, backup.Deps{Cfg: cfg, Repos: repos, Recipients: recipients, Log: log}, o)
	}
}

// Expirer returns the agent's ExpireFunc: expire.Run as `pgdr-agent
// expire` calls it (pins loaded from every repository, identities to
// follow timeline history, the default grace and parallelism).
// trustUnsigned is expire's --trust-unsigned: without it a repository
// without signing configured is refused (the error is the run's expiry
// outcome, the backup stands).
func Expirer(cfg *config.Config, log *slog.Logger, trustUnsigned bool) ExpireFunc {
	return func(ctx context.Context, repos, all []repo.Repo, spec expire.Spec) ([]expire.Result, error) {
		// As pgdr-agent expire: an async repository that cannot be read
		// now (its region down, or not reached by the copier yet) is
		// left for a later run rather than stopping expiry in the sync
		// ones; pins are written to every repository, so the sync ones
		// hold them all.
		var use []repo.Repo
		for _, r := range repos {
			if r.Async {
				if err := repo.CheckClusterInfo(ctx, r, cfg.Cluster); err != nil {
					log.Warn("expire: skipping the async repository, which cannot be read now; a later run expires it", "repo", r.Name, "err", err)
					continue
				}
			}
			use = append(use, r)
		}
		repos = use
		pinRepos := repo.Sync(all)
		if len(pinRepos) == 0 {
			pinRepos = all
		}
		pins, err := expire.LoadPins(ctx, pinRepos, cfg.Cluster)
		if err != nil {
			return nil, err
		}
		ids, _ := keys.Identities(cfg) // without them timeline history is not followed (keeps more)
		return expire.Run(ctx, expire.Deps{Cluster: cfg.Cluster, Repos: repos, Identities: ids, Log: log, Pins: pins, PinRepos: pinRepos},
			expire.Options{Spec: spec, TrustUnsigned: trustUnsigned})
	}
}

// localRole tells whether the server at dsn is in recovery, and its
// primary_conninfo then ("" when it has none or it cannot be read).
func localRole(ctx context.Context, dsn string) (bool, string, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return false, "", fmt.Errorf("connecting to the local server (postgres.dsn): %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var standby bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&standby); err != nil {
		return false, "", fmt.Errorf("asking the local server whether it is a standby: %w", err)
	}
	if !standby {
		return false, "", nil
	}
	var ci string
	if err := conn.QueryRow(ctx, "SELECT current_setting('primary_conninfo', true)").Scan(&ci); err != nil {
		ci = ""
	}
	return true, ci, nil
}
