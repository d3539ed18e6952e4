package ctl

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/pkg/clidoc"
)

// TestGeneratedDocs: every command of the table, the subcommands and flags
// its help names, and the connection flags appear in the generated bash
// and zsh completion and the man page; the hidden commands do not.
func TestGeneratedDocs(t *testing.T) {
	t.Parallel()
	gen := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := run(context.Background(), env{stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}, args); code != 0 {
			t.Fatalf("pgdrctl %v: exit %d: %s", args, code, errb.String())
		}
		return out.String()
	}
	bash, zsh, man := gen("completion", "bash"), gen("completion", "zsh"), gen("man")
	if missing, err := clidoc.Validate(context.Background(), bash, zsh, man); err != nil {
		t.Errorf("generated output does not pass its tools: %v", err)
	} else if len(missing) > 0 {
		t.Logf("not installed, not checked: %v", missing)
	}
	for _, c := range commands() {
		if !strings.Contains(bash, "\n    "+c.name+")\n") || !strings.Contains(zsh, "'"+c.name+":") || !strings.Contains(man, ".SS "+strings.ReplaceAll(c.name, "-", `\-`)+"\n") {
			t.Errorf("command %s missing from the bash, zsh or man output", c.name)
		}
	}
	for _, sub := range []string{`"list add remove"`, `"show set apply"`, `"init"`} {
		if !strings.Contains(bash, sub) {
			t.Errorf("subcommands %s are not completed", sub)
		}
	}
	for _, flag := range []string{"--address", "--token-file", "--cluster", "--json", "--to"} {
		if !strings.Contains(bash, flag+" ") && !strings.Contains(bash, flag+`"`) || !strings.Contains(man, strings.ReplaceAll(flag, "-", `\-`)) {
			t.Errorf("flag %s missing", flag)
		}
	}
	// Subcommands' own flags (their --help), completed after the word.
	for _, flag := range []string{"--raft-address", "--synchronous", "--coordinators", "--tier"} {
		if !strings.Contains(bash, flag+" ") && !strings.Contains(bash, flag+`"`) || !strings.Contains(zsh, "'"+flag+"[") || !strings.Contains(man, strings.ReplaceAll(flag, "-", `\-`)) {
			t.Errorf("subcommand flag %s missing", flag)
		}
	}
	for _, c := range hiddenCommands() {
		if strings.Contains(zsh, "'"+c.name+":") {
			t.Errorf("hidden command %s is offered", c.name)
		}
	}
	for _, args := range [][]string{{"completion"}, {"completion", "fish"}, {"man", "x"}} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), env{stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}, args); code != ExitUsage || out.Len() != 0 {
			t.Errorf("pgdrctl %v: exit %d, stdout %q; want a usage error", args, code, out.String())
		}
	}
}
