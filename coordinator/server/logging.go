package server

import (
	"context"
	"io"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// hclogger gives hashicorp/raft an hclog.Logger that writes through slog.
func hclogger(l *slog.Logger, name string, level string) hclog.Logger {
	lv := hclog.Warn
	if level == "debug" {
		lv = hclog.Debug
	} else if level == "info" {
		lv = hclog.Info
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:            name,
		Level:           lv,
		Output:          &slogWriter{l: l.With("component", name)},
		DisableTime:     true,
		IncludeLocation: false,
	})
}

type slogWriter struct{ l *slog.Logger }

var _ io.Writer = (*slogWriter)(nil)

func (w *slogWriter) Write(b []byte) (int, error) {
	line := strings.TrimSpace(string(b))
	level := slog.LevelInfo
	switch {
	case strings.HasPrefix(line, "[ERROR]"):
		level = slog.LevelError
	case strings.HasPrefix(line, "[WARN]"):
		level = slog.LevelWarn
	case strings.HasPrefix(line, "[DEBUG]"), strings.HasPrefix(line, "[TRACE]"):
		level = slog.LevelDebug
	}
	if i := strings.Index(line, "] "); i > 0 && i < 8 {
		line = strings.TrimSpace(line[i+2:])
	}
	w.l.Log(context.Background(), level, line)
	return len(b), nil
}
