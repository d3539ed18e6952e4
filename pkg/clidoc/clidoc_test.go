package clidoc

import (
	"context"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const statusHelp = `Usage: demo status [--cluster C] [--json]

Shows things — a line starting with a dot:
.not a request

Flags:
  --cluster string
    	show only this cluster
  --json
    	print JSON for scripts
`

const coordHelp = `Usage: demo coordinator list|add|remove [flags]

  list    the coordinators
`

func demo() Program {
	coord := NewCommand("demo", "coordinator", "list, add or remove coordinators", coordHelp)
	coord.AddSub("add", "Usage: demo coordinator add --name N\n\nFlags:\n  --name string\n    \tthe new coordinator\n  --update\n    \tchange an existing one\n")
	p := Program{
		Name: "demo", Summary: "a demo", Synopsis: "COMMAND [flags]", Intro: "Intro text.", Version: "v1",
		GlobalFlags: ParseFlags("  -address string\n    \tcoordinator addresses\n"),
		Commands: []Command{
			NewCommand("demo", "status", "show the status", statusHelp),
			coord,
			NewCommand("demo", "long", strings.Repeat("word ", 19)+"'quoted' [here]: past the hundredth character", ""),
			NewCommand("demo", "config", "check a configuration", "Usage: demo config check --config FILE\n\nFlags:\n  -config string\n    \tconfiguration file\n"),
		},
	}
	return p
}

func TestParse(t *testing.T) {
	p := demo()
	st := p.Commands[0]
	if want := []Flag{{"cluster", "string", "show only this cluster"}, {"json", "", "print JSON for scripts"}}; !slices.Equal(st.Flags, want) {
		t.Errorf("status flags %+v, want %+v", st.Flags, want)
	}
	if st.Subs != nil {
		t.Errorf("status subcommands %v: [--cluster is a flag", st.Subs)
	}
	if got := p.Commands[1].Subs; !slices.Equal(got, []string{"list", "add", "remove"}) {
		t.Errorf("coordinator subcommands %v", got)
	}
	if got := p.Commands[3].Subs; !slices.Equal(got, []string{"check"}) {
		t.Errorf("config subcommands %v", got)
	}
	if _, err := Generate(p, "fish"); err == nil || !strings.Contains(err.Error(), `"fish"`) {
		t.Errorf("Generate fish: %v", err)
	}
}

// complete runs the bash completion function for the words of line (the
// last one being completed) and returns COMPREPLY.
func complete(t *testing.T, script, line string) []string {
	t.Helper()
	words := strings.Split(line, " ")
	var q []string
	for _, w := range words {
		q = append(q, "'"+w+"'")
	}
	prog := script + "\nCOMP_WORDS=(" + strings.Join(q, " ") + ")\nCOMP_CWORD=" + strconv.Itoa(len(words)-1) +
		"\n_demo\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
	out, err := exec.Command("bash", "-c", prog).CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	return strings.Fields(string(out))
}

func TestBash(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	script := Bash(demo())
	if out, err := exec.Command("bash", "-n", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"demo ", []string{"status", "coordinator", "long", "config", "--address"}},
		{"demo st", []string{"status"}},
		{"demo status --", []string{"--cluster", "--json"}},
		{"demo status --cluster ", nil}, // a value: file names (complete -o default)
		{"demo coordinator ", []string{"list", "add", "remove"}},
		{"demo coordinator a", []string{"add"}},
		{"demo coordinator add --", []string{"--name", "--update"}},
		{"demo coordinator add --name ", nil},
		{"demo coordinator list --", nil}, // no flags recorded for list
		{"demo --address x config --c", []string{"--config"}},
	} {
		if got := complete(t, script, tc.line); !slices.Equal(got, tc.want) {
			t.Errorf("complete %q = %q, want %q", tc.line, got, tc.want)
		}
	}
}

func TestZsh(t *testing.T) {
	script := Zsh(demo())
	for _, s := range []string{"#compdef demo", "'status:show the status'", "'--cluster[show only this cluster]:string:_files'", "'1:subcommand:(list add remove)'", "'--update[change an existing one]'"} {
		if !strings.Contains(script, s) {
			t.Errorf("zsh script lacks %q:\n%s", s, script)
		}
	}
}

// TestValidate: the generated bash, zsh and man output pass bash -n, zsh -n
// and groff -ww (each where installed; scripts/ci-deps.sh installs them).
func TestValidate(t *testing.T) {
	p := demo()
	missing, err := Validate(context.Background(), Bash(p), Zsh(p), Man(p))
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		t.Logf("not installed, not checked: %v", missing)
	}
	// A broken input is reported.
	if _, err := Validate(context.Background(), "if then", "case x in", ".TH\n\\fQ"); err == nil {
		t.Errorf("Validate passed broken input")
	}
}

func TestMan(t *testing.T) {
	page := Man(demo())
	for _, s := range []string{".TH DEMO 1", ".SS status", ".SS coordinator", ".B coordinator add\n", `.B \-\-update`, `\&.not a request`, `things \[u2014] a line`, `.B \-\-cluster \fIstring\fR`} {
		if !strings.Contains(page, s) {
			t.Errorf("man page lacks %q", s)
		}
	}
}
