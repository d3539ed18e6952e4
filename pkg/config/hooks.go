package config

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// DefaultHookTimeout bounds one run of a hook when hooks.timeout is unset.
const DefaultHookTimeout = 30 * time.Second

// Hooks are commands the agent runs on events of its node.
type Hooks struct {
	// OnRoleChange is a command and its arguments (no shell), run once
	// each time the node's role (primary, replica, fenced, stopped)
	// changes, with PGDR_ROLE, PGDR_PREVIOUS_ROLE, PGDR_CLUSTER, PGDR_NODE
	// and PGDR_EPOCH in its environment. Empty: no hook.
	OnRoleChange []string `yaml:"on_role_change"`
	// Timeout bounds one run; the hook's process group is killed past it.
	Timeout Duration `yaml:"timeout"`
}

func (h *Hooks) applyDefaults() {
	if h.Timeout.Duration == 0 && h.Timeout.text == "" {
		h.Timeout.Duration = DefaultHookTimeout
	}
}

// validateHooks checks the hooks section.
func (c *Config) validateHooks() error {
	fe := func(field, format string, args ...any) error {
		return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	h := c.Hooks
	if len(h.OnRoleChange) > 0 {
		cmd := h.OnRoleChange[0]
		if strings.TrimSpace(cmd) == "" {
			return fe("hooks.on_role_change[0]", "the command is empty")
		}
		if !filepath.IsAbs(cmd) {
			return fe("hooks.on_role_change[0]", "%q must be an absolute path (the hook runs without a shell and without PATH lookup)", cmd)
		}
		for i, a := range h.OnRoleChange {
			if strings.ContainsRune(a, 0) {
				return fe(fmt.Sprintf("hooks.on_role_change[%d]", i), "contains a NUL byte")
			}
		}
	}
	if h.Timeout.invalid != "" {
		return fe("hooks.timeout", "%q is not a duration (%s; e.g. 30s)", h.Timeout.text, h.Timeout.invalid)
	}
	if h.Timeout.Duration < 100*time.Millisecond || h.Timeout.Duration > time.Hour {
		return fe("hooks.timeout", "%s is out of range 100ms..1h", h.Timeout.Duration)
	}
	return nil
}
