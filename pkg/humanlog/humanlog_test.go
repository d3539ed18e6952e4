package humanlog

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestLines(t *testing.T) {
	var b strings.Builder
	log := slog.New(New(&b, "pgdr-agent", slog.LevelInfo)).With("component", "backup")
	log.Error("backup failed", "err", errors.New("repository local: open \"x\": permission denied\nsecond line"))
	log.Warn("slow", "seconds", 3)
	log.Info("done", slog.Group("size", "bytes", 10))
	log.Debug("hidden")
	log.WithGroup("g").Info("grouped", "k", "v")
	want := `pgdr-agent backup: error: backup failed: repository local: open "x": permission denied
second line
pgdr-agent backup: warning: slow (seconds=3)
pgdr-agent backup: done (size.bytes=10)
pgdr-agent backup: grouped (g.k=v)
`
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}
