package divergenceid

import (
	"errors"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	id := New("pg-a1", time.Date(2026, 12, 8, 0, 30, 5, 0, time.FixedZone("x", 3600)))
	if id != "20261207T233005Z-pg-a1" {
		t.Errorf("New = %s", id)
	}
	if err := Check(id); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"", "pg-a1", "../../etc/passwd", "20261207T233005Z-", "20261207T233005Z-a/b", "20261207T233005Z-.x", "20261207T233005Z-a b"} {
		if err := Check(bad); !errors.Is(err, ErrBad) {
			t.Errorf("Check(%q) = %v", bad, err)
		}
	}
}
