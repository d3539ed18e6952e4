package drillrun

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

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
	return func(ctx context.Context, o drill.Options) (*drill.Result, error) {
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
		return drill.Run(ctx, restore.Deps{Cfg: cfg, Repos: repos, Identities: ids, Log: log}, o)
	}
}
