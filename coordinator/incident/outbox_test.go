package incident

import (
	"reflect"
	"testing"
	"time"
)

func TestDue(t *testing.T) {
	p := EscalationPolicy{Levels: []Level{
		{Name: "oncall", Channels: []string{"pd", "slack"}, Timeout: 5 * time.Minute},
		{Name: "lead", Channels: []string{"pd", "phone"}, Timeout: 10 * time.Minute},
		{Name: "head", Channels: []string{"mail"}},
	}}
	base := Incident{ID: "INC-7", Status: Open}
	at := func(level, notified int, notifiedStatus, status Status) Incident {
		in := base
		in.EscalationLevel, in.NotifiedLevels, in.NotifiedStatus, in.Status = level, notified, notifiedStatus, status
		return in
	}
	for _, tc := range []struct {
		name  string
		in    Incident
		sends []Send
		mark  Mark
	}{
		{"new incident tells level 0", at(0, 0, "", Open),
			[]Send{{ID: "INC-7/open/L0", Incident: "INC-7", Level: 0, Status: Open, Channels: []string{"pd", "slack"}}},
			Mark{1, Open}},
		{"up to date: nothing", at(0, 1, Open, Open), nil, Mark{1, Open}},
		{"escalated to 1: level 1 only, pd not twice", at(1, 1, Open, Open),
			[]Send{{ID: "INC-7/open/L1", Incident: "INC-7", Level: 1, Status: Open, Channels: []string{"pd", "phone"}}},
			Mark{2, Open}},
		{"two levels behind (leader died): both, channel once", at(2, 0, "", Open),
			[]Send{{ID: "INC-7/open/L0", Incident: "INC-7", Level: 0, Status: Open, Channels: []string{"pd", "slack"}},
				{ID: "INC-7/open/L1", Incident: "INC-7", Level: 1, Status: Open, Channels: []string{"phone"}},
				{ID: "INC-7/open/L2", Incident: "INC-7", Level: 2, Status: Open, Channels: []string{"mail"}}},
			Mark{3, Open}},
		{"acknowledged at level 1: both notified levels told", at(1, 2, Open, Acknowledged),
			[]Send{{ID: "INC-7/acknowledged/L0", Incident: "INC-7", Level: 0, Status: Acknowledged, Channels: []string{"pd", "slack"}},
				{ID: "INC-7/acknowledged/L1", Incident: "INC-7", Level: 1, Status: Acknowledged, Channels: []string{"phone"}}},
			Mark{2, Acknowledged}},
		{"acknowledged before level 0 went out: level 0 told the status", at(0, 0, "", Acknowledged),
			[]Send{{ID: "INC-7/acknowledged/L0", Incident: "INC-7", Level: 0, Status: Acknowledged, Channels: []string{"pd", "slack"}}},
			Mark{1, Acknowledged}},
		{"resolved", at(0, 1, Acknowledged, Resolved),
			[]Send{{ID: "INC-7/resolved/L0", Incident: "INC-7", Level: 0, Status: Resolved, Channels: []string{"pd", "slack"}}},
			Mark{1, Resolved}},
		{"level beyond a shortened policy is clamped", at(5, 3, Open, Open), nil, Mark{3, Open}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sends, mark := Due(tc.in, p)
			if !reflect.DeepEqual(sends, tc.sends) || mark != tc.mark {
				t.Errorf("Due = %+v, %+v\nwant %+v, %+v", sends, mark, tc.sends, tc.mark)
			}
			// Recording the mark leaves nothing due: a new leader that sees
			// the mark sends nothing again.
			in := tc.in
			in.NotifiedLevels, in.NotifiedStatus = mark.NotifiedLevels, mark.NotifiedStatus
			if again, _ := Due(in, p); again != nil {
				t.Errorf("after recording %+v still due: %+v", mark, again)
			}
		})
	}
	if sends, _ := Due(base, EscalationPolicy{}); sends != nil {
		t.Errorf("no policy: %+v", sends)
	}
	if got := p.Channels(1); !reflect.DeepEqual(got, []string{"pd", "slack", "phone"}) {
		t.Errorf("Channels(1) = %v", got)
	}
}
