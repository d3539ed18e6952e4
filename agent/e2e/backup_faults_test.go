package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

type verifyOutput struct {
	OK      bool `json:"ok"`
	Reports []struct {
		Repo     string   `json:"repo"`
		Chain    []string `json:"chain"`
		Objects  int      `json:"objects"`
		Verified int      `json:"verified"`
		Failed   []struct {
			Key   string `json:"key"`
			Error string `json:"error"`
		} `json:"failed"`
	} `json:"reports"`
}

// verifyBackup runs backup-verify --json and returns its exit code and the
// keys of the failed objects.
func verifyBackup(t *testing.T, cfg, id string) (int, []string, result) {
	t.Helper()
	r := runAgent(t, nil, "backup-verify", "--config", cfg, "--json", id)
	var out verifyOutput
	if r.stdout != "" {
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
			t.Fatalf("backup-verify --json: %v\n%s", err, r.stdout)
		}
	}
	var failed []string
	for _, rep := range out.Reports {
		for _, f := range rep.Failed {
			failed = append(failed, f.Key)
		}
	}
	if r.code == 0 && (!out.OK || len(failed) > 0) {
		t.Fatalf("backup-verify %s: exit 0 with failures:\n%s", id, r.stdout)
	}
	return r.code, failed, r
}

func fileEntry(t *testing.T, m *backup.Manifest, path string) backup.File {
	t.Helper()
	for _, f := range m.Files {
		if f.Path == path {
			return f
		}
	}
	t.Fatalf("backup %s holds no %s", m.ID, path)
	return backup.File{}
}

// TestBackupDamagedObjects: a flipped byte in a stored object — a delta
// object of an incremental, a whole relation file of a full, a manifest —
// makes backup-verify fail and name exactly that object, and makes restore
// fail, naming it, before PostgreSQL is started.
func TestBackupDamagedObjects(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{})
	l.pg.Exec(t, "CREATE TABLE t(id int, pad text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
	rel := l.pg.QueryString(t, "SELECT pg_relation_filepath('t')")
	full := l.backup(t, l.cfg)
	l.pg.Exec(t, "UPDATE t SET pad = 'changed' WHERE id % 1000 = 0")
	incr := l.backup(t, l.cfg, "--type", "incr")
	third := l.backup(t, l.cfg, "--type", "incr")
	for _, id := range []string{full, incr, third} {
		if code, failed, r := verifyBackup(t, l.cfg, id); code != 0 {
			t.Fatalf("backup-verify %s before any damage: exit %d, failed %v\n%s", id, code, failed, r.stderr)
		}
	}
	fullObj := fileEntry(t, loadManifest(t, l.cfg, full), rel)
	incrObj := fileEntry(t, loadManifest(t, l.cfg, incr), rel)
	if fullObj.Kind != backup.KindFull || fullObj.Object == "" || incrObj.Kind != backup.KindDelta || incrObj.Object == "" || incrObj.Pages == 0 {
		t.Fatalf("%s: full backup holds %+v, incremental %+v; want a whole copy and a non-empty delta", rel, fullObj, incrObj)
	}

	// The incremental's delta object.
	flipByte(t, l.backupObjectPath(incrObj.Object))
	code, failed, _ := verifyBackup(t, l.cfg, incr)
	if code == 0 || !slices.Equal(failed, []string{"main/" + incrObj.Object}) {
		t.Fatalf("backup-verify %s with a flipped byte in %s: exit %d, failed %v", incr, incrObj.Object, code, failed)
	}
	if code, failed, _ := verifyBackup(t, l.cfg, full); code != 0 {
		t.Fatalf("backup-verify %s (not depending on the damaged object): exit %d, failed %v", full, code, failed)
	}
	r := runAgent(t, nil, "backup-verify", "--config", l.cfg, incr)
	if r.code == 0 || !strings.Contains(r.stdout, "FAILED main/"+incrObj.Object) {
		t.Fatalf("backup-verify %s (text) does not name the damaged object:\n%s", incr, r.stdout)
	}
	c := pgtest.Empty(t, pgtest.Options{})
	r = restoreFails(t, l.cfg, c, "--backup", incr, "--target-immediate", "--target-action", "promote")
	if !strings.Contains(r.stderr, incrObj.Object) {
		t.Fatalf("restore of %s with a damaged object: the error does not name %s:\n%s", incr, incrObj.Object, r.stderr)
	}

	// The full backup's whole copy of the relation.
	flipByte(t, l.backupObjectPath(fullObj.Object))
	code, failed, _ = verifyBackup(t, l.cfg, full)
	if code == 0 || !slices.Equal(failed, []string{"main/" + fullObj.Object}) {
		t.Fatalf("backup-verify %s with a flipped byte in %s: exit %d, failed %v", full, fullObj.Object, code, failed)
	}
	c = pgtest.Empty(t, pgtest.Options{})
	r = restoreFails(t, l.cfg, c, "--backup", full, "--target-immediate", "--target-action", "promote")
	if !strings.Contains(r.stderr, fullObj.Object) {
		t.Fatalf("restore of %s with a damaged object: the error does not name %s:\n%s", full, fullObj.Object, r.stderr)
	}

	// The third backup's manifest.
	manifest := "backup/" + third + "/backup.manifest"
	flipByte(t, l.backupObjectPath(manifest))
	code, _, r = verifyBackup(t, l.cfg, third)
	if code == 0 || !strings.Contains(r.stderr, "main/"+manifest) {
		t.Fatalf("backup-verify %s with a flipped byte in its manifest: exit %d, want an error naming main/%s\n%s", third, code, manifest, r.stderr)
	}
	c = pgtest.Empty(t, pgtest.Options{})
	r = restoreFails(t, l.cfg, c, "--backup", third, "--target-immediate", "--target-action", "promote")
	if !strings.Contains(r.stderr, "main/"+manifest) {
		t.Fatalf("restore of %s with a damaged manifest: the error does not name main/%s:\n%s", third, manifest, r.stderr)
	}
	wantDirState(t, "restore with a damaged manifest", c.PGData, true)
}

// TestRestoreRefusals: restore refuses, with a clear error, before
// PostgreSQL is started and before the target directory is touched: a wrong
// identity (the directory absent or empty stays so), an unknown or
// malformed backup ID, a time or LSN before the backup's end, a time before
// every backup, a time or LSN beyond the archive, two targets, and a
// non-empty directory without --force (its contents are kept). With --force
// it restores into the non-empty directory.
func TestRestoreRefusals(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{})
	l.pg.Exec(t, "CREATE TABLE batches(batch int, n int)")
	insertBatch(t, l, 1)
	beforeBackup := utcNow(t, l.pg)
	id := l.backup(t, l.cfg)
	insertBatch(t, l, 2)
	last := l.switchWAL(t)
	l.waitArchived(t, last, 2*time.Minute)
	m := loadManifest(t, l.cfg, id)

	other := filepath.Join(t.TempDir(), "other-identity.txt")
	otherRcpt := strings.TrimSpace(mustAgent(t, "keygen", "-o", other).stdout)
	wrongID := l.writeConfig(t, "wrong-identity.yaml", []string{"file"}, other, 0)

	// The target directory is absent, then empty and existing: both are
	// left exactly so.
	c := pgtest.Empty(t, pgtest.Options{})
	r := restoreFails(t, wrongID, c, "--backup", id, "--target-immediate")
	if !strings.Contains(r.stderr, "identity") {
		t.Fatalf("restore with a wrong identity: the error does not say so:\n%s", r.stderr)
	}
	wantDirState(t, "restore with a wrong identity", c.PGData, true)
	if err := os.Mkdir(c.PGData, 0o700); err != nil {
		t.Fatal(err)
	}
	restoreFails(t, wrongID, c, "--backup", id, "--target-immediate")
	wantDirState(t, "restore with a wrong identity into an empty directory", c.PGData, false)
	if err := os.Remove(c.PGData); err != nil {
		t.Fatal(err)
	}

	// The key is rotated between the full backup and an incremental: the
	// chain's backups are encrypted to different keys. With only the old
	// identity the restore is refused before anything is written (one
	// object of every backup of the chain is opened first); with both it
	// restores.
	rotated := l.writeConfig(t, "rotated.yaml", []string{"file"}, l.identity, 0)
	rewriteFile(t, rotated, l.recipient, otherRcpt)
	incr, stderr := l.backupOut(t, rotated, "--type", "incr", "--progress")
	if !strings.Contains(stderr, "backup "+incr+": 100.0%") {
		t.Fatalf("backup --progress: no final progress line for %s on stderr:\n%s", incr, stderr)
	}
	r = restoreFails(t, l.cfg, c, "--backup", incr, "--target-immediate")
	if !strings.Contains(r.stderr, "identity") || !strings.Contains(r.stderr, "backup/"+incr+"/") {
		t.Fatalf("restore of a chain with a rotated key, old identity only: the error does not name the identity and an object of %s:\n%s", incr, r.stderr)
	}
	wantDirState(t, "restore of a chain with a rotated key, old identity only", c.PGData, true)
	both := filepath.Join(l.dir, "both-identities.txt")
	if err := os.WriteFile(both, []byte(readFile(l.identity)+readFile(other)), 0o600); err != nil {
		t.Fatal(err)
	}
	pgtest.Chown(t, both)
	bothCfg := l.writeConfig(t, "both-identities.yaml", []string{"file"}, both, 0)
	r = mustAgent(t, "restore", "--config", bothCfg, "--backup", incr, "--pgdata", filepath.Join(t.TempDir(), "both"), "--target-immediate", "--progress")
	if !strings.Contains(r.stderr, "restore "+incr+": 100.0%") {
		t.Fatalf("restore --progress: no final progress line for %s on stderr:\n%s", incr, r.stderr)
	}

	for _, tc := range []struct {
		what string
		args []string
		want []string
	}{
		{"unknown backup ID", []string{"--backup", "20000101T000000F"}, []string{"20000101T000000F", "no such backup"}},
		{"malformed backup ID", []string{"--backup", "yesterday"}, []string{"yesterday", "not a backup ID"}},
		{"time before the backup's end", []string{"--backup", id, "--target-time", beforeBackup}, []string{"before the end of backup " + id}},
		{"time before every backup", []string{"--target-time", beforeBackup}, []string{"no backup ends before the target time"}},
		{"time beyond the archive", []string{"--target-time", time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano)}, []string{"beyond what the archive covers"}},
		{"LSN before the backup's end", []string{"--backup", id, "--target-lsn", "0/1"}, []string{"before the end of backup " + id}},
		{"LSN before every backup", []string{"--target-lsn", "0/1"}, []string{"no backup ends at or before the target LSN 0/1"}},
		{"LSN beyond the archive", []string{"--backup", id, "--target-lsn", "FF/0"}, []string{"beyond what the archive covers"}},
		{"two targets", []string{"--target-lsn", m.StopLSN.String(), "--target-name", "x"}, []string{"at most one recovery target"}},
	} {
		r := restoreFails(t, l.cfg, c, tc.args...)
		for _, w := range tc.want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("%s: the error does not say %q:\n%s", tc.what, w, r.stderr)
			}
		}
		wantDirState(t, tc.what, c.PGData, true)
	}
	if t.Failed() {
		t.FailNow()
	}

	// A non-empty directory without --force: refused, contents kept.
	if err := os.Mkdir(c.PGData, 0o700); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(c.PGData, "keep-me")
	if err := os.WriteFile(marker, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = restoreFails(t, l.cfg, c, "--backup", id, "--target-immediate")
	if !strings.Contains(r.stderr, "not empty") || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("restore into a non-empty directory: the error does not say why or how:\n%s", r.stderr)
	}
	wantDirState(t, "restore into a non-empty directory", c.PGData, false, "keep-me")
	if got := readFile(marker); got != "precious\n" {
		t.Fatalf("the marker file now holds %q", got)
	}

	// With --force it restores (and the old contents are gone).
	pgtest.Chown(t, c.PGData)
	r = runAgent(t, nil, "restore", "--config", l.cfg, "--pgdata", c.PGData, "--no-archive", "--start", "--force",
		"--port", strconv.Itoa(c.Port), "--socket-dir", c.Dir, "--wait-timeout", "3m", "--json",
		"--backup", id, "--target-immediate", "--target-action", "promote")
	if r.code != 0 {
		t.Fatalf("restore --force into a non-empty directory: exit %d\n%s\n%s", r.code, r.stdout, tail(r.stderr, 3000))
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("restore --force kept the directory's old contents")
	}
	if got := batchesIn(t, c); got != "1" {
		t.Fatalf("restore --force of %s: batches %q, want 1", id, got)
	}
	c.Stop(t, "fast")
}

// TestBackupCorruptPage: with data checksums on, a page damaged while the
// server was stopped makes the backup fail, naming the file and the block,
// and record nothing; with --allow-corrupt the backup is recorded and its
// manifest lists the page.
func TestBackupCorruptPage(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{checksums: true})
	if got := l.pg.QueryString(t, "SHOW data_checksums"); got != "on" {
		t.Fatalf("data_checksums = %s, want on", got)
	}
	// No autovacuum on the table: nothing may read the damaged page.
	l.pg.Exec(t, "CREATE TABLE victim(id int, pad text) WITH (autovacuum_enabled = off)")
	l.pg.Exec(t, "INSERT INTO victim SELECT g, repeat('x', 100) FROM generate_series(1, 1000) g")
	l.pg.Exec(t, "VACUUM FREEZE victim")
	l.pg.Exec(t, "CHECKPOINT")
	rel := l.pg.QueryString(t, "SELECT pg_relation_filepath('victim')")
	if n, _ := strconv.Atoi(l.pg.QueryString(t, "SELECT (pg_relation_size('victim') / 8192)::text")); n < 3 {
		t.Fatalf("victim has %d blocks, want at least 3", n)
	}
	l.pg.Stop(t, "fast")
	path := filepath.Join(l.pg.PGData, filepath.FromSlash(rel))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Tuple data in the middle of block 1, away from the page header.
	const off = 8192 + 4000
	var b [4]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] ^= 0x55
	}
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	l.pg.Start(t)

	r := runAgentPG(t, "backup", "--config", l.cfg, "--json", "--wal-timeout", "2m")
	if r.code == 0 {
		t.Fatalf("backup of a cluster with a corrupt page succeeded:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, rel+" block 1") {
		t.Fatalf("the failed backup does not name %s block 1:\n%s", rel, tail(r.stderr, 3000))
	}
	if bs := listBackups(t, l.cfg, ""); len(bs) != 0 {
		t.Fatalf("the failed backup was recorded: %+v", bs)
	}

	id := l.backup(t, l.cfg, "--allow-corrupt")
	if b := findBackup(t, listBackups(t, l.cfg, "local"), id); b.CorruptPages != 1 {
		t.Fatalf("backup-list reports %d corrupt pages for %s, want 1", b.CorruptPages, id)
	}
	m := loadManifest(t, l.cfg, id)
	if len(m.CorruptPages) != 1 || m.CorruptPages[0].Path != rel || m.CorruptPages[0].Block != 1 || m.CorruptPages[0].Error == "" {
		t.Fatalf("manifest of %s lists corrupt pages %+v, want %s block 1", id, m.CorruptPages, rel)
	}
	if !m.DataChecksums {
		t.Fatalf("manifest of %s does not record data checksums", id)
	}
}
