package server

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

func lastIndex(s *Server) (i uint64) {
	s.fsm.Read(func(st *pgdrv1.State) { i = st.LastIndex })
	return i
}

// TestRegistrationBounds: every field and count of a registration is
// bounded; an oversized one gets InvalidArgument naming the field and
// writes nothing.
func TestRegistrationBounds(t *testing.T) {
	s := testServer(t, Options{Barrier: func(time.Duration) error { return nil }})
	startInmemRaft(t, s)
	api := &agentAPI{s: s}
	ok := func() *pgdrv1.Member {
		return &pgdrv1.Member{Cluster: "main", Name: "pg-a", Region: "eu-west-1", Dsn: "host=10.0.0.1 port=5432",
			ApiUrl: "http://10.0.0.1:8008", GossipAddress: "10.0.0.1:7946", Tags: []string{"no-failover"}}
	}
	long := func(n int) string { return strings.Repeat("x", n) }
	manyTags := make([]string, 60000)
	for i := range manyTags {
		manyTags[i] = fmt.Sprint("t", i)
	}
	before := lastIndex(s)
	for _, tc := range []struct {
		field string
		edit  func(m *pgdrv1.Member)
	}{
		{"member.cluster", func(m *pgdrv1.Member) { m.Cluster = long(64) }},
		{"member.name", func(m *pgdrv1.Member) { m.Name = long(64) }},
		{"member.region", func(m *pgdrv1.Member) { m.Region = long(5000) }},
		{"member.region", func(m *pgdrv1.Member) { m.Region = "eu west" }},
		{"member.dsn", func(m *pgdrv1.Member) { m.Dsn = "host=" + long(2000) }},
		{"member.api_url", func(m *pgdrv1.Member) { m.ApiUrl = "http://" + long(5000) }},
		{"member.api_url", func(m *pgdrv1.Member) { m.ApiUrl = "ftp://10.0.0.1/" }},
		{"member.gossip_address", func(m *pgdrv1.Member) { m.GossipAddress = long(5000) + ":1" }},
		{"member.gossip_address", func(m *pgdrv1.Member) { m.GossipAddress = "no-port" }},
		{"member.tags", func(m *pgdrv1.Member) { m.Tags = manyTags }},
		{"member.tags", func(m *pgdrv1.Member) { m.Tags = []string{long(65)} }},
		{"member.failsafe_key", func(m *pgdrv1.Member) { m.FailsafeKey = make([]byte, 31) }},
		{"member.sync_receiver", func(m *pgdrv1.Member) { m.SyncReceiver = "pg-b_walrecv" }},
		{"member.sync_receiver", func(m *pgdrv1.Member) { m.SyncReceiver = `x", "*` }},
	} {
		m := ok()
		tc.edit(m)
		_, err := api.Register(context.Background(), &pgdrv1.RegisterRequest{Member: m})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s oversized or malformed: %v; want InvalidArgument naming %s", tc.field, err, tc.field)
		}
	}
	if after := lastIndex(s); after != before {
		t.Errorf("refused registrations wrote to Raft (index %d -> %d)", before, after)
	}
	good := ok()
	good.FailsafeKey = bytes.Repeat([]byte{7}, 32)
	good.SyncReceiver = "pg-a_walrecv"
	if _, err := api.Register(context.Background(), &pgdrv1.RegisterRequest{Member: good}); err != nil {
		t.Fatalf("a registration within every bound: %v", err)
	}
	// The failsafe key registered is what a primary's renewal lists.
	if p := s.fsm.Peers("main", "pg-x"); len(p) != 1 || !bytes.Equal(p[0].FailsafeKey, good.FailsafeKey) || p[0].ApiUrl != good.ApiUrl {
		t.Fatalf("peers of pg-x: %v; want pg-a with its failsafe key", p)
	}
	// The member's own synchronous WAL receiver is recorded with it.
	var recv string
	s.fsm.Read(func(st *pgdrv1.State) { recv = st.Clusters["main"].GetMembers()["pg-a"].GetSyncReceiver() })
	if recv != "pg-a_walrecv" {
		t.Fatalf("recorded sync_receiver %q", recv)
	}
}

// TestMemberUpdateRateLimit: an unchanged re-registration writes nothing
// to Raft; changes are accepted in a small burst (the registration and two
// more) and then at most once per interval per member (ResourceExhausted
// naming the member otherwise), except filling in a system identifier not
// known yet; other members are not held back.
func TestMemberUpdateRateLimit(t *testing.T) {
	s := testServer(t, Options{Barrier: func(time.Duration) error { return nil }})
	startInmemRaft(t, s)
	api := &agentAPI{s: s}
	ctx := context.Background()
	reg := func(name string, tags ...string) error {
		_, err := api.Register(ctx, &pgdrv1.RegisterRequest{Member: &pgdrv1.Member{Cluster: "main", Name: name, Region: "eu-west-1", Tags: tags}})
		return err
	}
	if err := reg("pg-a"); err != nil {
		t.Fatal(err)
	}
	idx := lastIndex(s)
	for range 5 {
		if err := reg("pg-a"); err != nil {
			t.Fatalf("unchanged re-registration: %v", err)
		}
	}
	if got := lastIndex(s); got != idx {
		t.Fatalf("unchanged re-registrations wrote to Raft (index %d -> %d)", idx, got)
	}
	_, err := api.Register(ctx, &pgdrv1.RegisterRequest{Member: &pgdrv1.Member{Cluster: "main", Name: "pg-a", Region: "eu-west-1", SystemIdentifier: 42}})
	if err != nil {
		t.Fatalf("filling in the system identifier: %v", err)
	}
	for i := range memberUpdateBurst - 1 {
		if err := reg("pg-a", fmt.Sprint("burst", i)); err != nil {
			t.Fatalf("change %d of the burst: %v", i+1, err)
		}
	}
	idx = lastIndex(s)
	for i := range 20 {
		err := reg("pg-a", fmt.Sprint("t", i+2))
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "pg-a") {
			t.Fatalf("change %d right after another: %v; want ResourceExhausted naming pg-a", i+2, err)
		}
	}
	if got := lastIndex(s); got != idx {
		t.Fatalf("rate-limited changes wrote to Raft (index %d -> %d)", idx, got)
	}
	// Once the interval has passed since the last write, one change is
	// accepted, and the next is held back again.
	s.memberUpdateEvery = 300 * time.Millisecond
	time.Sleep(400 * time.Millisecond)
	if err := reg("pg-a", "t1"); err != nil {
		t.Fatalf("a change after the interval: %v", err)
	}
	if err := reg("pg-a", "t2"); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a change right after it: %v; want ResourceExhausted", err)
	}
	if err := reg("pg-b", "x"); err != nil {
		t.Fatalf("another member: %v", err)
	}
}
