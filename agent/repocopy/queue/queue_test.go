package queue

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func keys(t *testing.T, q *Queue) []string {
	t.Helper()
	ps, bad, err := q.List()
	if err != nil || len(bad) > 0 {
		t.Fatalf("List: %v %v", err, bad)
	}
	var out []string
	for _, p := range ps {
		e, err := q.Load(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e.Key)
	}
	return out
}

// Entries survive a reopen (a restart) and come back oldest first,
// whatever the order they were added in.
func TestQueueDurableAndOrdered(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "repocopy", "dr")
	q, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	for i, k := range []string{"c", "a", "b"} {
		at := map[string]time.Duration{"a": 1, "b": 2, "c": 3}[k]
		if err := q.Add(Entry{Kind: KindObject, Key: k, Size: int64(10 * (i + 1)), Time: base.Add(at * time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Add(Entry{Kind: KindBackup, Key: "20261207T100000F", Size: 1000, Objects: 7, Time: base}); err != nil {
		t.Fatal(err)
	}
	q2, err := Open(dir) // the next process
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(keys(t, q2), ","); got != "20261207T100000F,a,b,c" {
		t.Fatalf("order after reopen: %s", got)
	}
	ps, _, _ := q2.List()
	lag := LagOf(ps)
	if lag.Objects != 10 || lag.Bytes != 1060 || !lag.Oldest.Equal(base) {
		t.Fatalf("lag %+v", lag)
	}
	e, _ := q2.Load(ps[1])
	if err := q2.Done(e); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(keys(t, q2), ","); got != "20261207T100000F,b,c" {
		t.Fatalf("after Done: %s", got)
	}
	if err := q2.Done(e); err != nil {
		t.Fatalf("Done twice: %v", err)
	}
}

// A corrupt file is reported by name, loses no other entry and is kept
// on disk (quarantined) for inspection.
func TestQueueCorruptFile(t *testing.T) {
	dir := t.TempDir()
	q, _ := Open(dir)
	for _, k := range []string{"a", "b"} {
		if err := q.Add(Entry{Kind: KindObject, Key: k}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // distinct times, so a before b
	}
	ps, _, _ := q.List()
	// The first entry's content is damaged, and a stray file appears.
	if err := os.WriteFile(filepath.Join(dir, ps[0].Name), []byte("{\"kind\":\"obj"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "garbage"), []byte("x"), 0o600)
	ps, bad, err := q.List()
	if err != nil || len(ps) != 2 || len(bad) != 1 || bad[0].Name != "garbage" || !errors.Is(bad[0].Err, ErrCorrupt) || !strings.Contains(bad[0].Err.Error(), filepath.Join(dir, "garbage")) {
		t.Fatalf("List: %v entries, bad %v, err %v", len(ps), bad, err)
	}
	_, err = q.Load(ps[0])
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), ps[0].Name) {
		t.Fatalf("Load of a damaged file: %v", err)
	}
	if e, err := q.Load(ps[1]); err != nil || e.Key != "b" {
		t.Fatalf("the other entry: %+v %v", e, err)
	}
	if err := q.Quarantine(ps[0].Name); err != nil {
		t.Fatal(err)
	}
	if err := q.Quarantine("garbage"); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(keys(t, q), ","); got != "b" {
		t.Fatalf("after quarantine: %s", got)
	}
	for _, n := range []string{ps[0].Name + ".corrupt", "garbage.corrupt"} {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			t.Fatalf("quarantined file gone: %v", err)
		}
	}
}

func TestQueueRefusesBadEntries(t *testing.T) {
	q, _ := Open(t.TempDir())
	if err := q.Add(Entry{Kind: "later", Key: "a"}); err == nil {
		t.Fatal("unknown kind accepted")
	}
	if err := q.Add(Entry{Kind: KindObject}); err == nil {
		t.Fatal("empty key accepted")
	}
	if ps, _, _ := q.List(); len(ps) != 0 {
		t.Fatalf("refused entries left files: %v", ps)
	}
}

// A temporary file left by an Add that died is removed once stale, and
// never listed.
func TestQueueStaleTemporaryFile(t *testing.T) {
	dir := t.TempDir()
	q, _ := Open(dir)
	fresh, stale := filepath.Join(dir, ".tmp-fresh"), filepath.Join(dir, ".tmp-stale")
	os.WriteFile(fresh, []byte("{"), 0o600)
	os.WriteFile(stale, []byte("{"), 0o600)
	old := time.Now().Add(-2 * staleTemp)
	os.Chtimes(stale, old, old)
	ps, bad, err := q.List()
	if err != nil || len(ps) != 0 || len(bad) != 0 {
		t.Fatalf("List: %v %v %v", ps, bad, err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale temporary file kept: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Fatalf("fresh temporary file removed: %v", err)
	}
}
