package expire

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/pgdr/pgdr/pkg/divergenceid"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
)

// Divergence reports (agent/divergence) are kept under
// <cluster>/divergence/<id>/: the report and the raw WAL past a fork.
// Expiry keeps the newest DivergenceKeep of them whatever their age, and
// every one younger than the PITR window or DivergenceMinAge, whichever
// is longer; it deletes the others.
const (
	DivergenceKeep   = 10
	DivergenceMinAge = 30 * 24 * time.Hour
)

// decideDivergence returns the report ids to delete of ids (any order):
// older than max(window, DivergenceMinAge) at now and not among the newest
// DivergenceKeep. An id that is not a report id is never deleted.
func decideDivergence(ids []string, now time.Time, window time.Duration) []string {
	type rep struct {
		id string
		at time.Time
	}
	var reps []rep
	for _, id := range ids {
		if divergenceid.Check(id) != nil {
			continue
		}
		at, err := time.Parse("20060102T150405Z", id[:16])
		if err != nil {
			continue
		}
		reps = append(reps, rep{id, at})
	}
	slices.SortFunc(reps, func(a, b rep) int { return b.at.Compare(a.at) }) // newest first
	cut := now.Add(-max(window, DivergenceMinAge))
	var del []string
	for i, r := range reps {
		if i >= DivergenceKeep && r.at.Before(cut) {
			del = append(del, r.id)
		}
	}
	slices.Sort(del)
	return del
}

// listDivergence lists the report ids under cluster's divergence prefix.
func listDivergence(ctx context.Context, st storage.ObjectStore, cluster string) ([]string, error) {
	prefix := repo.DivergencePrefix(cluster)
	seen := map[string]bool{}
	err := st.List(ctx, prefix, func(oi storage.ObjectInfo) error {
		id, _, _ := strings.Cut(strings.TrimPrefix(oi.Key, prefix), "/")
		seen[id] = true
		return nil
	})
	ids := make([]string, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	return ids, err
}
