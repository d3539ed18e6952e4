package server

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/pkg/testutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestViewConditions: a fenced member is a present fencing condition; a
// member reporting a role again is its end; a member without a fresh
// report says nothing; a healthy recorded primary ends a refused failover.
func TestViewConditions(t *testing.T) {
	cs := &pgdrv1.ClusterStatus{Name: "main", Primary: "a1", Members: []*pgdrv1.MemberStatus{
		{Name: "a1", Role: RolePrimary, Healthy: true},
		{Name: "a2", Role: RoleFenced},
		{Name: "b1", Role: RoleReplica},
		{Name: "b2", Role: RoleUnknown},
	}}
	got := map[string]bool{}
	for _, c := range viewConditions([]*pgdrv1.ClusterStatus{cs}) {
		got[fmt.Sprintf("%s/%v", c.key, c.present)] = true
		if c.present && (c.sig.Category != "fencing" || c.sig.Title == "" || c.cluster != "main") {
			t.Errorf("fencing signal: %+v", c)
		}
	}
	want := map[string]bool{"fencing:main:a1/false": true, "fencing:main:a2/true": true, "fencing:main:b1/false": true, "failover-refused:main/false": true}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("conditions %v, want %v", got, want)
	}
	cs.Members[0].Healthy = false
	for _, c := range viewConditions([]*pgdrv1.ClusterStatus{cs}) {
		if c.key == "failover-refused:main" {
			t.Errorf("an unhealthy primary ended the refused failover: %+v", c)
		}
	}
}

// TestFencingIncidentOpensAndClears: the leader's incident loop opens a
// fencing incident when a member reports itself fenced, and marks its
// condition cleared once the member reports a role again.
func TestFencingIncidentOpensAndClears(t *testing.T) {
	s := testServer(t, Options{})
	startInmemRaft(t, s)
	metricsCluster(t, s)
	fencing := func() (*pgdrv1.Incident, bool) {
		for _, in := range s.fsm.Incidents("main", false, "") {
			if in.GetCategory() == "fencing" {
				return in, true
			}
		}
		return nil, false
	}
	testutil.WaitFor(t, 30*time.Second, "a fencing incident for pg-a3", func() (bool, error) {
		reportMain(s)
		now := time.Now()
		s.view.put(&pgdrv1.HealthReport{Cluster: "main", Node: "pg-a3", Fenced: true, Time: timestamppb.New(now)}, now, time.Time{})
		in, ok := fencing()
		return ok && in.GetDedupKey() == "fencing:main:pg-a3" && !in.GetConditionCleared(), fmt.Errorf("%v", in)
	})
	testutil.WaitFor(t, 30*time.Second, "its condition cleared once pg-a3 reports a replica", func() (bool, error) {
		reportMain(s) // pg-a3 a streaming replica again
		in, ok := fencing()
		return ok && in.GetConditionCleared() && in.GetStatus() == "open", fmt.Errorf("%v", in)
	})
}
