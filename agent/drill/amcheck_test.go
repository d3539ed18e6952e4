package drill

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// TestAmcheckOutputBounded: pg_amcheck on a badly damaged cluster reports
// every damaged tuple, hundreds of megabytes of it; the drill keeps the
// first problems and the end of the output, not all of it in memory.
// (A pg_amcheck stand-in prints the flood: no real cluster produces it in
// a test's time.)
func TestAmcheckOutputBounded(t *testing.T) {
	bin := pgtest.OwnedDir(t, "pgdr-drill-fakebin-")
	script := "#!/bin/sh\nyes 'heap table \"postgres.public.t\", block 0, offset 1:\n    xmin 1 precedes relation freeze threshold 0:2' | head -c 100000000\necho 'pg_amcheck: the end'\nexit 2\n"
	if err := os.WriteFile(filepath.Join(bin, "pg_amcheck"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	pgtest.Chown(t, filepath.Join(bin, "pg_amcheck"))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	a := runAmcheck(context.Background(), server{sock: bin, port: 5432, binDir: bin, pgdata: bin}, 1)
	runtime.ReadMemStats(&after)
	if a.OK || a.ExitCode != 2 {
		t.Fatalf("ok %v exit %d, want failed with exit 2: %s", a.OK, a.ExitCode, a.Output)
	}
	if len(a.Problems) != maxProblems || a.Problems[0] != `heap table "postgres.public.t", block 0, offset 1: xmin 1 precedes relation freeze threshold 0:2` {
		t.Errorf("%d problems, first %q: want %d, with its detail", len(a.Problems), a.Problems[0], maxProblems)
	}
	if len(a.Output) > 2100 || !strings.HasSuffix(a.Output, "pg_amcheck: the end") {
		t.Errorf("output %d bytes ending %q: want at most about 2000, ending with pg_amcheck's last line", len(a.Output), a.Output[max(0, len(a.Output)-40):])
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32<<20 {
		t.Errorf("reading 100 MB of pg_amcheck output allocated %d MB: want it bounded", alloc>>20)
	}
}
