package divergence

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

func summary(n int) *pgdrv1.DivergenceSummary {
	s := &pgdrv1.DivergenceSummary{Id: "20261208T000000Z-pg-a1", Status: "known", Timeline: 1, NewTimeline: 2,
		ForkLsn: "0/3000000", EndLsn: "0/3001000", Bytes: 4096, Committed: uint64(n), Stored: true}
	for i := range n {
		s.Transactions = append(s.Transactions, &pgdrv1.DivergentTransaction{Xid: uint32(1000 + i), CommitLsn: "0/3000100",
			Relations: []*pgdrv1.DivergentRelation{{Database: 5, Relfilenode: 16384, Oid: 16384, Name: "public.orders", DatabaseName: "postgres", Inserts: 1}}})
	}
	return s
}

// TestDetailsBounded: a summary is kept whole when it fits, cut to fit
// MaxDetailBytes otherwise (the counts stay), clips a huge error, and
// reads back from its event.
func TestDetailsBounded(t *testing.T) {
	for _, tc := range []struct {
		name       string
		s          *pgdrv1.DivergenceSummary
		wantListed int // -1: fewer than given
	}{
		{"#1 a few transactions: kept whole", summary(3), 3},
		{"#2 100 transactions with long names: cut to fit", func() *pgdrv1.DivergenceSummary {
			s := summary(100)
			for _, tx := range s.Transactions {
				tx.Relations[0].Name = strings.Repeat("x", 300)
			}
			return s
		}(), -1},
		{"#3 unknown, a huge error: clipped", &pgdrv1.DivergenceSummary{Id: "x", Status: "unknown", Error: strings.Repeat("e", 100000)}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Details(tc.s)
			if err != nil {
				t.Fatal(err)
			}
			if len(d[DetailSummary]) > MaxDetailBytes {
				t.Errorf("summary of %d bytes", len(d[DetailSummary]))
			}
			got, err := FromEvent(&pgdrv1.HistoryEvent{Kind: Kind, Details: d})
			if err != nil {
				t.Fatal(err)
			}
			n := len(got.GetTransactions())
			if tc.wantListed >= 0 && n != tc.wantListed || tc.wantListed < 0 && (n == 0 || n >= len(tc.s.GetTransactions())) {
				t.Errorf("listed %d of %d", n, len(tc.s.GetTransactions()))
			}
			if got.GetCommitted() != tc.s.GetCommitted() || got.GetId() != tc.s.GetId() {
				t.Errorf("read back %v", got)
			}
			if tc.wantListed == 3 && !proto.Equal(got, tc.s) {
				t.Errorf("read back %v, want %v", got, tc.s)
			}
			if msg := Message("pg-a1", got); tc.s.GetStatus() == "unknown" && !strings.Contains(msg, "unknown") ||
				tc.s.GetStatus() == "known" && !strings.Contains(msg, "transactions committed") {
				t.Errorf("message %q", msg)
			}
		})
	}
	if _, err := FromEvent(&pgdrv1.HistoryEvent{Kind: "failover-result"}); err == nil {
		t.Error("a failover event decoded as a divergence report")
	}
}
