package restore

import (
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/wal"
)

func TestPartialMode(t *testing.T) {
	at := time.Now()
	lsn := wal.LSN(1 << 24)
	cases := []struct {
		name string
		o    Options
		want PartialMode
		err  string
	}{
		{"#1 latest point: on by default", Options{}, PartialOn, ""},
		{"#2 latest point, asked", Options{Partial: PartialOn}, PartialOn, ""},
		{"#3 latest point, declined", Options{Partial: PartialOff}, PartialOff, ""},
		{"#4 a time target: off by default", Options{Target: Target{Time: &at}}, PartialOff, ""},
		{"#5 an LSN target and --include-partial: refused", Options{Target: Target{LSN: &lsn}, Partial: PartialOn}, 0, "latest point"},
		{"#6 immediate and --include-partial: refused", Options{Target: Target{Immediate: true}, Partial: PartialOn}, 0, "latest point"},
		{"#7 a name target, declined", Options{Target: Target{Name: "x"}, Partial: PartialOff}, PartialOff, ""},
		{"#8 a rejoining member: off", Options{Rejoin: true}, PartialOff, ""},
		{"#9 a rejoining member asked for it: refused", Options{Rejoin: true, Partial: PartialOn}, 0, "rejoining"},
	}
	for _, c := range cases {
		got, err := partialMode(c.o)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: %v, %v; want an error saying %q", c.name, got, err, c.err)
		case c.err == "" && (err != nil || got != c.want):
			t.Errorf("%s: %v, %v; want %v", c.name, got, err, c.want)
		}
	}
	o := Options{AgentPath: "/bin/pgdr-agent", ConfigPath: "/etc/a.yaml", Partial: PartialOn}
	if got := restoreCommand(o); got != "/bin/pgdr-agent wal-fetch --config /etc/a.yaml --include-partial %f %p" {
		t.Errorf("restore_command with partials: %s", got)
	}
	o.Partial = PartialOff
	if got := restoreCommand(o); got != "/bin/pgdr-agent wal-fetch --config /etc/a.yaml %f %p" {
		t.Errorf("restore_command without partials: %s", got)
	}
}

func TestFirstMissing(t *testing.T) {
	cases := []struct {
		segs        []uint64
		start, want uint64
	}{
		{nil, 5, 5},
		{[]uint64{1, 2, 3}, 2, 4},
		{[]uint64{1, 2, 3, 5, 6}, 1, 4}, // a gap: recovery ends there
		{[]uint64{1, 2, 3, 5, 6}, 5, 7},
		{[]uint64{7, 8}, 2, 2}, // the start itself is missing
	}
	for _, c := range cases {
		if got := firstMissing(c.segs, c.start); got != c.want {
			t.Errorf("firstMissing(%v, %d) = %d, want %d", c.segs, c.start, got, c.want)
		}
	}
}
