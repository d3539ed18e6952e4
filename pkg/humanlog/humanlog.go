package humanlog

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
)

// Handler writes records as plain lines. Safe for concurrent use.
type Handler struct {
	prog   string
	level  slog.Leveler
	attrs  []slog.Attr
	groups []string
	mu     *sync.Mutex
	w      io.Writer
}

// New returns a Handler that writes to w, prefixing each line with prog and
// the "component" attribute when one is set; records below level are
// dropped.
func New(w io.Writer, prog string, level slog.Leveler) *Handler {
	return &Handler{prog: prog, level: level, mu: &sync.Mutex{}, w: w}
}

// Enabled implements slog.Handler.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), qualify(h.groups, as)...)
	return &c
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.groups = append(append([]string(nil), h.groups...), name)
	return &c
}

func qualify(groups []string, as []slog.Attr) []slog.Attr {
	if len(groups) == 0 {
		return as
	}
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		out[i] = slog.Attr{Key: strings.Join(groups, ".") + "." + a.Key, Value: a.Value}
	}
	return out
}

// Handle implements slog.Handler: "<prog> <component>: [warning: ]<msg>
// (k=v, …): <err>", the error last since it is usually the longest.
func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	var component, errText string
	var details []string
	add := func(a slog.Attr) {
		a.Value = a.Value.Resolve()
		switch {
		case a.Key == "component":
			component = a.Value.String()
		case a.Key == "err" || a.Key == "error":
			errText = a.Value.String()
		case a.Value.Kind() == slog.KindGroup:
			for _, g := range a.Value.Group() {
				details = append(details, a.Key+"."+g.Key+"="+g.Value.String())
			}
		default:
			details = append(details, a.Key+"="+a.Value.String())
		}
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(func(a slog.Attr) bool {
		for _, q := range qualify(h.groups, []slog.Attr{a}) {
			add(q)
		}
		return true
	})
	var b strings.Builder
	b.WriteString(h.prog)
	if component != "" {
		b.WriteString(" " + component)
	}
	b.WriteString(": ")
	switch {
	case r.Level >= slog.LevelError:
		b.WriteString("error: ")
	case r.Level >= slog.LevelWarn:
		b.WriteString("warning: ")
	}
	b.WriteString(r.Message)
	if len(details) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(details, ", "))
	}
	if errText != "" {
		b.WriteString(": " + errText)
	}
	b.WriteByte('\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}
