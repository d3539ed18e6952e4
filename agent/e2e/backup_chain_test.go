package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// pgbenchSums returns, per pgbench table, its row count and an md5 of all
// its rows in a total order.
func pgbenchSums(t *testing.T, c *pgtest.Cluster) map[string]string {
	t.Helper()
	out := map[string]string{}
	for table, order := range map[string]string{
		"pgbench_accounts": "aid",
		"pgbench_branches": "bid",
		"pgbench_tellers":  "tid",
		"pgbench_history":  "tid, bid, aid, delta, mtime, filler",
	} {
		out[table] = c.QueryString(t, fmt.Sprintf("SELECT count(*) || ' ' || coalesce(md5(string_agg(t::text, ',' ORDER BY %s)), '') FROM %s t", order, table))
	}
	return out
}

// pgDump is pg_dump's plain output for the postgres database, without the
// random \restrict key lines of recent minor releases.
func pgDump(t *testing.T, c *pgtest.Cluster) string {
	t.Helper()
	out := c.Run(t, "pg_dump", "-h", "127.0.0.1", "-p", strconv.Itoa(c.Port), "-U", "postgres", "postgres")
	lines := strings.SplitAfter(out, "\n")
	kept := lines[:0]
	for _, l := range lines {
		if !strings.HasPrefix(l, "\\restrict ") && !strings.HasPrefix(l, "\\unrestrict ") {
			kept = append(kept, l)
		}
	}
	return strings.Join(kept, "")
}

func sameData(t *testing.T, what string, gotSums map[string]string, gotDump string, wantSums map[string]string, wantDump string) {
	t.Helper()
	for table, want := range wantSums {
		if gotSums[table] != want {
			t.Errorf("%s: %s is %q, want %q", what, table, gotSums[table], want)
		}
	}
	if gotDump != wantDump {
		t.Errorf("%s: pg_dump output differs (%d bytes, want %d)", what, len(gotDump), len(wantDump))
	}
	if t.Failed() {
		t.FailNow()
	}
}

// TestBackupChainUnderPgbench: a full, a differential and an incremental
// backup taken while pgbench writes, then (writes stopped) an incremental
// and a full back to back. The chain is recorded with the right types and
// parents, the last incremental stores far less than a full, and restoring
// it gives the same data (per-table checksums and pg_dump) as restoring the
// full taken at the same point and as the source. The restore reads only
// the objects its plan needs: exactly those, fewer than the chain holds,
// and with every other object of the chain deleted it still succeeds.
func TestBackupChainUnderPgbench(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{})
	l.pg.PGBench(t, "-i", "-q", "-s", "5", "postgres")

	// Rate-limited so that an incremental touches a small share of the
	// accounts table.
	bench := startPgbench(t, l.pg, "-c", "2", "-R", "100")
	history := func() int {
		n, err := strconv.Atoi(l.pg.QueryString(t, "SELECT count(*)::text FROM pgbench_history"))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Each backup runs while pgbench commits.
	var ids []string
	for _, typ := range []string{"full", "diff", "incr"} {
		before := history()
		ids = append(ids, l.backup(t, l.cfg, "--type", typ))
		after := history()
		if !bench.running() {
			t.Fatalf("pgbench ended during the %s backup:\n%s", typ, bench.out.String())
		}
		if after <= before {
			t.Fatalf("no pgbench transaction committed during the %s backup (%d → %d)", typ, before, after)
		}
		t.Logf("%s backup %s: %d pgbench transactions committed meanwhile", typ, ids[len(ids)-1], after-before)
	}
	bench.stop(t)

	// No writes from here on: an incremental and a full at the same point.
	incr2 := l.backup(t, l.cfg, "--type", "incr")
	full2 := l.backup(t, l.cfg, "--type", "full")
	srcSums, srcDump := pgbenchSums(t, l.pg), pgDump(t, l.pg)
	full, diff, incr1 := ids[0], ids[1], ids[2]
	chain := []string{full, diff, incr1, incr2}

	bs := listBackups(t, l.cfg, "local")
	for _, want := range []struct{ id, typ, parent string }{
		{full, "full", ""}, {diff, "diff", full}, {incr1, "incr", diff}, {incr2, "incr", incr1}, {full2, "full", ""},
	} {
		b := findBackup(t, bs, want.id)
		if b.Type != want.typ || b.Parent != want.parent {
			t.Fatalf("backup %s: type %s parent %q, want %s parent %q", want.id, b.Type, b.Parent, want.typ, want.parent)
		}
	}
	i2, f2 := findBackup(t, bs, incr2), findBackup(t, bs, full2)
	t.Logf("stored bytes: full %d, last incr %d (database %d)", f2.StoredBytes, i2.StoredBytes, f2.DatabaseBytes)
	if i2.StoredBytes*5 > f2.StoredBytes {
		t.Fatalf("the last incremental stores %d bytes, the full %d: want less than a fifth", i2.StoredBytes, f2.StoredBytes)
	}
	if r := runAgent(t, nil, "backup-verify", "--config", l.cfg, incr2); r.code != 0 {
		t.Fatalf("backup-verify %s: exit %d\n%s\n%s", incr2, r.code, r.stdout, r.stderr)
	}

	// What the newest incremental's restore needs: per file, its newest
	// whole copy in the chain and the deltas after it.
	needed, total := map[string]bool{}, 0
	var stored []string
	for _, id := range chain {
		stored = append(stored, l.storedObjects(t, id)...)
	}
	total = len(stored)
	ms := make([]map[string][2]string, len(chain)) // path → kind, object
	for i, id := range chain {
		ms[i] = map[string][2]string{}
		for _, f := range loadManifest(t, l.cfg, id).Files {
			ms[i][f.Path] = [2]string{f.Kind, f.Object}
		}
	}
	for path := range ms[len(chain)-1] {
		for i := len(chain) - 1; i >= 0; i-- {
			e, ok := ms[i][path]
			if !ok {
				t.Fatalf("%s is stored as a delta in %s but absent from %s", path, chain[i+1], chain[i])
			}
			if e[1] != "" {
				needed[e[1]] = true
			}
			if e[0] == "full" {
				break
			}
		}
	}

	c, out := l.restoreJSON(t, l.cfg, "--backup", incr2, "--target-immediate", "--target-action", "promote")
	if !slices.Equal(out.Restore.Chain, chain) {
		t.Fatalf("restore of %s used chain %v, want %v", incr2, out.Restore.Chain, chain)
	}
	t.Logf("restore of %s: %d objects read; the plan needs %d; the chain stores %d", incr2, out.Restore.ObjectsRead, len(needed), total)
	if out.Restore.ObjectsRead != len(needed) || out.Restore.ObjectsRead >= total {
		t.Fatalf("restore of %s read %d objects; its plan needs %d of the %d the chain stores", incr2, out.Restore.ObjectsRead, len(needed), total)
	}
	sameData(t, "restored "+incr2+" against the source", pgbenchSums(t, c), pgDump(t, c), srcSums, srcDump)
	c.Stop(t, "fast")

	c, out = l.restoreJSON(t, l.cfg, "--backup", full2, "--target-immediate", "--target-action", "promote")
	if !slices.Equal(out.Restore.Chain, []string{full2}) {
		t.Fatalf("restore of %s used chain %v", full2, out.Restore.Chain)
	}
	sameData(t, "restored "+full2+" (full at the same point) against the source", pgbenchSums(t, c), pgDump(t, c), srcSums, srcDump)
	c.Stop(t, "fast")

	// Delete every object of the chain the plan does not need (among
	// them the earlier backups' copies of non-relation files, which the
	// last incremental stores whole again): the restore still works.
	var removed []string
	for _, obj := range stored {
		if !needed[obj] {
			if err := os.Remove(l.backupObjectPath(obj)); err != nil {
				t.Fatal(err)
			}
			removed = append(removed, obj)
		}
	}
	fromLater := 0
	for _, obj := range removed {
		if !strings.Contains(obj, "/"+full+"/") {
			fromLater++
		}
	}
	t.Logf("removed %d objects the plan does not need (%d of them from the diff and first incr)", len(removed), fromLater)
	if fromLater == 0 {
		t.Fatalf("no object of %s or %s is unneeded: the test proves nothing", diff, incr1)
	}
	c, out = l.restoreJSON(t, l.cfg, "--backup", incr2, "--target-immediate", "--target-action", "promote")
	if out.Restore.ObjectsRead != len(needed) {
		t.Fatalf("second restore of %s read %d objects, want %d", incr2, out.Restore.ObjectsRead, len(needed))
	}
	sameData(t, "restored "+incr2+" without the unneeded objects", pgbenchSums(t, c), pgDump(t, c), srcSums, srcDump)
	c.Stop(t, "fast")

	// backup-verify, which reads the whole chain, now reports them missing.
	r := runAgent(t, nil, "backup-verify", "--config", l.cfg, "--json", incr2)
	var rep struct {
		OK      bool `json:"ok"`
		Reports []struct {
			Failed []struct{ Key string } `json:"failed"`
		} `json:"reports"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("backup-verify --json: %v\n%s", err, r.stdout)
	}
	if r.code == 0 || rep.OK || len(rep.Reports) != 1 || len(rep.Reports[0].Failed) != len(removed) {
		t.Fatalf("backup-verify %s after deleting %d objects: exit %d\n%s", incr2, len(removed), r.code, tail(r.stdout, 2000))
	}
}
