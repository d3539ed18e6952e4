package config

import (
	"errors"
	"strings"
	"testing"
)

func TestRepoModes(t *testing.T) {
	cfg, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Repos[0].Mode != ModeSync || cfg.Repos[1].Mode != ModeSync || cfg.Repos[1].Async() {
		t.Fatalf("default mode: %+v", cfg.Repos)
	}
	async := strings.Replace(good, "  - name: dr\n", "  - name: dr\n    mode: async\n", 1)
	cfg, err = Parse([]byte(async))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Repos[1].Async() || cfg.Repos[1].CopyConcurrency != DefaultCopyConcurrency || cfg.Agent.StateDir == "" {
		t.Fatalf("async repo: %+v, state dir %q", cfg.Repos[1], cfg.Agent.StateDir)
	}
	cases := []struct{ name, base, from, to, field, msg string }{
		{"unknown mode", good, "  - name: dr\n", "  - name: dr\n    mode: later\n", "repos[1].mode", "sync or async"},
		{"no sync repository", async, "  - name: local\n", "  - name: local\n    mode: async\n", "repos", "at least one repository must be of mode sync"},
		{"copy concurrency on a sync repo", good, "  - name: dr\n", "  - name: dr\n    copy_concurrency: 2\n", "repos[1].copy_concurrency", "mode async"},
		{"copy concurrency out of range", async, "    mode: async\n", "    mode: async\n    copy_concurrency: 100\n", "repos[1].copy_concurrency", "out of range"},
		{"relative state dir", async, "wal: {", "agent: {state_dir: rel}\nwal: {", "agent.state_dir", "absolute"},
		// before: accepted; the async "copy" was the sync repository itself
		{"async repository is the sync one", async, "url: s3://pgdr-backups/main\n    s3: {endpoint: \"http://127.0.0.1:7070\", region: us-east-1, path_style: true}", "url: file:///var/lib/pgdr/./repo/", "repos[1].url", "same repository as repos[0]"},
		{"two names for one repository", good, "url: file:///var/lib/pgdr/repo", "url: s3://pgdr-backups/main/\n    s3: {endpoint: \"http://127.0.0.1:7070/\"}", "repos[1].url", "same repository as repos[0]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(strings.Replace(c.base, c.from, c.to, 1)))
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != c.field || !strings.Contains(fe.Msg, c.msg) {
				t.Fatalf("got %v, want a FieldError on %s saying %q", err, c.field, c.msg)
			}
		})
	}
}
