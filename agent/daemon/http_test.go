package daemon

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/pkg/config"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

func testConfig(t *testing.T, extra string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(fmt.Sprintf(
		"cluster: main\nnode: {name: pg-a2, region: r1}\npostgres: {pgdata: %s, dsn: 'host=127.0.0.1 port=1 user=postgres'}\nrepos: [{url: 'file:///r'}]\nencryption: {disabled: true}\nhealth: {listen: '', max_replica_lag: 1MB}\n%s",
		t.TempDir(), extra)))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func get(t *testing.T, h http.Handler, method, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

// TestProbes serves the probes from injected reports.
func TestProbes(t *testing.T) {
	d := New(testConfig(t, ""), nil, slog.New(slog.DiscardHandler))
	h := d.Handler()

	// Before the first round every probe fails and says why.
	code, body := get(t, h, "GET", "/health")
	if code != 503 || !strings.Contains(body, `"role":"unknown"`) || !strings.Contains(body, "no health check") {
		t.Fatalf("before the first check: %d %s", code, body)
	}

	d.monitor.SetLatest(&pgdrv1.HealthReport{Cluster: "main", Node: "pg-a2", Time: timestamppb.Now(), PostmasterAlive: true, Connectable: true,
		InRecovery: true, Streaming: true, Timeline: 3, CurrentLsn: 0x3000000, ReceiveLsn: 0x3100000, ReplayLsn: 0x3000000, LagBytes: 0x100000, LagSeconds: 0.5})
	want := map[string]int{"/health": 200, "/ready": 200, "/primary": 503, "/replica": 200, "/replica?lag=1048575": 503, "/replica?lag=0": 503, "/replica?lag=2097152": 200, "/replica?lag=2MB": 200, "/replica?lag=1MB": 200, "/replica?lag=1023kB": 503}
	for path, w := range want {
		if code, body := get(t, h, "GET", path); code != w {
			t.Errorf("GET %s = %d, want %d (%s)", path, code, w, body)
		}
	}
	_, body = get(t, h, "GET", "/replica")
	var b struct {
		Role       string  `json:"role"`
		Healthy    bool    `json:"healthy"`
		InRecovery bool    `json:"in_recovery"`
		Timeline   uint32  `json:"timeline"`
		LSN        string  `json:"lsn"`
		LagBytes   int64   `json:"lag_bytes"`
		LagSeconds float64 `json:"lag_seconds"`
		Streaming  bool    `json:"streaming"`
		Error      *string `json:"error"`
		Time       string  `json:"time"`
	}
	if err := json.Unmarshal([]byte(body), &b); err != nil {
		t.Fatal(err)
	}
	if b.Role != "replica" || !b.Healthy || !b.InRecovery || b.Timeline != 3 || b.LSN != "0/3000000" || b.LagBytes != 1<<20 || b.LagSeconds != 0.5 || !b.Streaming || b.Time == "" {
		t.Fatalf("body %s", body)
	}
	if code, body := get(t, h, "GET", "/replica?lag=lots"); code != 400 {
		t.Errorf("bad lag: %d %s", code, body)
	}
	if code, body := get(t, h, "HEAD", "/replica"); code != 200 || body != "" {
		t.Errorf("HEAD: %d %q", code, body)
	}
	if code, _ := get(t, h, "OPTIONS", "/replica"); code != 200 {
		t.Errorf("OPTIONS (HAProxy's default check): %d", code)
	}
	if code, _ := get(t, h, "POST", "/replica"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", code)
	}
	if code, _ := get(t, h, "GET", "/leader"); code != 404 {
		t.Errorf("unknown path: %d", code)
	}

	code, metrics := get(t, h, "GET", "/metrics")
	for _, m := range []string{
		`pgdr_agent_up{cluster="main",node="pg-a2"} 1`,
		`pg_up{cluster="main",node="pg-a2"} 1`,
		`pgdr_agent_in_recovery{cluster="main",node="pg-a2"} 1`,
		`pgdr_agent_lag_bytes{cluster="main",node="pg-a2"} 1.048576e+06`,
		`pgdr_agent_lag_seconds{cluster="main",node="pg-a2"} 0.5`,
		`pgdr_agent_timeline{cluster="main",node="pg-a2"} 3`,
		`pgdr_agent_archive_failed_total{cluster="main",node="pg-a2"} 0`,
		`pgdr_agent_free_bytes{cluster="main",node="pg-a2",path="pgdata"}`,
		`pgdr_agent_free_bytes{cluster="main",node="pg-a2",path="pg_wal"}`,
		`pgdr_agent_coordinator_connected{cluster="main",node="pg-a2"} 0`,
		`pgdr_agent_health_check_duration_seconds_bucket`,
		`go_goroutines`,
	} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics (%d) lacks %s", code, m)
		}
	}

	// A primary.
	d.monitor.SetLatest(&pgdrv1.HealthReport{Time: timestamppb.Now(), PostmasterAlive: true, Connectable: true, Timeline: 4, CurrentLsn: 0x5000000})
	for path, w := range map[string]int{"/health": 200, "/ready": 200, "/primary": 200, "/replica": 503} {
		if code, body := get(t, h, "GET", path); code != w {
			t.Errorf("primary: GET %s = %d, want %d (%s)", path, code, w, body)
		}
	}
	// A stale report no longer speaks for the server.
	d.monitor.SetLatest(&pgdrv1.HealthReport{Time: timestamppb.New(time.Now().Add(-time.Hour)), PostmasterAlive: true, Connectable: true})
	if code, body := get(t, h, "GET", "/primary"); code != 503 || !strings.Contains(body, "stale") {
		t.Errorf("stale report: %d %s", code, body)
	}
	// Stopped.
	d.monitor.SetLatest(&pgdrv1.HealthReport{Time: timestamppb.Now(), Error: "postmaster: not running (no postmaster.pid); connect: refused"})
	for _, path := range []string{"/health", "/ready", "/primary", "/replica"} {
		if code, body := get(t, h, "GET", path); code != 503 || !strings.Contains(body, `"role":"stopped"`) || !strings.Contains(body, "no postmaster.pid") {
			t.Errorf("stopped: GET %s = %d %s", path, code, body)
		}
	}
	if _, metrics := get(t, h, "GET", "/metrics"); !strings.Contains(metrics, `pg_up{cluster="main",node="pg-a2"} 0`) || strings.Contains(metrics, "pgdr_agent_lag_bytes{") {
		t.Errorf("metrics of a stopped server:\n%s", metrics)
	}
}
