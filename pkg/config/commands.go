package config

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Command is one command a runbook step may run on this node (runbook
// action command, docs/runbooks/format.md): the agent runs only the
// commands its own config lists, by name, never a command line sent to it.
type Command struct {
	// Argv is the program (an absolute path; no shell, no PATH lookup)
	// and its arguments. PGDR_CLUSTER, PGDR_NODE and PGDR_RUNBOOK_KEY are
	// added to its environment.
	Argv []string `yaml:"argv"`
	// Timeout bounds one run (default 5m, at most 1h); its process group
	// is killed past it.
	Timeout Duration `yaml:"timeout"`
}

// Bounds of the commands section.
const (
	MaxCommands           = 32
	DefaultCommandTimeout = 5 * time.Minute
)

var commandNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

func (c *Config) commandDefaults() {
	for name, cmd := range c.Commands {
		if cmd.Timeout.Duration == 0 && cmd.Timeout.text == "" {
			cmd.Timeout.Duration = DefaultCommandTimeout
			c.Commands[name] = cmd
		}
	}
}

// validateCommands checks the commands section.
func (c *Config) validateCommands() error {
	if len(c.Commands) > MaxCommands {
		return &FieldError{Field: "commands", Msg: fmt.Sprintf("%d commands, at most %d", len(c.Commands), MaxCommands)}
	}
	for name, cmd := range c.Commands {
		f := "commands." + name
		switch {
		case !commandNameRE.MatchString(name):
			return &FieldError{Field: f, Msg: "the name must be lower-case letters, digits, '_' or '-' (at most 63)"}
		case len(cmd.Argv) == 0 || strings.TrimSpace(cmd.Argv[0]) == "":
			return &FieldError{Field: f + ".argv", Msg: "required: the program and its arguments"}
		case !filepath.IsAbs(cmd.Argv[0]):
			return &FieldError{Field: f + ".argv[0]", Msg: fmt.Sprintf("%q must be an absolute path (no shell, no PATH lookup)", cmd.Argv[0])}
		case cmd.Timeout.invalid != "":
			return &FieldError{Field: f + ".timeout", Msg: fmt.Sprintf("%q is not a duration (%s)", cmd.Timeout.text, cmd.Timeout.invalid)}
		case cmd.Timeout.Duration < time.Second || cmd.Timeout.Duration > time.Hour:
			return &FieldError{Field: f + ".timeout", Msg: fmt.Sprintf("%s is out of range 1s..1h", cmd.Timeout.Duration)}
		}
		for i, a := range cmd.Argv {
			if strings.ContainsRune(a, 0) {
				return &FieldError{Field: fmt.Sprintf("%s.argv[%d]", f, i), Msg: "contains a NUL byte"}
			}
		}
	}
	return nil
}
