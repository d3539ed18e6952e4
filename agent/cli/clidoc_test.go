package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/pkg/clidoc"
)

// TestGeneratedDocs: every command of the table, and its flags, appear in
// the generated bash and zsh completion and the man page; the internal
// commands do not.
func TestGeneratedDocs(t *testing.T) {
	gen := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := Main(args, &out, &errb); code != 0 {
			t.Fatalf("pgdr-agent %v: exit %d: %s", args, code, errb.String())
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
	for _, flag := range []string{"--config", "--force", "--pgdata", "--keep-full"} {
		if !strings.Contains(bash, flag) || !strings.Contains(zsh, "'"+flag+"[") || !strings.Contains(man, strings.ReplaceAll(flag, "-", `\-`)) {
			t.Errorf("flag %s missing", flag)
		}
	}
	if !strings.Contains(bash, `compgen -W "check"`) {
		t.Errorf("config's subcommand check is not completed")
	}
	// Subcommands' own flags (their --help), completed after the word.
	for _, flag := range []string{"--no-probe"} {
		if !strings.Contains(bash, flag+" ") && !strings.Contains(bash, flag+`"`) || !strings.Contains(zsh, "'"+flag+"[") || !strings.Contains(man, strings.ReplaceAll(flag, "-", `\-`)) {
			t.Errorf("subcommand flag %s missing", flag)
		}
	}
	for _, c := range internalCommands() {
		if strings.Contains(zsh, "'"+c.name+":") {
			t.Errorf("internal command %s is offered", c.name)
		}
	}
	for _, args := range [][]string{{"completion"}, {"completion", "fish"}, {"completion", "man"}, {"man", "x"}} {
		var out, errb bytes.Buffer
		if code := Main(args, &out, &errb); code != ExitUsage || out.Len() != 0 || errb.Len() == 0 {
			t.Errorf("pgdr-agent %v: exit %d, stdout %q, stderr %q; want a usage error", args, code, out.String(), errb.String())
		}
	}
}
