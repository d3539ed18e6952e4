package config

import (
	"strings"
	"testing"
)

func TestReceiverSlot(t *testing.T) {
	for node, want := range map[string]string{
		"pg-a1":                 "pgdr_pg_a1",
		"PG.B1":                 "pgdr_pg_b1",
		"db_3":                  "pgdr_db_3",
		strings.Repeat("x", 80): "pgdr_" + strings.Repeat("x", 58),
	} {
		if got := ReceiverSlot(node); got != want {
			t.Errorf("ReceiverSlot(%q) = %q, want %q", node, got, want)
		}
	}
}
