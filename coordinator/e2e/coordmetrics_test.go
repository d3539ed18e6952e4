package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pgdr/pgdr/coordinator/coordtest"
	"github.com/pgdr/pgdr/pkg/testutil"
)

// scrapeMetrics reads a coordinator's /metrics: the text and its families.
func scrapeMetrics(n *coordtest.Node) ([]byte, map[string]*dto.MetricFamily, error) {
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + n.HTTPAddr + "/metrics")
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(body))
	return body, mfs, err
}

// gauge is the value of family name's series whose label k is v ("" k:
// the only series).
func gauge(mfs map[string]*dto.MetricFamily, name, k, v string) (float64, bool) {
	for _, m := range mfs[name].GetMetric() {
		match := k == ""
		for _, lp := range m.GetLabel() {
			match = match || lp.GetName() == k && lp.GetValue() == v
		}
		if match {
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue(), true
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// TestCoordinatorMetrics (issue 18): three coordinator processes serve
// the Raft metrics: one leader, the others followers, one term, three
// voters; after the leader is killed the two left agree on a new leader
// and a new term and counted the change; every scrape passes `promtool
// check metrics`.
func TestCoordinatorMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("starts coordinator processes")
	}
	c := coordtest.Start(t, coordtest.Options{})
	check := func(leader *coordtest.Node, running []*coordtest.Node, minTerm float64) float64 {
		t.Helper()
		var term float64
		testutil.WaitFor(t, 60*time.Second, "every coordinator's raft metrics agree on "+leader.Name, func() (bool, error) {
			term = 0
			for _, n := range running {
				body, mfs, err := scrapeMetrics(n)
				if err != nil {
					return false, fmt.Errorf("%s: %w", n.Name, err)
				}
				state := "follower"
				if n == leader {
					state = "leader"
				}
				v, _ := gauge(mfs, "pgdr_coordinator_raft_state", "state", state)
				voters, _ := gauge(mfs, "pgdr_coordinator_raft_voters", "", "")
				tm, _ := gauge(mfs, "pgdr_coordinator_raft_term", "", "")
				changes, _ := gauge(mfs, "pgdr_coordinator_leader_changes_total", "", "")
				info, _ := gauge(mfs, "pgdr_build_info", "program", "pgdr-coordinator")
				if term == 0 {
					term = tm
				}
				if v != 1 || voters != 3 || tm != term || tm < minTerm || changes < 1 || info != 1 {
					return false, fmt.Errorf("%s: %s %v, voters %v, term %v (first %v, at least %v), leader changes %v, build info %v",
						n.Name, state, v, voters, tm, term, minTerm, changes, info)
				}
				cmd := exec.Command("promtool", "check", "metrics")
				cmd.Stdin = bytes.NewReader(body)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("promtool check metrics on %s: %v\n%s", n.Name, err, out)
				}
			}
			return true, nil
		})
		return term
	}
	leader := c.WaitLeader(60 * time.Second)
	term := check(leader, c.Nodes, 1)
	c.Kill(leader)
	var rest []*coordtest.Node
	for _, n := range c.Nodes {
		if n != leader {
			rest = append(rest, n)
		}
	}
	next := c.WaitLeader(60 * time.Second)
	if next == leader || !strings.HasPrefix(next.Name, "c") {
		t.Fatalf("leader after the kill: %s", next.Name)
	}
	check(next, rest, term+1)
}
