package clidoc

import (
	"os"
	"os/exec"
	"path/filepath"
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
	return Program{
		Name: "demo", Summary: "a demo", Synopsis: "COMMAND [flags]", Intro: "Intro text.", Version: "v1",
		GlobalFlags: ParseFlags("  -address string\n    \tcoordinator addresses\n"),
		Commands: []Command{
			NewCommand("demo", "status", "show the status", statusHelp),
			NewCommand("demo", "coordinator", "list, add or remove coordinators", coordHelp),
			NewCommand("demo", "config", "check a configuration", "Usage: demo config check --config FILE\n\nFlags:\n  -config string\n    \tconfiguration file\n"),
		},
	}
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
	if got := p.Commands[2].Subs; !slices.Equal(got, []string{"check"}) {
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
		{"demo ", []string{"status", "coordinator", "config", "--address"}},
		{"demo st", []string{"status"}},
		{"demo status --", []string{"--cluster", "--json"}},
		{"demo status --cluster ", nil}, // a value: file names (complete -o default)
		{"demo coordinator ", []string{"list", "add", "remove"}},
		{"demo coordinator a", []string{"add"}},
		{"demo --address x config --c", []string{"--config"}},
	} {
		if got := complete(t, script, tc.line); !slices.Equal(got, tc.want) {
			t.Errorf("complete %q = %q, want %q", tc.line, got, tc.want)
		}
	}
}

func TestZsh(t *testing.T) {
	script := Zsh(demo())
	for _, s := range []string{"#compdef demo", "'status:show the status'", "'--cluster[show only this cluster]:string:_files'", "'1:subcommand:(list add remove)'"} {
		if !strings.Contains(script, s) {
			t.Errorf("zsh script lacks %q:\n%s", s, script)
		}
	}
	zsh, err := exec.LookPath("zsh")
	if err != nil {
		t.Log("zsh is not installed: the zsh script's syntax was not checked (zsh -n)")
		return
	}
	if out, err := exec.Command(zsh, "-n", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n: %v\n%s", err, out)
	}
}

func TestMan(t *testing.T) {
	page := Man(demo())
	for _, s := range []string{".TH DEMO 1", ".SS status", ".SS coordinator", `\&.not a request`, `things \[u2014] a line`, `.B \-\-cluster \fIstring\fR`} {
		if !strings.Contains(page, s) {
			t.Errorf("man page lacks %q", s)
		}
	}
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Log("groff is not installed: the man page was not rendered")
		return
	}
	f := filepath.Join(t.TempDir(), "demo.1")
	if err := os.WriteFile(f, []byte(page), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z", f).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Fatalf("groff -man -ww: %v\n%s", err, out)
	}
}
