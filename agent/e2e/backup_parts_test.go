package e2e

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/objstream"
)

// TestBackupInParts: with a small --part-size every relation file larger
// than a part is stored as several objects (whole copies in the full,
// changed pages in the incremental), written and restored in parallel; the
// restored incremental holds the same data as the source.
//
// The full backup is taken with --checksum sha256 (as pgdr wrote every
// backup before BLAKE3: version 1 objects, SHA-256 in the manifest) and
// the incremental with the default BLAKE3, so the chain that is verified
// and restored mixes both, as after an upgrade.
func TestBackupInParts(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{})
	l.pg.PGBench(t, "-i", "-q", "-s", "2", "postgres") // pgbench_accounts ~26 MB: 26 parts of 1 MiB
	if r := runAgent(t, nil, "backup", "--config", l.cfg, "--checksum", "md5"); r.code != 2 || !strings.Contains(r.stderr, `--checksum "md5"`) {
		t.Fatalf("backup --checksum md5: exit %d, want 2 naming the flag\n%s", r.code, r.stderr)
	}
	full := l.backup(t, l.cfg, "--part-size", "1", "--checksum", "sha256")
	m := loadManifest(t, l.cfg, full)
	wantChecksums(t, l, m, objstream.ChecksumSHA256)
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
	wantChecksums(t, l, mi, objstream.ChecksumBLAKE3)
	last := l.switchWAL(t)
	l.waitArchived(t, last, 2*time.Minute)
	wantSums, wantDump := pgbenchSums(t, l.pg), pgDump(t, l.pg)

	r := runAgent(t, nil, "backup-verify", "--config", l.cfg, "--progress", incr)
	if r.code != 0 {
		t.Fatalf("backup-verify %s: exit %d\n%s\n%s", incr, r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "verify "+incr+" in local: 100.0%") {
		t.Fatalf("backup-verify --progress: no final progress line on stderr:\n%s", r.stderr)
	}
	c := l.restoreTo(t, l.cfg, "--backup", incr, "--target-action", "promote")
	sameData(t, "incremental in parts, replayed to the end", pgbenchSums(t, c), pgDump(t, c), wantSums, wantDump)
	c.Stop(t, "fast")
}

// wantChecksums checks that every object m stores was written with the
// checksum alg: the manifest records that hash (and only it) for each, and
// the object's own header says the same (version 1 for SHA-256, version 2
// for BLAKE3).
func wantChecksums(t *testing.T, l *lab, m *backup.Manifest, alg objstream.Checksum) {
	t.Helper()
	n := 0
	for _, f := range m.Files {
		for _, p := range f.Objects() {
			if !strings.HasPrefix(p.Object, "backup/"+m.ID+"/") {
				continue // an unchanged file's object from an older backup
			}
			if p.Checksum() != alg || (p.SHA256 != "") == (p.BLAKE3 != "") {
				t.Fatalf("%s: %s: manifest records sha256=%q blake3=%q, want %s only", m.ID, p.Object, p.SHA256, p.BLAKE3, alg)
			}
			fh, err := os.Open(l.backupObjectPath(p.Object))
			if err != nil {
				t.Fatal(err)
			}
			h, err := objstream.ReadHeader(fh)
			fh.Close()
			if err != nil {
				t.Fatalf("%s: %v", p.Object, err)
			}
			if h.Checksum != alg {
				t.Fatalf("%s: object header (version %d) says %s, want %s", p.Object, h.Version, h.Checksum, alg)
			}
			n++
		}
	}
	if n == 0 {
		t.Fatalf("%s stores no object", m.ID)
	}
}
