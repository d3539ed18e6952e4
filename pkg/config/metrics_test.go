package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestMetricsRepoInterval(t *testing.T) {
	cfg, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Metrics.RepoInterval.Duration != time.Minute {
		t.Errorf("metrics.repo_interval = %s, want the default 1m", cfg.Metrics.RepoInterval)
	}
	cfg, err = Parse([]byte(minimal + "metrics: {repo_interval: 15s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Metrics.RepoInterval.Duration != 15*time.Second {
		t.Errorf("metrics.repo_interval = %s, want 15s", cfg.Metrics.RepoInterval)
	}
	for _, bad := range []string{"0s", "500ms", "25h", "soon"} {
		_, err := Parse([]byte(minimal + "metrics: {repo_interval: " + bad + "}\n"))
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "metrics.repo_interval" {
			t.Errorf("repo_interval %s: err %v, want a FieldError naming metrics.repo_interval", bad, err)
		}
		if err != nil && !strings.Contains(err.Error(), "metrics.repo_interval") {
			t.Errorf("repo_interval %s: %v does not name the field", bad, err)
		}
	}
}
