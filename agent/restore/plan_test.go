package restore

import (
	"strings"
	"testing"

	"github.com/pgdr/pgdr/agent/backup"
)

func TestMakePlanResolvesChains(t *testing.T) {
	full := &backup.Manifest{ID: "20261126T080000F", Type: backup.TypeFull, Files: []backup.File{
		{Path: "base/5/16384", Size: 3 * 8192, Kind: backup.KindFull, Object: "backup/F/pgdata/base/5/16384", SHA256: "a"},
		{Path: "base/5/16390", Size: 8192, Kind: backup.KindFull, Object: "backup/F/pgdata/base/5/16390", SHA256: "b"},
		{Path: "global/pg_control", Size: 8192, Kind: backup.KindFull, Object: "backup/F/pgdata/global/pg_control", SHA256: "c"},
		{Path: "PG_VERSION", Size: 3, Kind: backup.KindFull, Object: "backup/F/pgdata/PG_VERSION", SHA256: "d"},
	}}
	diff := &backup.Manifest{ID: "20261126T090000D", Type: backup.TypeDiff, Parent: full.ID, Files: []backup.File{
		{Path: "base/5/16384", Size: 4 * 8192, Kind: backup.KindDelta, Object: "backup/D/pgdata/base/5/16384", SHA256: "e", Pages: 2},
		{Path: "base/5/16390", Size: 8192, Kind: backup.KindDelta}, // unchanged: no object
		{Path: "global/pg_control", Size: 8192, Kind: backup.KindFull, Object: "backup/D/pgdata/global/pg_control", SHA256: "f"},
		{Path: "PG_VERSION", Size: 3, Kind: backup.KindFull, Object: "backup/D/pgdata/PG_VERSION", SHA256: "g"},
	}}
	incr := &backup.Manifest{ID: "20261126T100000I", Type: backup.TypeIncr, Parent: diff.ID, Files: []backup.File{
		{Path: "base/5/16384", Size: 2 * 8192, Kind: backup.KindDelta, Object: "backup/I/pgdata/base/5/16384", SHA256: "h", Pages: 1},
		{Path: "base/5/16390", Size: 8192, Kind: backup.KindDelta},
		{Path: "base/5/16400", Size: 8192, Kind: backup.KindFull, Object: "backup/I/pgdata/base/5/16400", SHA256: "i"}, // new file
		{Path: "global/pg_control", Size: 8192, Kind: backup.KindFull, Object: "backup/I/pgdata/global/pg_control", SHA256: "j"},
		{Path: "PG_VERSION", Size: 0, Kind: backup.KindFull}, // emptied: no object
	}}
	plan, err := makePlan([]*backup.Manifest{full, diff, incr})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, p := range plan {
		var objs []string
		for _, s := range p.steps {
			for _, o := range s.objects {
				objs = append(objs, o.Object)
			}
		}
		got[p.f.Path] = strings.Join(objs, " + ")
	}
	want := map[string]string{
		"base/5/16384":      "backup/F/pgdata/base/5/16384 + backup/D/pgdata/base/5/16384 + backup/I/pgdata/base/5/16384",
		"base/5/16390":      "backup/F/pgdata/base/5/16390",
		"base/5/16400":      "backup/I/pgdata/base/5/16400",
		"global/pg_control": "backup/I/pgdata/global/pg_control", // only the newest whole copy is read
		"PG_VERSION":        "",
	}
	for path, w := range want {
		if got[path] != w {
			t.Errorf("%s: plan %q, want %q", path, got[path], w)
		}
	}
	if len(plan) != len(want) {
		t.Errorf("plan has %d files, want %d", len(plan), len(want))
	}
	// A delta whose file the parent does not hold is an inconsistent chain.
	broken := &backup.Manifest{ID: "20261126T110000I", Type: backup.TypeIncr, Files: []backup.File{
		{Path: "base/5/99999", Size: 8192, Kind: backup.KindDelta, Object: "x", SHA256: "k"},
	}}
	if _, err := makePlan([]*backup.Manifest{full, broken}); err == nil || !strings.Contains(err.Error(), "inconsistent") {
		t.Fatalf("broken chain: %v", err)
	}
}

func TestTargetCount(t *testing.T) {
	if (Target{}).set() != 0 || (Target{Name: "x", XID: "1"}).set() != 2 || (Target{Immediate: true}).set() != 1 {
		t.Fatal("Target.set miscounts")
	}
}

func TestMakePlanChecksRefs(t *testing.T) {
	full := &backup.Manifest{ID: "20261126T080000F", Type: backup.TypeFull, Files: []backup.File{
		{Path: "base/5/1", Size: 8192, Kind: backup.KindFull, Object: "o1", SHA256: "a", Refs: []string{"20261126T080000F"}},
	}}
	incr := &backup.Manifest{ID: "20261126T090000I", Type: backup.TypeIncr, Parent: full.ID, Files: []backup.File{
		{Path: "base/5/1", Size: 8192, Kind: backup.KindDelta, Object: "o2", SHA256: "b", Refs: []string{"20261126T080000F", "20261126T090000I"}},
	}}
	if _, err := makePlan([]*backup.Manifest{full, incr}); err != nil {
		t.Fatalf("consistent refs: %v", err)
	}
	incr.Files[0].Refs = []string{"20261126T090000I"}
	if _, err := makePlan([]*backup.Manifest{full, incr}); err == nil || !strings.Contains(err.Error(), "manifest says") {
		t.Fatalf("inconsistent refs: %v", err)
	}
}
