package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

type health struct {
	Name      string `json:"name"`
	RaftState string `json:"raft_state"`
	Leader    string `json:"leader"`
}

var httpc = &http.Client{Timeout: 500 * time.Millisecond}

func getHealth(addr string) (health, error) {
	var h health
	resp, err := httpc.Get("http://" + addr + "/health")
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&h)
	return h, err
}

// scrape reads the named metrics (unlabelled samples) from /metrics.
func scrape(addr string, names ...string) (map[string]float64, error) {
	resp, err := httpc.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		for _, n := range names {
			if f[0] == n {
				v, err := strconv.ParseFloat(f[1], 64)
				if err == nil {
					out[n] = v
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, n := range names {
		if _, ok := out[n]; !ok {
			return nil, fmt.Errorf("%s: no %s in /metrics", addr, n)
		}
	}
	return out, nil
}

// agreed returns the leader every survivor names (not the dead one) and
// its http address, or "" when they do not agree yet.
func agreed(o options) (string, string) {
	name := ""
	hs := map[string]health{}
	for _, a := range o.httpAddrs {
		h, err := getHealth(a)
		if err != nil || h.Leader == "" || h.Leader == o.dead || (name != "" && h.Leader != name) {
			return "", ""
		}
		name = h.Leader
		hs[a] = h
	}
	for a, h := range hs {
		if h.Name == name && h.RaftState == "Leader" {
			return name, a
		}
	}
	return "", ""
}

type sampleAt struct {
	t       time.Time
	reports float64
	streams float64
}

// runWatch measures re-election and agent reconnection after a leader kill.
func runWatch(o options) error {
	if len(o.httpAddrs) == 0 || o.agents <= 0 {
		return errors.New("--watch needs --http and --agents")
	}
	since := time.Now()
	if o.since > 0 {
		since = time.Unix(0, o.since)
	}
	deadline := since.Add(o.timeout)
	secs := func(t time.Time) float64 { return t.Sub(since).Seconds() }
	out := map[string]any{"dead": o.dead, "agents": o.agents}
	defer func() {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
	}()

	// 1. Re-election: every survivor names the same leader, not the dead one.
	var leader string
	var leaderHTTP string
	polls := 0
	for {
		polls++
		if leader, leaderHTTP = agreed(o); leader != "" {
			break
		}
		if time.Now().After(deadline) {
			out["error"] = fmt.Sprintf("no new leader agreed by %v within %v", o.httpAddrs, o.timeout)
			return nil
		}
		time.Sleep(o.poll)
	}
	tElect := time.Now()
	out["new_leader"] = leader
	out["reelection_s"] = secs(tElect)
	out["health_polls"] = polls

	// 2. Agents back: all streams open on the new leader, and the report
	// rate holding from then on. /metrics is scraped every --scrape-every
	// (each scrape costs the leader a copy of the whole state, for the
	// members_healthy gauges). Should leadership move again meanwhile, the
	// new leader is followed and the measurement starts over there (still
	// timed from the kill).
	changes := 0
	var lastCheck time.Time
	want := float64(o.agents) * float64(o.rateWindow) / float64(o.interval) * 0.95
	var samples []sampleAt
	var firstReport, allStreams time.Time
	maxStreams := 0.0
	for cand := 0; ; {
		if time.Since(lastCheck) >= time.Second {
			lastCheck = time.Now()
			if l, a := agreed(o); l != "" && l != leader {
				changes++
				leader, leaderHTTP = l, a
				samples, cand, firstReport, allStreams, maxStreams = nil, 0, time.Time{}, time.Time{}, 0
				out["final_leader"] = leader
			}
		}
		out["leader_changes_after_reelection"] = changes
		m, err := scrape(leaderHTTP, "pgdr_coordinator_reports_total", "pgdr_coordinator_agent_streams")
		now := time.Now()
		if err == nil {
			s := sampleAt{now, m["pgdr_coordinator_reports_total"], m["pgdr_coordinator_agent_streams"]}
			if len(samples) > 0 && firstReport.IsZero() && s.reports > samples[0].reports {
				firstReport = now
			}
			if s.streams >= 2*float64(o.agents) && allStreams.IsZero() {
				allStreams = now
			}
			maxStreams = max(maxStreams, s.streams)
			samples = append(samples, s)
		}
		// The first candidate instant whose following window shows the
		// expected rate, with every stream open at that instant.
		for ; cand < len(samples); cand++ {
			c := samples[cand]
			if c.streams < 2*float64(o.agents) {
				continue
			}
			last := samples[len(samples)-1]
			if last.t.Sub(c.t) < o.rateWindow {
				break // wait for more samples
			}
			var end sampleAt
			for _, s := range samples[cand:] {
				if s.t.Sub(c.t) >= o.rateWindow {
					end = s
					break
				}
			}
			got := (end.reports - c.reports) * float64(o.rateWindow) / float64(end.t.Sub(c.t))
			if got >= want {
				out["agents_reconnected_s"] = secs(c.t)
				out["rate_after_reconnect_per_s"] = (end.reports - c.reports) / end.t.Sub(c.t).Seconds()
				out["first_report_s"] = secs(firstReport)
				out["all_streams_s"] = secs(allStreams)
				out["max_streams"] = maxStreams
				return nil
			}
		}
		if now.After(deadline) {
			out["error"] = fmt.Sprintf("agents not all reporting to %s within %v (streams max %.0f of %d)", leader, o.timeout, maxStreams, 2*o.agents)
			out["max_streams"] = maxStreams
			if !firstReport.IsZero() {
				out["first_report_s"] = secs(firstReport)
			}
			if !allStreams.IsZero() {
				out["all_streams_s"] = secs(allStreams)
			}
			return nil
		}
		time.Sleep(o.scrapeEvery)
	}
}
