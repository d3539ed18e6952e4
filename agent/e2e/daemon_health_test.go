package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/wal"
)

// probe is one answer of an agent's HTTP probe.
type probe struct {
	code int
	body struct {
		Role       string  `json:"role"`
		Healthy    bool    `json:"healthy"`
		InRecovery bool    `json:"in_recovery"`
		Timeline   uint32  `json:"timeline"`
		LSN        string  `json:"lsn"`
		LagBytes   int64   `json:"lag_bytes"`
		LagSeconds float64 `json:"lag_seconds"`
		Streaming  bool    `json:"streaming"`
		Error      string  `json:"error"`
		Time       string  `json:"time"`
	}
	raw string
}

func getProbe(addr, path string) (probe, error) {
	var p probe
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return p, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return p, err
	}
	p.code, p.raw = resp.StatusCode, string(b)
	if path != "/metrics" {
		if err := json.Unmarshal(b, &p.body); err != nil {
			return p, fmt.Errorf("GET %s: %d %q: %w", path, resp.StatusCode, b, err)
		}
	}
	return p, nil
}

// waitProbes waits until every path on addr answers want.
func waitProbes(t *testing.T, timeout time.Duration, addr string, want int, paths ...string) {
	t.Helper()
	testutil.WaitFor(t, timeout, fmt.Sprintf("%v on %s to answer %d", paths, addr, want), func() (bool, error) {
		for _, p := range paths {
			got, err := getProbe(addr, p)
			if err != nil {
				return false, err
			}
			if got.code != want {
				return false, fmt.Errorf("GET %s = %d %s", p, got.code, got.raw)
			}
		}
		return true, nil
	})
}

// TestDaemonHealth runs `pgdr-agent run` next to a real PostgreSQL 15
// primary and a streaming replica, with no coordinator: the probes tell
// the primary from the replica, the metrics carry the lag, and stopping the
// replica's server turns its probes to 503 within three health intervals;
// starting it again brings them back.
func TestDaemonHealth(t *testing.T) {
	skipShort(t)
	const interval = time.Second
	l := newLab(t, labOpts{})
	sb := l.newStandby(t, nil)
	pAddr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	rAddr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	pCfg := l.writeConfig(t, "primary-health.yaml", []string{"file"}, l.identity, 0)
	rCfg := l.writeNodeConfig(t, "replica-health.yaml", sb, []string{"file"})
	for cfg, addr := range map[string]string{pCfg: pAddr, rCfg: rAddr} {
		f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(f, "health:\n  interval: %s\n  listen: %q\n  max_replica_lag: 16MB\nmetrics:\n  repo_interval: 1s\n", interval, addr)
		f.Close()
	}
	pLog := startDaemon(t, l, pCfg)
	rLog := startDaemon(t, l, rCfg)
	logs := func() string {
		return "primary agent:\n" + tail(pLog.String(), 2000) + "\nreplica agent:\n" + tail(rLog.String(), 2000)
	}

	waitProbes(t, 60*time.Second, pAddr, 200, "/health", "/ready", "/primary")
	waitProbes(t, 60*time.Second, rAddr, 200, "/health", "/ready", "/replica")
	for addr, want := range map[string]map[string]int{
		pAddr: {"/health": 200, "/ready": 200, "/primary": 200, "/replica": 503},
		rAddr: {"/health": 200, "/ready": 200, "/primary": 503, "/replica": 200},
	} {
		for path, code := range want {
			p, err := getProbe(addr, path)
			if err != nil {
				t.Fatal(err)
			}
			if p.code != code {
				t.Errorf("GET %s%s = %d, want %d: %s\n%s", addr, path, p.code, code, p.raw, logs())
			}
		}
	}

	l.pg.Exec(t, "CREATE TABLE ticks AS SELECT generate_series(1, 10000) i")
	p, err := getProbe(pAddr, "/primary")
	if err != nil {
		t.Fatal(err)
	}
	if b := p.body; b.Role != "primary" || !b.Healthy || b.InRecovery || b.Timeline != 1 || !strings.Contains(b.LSN, "/") || b.LagBytes != 0 || b.Error != "" {
		t.Errorf("primary's /primary body: %s", p.raw)
	}
	r, err := getProbe(rAddr, "/replica")
	if err != nil {
		t.Fatal(err)
	}
	if b := r.body; b.Role != "replica" || !b.Healthy || !b.InRecovery || !b.Streaming || b.Timeline != 1 || b.LagBytes < 0 || b.LagSeconds < 0 || b.Error != "" {
		t.Errorf("replica's /replica body: %s", r.raw)
	}
	// Replay reaches the primary's position (the replica's LSN moves).
	want, err := wal.ParseLSN(l.pg.QueryString(t, "SELECT pg_current_wal_lsn()::text"))
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 60*time.Second, "the replica's agent to report replay at "+want.String(), func() (bool, error) {
		r, err := getProbe(rAddr, "/replica")
		if err != nil {
			return false, err
		}
		got, err := wal.ParseLSN(r.body.LSN)
		return err == nil && got >= want, fmt.Errorf("agent reports %s", r.raw)
	})
	if r, _ := getProbe(rAddr, "/replica?lag=0"); r.body.LagBytes > 0 && r.code != 503 {
		t.Errorf("/replica?lag=0 with %d bytes of lag: %d", r.body.LagBytes, r.code)
	}
	for _, addr := range []string{pAddr, rAddr} {
		m, err := getProbe(addr, "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"pgdr_agent_lag_bytes{", "pg_up{", "pgdr_agent_timeline{", `pgdr_agent_free_bytes{cluster="main"`} {
			if m.code != 200 || !strings.Contains(m.raw, name) {
				t.Errorf("%s/metrics (%d) lacks %s", addr, m.code, name)
			}
		}
	}

	// The running daemons' role, build and repository figures (the
	// repositories read on metrics.repo_interval).
	for addr, role := range map[string]string{pAddr: "primary", rAddr: "replica"} {
		testutil.WaitFor(t, 30*time.Second, addr+"'s role and repository figures in /metrics", func() (bool, error) {
			m, err := getProbe(addr, "/metrics")
			if err != nil {
				return false, err
			}
			for _, want := range []string{`,role="` + role + `"} 1`, `pgdr_build_info{`, `program="pgdr-agent"`, `pgdr_repo_read_timestamp_seconds{`,
				`pgdr_repo_last_wal_timestamp_seconds{`, `pgdr_repo_read_failures_total{cluster="main",`} {
				if !strings.Contains(m.raw, want) {
					return false, fmt.Errorf("/metrics lacks %s", want)
				}
			}
			return true, nil
		})
	}

	// Stop the replica's server: its probes fail within 3 intervals.
	sb.Stop(t, "fast")
	stopped := time.Now()
	testutil.WaitFor(t, 3*interval, "the stopped replica's /health and /replica to answer 503", func() (bool, error) {
		for _, path := range []string{"/health", "/replica", "/ready"} {
			p, err := getProbe(rAddr, path)
			if err != nil {
				return false, err
			}
			if p.code != 503 {
				return false, fmt.Errorf("GET %s = %d %s", path, p.code, p.raw)
			}
		}
		return true, nil
	})
	t.Logf("the replica's probes turned 503 %s after its server stopped", time.Since(stopped).Round(time.Millisecond))
	if p, err := getProbe(rAddr, "/health"); err != nil || p.body.Role != "stopped" || p.body.Healthy || p.body.Error == "" {
		t.Errorf("the stopped replica's /health: %v %s", err, p.raw)
	}
	if m, _ := getProbe(rAddr, "/metrics"); !strings.Contains(m.raw, `pg_up{cluster="main",node="pg-a2"} 0`) {
		t.Errorf("the stopped replica's metrics lack pg_up 0:\n%s", m.raw)
	}
	waitProbes(t, 10*time.Second, pAddr, 200, "/health", "/primary")

	// Start it again: back to 200 once it streams.
	sb.Start(t)
	waitProbes(t, 90*time.Second, rAddr, 200, "/health", "/ready", "/replica")
	waitProbes(t, 10*time.Second, rAddr, 503, "/primary")
	if strings.Contains(logs(), "password") {
		t.Errorf("an agent logged something about a password:\n%s", logs())
	}
}
