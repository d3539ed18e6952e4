package health

import (
	"context"
	"net/http"
	"os"
	"testing"
)

// TestFencedMarker: the marker round-trips, is private (0600), makes the
// report fenced (role fenced, /primary and /ready 503) and goes away.
func TestFencedMarker(t *testing.T) {
	dir := t.TempDir()
	if fi, err := ReadFenced(dir); fi != nil || err != nil {
		t.Fatalf("no marker: %v %v", fi, err)
	}
	if err := WriteFenced(dir, FenceInfo{Node: "pg-a1", Reason: "lease expired", Epoch: 7}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(FencedPath(dir))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("marker: %v %v", st, err)
	}
	fi, err := ReadFenced(dir)
	if err != nil || fi == nil || fi.Reason != "lease expired" || fi.Epoch != 7 || fi.Node != "pg-a1" {
		t.Fatalf("read back %+v %v", fi, err)
	}
	r := NewChecker(Config{PGData: dir, DSN: "host=127.0.0.1 port=1 user=postgres connect_timeout=1"}, nil).Check(context.Background())
	if !r.Fenced || Role(r) != RoleFenced || Status(EndpointPrimary, r, 0) != http.StatusServiceUnavailable {
		t.Fatalf("report with the marker: %v", r)
	}
	if err := RemoveFenced(dir); err != nil {
		t.Fatal(err)
	}
	if err := RemoveFenced(dir); err != nil {
		t.Fatal(err)
	}
	if r := NewChecker(Config{PGData: dir, DSN: "host=127.0.0.1 port=1 user=postgres"}, nil).Check(context.Background()); r.Fenced {
		t.Fatalf("report without the marker: %v", r)
	}
}
