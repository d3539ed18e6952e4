package server

import (
	"fmt"
	"math"
	"strings"
	"testing"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestReportArchiveRPOBounds: the archive RPO entries of a health report
// become metric labels (repository) and compliance breaches on the leader,
// so a report is refused when it lists too many, a repository name that is
// not a name, the same repository twice (two samples with the same labels
// fail the whole /metrics scrape) or a negative or non-finite age.
func TestReportArchiveRPOBounds(t *testing.T) {
	one := func(edit func(a *pgdrv1.ArchiveRPO)) *pgdrv1.HealthReport {
		a := &pgdrv1.ArchiveRPO{Repository: "local", Mode: "sync", Bytes: 10, Seconds: 1}
		edit(a)
		return &pgdrv1.HealthReport{Cluster: "main", Node: "pg-a", ArchiveRpo: []*pgdrv1.ArchiveRPO{a}}
	}
	many := &pgdrv1.HealthReport{Cluster: "main", Node: "pg-a"}
	for i := range 100000 {
		many.ArchiveRpo = append(many.ArchiveRpo, &pgdrv1.ArchiveRPO{Repository: fmt.Sprint("r", i)})
	}
	dup := one(func(*pgdrv1.ArchiveRPO) {})
	dup.ArchiveRpo = append(dup.ArchiveRpo, &pgdrv1.ArchiveRPO{Repository: "local"})
	for name, r := range map[string]*pgdrv1.HealthReport{
		"many":         many,
		"duplicate":    dup,
		"long name":    one(func(a *pgdrv1.ArchiveRPO) { a.Repository = strings.Repeat("x", 5000) }),
		"bad name":     one(func(a *pgdrv1.ArchiveRPO) { a.Repository = "a b\n" }),
		"empty name":   one(func(a *pgdrv1.ArchiveRPO) { a.Repository = "" }),
		"long mode":    one(func(a *pgdrv1.ArchiveRPO) { a.Mode = strings.Repeat("x", 5000) }),
		"negative age": one(func(a *pgdrv1.ArchiveRPO) { a.Seconds = -1 }),
		"NaN age":      one(func(a *pgdrv1.ArchiveRPO) { a.Seconds = math.NaN() }),
		"infinite age": one(func(a *pgdrv1.ArchiveRPO) { a.Seconds = math.Inf(1) }),
	} {
		if err := validReport(r); err == nil || !strings.Contains(err.Error(), "archive_rpo") {
			t.Errorf("%s: %v; want an error naming archive_rpo", name, err)
		}
	}
	if err := validReport(one(func(*pgdrv1.ArchiveRPO) {})); err != nil {
		t.Fatalf("a good report: %v", err)
	}
}
