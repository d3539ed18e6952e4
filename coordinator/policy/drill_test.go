package policy

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
)

const drillFile = `cluster: main
tiers:
  - {name: daily, type: full, schedule: "15 1 * * *", keep_count: 7}
drill:
  schedule: "30 4 * * 0"
  timezone: Europe/Paris
  tier: daily
  timeout: 45m
  target: backup-end+10m
  checks:
    - {name: orders, database: shop, sql: "select count(*) > 0 from orders", expect: "t"}
`

// TestDrillPolicyFile: the drill section parses with its defaults, is
// valid, and survives the proto and file round trips.
func TestDrillPolicyFile(t *testing.T) {
	_, p, err := ParseFile([]byte(drillFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Validate(Options{}); err != nil {
		t.Fatal(err)
	}
	d := p.Drill
	if d == nil || d.Node != DrillNodePreferStandby || d.Timeout != 45*time.Minute || d.Timezone != "Europe/Paris" || d.TargetAfterBackup != 10*time.Minute || len(d.Checks) != 1 || d.Checks[0].SQL == "" {
		t.Fatalf("drill %+v", d)
	}
	next, err := d.NextRun(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)) // a Sunday
	if err != nil || !next.Equal(time.Date(2026, 3, 1, 3, 30, 0, 0, time.UTC)) {
		t.Fatalf("next drill %s, %v", next, err)
	}
	back := FromProto(ToProto(p))
	if !proto.Equal(ToProto(back), ToProto(p)) || back.Drill == nil || back.Drill.Checks[0] != d.Checks[0] {
		t.Fatalf("proto round trip %+v", back.Drill)
	}
	b, err := MarshalFile("main", p)
	if err != nil {
		t.Fatal(err)
	}
	if _, p2, err := ParseFile(b); err != nil || !proto.Equal(ToProto(p2), ToProto(p)) {
		t.Fatalf("file round trip: %v\n%s", err, b)
	}
}

// TestDrillPolicyInvalid: each problem names its field; CheckBounds (the
// FSM's) refuses the unbounded ones too.
func TestDrillPolicyInvalid(t *testing.T) {
	for want, edit := range map[string]func(d *Drill){
		"drill.schedule: ":                   func(d *Drill) { d.Schedule = "every tuesday" },
		`drill.tier: "weekly" is not a tier`: func(d *Drill) { d.Tier = "weekly" },
		"drill.node: ":                       func(d *Drill) { d.Node = "../x" },
		"drill.scratch: ":                    func(d *Drill) { d.Scratch = "relative/dir" },
		"drill.timeout: ":                    func(d *Drill) { d.Timeout = 48 * time.Hour },
		"drill.checks: checks[0] (orders).sql: want 1 to 4096 bytes": func(d *Drill) { d.Checks[0].SQL = strings.Repeat("x", MaxDrillCheckSQL+1) },
		"drill.checks: 17 checks, at most 16": func(d *Drill) {
			for len(d.Checks) < 17 {
				d.Checks = append(d.Checks, DrillCheck{Name: "c", SQL: "select 1"})
			}
		},
	} {
		_, p, err := ParseFile([]byte(drillFile))
		if err != nil {
			t.Fatal(err)
		}
		edit(p.Drill)
		if err := p.Validate(Options{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: Validate said %v", want, err)
		}
		if strings.Contains(want, "checks") || strings.Contains(want, "timeout") {
			if err := p.CheckBounds(); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: CheckBounds said %v", want, err)
			}
		}
	}
	if _, _, err := ParseFile([]byte(drillFile + "  colour: blue\n")); err == nil || !strings.Contains(err.Error(), "colour") {
		t.Errorf("an unknown drill key: %v", err)
	}
	if _, _, err := ParseFile([]byte(strings.Replace(drillFile, "backup-end+10m", "tomorrow", 1))); err == nil || !strings.Contains(err.Error(), "drill.target") {
		t.Errorf("a bad target: %v", err)
	}
}
