package backup

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/wal"
)

// TestVerifyControlFile: backup-verify checks the CRC of the stored
// global/pg_control (a backup taken before the backup checked it may hold
// a torn copy, with which the restored cluster does not start), on top of
// the object's own checksums, which such a copy passes.
func TestVerifyControlFile(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content []byte
		bad     bool
	}{
		{"whole", pg15Control(t), false},
		{"torn", tornControl(pg15Control(t)), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, files := controlCopier(t, tc.content)
			// Stored under another name, past the check the backup
			// makes now, then recorded as global/pg_control: what an
			// earlier pgdr could store.
			stored := filepath.Join(filepath.Dir(files[0].abs), "pg_control.old")
			if err := os.Rename(files[0].abs, stored); err != nil {
				t.Fatal(err)
			}
			files[0].abs, files[0].rel = stored, "global/pg_control.old"
			got, err := c.copyAll(context.Background(), files, 1)
			if err != nil {
				t.Fatal(err)
			}
			got[0].Path = controlFile
			m := c.m
			m.Format, m.Type, m.Files = ManifestFormat, TypeFull, got
			m.Timeline, m.SegmentSize, m.StartTime = 1, 16<<20, time.Now()
			m.StartLSN, m.StopLSN = wal.LSN(0x2000028), wal.LSN(0x2000100)
			r := c.d.Repos[0]
			if err := saveManifest(context.Background(), r, m, nil); err != nil {
				t.Fatal(err)
			}
			rep, err := Verify(context.Background(), r, "c", m.ID, nil, 2, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.bad {
				if len(rep.Failed) != 0 || rep.Verified != 1 {
					t.Fatalf("a whole pg_control: %+v", rep)
				}
				return
			}
			if len(rep.Failed) != 1 || rep.OK() || !strings.Contains(rep.Failed[0].Key, "pg_control") ||
				!strings.Contains(rep.Failed[0].Error, "global/pg_control") || !strings.Contains(rep.Failed[0].Error, "incorrect checksum in control file") {
				t.Fatalf("a torn pg_control: %+v, want one failure naming global/pg_control and its checksum", rep)
			}
			t.Log(rep.Failed[0].Error)
		})
	}
}
