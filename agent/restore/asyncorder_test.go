package restore

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/storage/filestore"
	"github.com/pgdr/pgdr/pkg/wal"
)

// With an async repository listed first in the configuration and lagging
// (the copier has not reached the newest backup), restore picks from the
// sync repositories, which hold every backup: the async one is a copy
// that may lag (before: "latest" restored the async repository's older
// backup, and a time target was checked against its shorter archive).
func TestPickBackupPrefersSyncRepositories(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	open := func(name string, async bool) repo.Repo {
		st, err := filestore.New(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return repo.Repo{Name: name, Store: st, Async: async}
	}
	dr, local := open("dr", true), open("local", false)
	save := func(r repo.Repo, id string, at time.Time) {
		m := &backup.Manifest{Format: backup.ManifestFormat, ID: id, Type: backup.TypeFull, Cluster: "main", SegmentSize: 16 << 20, Timeline: 1,
			StartLSN: wal.LSN(2 << 24), StopLSN: wal.LSN(3 << 24), StartTime: at, StopTime: at.Add(time.Minute)}
		if err := backup.SaveManifest(ctx, r, m, nil); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	save(dr, "20261206T100000F", t0)
	save(local, "20261206T100000F", t0)
	save(local, "20261207T100000F", t0.Add(24*time.Hour))
	d := Deps{Cfg: &config.Config{Cluster: "main"}, Repos: []repo.Repo{dr, local}, Log: slog.New(slog.DiscardHandler)}
	r, m, _, err := pickBackup(ctx, d, Options{BackupID: "latest", TargetTimeline: "latest"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Name != "local" || m.ID != "20261207T100000F" {
		t.Fatalf("before: picked %s from %s, want the newest backup 20261207T100000F from the sync repository local", m.ID, r.Name)
	}
}

type downStore struct{ storage.ObjectStore }

func (downStore) List(context.Context, string, func(storage.ObjectInfo) error) error {
	return errors.New("connection refused (test outage)")
}

// The archive's timelines are read from the sync repositories when an
// async one cannot be listed (its region is down): every archived file is
// in the sync ones (before: restore failed, "listing the archive in
// repository dr").
func TestTimelinesWithAsyncRepositoryDown(t *testing.T) {
	dir := t.TempDir()
	st, _ := filestore.New(filepath.Join(dir, "local"))
	local := repo.Repo{Name: "local", Store: st}
	key := repo.WALKey("main", wal.SegmentName(1, 2, 16<<20))
	st.Put(context.Background(), key, strings.NewReader("x"), 1)
	dr := repo.Repo{Name: "dr", Store: downStore{st}, Async: true}
	a := &walArchive{cluster: "main", repos: []repo.Repo{dr, local}, log: slog.New(slog.DiscardHandler)}
	g, err := loadTimelines(context.Background(), a, 16<<20)
	if err != nil {
		t.Fatalf("before: %v", err)
	}
	if len(g.segs[1]) != 1 {
		t.Fatalf("segments %v", g.segs)
	}
}
