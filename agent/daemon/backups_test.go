package daemon

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/agent/backuprun"
	"github.com/pgdr/pgdr/pkg/repo"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestWaitBackupsLetsCleanUpFinish: a stopping daemon waits (bounded) for
// a backup run's clean-up after its context is cancelled, instead of
// returning while the backup still removes what it wrote.
func TestWaitBackupsLetsCleanUpFinish(t *testing.T) {
	var cleaned atomic.Bool
	started := make(chan struct{})
	take := func(ctx context.Context, _ []repo.Repo, _ backup.Options) (*backup.Manifest, error) {
		close(started)
		<-ctx.Done()
		time.Sleep(300 * time.Millisecond) // removing its objects
		cleaned.Store(true)
		return nil, ctx.Err()
	}
	log := slog.New(slog.DiscardHandler)
	r := backuprun.New(backuprun.Deps{Cluster: "main", Node: "pg-a2", Repos: []repo.Repo{{Name: "local"}}, Take: take, Log: log,
		Completer: backuprun.CompleterFunc(func(context.Context, *pgdrv1.CommandResult) error { return nil })})
	d := &Daemon{log: log, backups: r}
	ctx, cancel := context.WithCancel(context.Background())
	res := r.Start(ctx, &pgdrv1.AgentCommand{Id: "cmd-1", Cluster: "main", Node: "pg-a2", Epoch: 3,
		Kind: &pgdrv1.AgentCommand_Backup{Backup: &pgdrv1.Backup{RunId: "run-1", Tier: "daily", Type: "full", TimeoutMs: 60000}}})
	if !res.GetPending() {
		t.Fatalf("the run did not start: %v", res)
	}
	<-started
	cancel()
	d.waitBackups(time.Minute)
	if !cleaned.Load() {
		t.Fatal("waitBackups returned before the backup's clean-up ended")
	}
}
