package orders

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/agent/pgctl"
	"github.com/pgdr/pgdr/pkg/config"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestRejoinMakesDivergenceReportFirst: the divergence report is made
// after PostgreSQL stopped and before pg_rewind or a fresh copy touches
// the data directory; an unknown report does not stop the rejoin; the
// session takes the report once, by the order's id. Fakes: pg_rewind
// writes a marker, pg_ctl fails to start (the rewind path ends there);
// without checksums the rejoin re-clones instead.
func TestRejoinMakesDivergenceReportFirst(t *testing.T) {
	for _, tc := range []struct {
		name      string
		checksums string
		wantErr   string
	}{
		{"rewind", "1", "could not start server"},
		{"reclone", "0", "re-clone refused by the test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pgdata := filepath.Join(t.TempDir(), "pgdata")
			if err := os.MkdirAll(pgdata, 0o700); err != nil {
				t.Fatal(err)
			}
			bin := fakeBin(t, map[string]string{
				"pg_controldata": "echo 'Data page checksum version:           " + tc.checksums + "'",
				"pg_rewind":      `touch "$2/rewound"; echo 'pg_rewind: Done!'`,
				"pg_ctl":         "echo 'pg_ctl: could not start server' >&2; exit 1",
			})
			cfg := &config.Config{Cluster: "main", Node: config.Node{Name: "pg-a1"}, Postgres: config.Postgres{PGData: pgdata, BinDir: bin}}
			log := slog.New(slog.DiscardHandler)
			pg := pgctl.New(pgctl.Config{BinDir: bin, PGData: pgdata, Log: log})
			reported, recloned := 0, false
			x := New(cfg, Deps{Log: log, PG: pg, Unfence: func() error { return nil },
				Reclone: func(context.Context, uint64, string, string, error) (string, error) {
					recloned = true
					if reported != 1 {
						t.Errorf("re-cloned before the divergence report")
					}
					return "", errors.New("re-clone refused by the test")
				},
				Divergence: func(_ context.Context, epoch uint64, primary, _ string) *pgdrv1.DivergenceSummary {
					reported++
					if _, err := os.Stat(filepath.Join(pgdata, "rewound")); err == nil {
						t.Errorf("the divergence report was made after pg_rewind")
					}
					if epoch != 3 || primary != "pg-a2" {
						t.Errorf("report for epoch %d, primary %s", epoch, primary)
					}
					return &pgdrv1.DivergenceSummary{Id: "20261208T000000Z-pg-a1", Status: "unknown", Error: "the test cannot read it"}
				}})
			_, err := x.rejoin(t.Context(), "cmd-1", 3, "pg-a2", "host=127.0.0.1 port=1 user=postgres connect_timeout=1")
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("rejoin = %v, want %q (the rejoin goes on after an unknown report)", err, tc.wantErr)
			}
			if reported != 1 || recloned != (tc.name == "reclone") {
				t.Errorf("reports %d, re-cloned %v", reported, recloned)
			}
			if s := x.TakeDivergence("cmd-2"); s != nil {
				t.Errorf("another order's report: %v", s)
			}
			if s := x.TakeDivergence("cmd-1"); s.GetId() != "20261208T000000Z-pg-a1" {
				t.Errorf("taken: %v", s)
			}
			if s := x.TakeDivergence("cmd-1"); s != nil {
				t.Errorf("taken twice: %v", s)
			}
		})
	}
}

// fakeBin is a directory of PostgreSQL programs faked by shell scripts
// (name → body).
func fakeBin(t *testing.T, scripts map[string]string) string {
	t.Helper()
	bin := t.TempDir()
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return bin
}
