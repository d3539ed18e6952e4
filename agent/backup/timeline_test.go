package backup

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/pkg/wal"
)

// TestCrossTimeline: a parent on another timeline is accepted only when
// its timeline is an ancestor and it ends at or before the switch point.
func TestCrossTimeline(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "pg_wal"), 0o700); err != nil {
		t.Fatal(err)
	}
	// Timeline 3: from 1 at 0/3000100, then from 2 at 0/5000000.
	hist := "1\t0/3000100\tno recovery target specified\n\n2\t0/5000000\tno recovery target specified\n"
	if err := os.WriteFile(filepath.Join(dir, "pg_wal", "00000003.history"), []byte(hist), 0o600); err != nil {
		t.Fatal(err)
	}
	h, err := readHistory(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	lsn := func(s string) wal.LSN {
		l, err := wal.ParseLSN(s)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	for _, tc := range []struct {
		tli  uint32
		stop string
		want string // "" accepted, else a part of the reason
	}{
		{1, "0/3000100", ""},
		{1, "0/3000000", ""},
		{1, "0/3000101", "after timeline 3 branched off it at 0/3000100"},
		{2, "0/4000000", ""},
		{2, "0/5000028", "branched off"},
		{4, "0/2000000", "not in the history"},
	} {
		p := &Manifest{ID: "P", Timeline: tc.tli, StopLSN: lsn(tc.stop)}
		got := crossTimeline(p, 3, h, nil)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("parent on timeline %d ending at %s: %q, want %q", tc.tli, tc.stop, got, tc.want)
		}
	}
	_, err = readHistory(dir, 2)
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a missing history file: %v", err)
	}
	if got := crossTimeline(&Manifest{ID: "P", Timeline: 1}, 2, nil, err); !strings.Contains(got, "cannot be read") {
		t.Errorf("unreadable history: %q", got)
	}
}
