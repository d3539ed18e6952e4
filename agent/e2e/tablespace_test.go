package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// spcRestoreOutput is restore --json's output with the tablespaces.
type spcRestoreOutput struct {
	OK      bool   `json:"ok"`
	Error   string `json:"error"`
	Restore struct {
		Backup      string `json:"backup"`
		Tablespaces []struct {
			OID              string `json:"oid"`
			Name             string `json:"name"`
			Location         string `json:"location"`
			OriginalLocation string `json:"original_location"`
			Relocated        bool   `json:"relocated"`
		} `json:"tablespaces"`
	} `json:"restore"`
	Reached struct {
		State string `json:"state"`
	} `json:"reached"`
}

// restoreSpc restores backup id with args into a fresh directory and
// starts it (recovery ends at consistency and promotes).
func (l *lab) restoreSpc(t *testing.T, id string, args ...string) (*pgtest.Cluster, spcRestoreOutput) {
	t.Helper()
	c := pgtest.Empty(t, pgtest.Options{})
	base := []string{"restore", "--config", l.cfg, "--backup", id, "--pgdata", c.PGData, "--no-archive", "--start",
		"--target-immediate", "--target-action", "promote",
		"--port", fmt.Sprint(c.Port), "--socket-dir", c.Dir, "--wait-timeout", "3m", "--json"}
	r := runAgent(t, nil, append(base, args...)...)
	if r.code != 0 {
		t.Fatalf("restore %v: exit %d\n%s\n%s\nrestore log:\n%s", args, r.code, r.stdout, tail(r.stderr, 3000), tail(readFile(restoreLog(c.PGData)), 3000))
	}
	var out spcRestoreOutput
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || !out.OK {
		t.Fatalf("restore --json: %v\n%s", err, r.stdout)
	}
	if out.Reached.State != "promoted" {
		t.Fatalf("restore %v: recovery %q, want promoted", args, out.Reached.State)
	}
	return c, out
}

// dirSnapshot lists everything under root — path, type, mode, size,
// modification time, and the SHA-256 of files or the target of links —
// one line per entry, to show that nobody wrote there.
func dirSnapshot(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		line := fmt.Sprintf("%s %s %d %d", rel, fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			line += " -> " + target
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			line += " " + hex.EncodeToString(sum[:])
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// wantUnchanged fails if a snapshot of root differs from before.
func wantUnchanged(t *testing.T, what, root string, before []string) {
	t.Helper()
	after := dirSnapshot(t, root)
	if strings.Join(after, "\n") == strings.Join(before, "\n") {
		return
	}
	was := map[string]bool{}
	for _, l := range before {
		was[l] = true
	}
	is := map[string]bool{}
	for _, l := range after {
		is[l] = true
	}
	var diff []string
	for _, l := range before {
		if !is[l] {
			diff = append(diff, "- "+l)
		}
	}
	for _, l := range after {
		if !was[l] {
			diff = append(diff, "+ "+l)
		}
	}
	t.Fatalf("%s: %s changed:\n%s", what, root, strings.Join(diff, "\n"))
}

// TestTablespaceRelocation restores a backup of a cluster with two
// tablespaces on the same host while the source runs and keeps its
// tablespace directories: relocated by OID and by name, then with
// --tablespace-map-all, and refuses bad mappings before writing anything.
func TestTablespaceRelocation(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{})
	spcA := pgtest.OwnedDir(t, "pgdr-spc-a-")
	spcB := filepath.Join(pgtest.OwnedDir(t, "pgdr-spc-b-"), "b dir")
	if err := os.Mkdir(spcB, 0o700); err != nil {
		t.Fatal(err)
	}
	pgtest.Chown(t, spcB)
	l.pg.Exec(t, "CREATE TABLESPACE spc_a LOCATION '"+spcA+"'")
	l.pg.Exec(t, "CREATE TABLESPACE spc_b LOCATION '"+spcB+"'")
	// autovacuum off and VACUUM FREEZE + CHECKPOINT now: nothing in the
	// source writes its tablespaces again unless something else does.
	l.pg.Exec(t, `CREATE TABLE ta (id int, v text) WITH (autovacuum_enabled = false) TABLESPACE spc_a;
		INSERT INTO ta SELECT g, 'a' || g FROM generate_series(1, 1000) g;
		CREATE TABLE tb (id int PRIMARY KEY USING INDEX TABLESPACE spc_b, v text) WITH (autovacuum_enabled = false) TABLESPACE spc_b;
		INSERT INTO tb SELECT g, 'b' || g FROM generate_series(1, 2000) g`)
	l.pg.Exec(t, "VACUUM (FREEZE) ta, tb")
	l.pg.Exec(t, "CHECKPOINT")
	oidA := l.pg.QueryString(t, "SELECT oid::text FROM pg_tablespace WHERE spcname = 'spc_a'")
	oidB := l.pg.QueryString(t, "SELECT oid::text FROM pg_tablespace WHERE spcname = 'spc_b'")
	const rowsSQL = "SELECT (SELECT count(*) || '/' || sum(id) FROM ta) || ' ' || (SELECT count(*) || '/' || sum(id) FROM tb)"
	wantRows := l.pg.QueryString(t, rowsSQL)
	if wantRows != "1000/500500 2000/2001000" {
		t.Fatalf("source rows %s", wantRows)
	}

	id := l.backup(t, l.cfg)
	m := loadManifest(t, l.cfg, id)
	recorded := map[string]string{}
	for _, ts := range m.Tablespaces {
		recorded[ts.OID] = ts.Name + " " + ts.Location
	}
	if len(recorded) != 2 || recorded[oidA] != "spc_a "+spcA || recorded[oidB] != "spc_b "+spcB {
		t.Fatalf("manifest tablespaces %+v; want %s spc_a %s, %s spc_b %s", m.Tablespaces, oidA, spcA, oidB, spcB)
	}
	beforeA, beforeB := dirSnapshot(t, spcA), dirSnapshot(t, spcB)
	sourceUntouched := func(what string) {
		t.Helper()
		wantUnchanged(t, what+": source tablespace spc_a", spcA, beforeA)
		wantUnchanged(t, what+": source tablespace spc_b", spcB, beforeB)
	}
	// checkRestored checks the rows, where PostgreSQL and the links say the
	// tablespaces are, and what restore reported; then writes into both
	// tablespaces of the restored cluster.
	checkRestored := func(what string, c *pgtest.Cluster, out spcRestoreOutput, want map[string]string) {
		t.Helper()
		if got := c.QueryString(t, rowsSQL); got != wantRows {
			t.Fatalf("%s: restored rows %s, want %s", what, got, wantRows)
		}
		if len(out.Restore.Tablespaces) != 2 {
			t.Fatalf("%s: restore reported tablespaces %+v", what, out.Restore.Tablespaces)
		}
		for _, ts := range out.Restore.Tablespaces {
			orig := map[string]string{oidA: spcA, oidB: spcB}[ts.OID]
			if ts.Location != want[ts.OID] || !ts.Relocated || ts.OriginalLocation != orig || ts.Name != map[string]string{oidA: "spc_a", oidB: "spc_b"}[ts.OID] {
				t.Fatalf("%s: restore reported %+v; want %s at %s (from %s)", what, ts, ts.OID, want[ts.OID], orig)
			}
		}
		for oid, loc := range want {
			if got := c.QueryString(t, "SELECT pg_tablespace_location($1::oid)", oid); got != loc {
				t.Fatalf("%s: pg_tablespace_location(%s) = %s, want %s", what, oid, got, loc)
			}
			if got, err := os.Readlink(filepath.Join(c.PGData, "pg_tblspc", oid)); err != nil || got != loc {
				t.Fatalf("%s: pg_tblspc/%s -> %q (%v), want %s", what, oid, got, err, loc)
			}
			if vers, _ := filepath.Glob(filepath.Join(loc, "PG_15_*")); len(vers) != 1 {
				t.Fatalf("%s: %s holds no PG_15_* directory: %v", what, loc, vers)
			}
		}
		c.Exec(t, "INSERT INTO ta SELECT g, 'new' FROM generate_series(1001, 1100) g; INSERT INTO tb SELECT g, 'new' FROM generate_series(2001, 2100) g")
		c.Exec(t, "CHECKPOINT")
	}
	newDir := pgtest.OwnedDir(t, "pgdr-spc-new-")

	// By OID and by name, to paths with and without a space.
	newA, newB := filepath.Join(newDir, "a by oid"), filepath.Join(newDir, "b-by-name")
	c, out := l.restoreSpc(t, id, "--tablespace-map", oidA+"="+newA, "--tablespace-map", "spc_b="+newB)
	checkRestored("by OID and name", c, out, map[string]string{oidA: newA, oidB: newB})
	if got := readFile(filepath.Join(c.PGData, "tablespace_map.old")); !strings.Contains(got, oidA+" "+newA+"\n") {
		t.Fatalf("the tablespace_map recovery read (now tablespace_map.old) does not name %s:\n%s", newA, got)
	}
	sourceUntouched("after restoring by OID and name")
	c.Stop(t, "fast")

	// --tablespace-map-all into a directory that does not exist yet; an
	// explicit mapping wins.
	all := filepath.Join(newDir, "all", "spcs")
	otherA := filepath.Join(newDir, "other-a")
	c, out = l.restoreSpc(t, id, "--tablespace-map-all", all, "--tablespace-map", "spc_a="+otherA)
	checkRestored("--tablespace-map-all", c, out, map[string]string{oidA: otherA, oidB: filepath.Join(all, "spc_b")})
	sourceUntouched("after restoring with --tablespace-map-all")
	c.Stop(t, "fast")
	if got := l.pg.QueryString(t, rowsSQL); got != wantRows {
		t.Fatalf("source rows after the restores: %s, want %s", got, wantRows)
	}

	// Refusals: each an error naming the problem before anything is written.
	full := filepath.Join(newDir, "not-empty")
	if err := os.MkdirAll(full, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(full, "keep"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	fresh := func(name string) string { return filepath.Join(newDir, "refused", name) }
	for _, tc := range []struct {
		name string
		args []string
		want string
		dirs []string // mapped directories that must stay absent
	}{
		{"unknown name", []string{"--tablespace-map", "nope=" + fresh("x"), "--tablespace-map", "spc_b=" + fresh("b1")},
			"--tablespace-map nope: backup " + id + " has no tablespace with that OID or name", []string{fresh("x"), fresh("b1")}},
		{"relative path", []string{"--tablespace-map", "spc_a=relative/a", "--tablespace-map", "spc_b=" + fresh("b2")},
			`"relative/a" is not an absolute path`, []string{fresh("b2")}},
		{"non-empty location", []string{"--tablespace-map", "spc_a=" + full, "--tablespace-map", oidB + "=" + fresh("b3")},
			full + " is not empty", []string{fresh("b3")}},
		{"same directory twice", []string{"--tablespace-map", "spc_a=" + fresh("same"), "--tablespace-map", "spc_b=" + fresh("same")},
			"would both be at " + fresh("same"), []string{fresh("same")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := pgtest.Empty(t, pgtest.Options{})
			r := restoreFails(t, l.cfg, c, append([]string{"--backup", id, "--target-immediate"}, tc.args...)...)
			if out := parseRestore(t, r); !strings.Contains(out.Error, tc.want) {
				t.Fatalf("error %q, want one containing %q", out.Error, tc.want)
			}
			wantDirState(t, tc.name, c.PGData, true)
			for _, d := range tc.dirs {
				wantDirState(t, tc.name, d, true)
			}
			wantDirState(t, tc.name, full, false, "keep")
			wantDirState(t, tc.name, filepath.Join(newDir, "refused"), true)
			sourceUntouched(tc.name)
		})
	}

	// On the source's host, --force without relocation would empty the
	// live tablespaces: refused, naming the location and the way out.
	t.Run("force does not empty a live tablespace", func(t *testing.T) {
		c := pgtest.Empty(t, pgtest.Options{})
		r := restoreFails(t, l.cfg, c, "--backup", id, "--target-immediate", "--force")
		if out := parseRestore(t, r); !strings.Contains(out.Error, "--force does not empty it") || !strings.Contains(out.Error, "--tablespace-map") {
			t.Fatalf("error %q, want one saying --force does not empty the tablespace and naming --tablespace-map", out.Error)
		}
		wantDirState(t, "force without relocation", c.PGData, true)
		sourceUntouched("force without relocation")
	})

	// --force empties nothing while any location is refused: the data
	// directory keeps its contents when a new tablespace location holds a
	// server's postmaster.pid (it is checked before anything is emptied).
	t.Run("force refused by a tablespace location", func(t *testing.T) {
		c := pgtest.Empty(t, pgtest.Options{})
		busy := filepath.Join(newDir, "busy")
		for _, f := range []string{filepath.Join(c.PGData, "keep-me"), filepath.Join(busy, "postmaster.pid")} {
			if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f, []byte("x\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		r := restoreFails(t, l.cfg, c, "--backup", id, "--target-immediate", "--force",
			"--tablespace-map", "spc_a="+busy, "--tablespace-map", "spc_b="+fresh("b4"))
		if out := parseRestore(t, r); !strings.Contains(out.Error, busy+" has a postmaster.pid") {
			t.Fatalf("error %q, want one naming %s and its postmaster.pid", out.Error, busy)
		}
		wantDirState(t, "force refused by a tablespace location", c.PGData, false, "keep-me")
		wantDirState(t, "force refused by a tablespace location", busy, false, "postmaster.pid")
		sourceUntouched("force refused by a tablespace location")
	})
}
