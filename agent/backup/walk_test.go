package backup

import (
	"os"
	"path/filepath"
	"sort"
	"testing"
)

func TestWalkExcludes(t *testing.T) {
	root := t.TempDir()
	files := []string{
		"PG_VERSION", "postgresql.conf", "postmaster.pid", "postmaster.opts", "backup_label", "standby.signal", "pgdr.promote-pending",
		"global/pg_control", "global/1262",
		"base/5/16384", "base/5/16384_fsm", "base/5/16384_vm", "base/5/16384.1",
		"base/5/16500", "base/5/16500_init", "base/5/16500_fsm", // unlogged: only the init fork
		"base/5/t3_16600", "base/5/pg_internal.init", "base/5/pgsql_tmp/x",
		"pg_wal/000000010000000000000001", "pg_wal/archive_status/000000010000000000000001.ready",
		"pg_stat_tmp/global.stat", "pg_replslot/s/state", "pg_xact/0000",
	}
	for _, f := range files {
		p := filepath.Join(root, f)
		os.MkdirAll(filepath.Dir(p), 0o700)
		os.WriteFile(p, []byte("x"), 0o600)
	}
	w, err := walk(root)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range w.files {
		got = append(got, f.rel)
	}
	sort.Strings(got)
	want := []string{"PG_VERSION", "base/5/16384", "base/5/16384.1", "base/5/16384_fsm", "base/5/16384_vm", "base/5/16500_init",
		"global/1262", "global/pg_control", "pg_xact/0000", "postgresql.conf"}
	if len(got) != len(want) {
		t.Fatalf("walk kept %v\nwant %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("walk kept %v\nwant %v", got, want)
		}
	}
	dirs := map[string]bool{}
	for _, d := range w.dirs {
		dirs[d.Path] = true
	}
	for _, d := range []string{"pg_wal", "pg_wal/archive_status", "pg_stat_tmp", "pg_replslot", "base/5"} {
		if !dirs[d] {
			t.Errorf("directory %s is not recreated", d)
		}
	}
	if dirs["pg_replslot/s"] || dirs["base/5/pgsql_tmp"] {
		t.Errorf("excluded directories kept: %v", w.dirs)
	}
}

func TestLabelTimeline(t *testing.T) {
	label := []byte("START WAL LOCATION: 0/2000028 (file 000000030000000000000002)\nCHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-11-26 08:00:00 UTC\nLABEL: x\nSTART TIMELINE: 3\n")
	if tli, err := labelTimeline(label); err != nil || tli != 3 {
		t.Fatalf("labelTimeline = %d, %v", tli, err)
	}
	if _, err := labelTimeline([]byte("garbage")); err == nil {
		t.Fatal("a label without a timeline was accepted")
	}
	if !ValidID("20261126T081700F") || ValidID("20261126T081700X") || ValidID("../x") {
		t.Fatal("ValidID")
	}
}

// TestWalkSymlinkedExcludedDirs: pg_wal made by initdb -X (and a
// pg_stat_tmp moved to tmpfs) are links to directories elsewhere; the
// backup records them as directories, as pg_basebackup does, so that the
// restored cluster has them, and copies nothing from behind the links.
func TestWalkSymlinkedExcludedDirs(t *testing.T) {
	root, elsewhere := t.TempDir(), t.TempDir()
	for _, f := range []string{"PG_VERSION", "global/pg_control"} {
		p := filepath.Join(root, f)
		os.MkdirAll(filepath.Dir(p), 0o700)
		os.WriteFile(p, []byte("x"), 0o600)
	}
	for _, f := range []string{"wal/000000010000000000000001", "wal/archive_status/000000010000000000000001.ready", "stat/global.stat"} {
		p := filepath.Join(elsewhere, f)
		os.MkdirAll(filepath.Dir(p), 0o750)
		os.WriteFile(p, []byte("x"), 0o600)
	}
	if err := os.Symlink(filepath.Join(elsewhere, "wal"), filepath.Join(root, "pg_wal")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(elsewhere, "stat"), filepath.Join(root, "pg_stat_tmp")); err != nil {
		t.Fatal(err)
	}
	w, err := walk(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range w.files {
		if f.rel != "PG_VERSION" && f.rel != "global/pg_control" {
			t.Errorf("walk copies %s", f.rel)
		}
	}
	dirs := map[string]uint32{}
	for _, d := range w.dirs {
		dirs[d.Path] = d.Mode
	}
	for _, d := range []string{"pg_wal", "pg_wal/archive_status", "pg_stat_tmp"} {
		if mode, ok := dirs[d]; !ok {
			t.Errorf("directory %s (behind a link) is not recorded: %v", d, w.dirs)
		} else if mode&0o700 != 0o700 {
			t.Errorf("directory %s recorded with mode %o", d, mode)
		}
	}
}
