package health

import (
	"os"
	"testing"
)

// TestRemovePromotePending: the record is removed and reported once; no
// record is not an error.
func TestRemovePromotePending(t *testing.T) {
	pgdata := t.TempDir()
	if err := os.WriteFile(PromotePendingPath(pgdata), []byte(`{"epoch":7}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if removed, err := RemovePromotePending(pgdata); !removed || err != nil {
		t.Fatalf("with a record: removed %v, %v", removed, err)
	}
	if _, err := os.Stat(PromotePendingPath(pgdata)); !os.IsNotExist(err) {
		t.Fatalf("the record is still there: %v", err)
	}
	if removed, err := RemovePromotePending(pgdata); removed || err != nil {
		t.Fatalf("without a record: removed %v, %v", removed, err)
	}
}
