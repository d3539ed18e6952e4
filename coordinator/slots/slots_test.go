package slots

import (
	"reflect"
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	now := time.Date(2026, 12, 8, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	members := []string{"pg-a1", "pg-a2", "pg-b1"}
	base := View{Now: now, Members: members, DropAfter: 30 * time.Minute, MaxRetained: 10 << 30, Grace: time.Minute}
	with := func(slots ...Slot) View { v := base; v.Slots = slots; return v }
	cases := []struct {
		name string
		v    View
		want []string // server/name
	}{
		{"nothing", with(), nil},
		{"active slot of a removed member is kept (PostgreSQL refuses it anyway)",
			with(Slot{Server: "pg-a1", Primary: true, Name: "pgdr_pg_c9", Active: true}), nil},
		{"removed member's unused slot after the grace",
			with(Slot{Server: "pg-a1", Primary: true, Name: "pgdr_pg_c9", UnusedSince: ago(2 * time.Minute)}), []string{"pg-a1/pgdr_pg_c9"}},
		{"removed member's slot within the grace",
			with(Slot{Server: "pg-a1", Primary: true, Name: "pgdr_pg_c9", UnusedSince: ago(30 * time.Second)}), nil},
		{"unused since unknown (the leader saw it used or just took over)",
			with(Slot{Server: "pg-a1", Primary: true, Name: "pgdr_pg_c9"}), nil},
		{"user slots are never touched",
			with(Slot{Server: "pg-a1", Primary: true, Name: "debezium", UnusedSince: ago(48 * time.Hour), Retained: 100 << 30},
				Slot{Server: "pg-a2", Name: "standby_x", UnusedSince: ago(48 * time.Hour)}), nil},
		{"member's receiver down less than drop_inactive_after",
			with(Slot{Server: "pg-a1", Primary: true, Name: "pgdr_pg_b1", UnusedSince: ago(29 * time.Minute), Retained: 1 << 30}), nil},
		{"member's receiver down past drop_inactive_after",
			with(Slot{Server: "pg-a1", Primary: true, Name: "pgdr_pg_b1", UnusedSince: ago(31 * time.Minute)}), []string{"pg-a1/pgdr_pg_b1"}},
		{"member's unused slot over the byte limit",
			with(Slot{Server: "pg-a1", Primary: true, Name: "pgdr_pg_b1", UnusedSince: ago(2 * time.Minute), Retained: 11 << 30}), []string{"pg-a1/pgdr_pg_b1"}},
		{"member's active slot over the byte limit is kept",
			with(Slot{Server: "pg-a1", Primary: true, Name: "pgdr_pg_b1", Active: true, Retained: 11 << 30}), nil},
		{"a former primary's slot on a replica",
			with(Slot{Server: "pg-a2", Name: "pgdr_pg_b1", UnusedSince: ago(2 * time.Minute)}), []string{"pg-a2/pgdr_pg_b1"}},
		{"limits off: only removed members and replicas",
			func() View {
				v := with(Slot{Server: "pg-a1", Primary: true, Name: "pgdr_pg_b1", UnusedSince: ago(72 * time.Hour), Retained: 500 << 30},
					Slot{Server: "pg-a1", Primary: true, Name: "pgdr_gone", UnusedSince: ago(2 * time.Minute)})
				v.DropAfter, v.MaxRetained = 0, 0
				return v
			}(), []string{"pg-a1/pgdr_gone"}},
		{"a member's receiver under a custom slot name is its member's, not a removed one's",
			func() View {
				v := with(Slot{Server: "pg-a1", Primary: true, Name: "pgdr_custom", UnusedSince: ago(2 * time.Minute)},
					Slot{Server: "pg-a1", Primary: true, Name: "pgdr_of_gone", UnusedSince: ago(2 * time.Minute)})
				v.Receivers = map[string]string{"pgdr_custom": "pg-b1", "pgdr_of_gone": "pg-c9"}
				return v
			}(), []string{"pg-a1/pgdr_of_gone"}},
		{"ordered by server then name",
			with(Slot{Server: "pg-b1", Name: "pgdr_x", UnusedSince: ago(time.Hour)},
				Slot{Server: "pg-a1", Primary: true, Name: "pgdr_z", UnusedSince: ago(time.Hour)},
				Slot{Server: "pg-a1", Primary: true, Name: "pgdr_y", UnusedSince: ago(time.Hour)}),
			[]string{"pg-a1/pgdr_y", "pg-a1/pgdr_z", "pg-b1/pgdr_x"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, d := range Decide(c.v) {
				if d.Reason == "" {
					t.Errorf("%s/%s: no reason", d.Server, d.Name)
				}
				got = append(got, d.Server+"/"+d.Name)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("Decide = %v, want %v", got, c.want)
			}
		})
	}
}
