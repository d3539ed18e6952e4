package policy

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
)

const gameDayFile = `cluster: main
tiers:
  - {name: daily, type: full, schedule: "15 1 * * *", keep_count: 7}
game_days:
  - name: regional
    schedule: "0 10 * * 3"
    timezone: Europe/Paris
    window: 90m
    runbooks:
      - {name: regional-evacuation, params: {region: us-east-1}}
      - {name: regional-failback, params: {region: us-east-1}}
    probe:
      dsn: "host=10.0.0.1,10.0.0.2 port=5432,5432 dbname=app user=probe target_session_attrs=read-write"
      password_file: /etc/pgdr/probe.pass
`

// TestGameDayPolicyFile: the game_days section parses with its defaults,
// is valid, and survives the proto and file round trips.
func TestGameDayPolicyFile(t *testing.T) {
	_, p, err := ParseFile([]byte(gameDayFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Validate(Options{}); err != nil {
		t.Fatal(err)
	}
	g, ok := p.GameDayByName("regional")
	if !ok || g.Window != 90*time.Minute || g.Probe.Interval != DefaultProbeInterval || len(g.Runbooks) != 2 || g.Runbooks[1].Params["region"] != "us-east-1" {
		t.Fatalf("game day %+v", g)
	}
	if next, err := g.NextRun(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)); err != nil || !next.Equal(time.Date(2026, 3, 4, 9, 0, 0, 0, time.UTC)) {
		t.Fatalf("next game day %s, %v", next, err)
	}
	if back := FromProto(ToProto(p)); !proto.Equal(ToProto(back), ToProto(p)) || len(back.GameDays) != 1 {
		t.Fatalf("proto round trip %+v", back.GameDays)
	}
	b, err := MarshalFile("main", p)
	if err != nil {
		t.Fatal(err)
	}
	if _, p2, err := ParseFile(b); err != nil || !proto.Equal(ToProto(p2), ToProto(p)) {
		t.Fatalf("file round trip: %v\n%s", err, b)
	}
}

// TestGameDayPolicyInvalid: each problem names its field; CheckBounds
// (the FSM's) refuses them too.
func TestGameDayPolicyInvalid(t *testing.T) {
	for want, edit := range map[string]func(p *Policy){
		"game_days[0].schedule: ":                     func(p *Policy) { p.GameDays[0].Schedule = "every tuesday" },
		"game_days[0].runbooks: required":             func(p *Policy) { p.GameDays[0].Runbooks = nil },
		"game_days[0].runbooks[1].name: ":             func(p *Policy) { p.GameDays[0].Runbooks[1].Name = "../x" },
		"game_days[0].window: ":                       func(p *Policy) { p.GameDays[0].Window = 48 * time.Hour },
		"game_days[0].probe.dsn: must be":             func(p *Policy) { p.GameDays[0].Probe.DSN += " password=secret" },
		"game_days[0].probe.dsn: required":            func(p *Policy) { p.GameDays[0].Probe.DSN = "" },
		"game_days[0].probe.interval: ":               func(p *Policy) { p.GameDays[0].Probe.Interval = time.Millisecond },
		"game_days[1].name: \"regional\" is repeated": func(p *Policy) { p.GameDays = append(p.GameDays, p.GameDays[0]) },
		"game_days: 5 game days, at most 4": func(p *Policy) {
			for len(p.GameDays) < 5 {
				p.GameDays = append(p.GameDays, p.GameDays[0])
			}
		},
		"game_days[0].runbooks: 9 runbooks, at most 8": func(p *Policy) {
			for len(p.GameDays[0].Runbooks) < 9 {
				p.GameDays[0].Runbooks = append(p.GameDays[0].Runbooks, GameDayRunbook{Name: "x"})
			}
		},
	} {
		_, p, err := ParseFile([]byte(gameDayFile))
		if err != nil {
			t.Fatal(err)
		}
		edit(&p)
		if err := p.Validate(Options{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: Validate said %v", want, err)
		}
		if !strings.Contains(want, "schedule") {
			if err := p.CheckBounds(); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: CheckBounds said %v", want, err)
			}
		}
	}
}
