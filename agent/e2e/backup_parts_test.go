package e2e

import (
	"testing"
	"time"
)

// TestBackupInParts: with a small --part-size every relation file larger
// than a part is stored as several objects (whole copies in the full,
// changed pages in the incremental), written and restored in parallel; the
// restored incremental holds the same data as the source.
func TestBackupInParts(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{})
	l.pg.PGBench(t, "-i", "-q", "-s", "2", "postgres") // pgbench_accounts ~26 MB: 26 parts of 1 MiB
	full := l.backup(t, l.cfg, "--part-size", "1")
	m := loadManifest(t, l.cfg, full)
	parted := 0
	for _, f := range m.Files {
		if len(f.Parts) > 1 {
			parted++
			if f.Object != "" {
				t.Fatalf("%s has both an object and parts", f.Path)
			}
			var covered int64
			for _, p := range f.Parts {
				if p.Offset != covered {
					t.Fatalf("%s: part at %d, want %d (parts of a whole copy are contiguous)", f.Path, p.Offset, covered)
				}
				covered += p.Size
			}
			if covered != f.Size {
				t.Fatalf("%s: parts cover %d bytes of %d", f.Path, covered, f.Size)
			}
		}
	}
	if parted == 0 {
		t.Fatal("no file was stored in parts")
	}

	l.pg.PGBench(t, "-n", "-c", "2", "-t", "300", "postgres")
	incr := l.backup(t, l.cfg, "--type", "incr", "--part-size", "1")
	mi := loadManifest(t, l.cfg, incr)
	deltaParts := 0
	for _, f := range mi.Files {
		if f.Kind == "delta" && len(f.Parts) > 0 {
			deltaParts++
		}
	}
	if deltaParts == 0 {
		t.Fatal("the incremental stored no delta in parts")
	}
	last := l.switchWAL(t)
	l.waitArchived(t, last, 2*time.Minute)
	wantSums, wantDump := pgbenchSums(t, l.pg), pgDump(t, l.pg)

	if r := runAgent(t, nil, "backup-verify", "--config", l.cfg, incr); r.code != 0 {
		t.Fatalf("backup-verify %s: exit %d\n%s\n%s", incr, r.code, r.stdout, r.stderr)
	}
	c := l.restoreTo(t, l.cfg, "--backup", incr, "--target-action", "promote")
	sameData(t, "incremental in parts, replayed to the end", pgbenchSums(t, c), pgDump(t, c), wantSums, wantDump)
	c.Stop(t, "fast")
}
