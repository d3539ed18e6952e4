package restore

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/agent/backup"
)

// readMapLikePostgres parses a tablespace_map the way PostgreSQL 15's
// read_tablespace_map does (de-escaping backslashes, a line ending at an
// unescaped \n or \r, OID up to the first space, the path after it), so
// that the tests check what recovery will actually see.
func readMapLikePostgres(t *testing.T, b []byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	var str []byte
	wasBackslash := false
	for _, ch := range b {
		switch {
		case !wasBackslash && (ch == '\n' || ch == '\r'):
			if len(str) == 0 {
				continue
			}
			n := bytes.IndexByte(str, ' ')
			if n < 1 || n >= len(str)-1 {
				t.Fatalf("PostgreSQL would refuse tablespace_map line %q", str)
			}
			out[string(str[:n])] = string(str[n+1:])
			str = nil
		case !wasBackslash && ch == '\\':
			wasBackslash = true
		default:
			str = append(str, ch)
			wasBackslash = false
		}
	}
	if len(str) != 0 || wasBackslash {
		t.Fatalf("PostgreSQL would refuse tablespace_map %q: unterminated", b)
	}
	return out
}

func TestTablespaceMapRewrite(t *testing.T) {
	orig := []byte("16385 /srv/pg/spc_a\n16386 /srv/pg/odd\\\\dir\\\nname\n")
	if got := readMapLikePostgres(t, orig); got["16386"] != "/srv/pg/odd\\dir\nname" {
		t.Fatalf("test map parsed as %q", got)
	}
	for _, c := range []struct {
		name  string
		in    []byte
		moved map[string]string
		want  string            // exact bytes, when set
		paths map[string]string // what PostgreSQL reads back
	}{
		{name: "a path with a space", in: orig, moved: map[string]string{"16385": "/restore/new spc a"},
			want:  "16385 /restore/new spc a\n16386 /srv/pg/odd\\\\dir\\\nname\n",
			paths: map[string]string{"16385": "/restore/new spc a", "16386": "/srv/pg/odd\\dir\nname"}},
		{name: "backslash, newline and carriage return are escaped", in: orig,
			moved: map[string]string{"16386": "/r/a\\b\nc\rd", "16385": " /leading space"},
			want:  "16385  /leading space\n16386 /r/a\\\\b\\\nc\\\rd\n",
			paths: map[string]string{"16385": " /leading space", "16386": "/r/a\\b\nc\rd"}},
		{name: "nothing moved keeps the bytes", in: orig, moved: map[string]string{}, want: string(orig)},
		{name: "CRLF lines not moved are kept", in: []byte("16385 /a\r\n16386 /b\r\n"), moved: map[string]string{"16386": "/c"},
			want: "16385 /a\r\n16386 /c\n\n", paths: map[string]string{"16385": "/a", "16386": "/c"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := bytes.Clone(c.in)
			got, err := rewriteTablespaceMap(in, c.moved)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(in, c.in) {
				t.Fatalf("the input was modified: %q", in)
			}
			if c.want != "" && string(got) != c.want {
				t.Fatalf("rewrote\n%q\nto\n%q\nwant\n%q", c.in, got, c.want)
			}
			if c.paths != nil {
				read := readMapLikePostgres(t, got)
				for oid, p := range c.paths {
					if read[oid] != p {
						t.Errorf("PostgreSQL reads %s as %q, want %q", oid, read[oid], p)
					}
				}
				if len(read) != len(c.paths) {
					t.Errorf("PostgreSQL reads %q, want %q", read, c.paths)
				}
			}
		})
	}
	for _, c := range []struct {
		name, in, oid, want string
	}{
		{"a tablespace not in the map", "16385 /a\n", "16390", "16390 is not in the backup's tablespace_map"},
		{"no map at all", "", "16390", "16390 is not in the backup's tablespace_map"},
		{"unterminated", "16385 /a", "16385", "not terminated"},
		{"no path", "16385\n", "16385", "invalid line"},
		{"listed twice", "16385 /a\n16385 /b\n", "16385", "listed twice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := rewriteTablespaceMap([]byte(c.in), map[string]string{c.oid: "/x"})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

func testManifest() *backup.Manifest {
	return &backup.Manifest{
		ID: "20261126T080000F",
		Tablespaces: []backup.Tablespace{
			{OID: "16385", Name: "spc_a", Location: "/srv/pg/spc_a"},
			{OID: "16386", Name: "spc b", Location: "/srv/pg/spc b"},
			{OID: "16387", Name: "odd/name", Location: "/srv/pg/odd"},
		},
		TablespaceMap: []byte("16385 /srv/pg/spc_a\n16386 /srv/pg/spc b\n16387 /srv/pg/odd\n"),
	}
}

func TestTablespaceRelocate(t *testing.T) {
	m := testManifest()
	stored := bytes.Clone(m.TablespaceMap)
	storedSpcs := append([]backup.Tablespace(nil), m.Tablespaces...)
	check := func(t *testing.T, o Options, want map[string]string) {
		t.Helper()
		got, res, err := relocate(m, o)
		if err != nil {
			t.Fatal(err)
		}
		read := readMapLikePostgres(t, got.TablespaceMap)
		for i, ts := range got.Tablespaces {
			w := want[ts.OID]
			if ts.Location != w || read[ts.OID] != w || res[i].Location != w || res[i].OID != ts.OID {
				t.Errorf("tablespace %s: manifest %s, tablespace_map %q, result %+v; want %s", ts.OID, ts.Location, read[ts.OID], res[i], w)
			}
			if res[i].Relocated != (w != m.Tablespaces[i].Location) || res[i].OriginalLocation != m.Tablespaces[i].Location || res[i].Name != ts.Name {
				t.Errorf("tablespace %s: result %+v", ts.OID, res[i])
			}
		}
		if !bytes.Equal(m.TablespaceMap, stored) || !equalSpcs(m.Tablespaces, storedSpcs) {
			t.Fatal("relocate modified the backup's manifest")
		}
	}
	t.Run("by OID and by name", func(t *testing.T) {
		check(t, Options{PGData: "/restore/pgdata", TablespaceMap: map[string]string{"16385": "/restore/a", "spc b": "/restore/b with space/"}},
			map[string]string{"16385": "/restore/a", "16386": "/restore/b with space", "16387": "/srv/pg/odd"})
	})
	t.Run("all, an explicit mapping wins", func(t *testing.T) {
		check(t, Options{PGData: "/restore/pgdata", TablespaceMapAll: "/restore/spc", TablespaceMap: map[string]string{"spc_a": "/elsewhere/a"}},
			map[string]string{"16385": "/elsewhere/a", "16386": "/restore/spc/spc b", "16387": "/restore/spc/16387"})
	})
	t.Run("nothing relocated", func(t *testing.T) {
		check(t, Options{PGData: "/restore/pgdata"}, map[string]string{"16385": "/srv/pg/spc_a", "16386": "/srv/pg/spc b", "16387": "/srv/pg/odd"})
	})
	t.Run("an old manifest without names maps by OID", func(t *testing.T) {
		old := testManifest()
		for i := range old.Tablespaces {
			old.Tablespaces[i].Name = ""
		}
		got, _, err := relocate(old, Options{PGData: "/p", TablespaceMapAll: "/all"})
		if err != nil {
			t.Fatal(err)
		}
		if got.Tablespaces[0].Location != "/all/16385" {
			t.Fatalf("--tablespace-map-all without names: %+v", got.Tablespaces)
		}
		_, _, err = relocate(old, Options{PGData: "/p", TablespaceMap: map[string]string{"spc_a": "/x"}})
		if err == nil || !strings.Contains(err.Error(), "records no tablespace names") {
			t.Fatalf("mapping by name without names: %v", err)
		}
	})

	for _, c := range []struct {
		name string
		o    Options
		want string
	}{
		{"unknown name", Options{TablespaceMap: map[string]string{"nope": "/x"}},
			`--tablespace-map nope: backup 20261126T080000F has no tablespace with that OID or name (it has 16385 (spc_a), 16386 (spc b), 16387 (odd/name))`},
		{"unknown OID", Options{TablespaceMap: map[string]string{"99999": "/x"}}, "--tablespace-map 99999: backup"},
		{"relative path", Options{TablespaceMap: map[string]string{"spc_a": "rel/dir"}}, `--tablespace-map spc_a=rel/dir: "rel/dir" is not an absolute path`},
		{"relative map-all", Options{TablespaceMapAll: "spc"}, `--tablespace-map-all "spc": not an absolute path`},
		{"same directory twice", Options{TablespaceMap: map[string]string{"spc_a": "/restore/x", "16386": "/restore/x/"}},
			"tablespaces 16385 (spc_a) and 16386 (spc b) would both be at /restore/x"},
		{"onto one not moved", Options{TablespaceMap: map[string]string{"spc_a": "/srv/pg/odd"}}, "would both be at /srv/pg/odd"},
		{"nested", Options{TablespaceMap: map[string]string{"spc_a": "/restore/x", "spc b": "/restore/x/y"}},
			"tablespace 16386 (spc b) at /restore/x/y would be inside tablespace 16385 (spc_a) at /restore/x"},
		{"mapped twice", Options{TablespaceMap: map[string]string{"spc_a": "/restore/x", "16385": "/restore/y"}}, "tablespace 16385 (spc_a) is mapped twice"},
		{"inside the data directory", Options{TablespaceMap: map[string]string{"spc_a": "/restore/pgdata/spc"}},
			"tablespace 16385 (spc_a): the new location /restore/pgdata/spc is inside the data directory /restore/pgdata"},
		{"the data directory itself", Options{TablespaceMap: map[string]string{"spc_a": "/restore/pgdata"}}, "is inside the data directory"},
		{"around the data directory", Options{TablespaceMap: map[string]string{"spc_a": "/restore"}}, "the data directory /restore/pgdata would be inside its new location /restore"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.o.PGData = "/restore/pgdata"
			_, _, err := relocate(m, c.o)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v\nwant one containing %s", err, c.want)
			}
		})
	}
	t.Run("created while the backup ran", func(t *testing.T) {
		late := testManifest()
		late.TablespaceMap = []byte("16385 /srv/pg/spc_a\n16386 /srv/pg/spc b\n")
		if _, _, err := relocate(late, Options{PGData: "/p", TablespaceMap: map[string]string{"16386": "/x"}}); err != nil {
			t.Fatalf("relocating a tablespace in the map: %v", err)
		}
		_, _, err := relocate(late, Options{PGData: "/p", TablespaceMap: map[string]string{"16387": "/x"}})
		if err == nil || !strings.Contains(err.Error(), "cannot be relocated") {
			t.Fatalf("relocating a tablespace missing from the map: %v", err)
		}
	})
	t.Run("symbolic links are resolved", func(t *testing.T) {
		dir := t.TempDir()
		pgdata := filepath.Join(dir, "pgdata")
		if err := os.Mkdir(pgdata, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(pgdata, filepath.Join(dir, "alias")); err != nil {
			t.Fatal(err)
		}
		_, _, err := relocate(m, Options{PGData: pgdata, TablespaceMap: map[string]string{"spc_a": filepath.Join(dir, "alias", "spc")}})
		if err == nil || !strings.Contains(err.Error(), "inside the data directory") {
			t.Fatalf("a location inside the data directory through a link: %v", err)
		}
	})
}

func equalSpcs(a, b []backup.Tablespace) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestTablespaceMakeLocations(t *testing.T) {
	dir := t.TempDir()
	m := &backup.Manifest{Tablespaces: []backup.Tablespace{
		{OID: "16385", Location: filepath.Join(dir, "new", "deeper", "a")},
		{OID: "16386", Location: filepath.Join(dir, "b")},
	}}
	if err := os.Mkdir(filepath.Join(dir, "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := makeLocations(m, filepath.Join(dir, "pgdata")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"new", "new/deeper", "new/deeper/a"} {
		fi, err := os.Stat(filepath.Join(dir, p))
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v, %v", p, fi, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "b")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("an existing location was changed: %v, %v", fi, err)
	}
}

// TestMayEmptyTablespace: --force empties a tablespace location only when
// the operator relocated the tablespace there, or when the data directory
// being replaced links to it; never the original location of a tablespace
// the target does not link to (on the source's host: its live data).
func TestMayEmptyTablespace(t *testing.T) {
	dir := t.TempDir()
	pgdata := filepath.Join(dir, "pgdata")
	if err := os.MkdirAll(filepath.Join(pgdata, "pg_tblspc"), 0o700); err != nil {
		t.Fatal(err)
	}
	linked := backup.Tablespace{OID: "16390", Location: filepath.Join(dir, "spc-linked")}
	if err := os.Symlink(linked.Location+"/", filepath.Join(pgdata, "pg_tblspc", linked.OID)); err != nil {
		t.Fatal(err)
	}
	elsewhere := backup.Tablespace{OID: "16391", Location: filepath.Join(dir, "spc-live")}
	if err := os.Symlink(filepath.Join(dir, "other"), filepath.Join(pgdata, "pg_tblspc", elsewhere.OID)); err != nil {
		t.Fatal(err)
	}
	unlinked := backup.Tablespace{OID: "16392", Location: filepath.Join(dir, "spc-unlinked")}
	for _, c := range []struct {
		ts        backup.Tablespace
		pgdata    string
		relocated bool
		want      bool
	}{
		{linked, pgdata, false, true},
		{elsewhere, pgdata, false, false},
		{unlinked, pgdata, false, false},
		{unlinked, filepath.Join(dir, "absent"), false, false},
		{unlinked, pgdata, true, true},
	} {
		if got := mayEmptyTablespace(c.pgdata, c.ts, c.relocated); got != c.want {
			t.Errorf("%s at %s (data directory %s, relocated %v): %v, want %v", c.ts.OID, c.ts.Location, c.pgdata, c.relocated, got, c.want)
		}
	}
}
