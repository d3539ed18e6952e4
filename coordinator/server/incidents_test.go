package server

import (
	"fmt"
	"testing"

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
