package restore

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/pgdr/pgdr/agent/backup"
)

// TestUnsignedManifestTablespaceLocationRefused: an unsigned manifest may
// not choose where a tablespace goes — a bucket writer would make a
// restore run as root create (and give away) any directory, here one
// standing for /etc/systemd/system/postgresql.service.d. It is refused
// before anything is created.
func TestUnsignedManifestTablespaceLocationRefused(t *testing.T) {
	f := newForgedRepo(t)
	pgdata := filepath.Join(f.base, "a", "b", "pgdata")
	sys := filepath.Join(f.base, "etc", "systemd", "system", "postgresql.service.d")
	f.put(t, forgedManifest([]backup.Dir{{Path: "pg_tblspc", Mode: 0o700}},
		[]backup.File{{Path: "pg_tblspc/16384/override.conf", Mode: 0o755, Kind: backup.KindFull}},
		[]backup.Tablespace{{OID: "16384", Location: sys}}))
	_, err := Restore(context.Background(), f.deps, Options{BackupID: "20261126T081700F", PGData: pgdata, AgentPath: "pgdr-agent", ConfigPath: "cfg"})
	if fi, serr := os.Stat(filepath.Join(sys, "override.conf")); serr == nil {
		t.Fatalf("an unsigned manifest made the restore create %s/override.conf (mode %v)", sys, fi.Mode())
	}
	if err == nil || !strings.Contains(err.Error(), "not signed") || !strings.Contains(err.Error(), "--tablespace-map 16384=DIR") {
		t.Fatalf("Restore = %v, want a refusal of the unsigned manifest's location", err)
	}
	for _, p := range []string{filepath.Join(f.base, "etc"), pgdata} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s exists after the refused restore", p)
		}
	}
}

// TestCheckUnsigned: an unsigned manifest's own locations are refused, a
// relocated one or a signed manifest's are not.
func TestCheckUnsigned(t *testing.T) {
	m := &backup.Manifest{ID: "20261126T081700F", Tablespaces: []backup.Tablespace{{OID: "1", Location: "/a"}, {OID: "2", Location: "/b"}},
		TablespaceMap: []byte("1 /a\n2 /b\n")}
	o := Options{PGData: "/p", TablespaceMap: map[string]string{"1": "/x"}}
	out, spcs, err := relocate(m, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkUnsigned(out, spcs); err == nil || !strings.Contains(err.Error(), "tablespace 2:") {
		t.Fatalf("checkUnsigned = %v, want tablespace 2 refused", err)
	}
	o.TablespaceMapAll = "/all"
	if out, spcs, err = relocate(m, o); err != nil {
		t.Fatal(err)
	}
	if err := checkUnsigned(out, spcs); err != nil {
		t.Fatalf("every tablespace relocated: %v", err)
	}
	m.Signed = true
	if out, spcs, err = relocate(m, Options{PGData: "/p"}); err != nil {
		t.Fatal(err)
	}
	if err := checkUnsigned(out, spcs); err != nil {
		t.Fatalf("a signed manifest's locations: %v", err)
	}
}

// TestRequireSignedRefusesUnsignedManifest: the daemon's re-clone
// (RequireSigned) does not restore an unsigned backup at all.
func TestRequireSignedRefusesUnsignedManifest(t *testing.T) {
	f := newForgedRepo(t)
	pgdata := filepath.Join(f.base, "pgdata")
	f.put(t, forgedManifest([]backup.Dir{{Path: "base", Mode: 0o700}}, nil, nil))
	_, err := Restore(context.Background(), f.deps, Options{BackupID: "latest", PGData: pgdata, AgentPath: "pgdr-agent", ConfigPath: "cfg",
		Rejoin: true, RequireSigned: true})
	if err == nil || !strings.Contains(err.Error(), "not signed") {
		t.Fatalf("Restore = %v, want the unsigned manifest refused", err)
	}
	if _, err := os.Lstat(pgdata); err == nil {
		t.Errorf("%s made by the refused restore", pgdata)
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown)")
	}
}

func uidOf(t *testing.T, p string) uint32 {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Uid
}

// TestCheckLocationParents: a location that does not exist is made only
// in a directory of the data directory's owner (or the restore's target
// owner); an existing location is not judged by its parent.
func TestCheckLocationParents(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	pgdataParent := filepath.Join(base, "pg")
	other := filepath.Join(base, "other") // someone else's
	for _, d := range []string{pgdataParent, other, filepath.Join(other, "existing")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	const pgUID, otherUID = 54321, 54322
	if err := os.Chown(pgdataParent, pgUID, pgUID); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(other, otherUID, otherUID); err != nil {
		t.Fatal(err)
	}
	pgdata := filepath.Join(pgdataParent, "data")
	for _, c := range []struct {
		loc  string
		want string // "" for accepted
	}{
		{filepath.Join(pgdataParent, "spc", "a"), ""},
		{filepath.Join(other, "new"), "owned by uid 54322"},
		{filepath.Join(other, "new", "deeper"), "owned by uid 54322"},
		{filepath.Join(other, "existing"), ""},
	} {
		m := &backup.Manifest{Tablespaces: []backup.Tablespace{{OID: "16384", Location: c.loc}}}
		err := checkLocationParents(m, pgdata)
		if c.want == "" && err != nil {
			t.Errorf("%s: %v", c.loc, err)
		}
		if c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: checkLocationParents = %v, want %q", c.loc, err, c.want)
		}
	}
}

// TestChownKeepsExistingLocationOwner: running as root, the restore gives
// what it made to the data directory's parent's owner, but a tablespace
// location that existed before keeps its owner.
func TestChownKeepsExistingLocationOwner(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	parent := filepath.Join(base, "pg")
	pgdata := filepath.Join(parent, "data")
	existing := filepath.Join(base, "existing")
	fresh := filepath.Join(base, "fresh")
	for _, d := range []string{pgdata, filepath.Join(existing, "PG_15"), filepath.Join(fresh, "PG_15")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	const pgUID = 54321
	if err := os.Chown(parent, pgUID, pgUID); err != nil {
		t.Fatal(err)
	}
	m := &backup.Manifest{Tablespaces: []backup.Tablespace{{OID: "1", Location: existing}, {OID: "2", Location: fresh}}}
	if err := chownToParent(pgdata, m, "", map[string]bool{existing: true}); err != nil {
		t.Fatal(err)
	}
	if got := uidOf(t, existing); got != 0 {
		t.Errorf("the existing location %s was given to uid %d", existing, got)
	}
	for _, p := range []string{pgdata, filepath.Join(existing, "PG_15"), fresh, filepath.Join(fresh, "PG_15")} {
		if got := uidOf(t, p); got != pgUID {
			t.Errorf("%s: uid %d, want %d", p, got, pgUID)
		}
	}
}

// TestUnsignedManifestWarns: a restore of an unsigned backup says so.
func TestUnsignedManifestWarns(t *testing.T) {
	f := newForgedRepo(t)
	var logged bytes.Buffer
	f.deps.Log = slog.New(slog.NewTextHandler(&logged, nil))
	f.put(t, forgedManifest([]backup.Dir{{Path: "base", Mode: 0o700}}, nil, nil))
	_, err := Restore(context.Background(), f.deps, Options{BackupID: "latest", PGData: filepath.Join(f.base, "pgdata"), AgentPath: "pgdr-agent", ConfigPath: "cfg", Rejoin: true})
	t.Logf("restore: %v", err)
	if !strings.Contains(logged.String(), "level=WARN") || !strings.Contains(logged.String(), "manifest is not signed") {
		t.Fatalf("no warning about the unsigned manifest; log:\n%s", logged.String())
	}
}
