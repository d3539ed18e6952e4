package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/agent/repocopy"
	"github.com/pgdr/pgdr/agent/walship"
)

// The daemon of a configuration with an async repository serves its copy
// lag in /status and /metrics.
func TestCopyLagServed(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, fmt.Sprintf("agent: {state_dir: %s}\n", filepath.Join(dir, "state")))
	cfg.Repos = append(cfg.Repos, cfg.Repos[0])
	cfg.Repos[0].URL, cfg.Repos[1].URL = "file://"+filepath.Join(dir, "sync"), "file://"+filepath.Join(dir, "async")
	cfg.Repos[1].Name, cfg.Repos[1].Mode, cfg.Repos[1].CopyConcurrency = "dr", "async", 2
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	sh, err := walship.New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	d := New(cfg, sh, slog.New(slog.DiscardHandler))
	if d.copier == nil {
		t.Fatal("no copier for an async repository")
	}
	h := d.Handler()
	code, body := get(t, h, "GET", "/status")
	var st struct {
		RepoCopies []repocopy.Status `json:"repo_copies"`
	}
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil || len(st.RepoCopies) != 1 || st.RepoCopies[0].Repo != "dr" {
		t.Fatalf("/status: %d %s (%v)", code, body, err)
	}
	_, metrics := get(t, h, "GET", "/metrics")
	for _, m := range []string{"pgdr_repo_copy_lag_objects", "pgdr_repo_copy_lag_bytes", "pgdr_repo_copy_oldest_missing_seconds"} {
		if !strings.Contains(metrics, m+`{cluster="main",node="pg-a2",repository="dr"} 0`) {
			t.Fatalf("/metrics lacks %s for dr:\n%s", m, metrics)
		}
	}
}
