package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pgdr/pgdr/pkg/testutil"
)

// labScrapeTarget is one process of the lab whose /metrics Prometheus
// scrapes, with the address read from the lab's configuration file.
type labScrapeTarget struct {
	name, addr string
	tls        *tls.Config // the admin API's TLS (coordinators with tls configured)
}

// labScrapeTargets reads the lab's configuration files: every
// coordinator's http.listen (and its tls section: /metrics is served with
// the admin API's TLS when that is configured) and every agent's
// health.listen.
func labScrapeTargets(t *testing.T, l *lab) []labScrapeTarget {
	t.Helper()
	var out []labScrapeTarget
	for _, c := range []string{"c1", "c2", "c3"} {
		var cfg struct {
			HTTP struct {
				Listen string `yaml:"listen"`
			} `yaml:"http"`
			TLS struct {
				CAFile string `yaml:"ca_file"`
			} `yaml:"tls"`
		}
		readLabYAML(t, filepath.Join(l.dir, c, "coordinator.yaml"), &cfg)
		if cfg.HTTP.Listen == "" {
			t.Fatalf("%s/coordinator.yaml has no http.listen", c)
		}
		tg := labScrapeTarget{name: "coordinator " + c, addr: cfg.HTTP.Listen}
		if cfg.TLS.CAFile != "" {
			// Prometheus presents a client certificate signed by the
			// coordinators' CA: the lab's admin certificate stands in for it.
			ca, err := os.ReadFile(cfg.TLS.CAFile)
			if err != nil {
				t.Fatal(err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(ca) {
				t.Fatalf("%s: no certificate in the CA file", cfg.TLS.CAFile)
			}
			cert, err := tls.LoadX509KeyPair(filepath.Join(l.dir, "tls", "admin.crt"), filepath.Join(l.dir, "tls", "admin.key"))
			if err != nil {
				t.Fatal(err)
			}
			tg.tls = &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		}
		out = append(out, tg)
	}
	for _, n := range []string{"pg-a1", "pg-a2", "pg-b1"} {
		var cfg struct {
			Health struct {
				Listen string `yaml:"listen"`
			} `yaml:"health"`
		}
		readLabYAML(t, filepath.Join(l.dir, n, "agent.yaml"), &cfg)
		if cfg.Health.Listen == "" {
			t.Fatalf("%s/agent.yaml has no health.listen", n)
		}
		out = append(out, labScrapeTarget{name: "agent " + n, addr: cfg.Health.Listen})
	}
	return out
}

func readLabYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// scrape GETs the target's /metrics as Prometheus would: over HTTPS with the
// admin TLS when the coordinator has TLS configured, falling back to plain
// HTTP when the server answers HTTPS with HTTP (a coordinator whose /metrics
// is not served over TLS); the test logs which.
func (tg labScrapeTarget) scrape(ctx context.Context) (body []byte, scheme string, err error) {
	return tg.fetch(ctx, "/metrics")
}

// fetch GETs path (/metrics, /health) from the target the way scrape does;
// an answer other than 200 is an error.
func (tg labScrapeTarget) fetch(ctx context.Context, path string) (body []byte, scheme string, err error) {
	get := func(client *http.Client, url string) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "text/plain;version=0.0.4") // the text format promtool reads
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(b))
		}
		return b, nil
	}
	if tg.tls != nil {
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tg.tls}}
		defer client.CloseIdleConnections()
		b, err := get(client, "https://"+tg.addr+path)
		if err == nil {
			return b, "https", nil
		}
		if !errors.Is(err, http.ErrSchemeMismatch) {
			return nil, "https", err
		}
	}
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	b, err := get(client, "http://"+tg.addr+path)
	return b, "http", err
}

// TestLabMetricsLint scrapes every process of the lab — the three
// coordinators (the leader serves the per-cluster series too) and the three
// agents — and runs `promtool check metrics` on what each serves: names,
// units, counter suffixes, help text and histogram layout as Prometheus'
// conventions want them.
func TestLabMetricsLint(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the real lab (PostgreSQL 15, 3 coordinators, 3 agents)")
	}
	pt := testutil.Promtool(t)
	l := startLab(t)
	targets := labScrapeTargets(t, l)

	// Wait until every process answers and one coordinator is the leader
	// (only the leader serves the per-cluster series).
	bodies := map[string][]byte{}
	deadline := time.Now().Add(90 * time.Second)
	for {
		leader := false
		var lastErr error
		for _, tg := range targets {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			b, scheme, err := tg.scrape(ctx)
			cancel()
			if err != nil {
				lastErr = fmt.Errorf("%s (%s://%s/metrics): %w", tg.name, scheme, tg.addr, err)
				continue
			}
			if _, seen := bodies[tg.name]; !seen {
				t.Logf("%s: /metrics over %s, %d bytes", tg.name, scheme, len(b))
			}
			bodies[tg.name] = b
			if strings.Contains("\n"+string(b), "\npgdr_coordinator_leader 1\n") {
				leader = true
			}
		}
		if lastErr == nil && leader {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the lab's processes did not all serve /metrics with a leader among the coordinators within 90 s (leader seen: %v; last error: %v)", leader, lastErr)
		}
		time.Sleep(time.Second)
	}

	for _, tg := range targets {
		b := bodies[tg.name]
		if !bytes.Contains(b, []byte("\npgdr_")) {
			t.Errorf("%s serves no pgdr_ series", tg.name)
		}
		cmd := exec.Command(pt, "check", "metrics")
		cmd.Stdin = bytes.NewReader(b)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool check metrics on %s's /metrics: %v\n%s", tg.name, err, out)
			continue
		}
		t.Logf("promtool check metrics %s: ok (%d series lines)", tg.name, bytes.Count(b, []byte("\n"))-bytes.Count(b, []byte("\n#")))
	}
}
