package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// t0 is the proposer clock of the first test command; entry i is stamped
// t0 + i seconds so tests can tell which command set a timestamp.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// harness applies commands with increasing raft indexes.
type harness struct {
	t     *testing.T
	f     *FSM
	index uint64
}

func newHarness(t *testing.T, opts Options) *harness {
	t.Helper()
	return &harness{t: t, f: New(quietLogger(), opts)}
}

func (h *harness) apply(typ pgdrv1.CommandType, payload proto.Message) *pgdrv1.ApplyResult {
	h.t.Helper()
	// applyRaw assigns index h.index+1; stamp the command with it.
	c, err := NewCommand(typ, payload, "admin:test", t0.Add(time.Duration(h.index+1)*time.Second))
	if err != nil {
		h.t.Fatalf("NewCommand(%s): %v", typ, err)
	}
	return h.applyCmd(c)
}

func (h *harness) applyCmd(c *pgdrv1.Command) *pgdrv1.ApplyResult {
	h.t.Helper()
	b, err := Encode(c)
	if err != nil {
		h.t.Fatalf("Encode: %v", err)
	}
	return h.applyRaw(b)
}

func (h *harness) applyRaw(data []byte) *pgdrv1.ApplyResult {
	h.t.Helper()
	h.index++
	res, ok := h.f.Apply(&raft.Log{Index: h.index, Data: data}).(*pgdrv1.ApplyResult)
	if !ok {
		h.t.Fatalf("Apply did not return *pgdrv1.ApplyResult")
	}
	if res.GetIndex() != h.index {
		h.t.Fatalf("ApplyResult.Index = %d, want %d", res.GetIndex(), h.index)
	}
	return res
}

func (h *harness) mustApply(typ pgdrv1.CommandType, payload proto.Message) {
	h.t.Helper()
	if res := h.apply(typ, payload); !res.GetOk() {
		h.t.Fatalf("apply %s: %s", typ, res.GetError())
	}
}

// mustPanic runs fn and returns the panic message, failing if fn returns.
func mustPanic(t *testing.T, fn func()) (msg string) {
	t.Helper()
	defer func() {
		r := recover()
		if r == nil {
			t.Fatalf("expected a panic")
		}
		msg = fmt.Sprint(r)
	}()
	fn()
	return ""
}

const (
	tRegister   = pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER
	tRemove     = pgdrv1.CommandType_COMMAND_TYPE_REMOVE_MEMBER
	tPrimary    = pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY
	tPaused     = pgdrv1.CommandType_COMMAND_TYPE_SET_PAUSED
	tPolicy     = pgdrv1.CommandType_COMMAND_TYPE_SET_POLICY
	tUpsertCo   = pgdrv1.CommandType_COMMAND_TYPE_UPSERT_COORDINATOR
	tRemoveCo   = pgdrv1.CommandType_COMMAND_TYPE_REMOVE_COORDINATOR
	tRecordEvnt = pgdrv1.CommandType_COMMAND_TYPE_RECORD_EVENT
)

func member(cluster, name string, sysid uint64) *pgdrv1.RegisterMember {
	return &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
		Name: name, Cluster: cluster, Region: "us-east-1",
		Dsn: "host=" + name + " port=5432", ApiUrl: "http://" + name + ":8008",
		GossipAddress: name + ":7946", Tags: []string{"a"}, Priority: 1, SystemIdentifier: sysid,
	}}
}

// baseline registers cluster main with members pg-a1 (primary, epoch 1) and
// pg-a2, and coordinator c1: the state most cases start from.
func baseline(h *harness) {
	h.mustApply(tRegister, member("main", "pg-a1", 42))
	h.mustApply(tRegister, member("main", "pg-a2", 42))
	h.mustApply(tPrimary, &pgdrv1.SetPrimary{Cluster: "main", Name: "pg-a1", ExpectedEpoch: 0, Reason: "bootstrap"})
	h.mustApply(tUpsertCo, &pgdrv1.UpsertCoordinator{Coordinator: &pgdrv1.Coordinator{
		Name: "c1", Region: "us-east-1", RaftAddress: "10.0.0.1:8300"}})
}

func TestApplyCommands(t *testing.T) {
	longName := strings.Repeat("a", 64)
	cases := []struct {
		name    string
		setup   func(h *harness)
		typ     pgdrv1.CommandType
		payload proto.Message
		// wantErr is a substring of the rejection; "" means success.
		wantErr string
		// wantEvent is the kind of the one event the command must add; ""
		// means the command must add none.
		wantEvent string
		check     func(t *testing.T, st *pgdrv1.State)
	}{
		// REGISTER_MEMBER
		{
			name: "register first member creates cluster", typ: tRegister, payload: member("main", "pg-a1", 42),
			wantEvent: KindMemberRegistered,
			check: func(t *testing.T, st *pgdrv1.State) {
				cl := st.Clusters["main"]
				if cl == nil || cl.GetPolicy() == nil || cl.GetSystemIdentifier() != 42 || cl.GetCreatedAt().AsTime() != t0.Add(time.Second) {
					t.Fatalf("cluster = %v", cl)
				}
				m := cl.Members["pg-a1"]
				if m.GetCluster() != "main" || m.GetRegisteredAt().AsTime() != t0.Add(time.Second) || m.GetDsn() != "host=pg-a1 port=5432" {
					t.Fatalf("member = %v", m)
				}
			},
		},
		{
			name: "register second member", setup: baseline, typ: tRegister, payload: member("main", "pg-a3", 42),
			wantEvent: KindMemberRegistered,
			check: func(t *testing.T, st *pgdrv1.State) {
				if len(st.Clusters["main"].Members) != 3 {
					t.Fatalf("members = %v", st.Clusters["main"].Members)
				}
			},
		},
		{
			name: "register member without sysid into cluster with one", setup: baseline, typ: tRegister,
			payload: member("main", "pg-a3", 0), wantEvent: KindMemberRegistered,
		},
		{
			name: "re-register with changed fields updates", setup: baseline, typ: tRegister,
			payload: func() proto.Message {
				p := member("main", "pg-a2", 42)
				p.Member.Dsn = "host=other"
				p.Member.Tags = []string{"a", "no-failover"}
				return p
			}(),
			wantEvent: KindMemberUpdated,
			check: func(t *testing.T, st *pgdrv1.State) {
				m := st.Clusters["main"].Members["pg-a2"]
				if m.GetDsn() != "host=other" || m.GetRegisteredAt().AsTime() != t0.Add(2*time.Second) || !m.GetUpdatedAt().AsTime().After(t0.Add(2*time.Second)) {
					t.Fatalf("member = %v", m)
				}
				ev := st.History[len(st.History)-1]
				if ev.GetDetails()["changed"] != "dsn,tags" || !strings.Contains(ev.GetMessage(), "dsn, tags") {
					t.Fatalf("event = %v", ev)
				}
			},
		},
		{name: "re-register identical is a no-op", setup: baseline, typ: tRegister, payload: member("main", "pg-a2", 42)},
		{name: "register nil member", typ: tRegister, payload: &pgdrv1.RegisterMember{}, wantErr: "member is missing"},
		{name: "register bad cluster name", typ: tRegister, payload: member("-main", "pg-a1", 0), wantErr: `invalid cluster name "-main"`},
		{name: "register bad member name", typ: tRegister, payload: member("main", "pg/a1", 0), wantErr: `invalid member name "pg/a1"`},
		{name: "register too long name", typ: tRegister, payload: member("main", longName, 0), wantErr: "invalid member name"},
		{
			name: "register empty region", typ: tRegister,
			payload: &pgdrv1.RegisterMember{Member: &pgdrv1.Member{Name: "pg-a1", Cluster: "main"}}, wantErr: "region is empty",
		},
		{
			name: "register other system identifier", setup: baseline, typ: tRegister, payload: member("main", "pg-b1", 7),
			wantErr: `system identifier 7 differs from cluster "main" system identifier 42`,
		},

		// REMOVE_MEMBER
		{
			name: "remove replica", setup: baseline, typ: tRemove, payload: &pgdrv1.RemoveMember{Cluster: "main", Name: "pg-a2"},
			wantEvent: KindMemberRemoved,
			check: func(t *testing.T, st *pgdrv1.State) {
				if _, ok := st.Clusters["main"].Members["pg-a2"]; ok {
					t.Fatal("pg-a2 still present")
				}
			},
		},
		{name: "remove from missing cluster", typ: tRemove, payload: &pgdrv1.RemoveMember{Cluster: "nope", Name: "x"}, wantErr: `cluster "nope" not found`},
		{name: "remove missing member", setup: baseline, typ: tRemove, payload: &pgdrv1.RemoveMember{Cluster: "main", Name: "x"}, wantErr: `member "x" not found`},
		{name: "remove primary", setup: baseline, typ: tRemove, payload: &pgdrv1.RemoveMember{Cluster: "main", Name: "pg-a1"}, wantErr: "is the primary"},

		// SET_PRIMARY
		{
			name: "set primary with current epoch", setup: baseline, typ: tPrimary,
			payload:   &pgdrv1.SetPrimary{Cluster: "main", Name: "pg-a2", ExpectedEpoch: 1, Reason: "switchover"},
			wantEvent: KindPrimarySet,
			check: func(t *testing.T, st *pgdrv1.State) {
				cl := st.Clusters["main"]
				ev := st.History[len(st.History)-1]
				if cl.GetPrimary() != "pg-a2" || cl.GetEpoch() != 2 || ev.GetEpoch() != 2 || !strings.Contains(ev.GetMessage(), "switchover") {
					t.Fatalf("cluster = %v, event = %v", cl, ev)
				}
			},
		},
		{
			name: "set primary with stale epoch", setup: baseline, typ: tPrimary,
			payload: &pgdrv1.SetPrimary{Cluster: "main", Name: "pg-a2", ExpectedEpoch: 0}, wantErr: "expected 0, current 1",
		},
		{
			name: "set primary unknown member", setup: baseline, typ: tPrimary,
			payload: &pgdrv1.SetPrimary{Cluster: "main", Name: "pg-z", ExpectedEpoch: 1}, wantErr: `member "pg-z" not found`,
		},
		{name: "set primary missing cluster", typ: tPrimary, payload: &pgdrv1.SetPrimary{Cluster: "main", Name: "pg-a1"}, wantErr: "not found"},

		// SET_PAUSED
		{
			name: "pause", setup: baseline, typ: tPaused, payload: &pgdrv1.SetPaused{Cluster: "main", Paused: true, Reason: "upgrade"},
			wantEvent: KindPaused,
			check: func(t *testing.T, st *pgdrv1.State) {
				p := st.Clusters["main"].GetPolicy()
				if !p.GetPaused() || p.GetPausedReason() != "upgrade" || p.GetPausedBy() != "admin:test" || p.GetPausedAt() == nil {
					t.Fatalf("policy = %v", p)
				}
			},
		},
		{
			name: "pause already paused is a no-op",
			setup: func(h *harness) {
				baseline(h)
				h.mustApply(tPaused, &pgdrv1.SetPaused{Cluster: "main", Paused: true, Reason: "first"})
			},
			typ: tPaused, payload: &pgdrv1.SetPaused{Cluster: "main", Paused: true, Reason: "second"},
			check: func(t *testing.T, st *pgdrv1.State) {
				if r := st.Clusters["main"].GetPolicy().GetPausedReason(); r != "first" {
					t.Fatalf("reason = %q, want the original", r)
				}
			},
		},
		{
			name: "resume",
			setup: func(h *harness) {
				baseline(h)
				h.mustApply(tPaused, &pgdrv1.SetPaused{Cluster: "main", Paused: true, Reason: "upgrade"})
			},
			typ: tPaused, payload: &pgdrv1.SetPaused{Cluster: "main", Paused: false}, wantEvent: KindResumed,
			check: func(t *testing.T, st *pgdrv1.State) {
				p := st.Clusters["main"].GetPolicy()
				if p.GetPaused() || p.GetPausedReason() != "" || p.GetPausedBy() != "" || p.GetPausedAt() != nil {
					t.Fatalf("policy = %v", p)
				}
			},
		},
		{name: "resume not paused is a no-op", setup: baseline, typ: tPaused, payload: &pgdrv1.SetPaused{Cluster: "main"}},
		{name: "pause missing cluster", typ: tPaused, payload: &pgdrv1.SetPaused{Cluster: "main", Paused: true}, wantErr: `cluster "main" not found`},

		// SET_POLICY
		{
			name: "set policy keeps pause fields",
			setup: func(h *harness) {
				baseline(h)
				h.mustApply(tPaused, &pgdrv1.SetPaused{Cluster: "main", Paused: true, Reason: "upgrade"})
			},
			typ: tPolicy,
			payload: &pgdrv1.SetPolicy{Cluster: "main", Policy: &pgdrv1.Policy{
				Paused: false, PausedReason: "forged", Synchronous: "quorum 2", MaximumLagOnFailover: 1 << 20, PreferredRegions: []string{"us-east-1"}}},
			wantEvent: KindPolicySet,
			check: func(t *testing.T, st *pgdrv1.State) {
				p := st.Clusters["main"].GetPolicy()
				if !p.GetPaused() || p.GetPausedReason() != "upgrade" || p.GetSynchronous() != "quorum 2" || p.GetMaximumLagOnFailover() != 1<<20 {
					t.Fatalf("policy = %v", p)
				}
			},
		},
		{name: "set identical policy is a no-op", setup: baseline, typ: tPolicy, payload: &pgdrv1.SetPolicy{Cluster: "main", Policy: &pgdrv1.Policy{}}},
		{name: "set policy missing cluster", typ: tPolicy, payload: &pgdrv1.SetPolicy{Cluster: "main"}, wantErr: "not found"},
		{name: "set policy quorum 0", setup: baseline, typ: tPolicy, payload: &pgdrv1.SetPolicy{Cluster: "main", Policy: &pgdrv1.Policy{Synchronous: "quorum 0"}}, wantErr: `invalid synchronous "quorum 0"`},
		{name: "set policy bad synchronous", setup: baseline, typ: tPolicy, payload: &pgdrv1.SetPolicy{Cluster: "main", Policy: &pgdrv1.Policy{Synchronous: "always"}}, wantErr: "invalid synchronous"},
		{name: "set policy empty region", setup: baseline, typ: tPolicy, payload: &pgdrv1.SetPolicy{Cluster: "main", Policy: &pgdrv1.Policy{PreferredRegions: []string{""}}}, wantErr: "empty preferred region"},

		// UPSERT_COORDINATOR
		{
			name: "add coordinator", setup: baseline, typ: tUpsertCo,
			payload:   &pgdrv1.UpsertCoordinator{Coordinator: &pgdrv1.Coordinator{Name: "c2", RaftAddress: "10.0.0.2:8300"}},
			wantEvent: KindCoordinatorAdded,
		},
		{
			name: "update coordinator", setup: baseline, typ: tUpsertCo,
			payload:   &pgdrv1.UpsertCoordinator{Coordinator: &pgdrv1.Coordinator{Name: "c1", Region: "us-east-1", RaftAddress: "10.0.0.9:8300"}},
			wantEvent: KindCoordinatorUpdated,
			check: func(t *testing.T, st *pgdrv1.State) {
				if a := st.Coordinators["c1"].GetRaftAddress(); a != "10.0.0.9:8300" {
					t.Fatalf("raft address = %q", a)
				}
			},
		},
		{
			name: "upsert identical coordinator is a no-op", setup: baseline, typ: tUpsertCo,
			payload: &pgdrv1.UpsertCoordinator{Coordinator: &pgdrv1.Coordinator{Name: "c1", Region: "us-east-1", RaftAddress: "10.0.0.1:8300"}},
		},
		{name: "upsert nil coordinator", typ: tUpsertCo, payload: &pgdrv1.UpsertCoordinator{}, wantErr: "coordinator is missing"},
		{name: "upsert bad coordinator name", typ: tUpsertCo, payload: &pgdrv1.UpsertCoordinator{Coordinator: &pgdrv1.Coordinator{Name: "c 1", RaftAddress: "x:1"}}, wantErr: `invalid name "c 1"`},
		{name: "upsert coordinator without raft address", typ: tUpsertCo, payload: &pgdrv1.UpsertCoordinator{Coordinator: &pgdrv1.Coordinator{Name: "c1"}}, wantErr: "raft_address is empty"},

		// REMOVE_COORDINATOR
		{name: "remove coordinator", setup: baseline, typ: tRemoveCo, payload: &pgdrv1.RemoveCoordinator{Name: "c1"}, wantEvent: KindCoordinatorRemoved},
		{name: "remove missing coordinator", setup: baseline, typ: tRemoveCo, payload: &pgdrv1.RemoveCoordinator{Name: "c9"}, wantErr: `coordinator "c9" not found`},

		// RECORD_EVENT
		{
			name: "record event overrides FSM-owned fields", setup: baseline, typ: tRecordEvnt,
			payload: &pgdrv1.RecordEvent{Event: &pgdrv1.HistoryEvent{
				Seq: 999, Index: 999, Actor: "forged", Kind: "intent", Cluster: "main", Node: "pg-a2", Epoch: 1,
				Message: "failover to pg-a2", Details: map[string]string{"lsn": "0/3000000"}}},
			wantEvent: "intent",
			check: func(t *testing.T, st *pgdrv1.State) {
				ev := st.History[len(st.History)-1]
				if ev.GetSeq() != st.NextSeq-1 || ev.GetSeq() == 999 || ev.GetIndex() != st.LastIndex || ev.GetActor() != "admin:test" ||
					ev.GetDetails()["lsn"] != "0/3000000" || ev.GetTime().AsTime() != t0.Add(time.Duration(st.LastIndex)*time.Second) {
					t.Fatalf("event = %v", ev)
				}
			},
		},
		{name: "record event without kind", typ: tRecordEvnt, payload: &pgdrv1.RecordEvent{Event: &pgdrv1.HistoryEvent{}}, wantErr: "kind is empty"},
		{name: "record nil event", typ: tRecordEvnt, payload: &pgdrv1.RecordEvent{}, wantErr: "event is missing"},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Options{})
			if tc.setup != nil {
				tc.setup(h)
			}
			before := h.f.State()
			res := h.apply(tc.typ, tc.payload)
			after := h.f.State()

			if after.GetLastIndex() != h.index {
				t.Fatalf("last_index = %d, want %d", after.GetLastIndex(), h.index)
			}
			if tc.wantErr != "" {
				if res.GetOk() || !strings.Contains(res.GetError(), tc.wantErr) {
					t.Fatalf("result = %v, want rejection containing %q", res, tc.wantErr)
				}
				before.LastIndex = h.index
				if !proto.Equal(before, after) {
					t.Fatalf("rejected command changed state:\nbefore %v\nafter  %v", before, after)
				}
				return
			}
			if !res.GetOk() || res.GetError() != "" {
				t.Fatalf("result = %v, want ok", res)
			}
			added := after.History[len(before.History):]
			switch {
			case tc.wantEvent == "" && len(added) != 0:
				t.Fatalf("unexpected events %v", added)
			case tc.wantEvent != "" && (len(added) != 1 || added[0].GetKind() != tc.wantEvent):
				t.Fatalf("events = %v, want one %q", added, tc.wantEvent)
			case tc.wantEvent != "":
				ev := added[0]
				if ev.GetSeq() != before.GetNextSeq() || after.GetNextSeq() != before.GetNextSeq()+1 ||
					ev.GetIndex() != h.index || ev.GetActor() != "admin:test" ||
					ev.GetTime().AsTime() != t0.Add(time.Duration(h.index)*time.Second) {
					t.Fatalf("event stamps = %v (next_seq before %d)", ev, before.GetNextSeq())
				}
			}
			if tc.wantEvent == "" && !proto.Equal(withIndex(before, h.index), after) {
				t.Fatalf("no-op command changed state:\nbefore %v\nafter  %v", before, after)
			}
			if tc.check != nil {
				tc.check(t, after)
			}
		})
	}
}

func withIndex(st *pgdrv1.State, index uint64) *pgdrv1.State {
	st = proto.Clone(st).(*pgdrv1.State)
	st.LastIndex = index
	return st
}

func TestHistorySeqAndLimit(t *testing.T) {
	h := newHarness(t, Options{HistoryLimit: 5})
	for i := range 12 {
		cluster := "a"
		if i%2 == 1 {
			cluster = "b"
		}
		h.mustApply(tRecordEvnt, &pgdrv1.RecordEvent{Event: &pgdrv1.HistoryEvent{Kind: "step", Cluster: cluster, Message: fmt.Sprint(i)}})
	}
	st := h.f.State()
	if len(st.History) != 5 || st.NextSeq != 13 {
		t.Fatalf("history len %d next_seq %d, want 5 and 13", len(st.History), st.NextSeq)
	}
	for i, ev := range st.History {
		if ev.GetSeq() != uint64(8+i) {
			t.Fatalf("history[%d].seq = %d, want %d", i, ev.GetSeq(), 8+i)
		}
	}

	seqs := func(evs []*pgdrv1.HistoryEvent) string {
		var s []string
		for _, ev := range evs {
			s = append(s, fmt.Sprint(ev.GetSeq()))
		}
		return strings.Join(s, ",")
	}
	for _, tc := range []struct {
		cluster  string
		after    uint64
		limit    int
		wantSeqs string
	}{
		{"", 0, 0, "8,9,10,11,12"},
		{"", 0, 3, "10,11,12"},
		{"", 10, 0, "11,12"},
		{"", 12, 0, ""},
		{"a", 0, 0, "9,11"},
		{"b", 0, 2, "10,12"},
		{"b", 10, 5, "12"},
		{"c", 0, 0, ""},
	} {
		if got := seqs(h.f.History(tc.cluster, tc.after, tc.limit)); got != tc.wantSeqs {
			t.Errorf("History(%q, %d, %d) = %q, want %q", tc.cluster, tc.after, tc.limit, got, tc.wantSeqs)
		}
	}

	// A returned event is a copy: changing it must not reach the FSM.
	h.f.History("", 0, 1)[0].Kind = "mutated"
	if h.f.History("", 0, 1)[0].GetKind() != "step" {
		t.Fatal("History returned shared memory")
	}
}

// bufferSink is a raft.SnapshotSink in memory.
type bufferSink struct {
	bytes.Buffer
	closed, cancelled bool
	failWrite         bool
}

func (s *bufferSink) Write(p []byte) (int, error) {
	if s.failWrite {
		return 0, errors.New("disk full")
	}
	return s.Buffer.Write(p)
}
func (s *bufferSink) ID() string    { return "test-snap" }
func (s *bufferSink) Close() error  { s.closed = true; return nil }
func (s *bufferSink) Cancel() error { s.cancelled = true; return nil }

func persist(t *testing.T, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer snap.Release()
	sink := &bufferSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("sink closed=%v cancelled=%v", sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	h.mustApply(tPaused, &pgdrv1.SetPaused{Cluster: "main", Paused: true, Reason: "upgrade"})
	h.mustApply(tPolicy, &pgdrv1.SetPolicy{Cluster: "main", Policy: &pgdrv1.Policy{Synchronous: "on"}})

	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Applies after Snapshot must not leak into what it persists.
	want := h.f.State()
	h.mustApply(tRemove, &pgdrv1.RemoveMember{Cluster: "main", Name: "pg-a2"})
	sink := &bufferSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(sink.String(), "pgdr-fsm-snapshot v1\n") {
		t.Fatalf("snapshot starts with %q", sink.String()[:20])
	}

	fresh := New(quietLogger(), Options{})
	if err := fresh.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if got := fresh.State(); !proto.Equal(got, want) {
		t.Fatalf("restored state differs:\ngot  %v\nwant %v", got, want)
	}
	if fresh.LastIndex() != want.GetLastIndex() {
		t.Fatalf("LastIndex = %d, want %d", fresh.LastIndex(), want.GetLastIndex())
	}
	// Persisting the restored state gives the same bytes: the format is deterministic.
	if !bytes.Equal(persist(t, fresh), sink.Bytes()) {
		t.Fatal("re-persisted snapshot differs")
	}
}

func TestRestoreRejectsGarbage(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	want := h.f.State()

	for _, tc := range []struct {
		name, data, wantErr string
	}{
		{"bad header", "consul-snapshot v3\nxxxx", `bad snapshot header "consul-snapshot v3\n"`},
		{"empty", "", `bad snapshot header ""`},
		{"bad body", "pgdr-fsm-snapshot v1\n\xff\xff\xff", "decode state"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := h.f.Restore(io.NopCloser(strings.NewReader(tc.data)))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Restore error = %v, want %q", err, tc.wantErr)
			}
			if !proto.Equal(h.f.State(), want) {
				t.Fatal("failed restore changed state")
			}
		})
	}
}

func TestPersistCancelsOnWriteError(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	snap, _ := h.f.Snapshot()
	sink := &bufferSink{failWrite: true}
	if err := snap.Persist(sink); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Persist error = %v", err)
	}
	if !sink.cancelled || sink.closed {
		t.Fatalf("sink closed=%v cancelled=%v, want cancelled only", sink.closed, sink.cancelled)
	}
}

func TestUnknownCommandIgnored(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	before := h.f.State()
	res := h.applyCmd(&pgdrv1.Command{Type: 99, Payload: []byte("whatever"), IgnoreIfUnknown: true, Actor: "coordinator:new"})
	if res.GetOk() || res.GetError() != "unknown command type 99 ignored" {
		t.Fatalf("result = %v", res)
	}
	if after := h.f.State(); !proto.Equal(withIndex(before, h.index), after) {
		t.Fatalf("ignored command changed state: %v", after)
	}
}

func TestUnknownCommandPanics(t *testing.T) {
	h := newHarness(t, Options{})
	b, _ := Encode(&pgdrv1.Command{Type: 99})
	msg := mustPanic(t, func() { h.f.Apply(&raft.Log{Index: 7, Data: b}) })
	if want := "fsm: unknown command type 99 at index 7; upgrade this coordinator"; msg != want {
		t.Fatalf("panic = %q, want %q", msg, want)
	}
	// UNSPECIFIED is not registered either: a proposer bug must not be skipped.
	b, _ = Encode(&pgdrv1.Command{})
	if msg := mustPanic(t, func() { h.f.Apply(&raft.Log{Index: 8, Data: b}) }); !strings.Contains(msg, "unknown command type 0 at index 8") {
		t.Fatalf("panic = %q", msg)
	}
}

func TestUndecodableEntriesPanic(t *testing.T) {
	h := newHarness(t, Options{})
	b, _ := Encode(&pgdrv1.Command{Type: tPrimary, Payload: []byte{0xff, 0xff, 0xff}, IgnoreIfUnknown: true})
	msg := mustPanic(t, func() { h.f.Apply(&raft.Log{Index: 11, Data: b}) })
	if !strings.Contains(msg, "index 11") || !strings.Contains(msg, "COMMAND_TYPE_SET_PRIMARY") {
		t.Fatalf("payload panic = %q", msg)
	}
	msg = mustPanic(t, func() { h.f.Apply(&raft.Log{Index: 12, Data: []byte{0xff, 0xff, 0xff}}) })
	if !strings.Contains(msg, "envelope at index 12") {
		t.Fatalf("envelope panic = %q", msg)
	}
}

func TestRegistryDuplicatePanics(t *testing.T) {
	r := newRegistry()
	msg := mustPanic(t, func() { r.register(tRegister, r[tRegister]) })
	if !strings.Contains(msg, "duplicate applier for command type COMMAND_TYPE_REGISTER_MEMBER") {
		t.Fatalf("panic = %q", msg)
	}
	// Every named type except UNSPECIFIED has an applier.
	values := pgdrv1.CommandType(0).Descriptor().Values()
	for i := range values.Len() {
		typ := pgdrv1.CommandType(values.Get(i).Number())
		if _, ok := r[typ]; ok == (typ == pgdrv1.CommandType_COMMAND_TYPE_UNSPECIFIED) {
			t.Errorf("registry has %s: %v", typ, ok)
		}
	}
}

func TestNewCommand(t *testing.T) {
	c, err := NewCommand(tRemove, &pgdrv1.RemoveMember{Cluster: "main", Name: "x"}, "agent:pg-a1", t0)
	if err != nil {
		t.Fatal(err)
	}
	if c.GetType() != tRemove || c.GetActor() != "agent:pg-a1" || c.GetTime().AsTime() != t0 || c.GetIgnoreIfUnknown() {
		t.Fatalf("command = %v", c)
	}
	b1, _ := Encode(c)
	b2, _ := Encode(proto.Clone(c).(*pgdrv1.Command))
	if !bytes.Equal(b1, b2) {
		t.Fatal("Encode is not deterministic")
	}
	for _, tc := range []struct {
		typ     pgdrv1.CommandType
		payload proto.Message
		wantErr string
	}{
		{tRemove, &pgdrv1.SetPaused{}, "payload is pgdr.v1.SetPaused, want pgdr.v1.RemoveMember"},
		{pgdrv1.CommandType_COMMAND_TYPE_UNSPECIFIED, &pgdrv1.RemoveMember{}, "unknown command type 0"},
		{99, &pgdrv1.RemoveMember{}, "unknown command type 99"},
		{tRemove, nil, "payload is nil"},
	} {
		if _, err := NewCommand(tc.typ, tc.payload, "x", t0); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("NewCommand(%v, %T) error = %v, want %q", tc.typ, tc.payload, err, tc.wantErr)
		}
	}
	if _, err := Encode(nil); err == nil {
		t.Error("Encode(nil) succeeded")
	}
}

// TestApplyIsDeterministic replays one log on two FSMs, as two coordinators
// would, and requires byte-identical snapshots.
func TestApplyIsDeterministic(t *testing.T) {
	var log [][]byte
	record := func(typ pgdrv1.CommandType, p proto.Message) {
		c, err := NewCommand(typ, p, "admin:test", t0.Add(time.Duration(len(log))*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := Encode(c)
		log = append(log, b)
	}
	record(tRegister, member("main", "pg-a1", 42))
	record(tRegister, member("main", "pg-a2", 42))
	record(tPrimary, &pgdrv1.SetPrimary{Cluster: "main", Name: "pg-a2", ExpectedEpoch: 0})
	record(tPrimary, &pgdrv1.SetPrimary{Cluster: "main", Name: "pg-a1", ExpectedEpoch: 0}) // rejected: stale
	record(tPaused, &pgdrv1.SetPaused{Cluster: "main", Paused: true})
	record(tRecordEvnt, &pgdrv1.RecordEvent{Event: &pgdrv1.HistoryEvent{Kind: "intent", Details: map[string]string{"a": "1", "b": "2", "c": "3"}}})

	var snaps [][]byte
	for range 2 {
		f := New(quietLogger(), Options{})
		for i, b := range log {
			f.Apply(&raft.Log{Index: uint64(i + 1), Data: b})
		}
		snaps = append(snaps, persist(t, f))
	}
	if !bytes.Equal(snaps[0], snaps[1]) {
		t.Fatal("two FSMs applying the same log diverged")
	}
}

func TestConcurrentReadersDuringApply(t *testing.T) {
	h := newHarness(t, Options{HistoryLimit: 50})
	baseline(h)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				st := h.f.State()
				if cl, ok := h.f.Cluster("main"); ok {
					cl.Members["intruder"] = &pgdrv1.Member{} // a clone: must not reach the FSM
				}
				_ = h.f.Coordinators()
				evs := h.f.History("main", 0, 10)
				for i := 1; i < len(evs); i++ {
					if evs[i].GetSeq() <= evs[i-1].GetSeq() {
						t.Errorf("history out of order: %d after %d", evs[i].GetSeq(), evs[i-1].GetSeq())
					}
				}
				if h.f.LastIndex() < st.GetLastIndex() {
					t.Errorf("last index went backwards")
				}
				if snap, err := h.f.Snapshot(); err == nil {
					snap.Release()
				}
			}
		})
	}
	epoch := uint64(1)
	for i := range 300 {
		name := []string{"pg-a1", "pg-a2"}[i%2]
		h.mustApply(tPrimary, &pgdrv1.SetPrimary{Cluster: "main", Name: name, ExpectedEpoch: epoch})
		epoch++
		h.mustApply(tUpsertCo, &pgdrv1.UpsertCoordinator{Coordinator: &pgdrv1.Coordinator{
			Name: fmt.Sprintf("c%d", i%7), RaftAddress: fmt.Sprintf("10.0.0.%d:8300", i)}})
	}
	close(stop)
	wg.Wait()
	if cl, _ := h.f.Cluster("main"); cl.GetEpoch() != 301 {
		t.Fatalf("epoch = %d, want 301", cl.GetEpoch())
	}
	if _, ok := h.f.State().Clusters["main"].Members["intruder"]; ok {
		t.Fatal("a reader's clone leaked into the FSM")
	}
	var names []string
	for _, c := range h.f.Coordinators() {
		names = append(names, c.GetName())
	}
	if got := strings.Join(names, ","); got != "c0,c1,c2,c3,c4,c5,c6" {
		t.Fatalf("Coordinators() = %s, want sorted c0..c6", got)
	}
}

func TestValidators(t *testing.T) {
	for s, want := range map[string]bool{
		"main": true, "pg-a1": true, "a": true, "A.b_c-d": true, "0": true, strings.Repeat("x", 63): true,
		"": false, "-a": false, ".a": false, "_a": false, "a b": false, "a/b": false, "é": false, strings.Repeat("x", 64): false,
	} {
		if got := ValidName(s); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", s, got, want)
		}
	}
	for s, want := range map[string]bool{
		"": true, "off": true, "on": true, "quorum 1": true, "quorum 3": true,
		"quorum 0": false, "quorum": false, "quorum ": false, "quorum -1": false, "quorum +2": false,
		"quorum x": false, "quorum  2": false, "ON": false, "any 1": false,
	} {
		if got := ValidSynchronous(s); got != want {
			t.Errorf("ValidSynchronous(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestMemberEpochReadsWithoutCopy(t *testing.T) {
	h := newHarness(t, Options{})
	f := h.f
	h.mustApply(pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, member("main", "a", 0))
	if ok, primary, epoch := f.MemberEpoch("main", "a"); !ok || primary != "" || epoch != 0 {
		t.Fatalf("MemberEpoch(main, a) = %v %q %d", ok, primary, epoch)
	}
	if ok, _, _ := f.MemberEpoch("main", "b"); ok {
		t.Fatal("unknown member reported as member")
	}
	if ok, _, _ := f.MemberEpoch("other", "a"); ok {
		t.Fatal("member of an unknown cluster reported")
	}
}

func TestSetSyncStandbys(t *testing.T) {
	h := newHarness(t, Options{})
	h.mustApply(pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, member("main", "a", 0))
	h.mustApply(pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, member("main", "b", 0))
	h.mustApply(pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "a", ExpectedEpoch: 0})
	for _, bad := range []*pgdrv1.SetSyncStandbys{
		{Cluster: "main", Names: []string{"b"}, ExpectedEpoch: 0},      // stale epoch
		{Cluster: "main", Names: []string{"a"}, ExpectedEpoch: 1},      // the primary
		{Cluster: "main", Names: []string{"zz"}, ExpectedEpoch: 1},     // unknown
		{Cluster: "main", Names: []string{"b", "b"}, ExpectedEpoch: 1}, // twice
		{Cluster: "nope", Names: []string{"b"}, ExpectedEpoch: 1},
	} {
		before := h.f.State()
		if r := h.apply(pgdrv1.CommandType_COMMAND_TYPE_SET_SYNC_STANDBYS, bad); r.Ok {
			t.Fatalf("accepted %v", bad)
		}
		after := h.f.State()
		after.LastIndex = before.LastIndex
		if !proto.Equal(before, after) {
			t.Fatalf("rejected %v changed the state", bad)
		}
	}
	h.mustApply(pgdrv1.CommandType_COMMAND_TYPE_SET_SYNC_STANDBYS, &pgdrv1.SetSyncStandbys{Cluster: "main", Names: []string{"b"}, ExpectedEpoch: 1})
	c, _ := h.f.Cluster("main")
	if len(c.SyncStandbys) != 1 || c.SyncStandbys[0] != "b" {
		t.Fatalf("sync standbys %v", c.SyncStandbys)
	}
	n := len(h.f.History("main", 0, 0))
	h.mustApply(pgdrv1.CommandType_COMMAND_TYPE_SET_SYNC_STANDBYS, &pgdrv1.SetSyncStandbys{Cluster: "main", Names: []string{"b"}, ExpectedEpoch: 1})
	if len(h.f.History("main", 0, 0)) != n {
		t.Fatal("an unchanged list recorded an event")
	}
	// The quorum is recorded with the list; raising it alone is a change.
	h.mustApply(pgdrv1.CommandType_COMMAND_TYPE_SET_SYNC_STANDBYS, &pgdrv1.SetSyncStandbys{Cluster: "main", Names: []string{"b"}, ExpectedEpoch: 1, Quorum: 1})
	if c, _ := h.f.Cluster("main"); c.SyncQuorum != 1 || len(h.f.History("main", 0, 0)) != n+1 {
		t.Fatalf("quorum %d, %d events (want 1, %d)", c.SyncQuorum, len(h.f.History("main", 0, 0)), n+1)
	}
}

func TestScanHistoryFiltersByCluster(t *testing.T) {
	h := newHarness(t, Options{})
	h.mustApply(pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, member("main", "a", 0))
	h.mustApply(pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, member("other", "b", 0))
	var main, all int
	h.f.ScanHistory("main", func(ev *pgdrv1.HistoryEvent) {
		if ev.Cluster != "main" {
			t.Errorf("event of cluster %q in a scan of main", ev.Cluster)
		}
		main++
	})
	h.f.ScanHistory("", func(*pgdrv1.HistoryEvent) { all++ })
	if main != 1 || all != 2 {
		t.Fatalf("scanned %d events of main and %d in all, want 1 and 2", main, all)
	}
}

func TestClustersCopies(t *testing.T) {
	h := newHarness(t, Options{})
	h.mustApply(pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, member("main", "a", 0))
	cs := h.f.Clusters()
	if len(cs) != 1 || cs["main"].Members["a"] == nil {
		t.Fatalf("Clusters() = %v", cs)
	}
	cs["main"].Primary = "changed"
	if c, _ := h.f.Cluster("main"); c.Primary != "" {
		t.Fatal("Clusters() returned the live state, not a copy")
	}
}

// TestRecordPrimaryLSN: the recorded primary's last LSN is kept per epoch,
// never lowered within one, refused for another primary or epoch, and
// carried in snapshots.
func TestRecordPrimaryLSN(t *testing.T) {
	const typ = pgdrv1.CommandType_COMMAND_TYPE_RECORD_PRIMARY_LSN
	h := newHarness(t, Options{})
	h.mustApply(tRegister, member("main", "a", 0))
	h.mustApply(tRegister, member("main", "b", 0))
	h.mustApply(tPrimary, &pgdrv1.SetPrimary{Cluster: "main", Name: "a", ExpectedEpoch: 0})
	for _, bad := range []*pgdrv1.RecordPrimaryLSN{
		{Cluster: "main", Primary: "a", Epoch: 0, Lsn: 100}, // stale epoch
		{Cluster: "main", Primary: "b", Epoch: 1, Lsn: 100}, // not the primary
		{Cluster: "main", Primary: "a", Epoch: 1, Lsn: 0},   // no position
		{Cluster: "nope", Primary: "a", Epoch: 1, Lsn: 100},
	} {
		before := h.f.State()
		if r := h.apply(typ, bad); r.Ok {
			t.Fatalf("accepted %v", bad)
		}
		after := h.f.State()
		after.LastIndex = before.LastIndex
		if !proto.Equal(before, after) {
			t.Fatalf("rejected %v changed the state", bad)
		}
	}
	n := len(h.f.History("main", 0, 0))
	h.mustApply(typ, &pgdrv1.RecordPrimaryLSN{Cluster: "main", Primary: "a", Epoch: 1, Lsn: 600 << 20})
	h.mustApply(typ, &pgdrv1.RecordPrimaryLSN{Cluster: "main", Primary: "a", Epoch: 1, Lsn: 100 << 20}) // lower: kept
	if c, _ := h.f.Cluster("main"); c.PrimaryLastLsn != 600<<20 || c.PrimaryLastLsnEpoch != 1 {
		t.Fatalf("primary last LSN %d at epoch %d, want %d at 1", c.PrimaryLastLsn, c.PrimaryLastLsnEpoch, 600<<20)
	}
	if len(h.f.History("main", 0, 0)) != n {
		t.Fatal("recording the primary's LSN added history events")
	}
	// A new epoch starts from its own first record, lower or not.
	h.mustApply(tPrimary, &pgdrv1.SetPrimary{Cluster: "main", Name: "b", ExpectedEpoch: 1})
	h.mustApply(typ, &pgdrv1.RecordPrimaryLSN{Cluster: "main", Primary: "b", Epoch: 2, Lsn: 500 << 20})
	g := New(quietLogger(), Options{})
	if err := g.Restore(io.NopCloser(bytes.NewReader(persist(t, h.f)))); err != nil {
		t.Fatal(err)
	}
	if c, _ := g.Cluster("main"); c.PrimaryLastLsn != 500<<20 || c.PrimaryLastLsnEpoch != 2 {
		t.Fatalf("after restore: primary last LSN %d at epoch %d, want %d at 2", c.PrimaryLastLsn, c.PrimaryLastLsnEpoch, 500<<20)
	}
}

// TestHistoryCompactionKeepsDecisions: routine member registrations and
// updates are evicted before decisions (primary changes, pauses, failover
// intents, steps and results), so 20,000 routine events arriving after a
// failover leave every decision of that failover in the history, and the
// history stays within its bound.
func TestHistoryCompactionKeepsDecisions(t *testing.T) {
	h := newHarness(t, Options{})
	for _, n := range []string{"pg-a", "pg-b"} {
		h.mustApply(tRegister, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{Cluster: "main", Name: n, Region: "r"}})
	}
	h.mustApply(tPrimary, &pgdrv1.SetPrimary{Cluster: "main", Name: "pg-a"})
	h.mustApply(tPaused, &pgdrv1.SetPaused{Cluster: "main", Paused: true, Reason: "maintenance"})
	h.mustApply(tPaused, &pgdrv1.SetPaused{Cluster: "main", Paused: false})
	for _, k := range []string{"failover-intent", "failover-step", "failover-result"} {
		h.mustApply(tRecordEvnt, &pgdrv1.RecordEvent{Event: &pgdrv1.HistoryEvent{Kind: k, Cluster: "main", Node: "pg-b", Message: k}})
	}
	h.mustApply(tPrimary, &pgdrv1.SetPrimary{Cluster: "main", Name: "pg-b", ExpectedEpoch: 1})
	var decisions []uint64
	for _, ev := range h.f.State().History {
		if ev.GetKind() != KindMemberRegistered {
			decisions = append(decisions, ev.GetSeq())
		}
	}
	if len(decisions) != 7 {
		t.Fatalf("%d decisions recorded, want 7", len(decisions))
	}
	for i := range 20000 {
		h.mustApply(tRegister, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{Cluster: "main", Name: "pg-c", Region: "r",
			Tags: []string{fmt.Sprint("t", i)}}})
	}
	st := h.f.State()
	if len(st.History) > DefaultHistoryLimit {
		t.Fatalf("history holds %d events, more than the limit %d", len(st.History), DefaultHistoryLimit)
	}
	kept := map[uint64]bool{}
	for _, ev := range st.History {
		kept[ev.GetSeq()] = true
	}
	for _, seq := range decisions {
		if !kept[seq] {
			t.Errorf("decision seq %d was evicted by routine member updates", seq)
		}
	}
	if last := st.History[len(st.History)-1]; last.GetKind() != KindMemberUpdated {
		t.Errorf("newest event is %s, want the latest member update", last.GetKind())
	}
}

// TestUnsettledPromoteState: review D7 and D9. SetPrimary with a promote
// order records the new primary's promotion as unsettled and seeds the new
// epoch's LSN floor (the higher of the seed and the old floor); the promote
// marks of recorded events update it (only for the recorded primary at its
// epoch; an unknown mark is refused and changes nothing); history eviction
// does not touch it, and snapshots carry it.
func TestUnsettledPromoteState(t *testing.T) {
	h := newHarness(t, Options{HistoryLimit: 4})
	for _, n := range []string{"a", "b", "c"} {
		h.mustApply(tRegister, member("main", n, 0))
	}
	h.mustApply(tPrimary, &pgdrv1.SetPrimary{Cluster: "main", Name: "a"})
	if c, _ := h.f.Cluster("main"); c.UnsettledPromote != nil {
		t.Fatalf("an initial primary is unsettled: %v", c.UnsettledPromote)
	}
	h.mustApply(pgdrv1.CommandType_COMMAND_TYPE_RECORD_PRIMARY_LSN, &pgdrv1.RecordPrimaryLSN{Cluster: "main", Primary: "a", Epoch: 1, Lsn: 600 << 20})
	h.mustApply(tPrimary, &pgdrv1.SetPrimary{Cluster: "main", Name: "b", ExpectedEpoch: 1, Promote: true, PrimaryLsnSeed: 300 << 20})
	c, _ := h.f.Cluster("main")
	if u := c.UnsettledPromote; u.GetNode() != "b" || u.GetEpoch() != 2 || !u.GetInFlight() || u.GetMayComplete() || u.GetOrderedAt() == nil {
		t.Fatalf("after SetPrimary b with a promote order: %v", u)
	}
	if c.PrimaryLastLsn != 600<<20 || c.PrimaryLastLsnEpoch != 2 {
		t.Fatalf("new epoch's floor %d at epoch %d, want the old floor %d at 2", c.PrimaryLastLsn, c.PrimaryLastLsnEpoch, 600<<20)
	}
	before := h.f.State()
	if r := h.apply(tRecordEvnt, &pgdrv1.RecordEvent{Event: &pgdrv1.HistoryEvent{Kind: "failover-result", Cluster: "main", Node: "b", Epoch: 2}, Promote: 99}); r.Ok {
		t.Fatal("an unknown promote mark was accepted")
	}
	if after := h.f.State(); !proto.Equal(withIndex(before, 0), withIndex(after, 0)) {
		t.Fatal("a refused promote mark changed the state")
	}
	mark := func(node string, epoch uint64, m pgdrv1.PromoteMark) {
		h.mustApply(tRecordEvnt, &pgdrv1.RecordEvent{Event: &pgdrv1.HistoryEvent{Kind: "failover-result", Cluster: "main", Node: node, Epoch: epoch}, Promote: m})
	}
	mark("b", 2, pgdrv1.PromoteMark_PROMOTE_MARK_UNSETTLED)
	mark("c", 2, pgdrv1.PromoteMark_PROMOTE_MARK_PROMOTED) // not the primary
	mark("b", 1, pgdrv1.PromoteMark_PROMOTE_MARK_PROMOTED) // another epoch
	for i := range 10 {                                    // evicts every event about b
		h.mustApply(tRecordEvnt, &pgdrv1.RecordEvent{Event: &pgdrv1.HistoryEvent{Kind: "failover-refused", Cluster: "main", Node: "c", Epoch: 2, Message: fmt.Sprint(i)}})
	}
	for _, ev := range h.f.History("main", 0, 0) {
		if ev.GetNode() == "b" {
			t.Fatalf("history still holds %s about b", ev.GetKind())
		}
	}
	g := New(quietLogger(), Options{})
	if err := g.Restore(io.NopCloser(bytes.NewReader(persist(t, h.f)))); err != nil {
		t.Fatal(err)
	}
	c, _ = g.Cluster("main")
	if u := c.UnsettledPromote; u.GetNode() != "b" || u.GetEpoch() != 2 || u.GetInFlight() || !u.GetMayComplete() {
		t.Fatalf("after eviction and restore: %v, want b at 2 that may complete", u)
	}
	mark("b", 2, pgdrv1.PromoteMark_PROMOTE_MARK_PROMOTED)
	if c, _ := h.f.Cluster("main"); c.UnsettledPromote != nil {
		t.Fatalf("a confirmed promotion left %v", c.UnsettledPromote)
	}
}

// TestUnsettledPromoteSettleBy: review D10. The settle deadline of an
// unsettled promotion covers every order that may still complete: the
// latest of theirs, and none once one of them carried none; a confirmed
// fence clears it.
func TestUnsettledPromoteSettleBy(t *testing.T) {
	h := newHarness(t, Options{})
	for _, n := range []string{"a", "b"} {
		h.mustApply(tRegister, member("main", n, 0))
	}
	h.mustApply(tPrimary, &pgdrv1.SetPrimary{Cluster: "main", Name: "a"})
	h.mustApply(tPrimary, &pgdrv1.SetPrimary{Cluster: "main", Name: "b", ExpectedEpoch: 1, Promote: true})
	at := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	mark := func(m pgdrv1.PromoteMark, settleBy time.Time) time.Time {
		t.Helper()
		rec := &pgdrv1.RecordEvent{Event: &pgdrv1.HistoryEvent{Kind: "failover-result", Cluster: "main", Node: "b", Epoch: 2}, Promote: m}
		if !settleBy.IsZero() {
			rec.SettleBy = timestamppb.New(settleBy)
		}
		h.mustApply(tRecordEvnt, rec)
		c, _ := h.f.Cluster("main")
		if c.GetUnsettledPromote().GetSettleBy() == nil {
			return time.Time{}
		}
		return c.GetUnsettledPromote().GetSettleBy().AsTime()
	}
	const unsettled, ordered, settled = pgdrv1.PromoteMark_PROMOTE_MARK_UNSETTLED, pgdrv1.PromoteMark_PROMOTE_MARK_ORDERED, pgdrv1.PromoteMark_PROMOTE_MARK_SETTLED
	for i, c := range []struct {
		m        pgdrv1.PromoteMark
		settleBy time.Time
		want     time.Time
	}{
		{unsettled, at, at},
		{ordered, time.Time{}, at},                            // in flight: kept
		{unsettled, at.Add(-time.Minute), at},                 // an earlier one: the latest stays
		{unsettled, at.Add(time.Minute), at.Add(time.Minute)}, // a later one
		{unsettled, time.Time{}, time.Time{}},                 // one without: none
		{unsettled, at.Add(2 * time.Minute), time.Time{}},     // none stays none
		{settled, time.Time{}, time.Time{}},                   // fenced: nothing may complete
		{unsettled, at, at},                                   // a new order after the fence
	} {
		if got := mark(c.m, c.settleBy); !got.Equal(c.want) {
			t.Fatalf("step %d (%s %v): settle_by %v, want %v", i, c.m, c.settleBy, got, c.want)
		}
	}
}

// TestUnsettledPromoteMarkSequences: review B of D7. An order whose
// outcome a dead leader never recorded may still complete: the next
// order's mark (ORDERED while one is in flight) folds it into
// may_complete, with its settle deadline unknown; NOT_SENT and UNSETTLED
// of a later order never clear what an earlier one left; only PROMOTED
// and SETTLED do.
func TestUnsettledPromoteMarkSequences(t *testing.T) {
	const (
		ordered   = pgdrv1.PromoteMark_PROMOTE_MARK_ORDERED
		unsettled = pgdrv1.PromoteMark_PROMOTE_MARK_UNSETTLED
		notSent   = pgdrv1.PromoteMark_PROMOTE_MARK_NOT_SENT
		settled   = pgdrv1.PromoteMark_PROMOTE_MARK_SETTLED
		promoted  = pgdrv1.PromoteMark_PROMOTE_MARK_PROMOTED
	)
	type step struct {
		m pgdrv1.PromoteMark
		// the order's settle deadline, minutes after at (0: none)
		settleBy int
	}
	at := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		what       string
		steps      []step // after SetPrimary b with a promote order (in flight)
		inFlight   bool
		mayComplet bool
		settleBy   int // minutes after at; 0: unknown
		gone       bool
	}{
		{"order1 lost with its leader, order2 not sent", []step{{ordered, 0}, {notSent, 0}}, false, true, 0, false},
		{"order1 lost, order2 unsettled with a deadline", []step{{ordered, 0}, {unsettled, 5}}, false, true, 0, false},
		{"order1 lost, order2 refused before pg_promote, order3 lost", []step{{ordered, 0}, {notSent, 0}, {ordered, 0}}, true, true, 0, false},
		{"order1 unsettled, order2 not sent", []step{{unsettled, 5}, {ordered, 0}, {notSent, 0}}, false, true, 5, false},
		{"order1 unsettled, order2 lost", []step{{unsettled, 5}, {ordered, 0}, {ordered, 0}}, true, true, 0, false},
		{"order1 not sent", []step{{notSent, 0}}, false, false, 0, false},
		{"order1 not sent, order2 unsettled", []step{{notSent, 0}, {ordered, 0}, {unsettled, 5}}, false, true, 5, false},
		{"order1 lost, order2 promoted", []step{{ordered, 0}, {promoted, 0}}, false, false, 0, true},
		{"order1 lost, fenced", []step{{ordered, 0}, {settled, 0}}, false, false, 0, false},
	} {
		t.Run(c.what, func(t *testing.T) {
			h := newHarness(t, Options{})
			for _, n := range []string{"a", "b"} {
				h.mustApply(tRegister, member("main", n, 0))
			}
			h.mustApply(tPrimary, &pgdrv1.SetPrimary{Cluster: "main", Name: "a"})
			h.mustApply(tPrimary, &pgdrv1.SetPrimary{Cluster: "main", Name: "b", ExpectedEpoch: 1, Promote: true})
			for _, s := range c.steps {
				rec := &pgdrv1.RecordEvent{Event: &pgdrv1.HistoryEvent{Kind: "failover-step", Cluster: "main", Node: "b", Epoch: 2}, Promote: s.m}
				if s.settleBy != 0 {
					rec.SettleBy = timestamppb.New(at.Add(time.Duration(s.settleBy) * time.Minute))
				}
				h.mustApply(tRecordEvnt, rec)
			}
			cl, _ := h.f.Cluster("main")
			u := cl.GetUnsettledPromote()
			if c.gone {
				if u != nil {
					t.Fatalf("%v: want none", u)
				}
				return
			}
			var sb time.Time
			if u.GetSettleBy() != nil {
				sb = u.GetSettleBy().AsTime()
			}
			want := time.Time{}
			if c.settleBy != 0 {
				want = at.Add(time.Duration(c.settleBy) * time.Minute)
			}
			if u.GetInFlight() != c.inFlight || u.GetMayComplete() != c.mayComplet || !sb.Equal(want) {
				t.Fatalf("in_flight=%v may_complete=%v settle_by=%v, want %v %v %v", u.GetInFlight(), u.GetMayComplete(), sb, c.inFlight, c.mayComplet, want)
			}
		})
	}
}

// TestUnsettledPromoteSettleWindow: review C of D10. The settle window
// (a duration, not a time of some leader's clock) of the orders that may
// still complete: the longest, known only while every one of them carried
// one, including an order a dead leader never recorded the outcome of.
func TestUnsettledPromoteSettleWindow(t *testing.T) {
	const (
		ordered   = pgdrv1.PromoteMark_PROMOTE_MARK_ORDERED
		unsettled = pgdrv1.PromoteMark_PROMOTE_MARK_UNSETTLED
		notSent   = pgdrv1.PromoteMark_PROMOTE_MARK_NOT_SENT
		settled   = pgdrv1.PromoteMark_PROMOTE_MARK_SETTLED
	)
	type step struct {
		m pgdrv1.PromoteMark
		w uint64
	}
	for _, c := range []struct {
		what        string
		first       uint64 // SetPrimary's window
		steps       []step
		want        uint64
		mayComplete bool
	}{
		{"order1 lost (30s), order2 not sent", 30000, []step{{ordered, 40000}, {notSent, 40000}}, 30000, true},
		{"order1 lost (30s), order2 unsettled (40s)", 30000, []step{{ordered, 40000}, {unsettled, 40000}}, 40000, true},
		{"order1 lost without a window, order2 unsettled", 0, []step{{ordered, 40000}, {unsettled, 40000}}, 0, true},
		{"order1 unsettled, order2 without a window unsettled", 30000, []step{{unsettled, 30000}, {ordered, 0}, {unsettled, 0}}, 0, true},
		{"order1 unsettled (50s), order2 unsettled (40s)", 50000, []step{{unsettled, 50000}, {ordered, 40000}, {unsettled, 40000}}, 50000, true},
		{"order1 not sent, order2 unsettled", 30000, []step{{notSent, 30000}, {ordered, 40000}, {unsettled, 40000}}, 40000, true},
		{"fenced", 30000, []step{{unsettled, 30000}, {settled, 0}}, 0, false},
	} {
		t.Run(c.what, func(t *testing.T) {
			h := newHarness(t, Options{})
			for _, n := range []string{"a", "b"} {
				h.mustApply(tRegister, member("main", n, 0))
			}
			h.mustApply(tPrimary, &pgdrv1.SetPrimary{Cluster: "main", Name: "a"})
			h.mustApply(tPrimary, &pgdrv1.SetPrimary{Cluster: "main", Name: "b", ExpectedEpoch: 1, Promote: true, SettleAfterMs: c.first})
			for _, s := range c.steps {
				h.mustApply(tRecordEvnt, &pgdrv1.RecordEvent{Event: &pgdrv1.HistoryEvent{Kind: "failover-step", Cluster: "main", Node: "b", Epoch: 2},
					Promote: s.m, SettleAfterMs: s.w})
			}
			cl, _ := h.f.Cluster("main")
			u := cl.GetUnsettledPromote()
			if u.GetSettleAfterMs() != c.want || u.GetMayComplete() != c.mayComplete {
				t.Fatalf("settle_after_ms=%d may_complete=%v, want %d %v", u.GetSettleAfterMs(), u.GetMayComplete(), c.want, c.mayComplete)
			}
		})
	}
}

// TestUnsettledPromoteHonoured: review D. Whether the agent kept settle
// deadlines is recorded per order as it went out, and holds for the
// orders that may complete only while it held for every one of them.
func TestUnsettledPromoteHonoured(t *testing.T) {
	const (
		ordered   = pgdrv1.PromoteMark_PROMOTE_MARK_ORDERED
		unsettled = pgdrv1.PromoteMark_PROMOTE_MARK_UNSETTLED
		notSent   = pgdrv1.PromoteMark_PROMOTE_MARK_NOT_SENT
	)
	type step struct {
		m pgdrv1.PromoteMark
		h bool
	}
	for _, c := range []struct {
		what  string
		first bool
		steps []step
		want  bool
	}{
		{"order1 (honoured) lost, order2 (not) not sent", true, []step{{ordered, false}, {notSent, false}}, true},
		{"order1 (honoured) lost, order2 (not) unsettled", true, []step{{ordered, false}, {unsettled, false}}, false},
		{"order1 (not) unsettled, order2 (honoured) unsettled", false, []step{{unsettled, false}, {ordered, true}, {unsettled, true}}, false},
		{"order1 (not) not sent, order2 (honoured) unsettled", false, []step{{notSent, false}, {ordered, true}, {unsettled, true}}, true},
	} {
		t.Run(c.what, func(t *testing.T) {
			h := newHarness(t, Options{})
			for _, n := range []string{"a", "b"} {
				h.mustApply(tRegister, member("main", n, 0))
			}
			h.mustApply(tPrimary, &pgdrv1.SetPrimary{Cluster: "main", Name: "a"})
			h.mustApply(tPrimary, &pgdrv1.SetPrimary{Cluster: "main", Name: "b", ExpectedEpoch: 1, Promote: true, SettleAfterMs: 30000, HonoursSettle: c.first})
			for _, s := range c.steps {
				h.mustApply(tRecordEvnt, &pgdrv1.RecordEvent{Event: &pgdrv1.HistoryEvent{Kind: "failover-step", Cluster: "main", Node: "b", Epoch: 2},
					Promote: s.m, SettleAfterMs: 30000, HonoursSettle: s.h})
			}
			cl, _ := h.f.Cluster("main")
			if u := cl.GetUnsettledPromote(); u.GetHonoured() != c.want || !u.GetMayComplete() {
				t.Fatalf("%v: honoured=%v, want %v (and may_complete)", u, u.GetHonoured(), c.want)
			}
		})
	}
}

// TestUnsettledPromoteOutcomeOfAnotherLeader: review 3/3. A NOT_SENT or
// UNSETTLED mark proposed by a leader other than the one whose order is
// in flight (its own ORDERED mark was never committed) ends only its own
// order: the earlier one still in flight may complete, folded as ORDERED
// folds it (its window and honoured combined).
func TestUnsettledPromoteOutcomeOfAnotherLeader(t *testing.T) {
	for _, c := range []struct {
		what        string
		mark        pgdrv1.PromoteMark
		window      uint64
		actor       string
		mayComplete bool
		want        uint64
		honoured    bool
	}{
		{"another leader's order not sent", pgdrv1.PromoteMark_PROMOTE_MARK_NOT_SENT, 40000, "coordinator:l2", true, 30000, true},
		{"another leader's order unsettled", pgdrv1.PromoteMark_PROMOTE_MARK_UNSETTLED, 20000, "coordinator:l2", true, 30000, true},
		{"the same leader's order not sent", pgdrv1.PromoteMark_PROMOTE_MARK_NOT_SENT, 30000, "coordinator:l1", false, 0, false},
	} {
		t.Run(c.what, func(t *testing.T) {
			h := newHarness(t, Options{})
			for _, n := range []string{"a", "b"} {
				h.mustApply(tRegister, member("main", n, 0))
			}
			h.mustApply(tPrimary, &pgdrv1.SetPrimary{Cluster: "main", Name: "a"})
			applyAs := func(typ pgdrv1.CommandType, actor string, p proto.Message) {
				t.Helper()
				cmd, err := NewCommand(typ, p, actor, t0.Add(time.Duration(h.index+1)*time.Second))
				if err != nil {
					t.Fatal(err)
				}
				if res := h.applyCmd(cmd); !res.GetOk() {
					t.Fatalf("apply %s: %s", typ, res.GetError())
				}
			}
			applyAs(tPrimary, "coordinator:l1", &pgdrv1.SetPrimary{Cluster: "main", Name: "b", ExpectedEpoch: 1, Promote: true, SettleAfterMs: 30000, HonoursSettle: true})
			applyAs(tRecordEvnt, c.actor, &pgdrv1.RecordEvent{Event: &pgdrv1.HistoryEvent{Kind: "failover-step", Cluster: "main", Node: "b", Epoch: 2},
				Promote: c.mark, SettleAfterMs: c.window, HonoursSettle: true})
			cl, _ := h.f.Cluster("main")
			u := cl.GetUnsettledPromote()
			if u.GetInFlight() || u.GetMayComplete() != c.mayComplete || u.GetSettleAfterMs() != c.want || u.GetHonoured() != c.honoured {
				t.Fatalf("in_flight=%v may_complete=%v settle_after_ms=%d honoured=%v, want false %v %d %v",
					u.GetInFlight(), u.GetMayComplete(), u.GetSettleAfterMs(), u.GetHonoured(), c.mayComplete, c.want, c.honoured)
			}
		})
	}
}
