package divergence

import (
	"errors"
	"fmt"
	"strconv"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/pgdr/pgdr/pkg/divergencesum"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Kind is the history event kind of a divergence report.
const Kind = "divergence"

// Detail keys of a divergence event.
const (
	DetailID        = "divergence_id"
	DetailStatus    = "status"
	DetailRange     = "range"
	DetailBytes     = "bytes"
	DetailCommitted = "committed"
	// DetailSummary is the summary as protojson, its transactions cut to
	// fit MaxDetailBytes; DetailListed says how many it lists.
	DetailSummary = "summary"
	DetailListed  = "listed"
)

// Statuses of a report (agent/divergence): StatusKnown and StatusReplica
// were read (the range and counts are known); StatusReplica and
// StatusReplicaUnknown are a replica's, which committed nothing itself:
// what it received past the fork is the old primary's.
const (
	StatusKnown          = "known"
	StatusReplica        = "replica"
	StatusReplicaUnknown = "replica-unknown"
)

// Read reports whether s's WAL was read: its range and counts are known.
func Read(s *pgdrv1.DivergenceSummary) bool {
	return s.GetStatus() == StatusKnown || s.GetStatus() == StatusReplica
}

// Replica reports whether s is a replica's report: not its lost commits.
func Replica(s *pgdrv1.DivergenceSummary) bool {
	return s.GetStatus() == StatusReplica || s.GetStatus() == StatusReplicaUnknown
}

// MaxDetailBytes bounds the encoded summary an event keeps.
const MaxDetailBytes = divergencesum.MaxBytes

// Bounded returns a copy of s that fits MaxDetailBytes encoded: free texts
// clipped, and transactions dropped from the end until it fits.
func Bounded(s *pgdrv1.DivergenceSummary) (*pgdrv1.DivergenceSummary, []byte, error) {
	return divergencesum.Bounded(s)
}

// Details are the history event details of summary s (bounded).
func Details(s *pgdrv1.DivergenceSummary) (map[string]string, error) {
	b, js, err := Bounded(s)
	if err != nil {
		return nil, err
	}
	d := map[string]string{
		DetailID: b.GetId(), DetailStatus: b.GetStatus(), DetailSummary: string(js),
		DetailListed: strconv.Itoa(len(b.GetTransactions())),
	}
	if Read(b) {
		d[DetailRange] = b.GetForkLsn() + ".." + b.GetEndLsn()
		d[DetailBytes] = strconv.FormatUint(b.GetBytes(), 10)
		d[DetailCommitted] = strconv.FormatUint(b.GetCommitted(), 10)
	}
	return d, nil
}

// ErrNotDivergence: the event is not a divergence report.
var ErrNotDivergence = errors.New("not a divergence event")

// FromEvent decodes the summary a divergence event holds.
func FromEvent(ev *pgdrv1.HistoryEvent) (*pgdrv1.DivergenceSummary, error) {
	if ev.GetKind() != Kind {
		return nil, ErrNotDivergence
	}
	var s pgdrv1.DivergenceSummary
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal([]byte(ev.GetDetails()[DetailSummary]), &s); err != nil {
		return nil, fmt.Errorf("divergence event %d: its summary: %w", ev.GetSeq(), err)
	}
	return &s, nil
}

// Message is the event's message and the incident note: node's report in
// one line. An unknown report says that the transactions are not known.
func Message(node string, s *pgdrv1.DivergenceSummary) string {
	switch s.GetStatus() {
	case StatusReplicaUnknown:
		return fmt.Sprintf("divergence report %s of %s: a replica that received WAL past the fork (not commits of its own), which could not be read: %s",
			s.GetId(), node, clip(s.GetError()))
	case StatusReplica:
		return fmt.Sprintf("divergence report %s of %s: a replica: received WAL %s..%s (%d bytes) of timeline %d past the point where timeline %d forked off it, not committed by it: %d transactions the old primary committed, %d aborted, %d in progress",
			s.GetId(), node, s.GetForkLsn(), s.GetEndLsn(), s.GetBytes(), s.GetTimeline(), s.GetNewTimeline(),
			s.GetCommitted(), s.GetAborted(), s.GetInProgress())
	}
	if s.GetStatus() != StatusKnown {
		return fmt.Sprintf("divergence report %s of %s: unknown, the transactions it committed past the fork are not known: %s",
			s.GetId(), node, clip(s.GetError()))
	}
	stored := "stored in the repositories"
	if !s.GetStored() {
		stored = "NOT stored in the repositories: " + clip(s.GetStoreError())
	}
	return fmt.Sprintf("divergence report %s of %s: WAL %s..%s (%d bytes) of timeline %d, past the point where timeline %d forked off it: %d transactions committed, %d aborted, %d in progress; %s",
		s.GetId(), node, s.GetForkLsn(), s.GetEndLsn(), s.GetBytes(), s.GetTimeline(), s.GetNewTimeline(),
		s.GetCommitted(), s.GetAborted(), s.GetInProgress(), stored)
}

// Same reports whether two reports say the same (a rejoin tried again
// reads the same WAL again): recorded once.
func Same(a, b *pgdrv1.DivergenceSummary) bool {
	return a.GetStatus() == b.GetStatus() && a.GetForkLsn() == b.GetForkLsn() && a.GetEndLsn() == b.GetEndLsn() &&
		a.GetCommitted() == b.GetCommitted() && a.GetError() == b.GetError() && a.GetTimeline() == b.GetTimeline()
}

func clip(s string) string { return divergencesum.Clip(s, divergencesum.MaxText) }
