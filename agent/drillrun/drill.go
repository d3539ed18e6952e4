package drillrun

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/agent/drill"
	"github.com/pgdr/pgdr/agent/restore"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/keys"
	"github.com/pgdr/pgdr/pkg/repo"
)

// Driller is the RunFunc of an agent with configuration cfg and its
// repositories: drill.Run reading with the agent's keys, the restored
// copy's restore_command being this program's wal-fetch with cfg. Row
// counts are not compared with the live source (it moves on while the
// drill runs). agentPath is the pgdr-agent program for restore_command
// ("" = this program).
func Driller(cfg *config.Config, repos []repo.Repo, log *slog.Logger, agentPath string) RunFunc {
	return func(ctx context.Context, o drill.Options, afterBackup time.Duration) (*drill.Result, error) {
		ids, err := keys.Identities(cfg)
		if err != nil {
			return nil, fmt.Errorf("the drill's decryption keys: %w", err)
		}
		self := agentPath
		if self == "" {
			if self, err = os.Executable(); err != nil {
				return nil, fmt.Errorf("the agent's own path: %w", err)
			}
		}
		cfgPath, err := filepath.Abs(cfg.Path)
		if err != nil {
			return nil, fmt.Errorf("the configuration's path %q: %w", cfg.Path, err)
		}
		o.AgentPath, o.ConfigPath = self, cfgPath
		if afterBackup > 0 {
			if o, err = targetAfterBackup(ctx, cfg, repos, o, afterBackup, time.Now()); err != nil {
				return nil, err
			}
		}
		return drill.Run(ctx, restore.Deps{Cfg: cfg, Repos: repos, Identities: ids, Log: log}, o)
	}
}

// targetAfterBackup resolves the backup o names (its ID, the newest of
// its tier, else the newest) and sets the target to its end plus after;
// the end of the archive when that time has not come yet.
func targetAfterBackup(ctx context.Context, cfg *config.Config, repos []repo.Repo, o drill.Options, after time.Duration, now time.Time) (drill.Options, error) {
	var pick *backup.Manifest
	for _, r := range repos {
		if o.BackupID != "" && o.BackupID != "latest" {
			if m, err := backup.LoadManifest(ctx, r, cfg.Cluster, o.BackupID); err == nil {
				pick = m
				break
			}
			continue
		}
		ms, err := backup.List(ctx, r, cfg.Cluster)
		if err != nil {
			return o, fmt.Errorf("%w: listing the backups in repository %s: %w", drill.ErrOptions, r.Name, err)
		}
		for _, m := range ms {
			if (o.Tier == "" || m.Tier == o.Tier) && (pick == nil || m.StopTime.After(pick.StopTime)) {
				pick = m
			}
		}
	}
	if pick == nil {
		return o, fmt.Errorf("%w: no backup (id %q, tier %q) of cluster %s to count the target from", drill.ErrOptions, o.BackupID, o.Tier, cfg.Cluster)
	}
	o.BackupID, o.Tier = pick.ID, ""
	if t := pick.StopTime.Add(after); t.Before(now) {
		o.TargetTime = &t
	}
	return o, nil
}
