package ctl

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/coordinator/divergence"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestDivergence: `pgdrctl divergence` lists the reports the history
// holds (an unknown one as unknown, never as zero transactions), `show ID`
// prints one with its transactions and relations, and a malformed or
// unknown id gets a clear error.
func TestDivergence(t *testing.T) {
	t.Parallel()
	known := &pgdrv1.DivergenceSummary{Id: "20261208T003000Z-pg-a1", Status: "known", Timeline: 1, NewTimeline: 2, ForkLsn: "0/3000000",
		EndLsn: "0/3002000", Bytes: 8192, Committed: 2, Aborted: 1, Stored: true, Transactions: []*pgdrv1.DivergentTransaction{
			{Xid: 740, CommitLsn: "0/3000100", Relations: []*pgdrv1.DivergentRelation{{Database: 5, Relfilenode: 16384, Oid: 16384, Name: "public.orders", DatabaseName: "postgres", Inserts: 3}}},
			{Xid: 741, CommitLsn: "0/3000200", Relations: []*pgdrv1.DivergentRelation{{Database: 5, Relfilenode: 16390, Deletes: 1}}}}}
	unknown := &pgdrv1.DivergenceSummary{Id: "20261208T004000Z-pg-a2", Status: "unknown", Error: "this node's control data: no such directory"}
	var evs []*pgdrv1.HistoryEvent
	for i, s := range []*pgdrv1.DivergenceSummary{known, unknown} {
		d, err := divergence.Details(s)
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, &pgdrv1.HistoryEvent{Seq: uint64(10 + i), Cluster: "main", Kind: divergence.Kind, Node: "pg-a" + string(rune('1'+i)), Epoch: 2, Details: d})
	}
	// The same id in another cluster, with terminal escapes in its texts.
	evil := &pgdrv1.DivergenceSummary{Id: known.Id, Status: "unknown", Error: "gone\x1b]0;pwned\x07\x1b[2J"}
	d, err := divergence.Details(evil)
	if err != nil {
		t.Fatal(err)
	}
	evs = append(evs, &pgdrv1.HistoryEvent{Seq: 12, Cluster: "other", Kind: divergence.Kind, Node: "pg-b1\x1b[31m", Epoch: 5, Details: d})
	l := newLab(t)
	fake := &fakeAdmin{name: "c1", history: func(r *pgdrv1.HistoryRequest) []*pgdrv1.HistoryEvent {
		var out []*pgdrv1.HistoryEvent
		for _, ev := range append([]*pgdrv1.HistoryEvent{{Seq: 9, Cluster: "main", Kind: "failover-intent"}}, evs...) {
			if (r.GetCluster() == "" || ev.GetCluster() == r.GetCluster()) && (r.GetKind() == "" || ev.GetKind() == r.GetKind()) && (r.GetDetailKey() == "" || ev.GetDetails()[r.GetDetailKey()] == r.GetDetailValue()) {
				out = append(out, ev)
			}
		}
		return out
	}}
	addr := l.serve(t, fake)
	l.env["PGDR_TOKEN"] = testToken
	code, out, errOut := l.run(t, "divergence", "--address", addr)
	if code != 0 || !regexp.MustCompile(`20261208T003000Z-pg-a1\s+main\s+pg-a1\s+2\s+-\s+known\s+0/3000000..0/3002000\s+8192\s+2\s+1\s+true`).MatchString(out) ||
		!regexp.MustCompile(`20261208T004000Z-pg-a2\s+main\s+pg-a2\s+2\s+-\s+unknown\s+-\s+-\s+unknown`).MatchString(out) {
		t.Errorf("divergence: exit %d\n%s%s", code, out, errOut)
	}
	if strings.ContainsAny(out, "\x1b\x07") {
		t.Errorf("divergence printed control characters: %q", out)
	}
	// The id is in two clusters: show needs --cluster.
	if code, out, errOut = l.run(t, "divergence", "show", known.Id, "--address", addr); code == 0 || !strings.Contains(errOut, "--cluster") {
		t.Errorf("divergence show of an id in two clusters: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut = l.run(t, "divergence", "show", known.Id, "--cluster", "other", "--address", addr); code != 0 || !strings.Contains(out, "pg-b1") || strings.ContainsAny(out, "\x1b\x07") {
		t.Errorf("divergence show --cluster other: exit %d\n%q%s", code, out, errOut)
	}
	code, out, errOut = l.run(t, "divergence", "show", known.Id, "--cluster", "main", "--address", addr)
	if code != 0 || !regexp.MustCompile(`(?m)^740\s+-\s+0/3000100\s+postgres:public.orders\s+3\s+0\s+0$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^741\s.*relfilenode 16390 \(database 5, not known to the new primary\)\s+0\s+0\s+1$`).MatchString(out) ||
		!strings.Contains(out, "main/divergence/20261208T003000Z-pg-a1/report.json") {
		t.Errorf("divergence show: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = l.run(t, "divergence", "show", unknown.Id, "--address", addr, "--json")
	var v DivergenceJSON
	if err := json.Unmarshal([]byte(out), &v); code != 0 || err != nil || v.Status != "unknown" || v.Error == "" || len(v.Transactions) != 0 {
		t.Errorf("divergence show --json of the unknown report: exit %d, %v\n%s", code, err, out)
	}
	if code, out, errOut = l.run(t, "divergence", "show", "../../etc/passwd", "--address", addr); code != ExitUsage || !strings.Contains(errOut, "not a divergence report id") || out != "" {
		t.Errorf("malformed id: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut = l.run(t, "divergence", "show", "20261208T005000Z-pg-a9", "--address", addr); code == 0 || !strings.Contains(errOut, "no divergence report 20261208T005000Z-pg-a9") {
		t.Errorf("unknown id: exit %d: %s", code, errOut)
	}
}
