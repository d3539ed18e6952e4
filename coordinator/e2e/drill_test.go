package e2e

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/ctl"
)

// TestDrillRealAgents (issue 17, restore drills): on the lab, after a
// full backup of tier daily, `pgdrctl drill run --tier daily --wait` on a
// replica (prefer-standby) passes: the agent restored the backup into a
// scratch directory, replayed the archive, ran pg_amcheck; the drill
// shows in `pgdrctl drills --json` with its timings.
func TestDrillRealAgents(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	l := startLab(t)
	l.wantPrimary(t, "pg-a1")
	for _, n := range []string{"pg-a2", "pg-b1"} {
		l.waitHealthyReplica(t, n, 60*time.Second)
	}
	out, err := l.ctl("backup", "run", "--cluster", "main", "--tier", "daily", "--wait", "--json")
	if err != nil {
		t.Fatalf("backup run --tier daily --wait: %v\n%s", err, out)
	}
	start := time.Now()
	out, err = l.ctl("drill", "run", "--cluster", "main", "--tier", "daily", "--wait", "--json")
	if err != nil {
		t.Fatalf("drill run --wait: %v\n%s", err, out)
	}
	var res ctl.DrillRunResultJSON
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("drill run --json: %v\n%s", err, out)
	}
	d := res.Drill
	t.Logf("drill %s on %s in %s: %s", d.ID, d.Node, time.Since(start).Round(time.Second), out)
	if d.Result != "ok" || (d.Node != "pg-a2" && d.Node != "pg-b1") || d.Backup == "" || d.Timings == nil || d.Timings.Total <= 0 ||
		d.Timings.FetchWrite <= 0 || d.AmcheckOK == nil || !*d.AmcheckOK {
		t.Fatalf("drill %+v", d)
	}
	out, err = l.ctl("drills", "--cluster", "main", "--json")
	if err != nil {
		t.Fatalf("drills --json: %v\n%s", err, out)
	}
	var list ctl.DrillsJSON
	if err := json.Unmarshal(out, &list); err != nil || len(list.Clusters) != 1 || len(list.Clusters[0].Drills) != 1 {
		t.Fatalf("drills --json: %v\n%s", err, out)
	}
	if got := list.Clusters[0].Drills[0]; got.ID != d.ID || got.Result != "ok" || got.Timings == nil || got.Timings.Replay <= 0 {
		t.Fatalf("listed drill %+v", got)
	}
}
