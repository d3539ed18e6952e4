package fsm

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pgdr/pgdr/coordinator/slo"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

const tWriteSeconds = pgdrv1.CommandType_COMMAND_TYPE_RECORD_WRITE_SECONDS

// hourStart is an hour boundary in Unix seconds.
const hourStart = int64(490000 * 3600)

func writeBatch(from int64, clusters ...*pgdrv1.ClusterWriteSeconds) *pgdrv1.RecordWriteSeconds {
	return &pgdrv1.RecordWriteSeconds{FromUnix: from, ToUnix: from + 60, Clusters: clusters}
}

// TestRecordWriteSeconds: batches add up, a leader change gap is counted
// bad and unobserved, malformed batches change nothing, unknown clusters
// are skipped.
func TestRecordWriteSeconds(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	h.mustApply(tWriteSeconds, writeBatch(hourStart, &pgdrv1.ClusterWriteSeconds{Cluster: "main", Good: 58, Bad: 2, FirstUnix: hourStart},
		&pgdrv1.ClusterWriteSeconds{Cluster: "gone", Good: 60, FirstUnix: hourStart}))
	// The next leader's first batch starts 30 s into the minute after a gap.
	h.mustApply(tWriteSeconds, writeBatch(hourStart+120, &pgdrv1.ClusterWriteSeconds{Cluster: "main", Good: 30, FirstUnix: hourStart + 150}))
	now := time.Unix(hourStart+180, 0)
	ws, ok := h.f.WriteSecondsOf("main", now)
	if !ok {
		t.Fatal("no write seconds recorded for main")
	}
	if ws.Good != 88 || ws.Bad != 2+90 || ws.Unobserved != 90 || ws.Window != (slo.Sums{Good: 88, Bad: 92, Unobserved: 90}) || ws.Through.Unix() != hourStart+180 {
		t.Fatalf("recorded %+v, want 88 good, 92 bad of which 90 unobserved, through +180", ws)
	}
	// The leader after the next gap knows heartbeats ran unbroken for
	// its last 20 s: only the first 40 s are unobserved.
	h.mustApply(tWriteSeconds, writeBatch(hourStart+240, &pgdrv1.ClusterWriteSeconds{Cluster: "main", Good: 50, FirstUnix: hourStart + 250, RunSinceUnix: hourStart + 230}))
	if ws, _ := h.f.WriteSecondsOf("main", time.Unix(hourStart+300, 0)); ws.Good != 88+20+50 || ws.Bad != 92+50 || ws.Unobserved != 90+50 {
		t.Fatalf("after a gap partly covered by a run of heartbeats: %+v", ws)
	}
	now = time.Unix(hourStart+300, 0)
	if _, ok := h.f.WriteSecondsOf("gone", now); ok {
		t.Fatal("a cluster that does not exist got write seconds")
	}

	before := h.f.State()
	for want, bad := range map[string]*pgdrv1.RecordWriteSeconds{
		"not a batch within one minute": {FromUnix: hourStart + 180, ToUnix: hourStart + 300},
		"not a batch within one":        {FromUnix: hourStart + 3590, ToUnix: hourStart + 3610},
		"do not fit":                    writeBatch(hourStart+180, &pgdrv1.ClusterWriteSeconds{Cluster: "main", Good: 61, FirstUnix: hourStart + 180}),
		"do not fit in":                 writeBatch(hourStart+180, &pgdrv1.ClusterWriteSeconds{Cluster: "main", Good: 1, FirstUnix: hourStart}),
		"run since":                     writeBatch(hourStart+180, &pgdrv1.ClusterWriteSeconds{Cluster: "main", Good: 1, FirstUnix: hourStart + 180, RunSinceUnix: hourStart + 200}),
	} {
		if res := h.apply(tWriteSeconds, bad); res.GetOk() || !strings.Contains(res.GetError(), want) {
			t.Errorf("bad batch (%s): %v", want, res)
		}
	}
	after := h.f.State()
	after.LastIndex = before.LastIndex
	if !proto.Equal(before, after) {
		t.Fatal("a refused batch changed the state")
	}

}

// TestWriteSecondsSurviveSnapshot: the buckets and totals are in the
// snapshot, and a restored FSM carries on from them.
func TestWriteSecondsSurviveSnapshot(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	for i := int64(0); i < 5; i++ {
		h.mustApply(tWriteSeconds, writeBatch(hourStart+i*3600, &pgdrv1.ClusterWriteSeconds{Cluster: "main", Good: 59, Bad: 1, FirstUnix: hourStart + i*3600}))
	}
	want, _ := h.f.WriteSecondsOf("main", time.Unix(hourStart+5*3600, 0))
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &bufferSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	fresh := New(quietLogger(), Options{})
	if err := fresh.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	got, ok := fresh.WriteSecondsOf("main", time.Unix(hourStart+5*3600, 0))
	if !ok || got != want {
		t.Fatalf("restored %+v, want %+v", got, want)
	}
	if got.Bad != 5+4*3540 || got.Unobserved != 4*3540 {
		t.Fatalf("gaps between the hourly batches: %+v", got)
	}
	if th := fresh.WriteThrough()["main"]; th != hourStart+4*3600+60 {
		t.Fatalf("through after restore = %d", th)
	}
	if !proto.Equal(fresh.State(), h.f.State()) {
		t.Fatal("restored state differs")
	}
}
