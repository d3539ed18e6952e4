package cli

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/pgdr/pgdr/pkg/buildinfo"
	"github.com/pgdr/pgdr/pkg/clidoc"
)

// program describes pgdr-agent for the generated completion and man page:
// the command table, and each command's own --help output (its usage and
// its flags as the flag package prints them).
func program(ctx context.Context) clidoc.Program {
	var intro bytes.Buffer
	usage(&intro)
	p := clidoc.Program{
		Name:     "pgdr-agent",
		Summary:  "the pgdr agent that runs next to each PostgreSQL server",
		Synopsis: "COMMAND [flags] [args]",
		Intro:    intro.String(),
		Version:  buildinfo.Get().Version,
	}
	for _, c := range commands() {
		var help bytes.Buffer
		c.run(ctx, env{stdout: &help, stderr: &help}, []string{"--help"})
		text := help.String()
		if !strings.Contains(text, "Usage:") {
			text = "Usage: pgdr-agent " + c.usage
		}
		cmd := clidoc.NewCommand(p.Name, c.name, c.summary, text)
		for _, sub := range cmd.Subs {
			var sh bytes.Buffer
			c.run(ctx, env{stdout: &sh, stderr: &sh}, []string{sub, "--help"})
			cmd.AddSub(sub, sh.String())
		}
		p.Commands = append(p.Commands, cmd)
	}
	return p
}

// cmdDoc is the hidden `completion bash|zsh` and `man` (scripts/dist.sh
// ships their output in the packages).
func cmdDoc(what string) func(ctx context.Context, e env, args []string) int {
	return func(ctx context.Context, e env, args []string) int {
		format := what
		if what == "completion" {
			if len(args) != 1 {
				fmt.Fprintln(e.stderr, "pgdr-agent completion: usage: completion bash|zsh")
				return ExitUsage
			}
			format = args[0]
		} else if len(args) != 0 {
			fmt.Fprintln(e.stderr, "pgdr-agent man: takes no arguments")
			return ExitUsage
		}
		if format == "man" && what == "completion" {
			format = "" // completion man is not a shell
		}
		out, err := clidoc.Generate(program(ctx), format)
		if err != nil {
			fmt.Fprintf(e.stderr, "pgdr-agent %s: %v\n", what, err)
			return ExitUsage
		}
		fmt.Fprint(e.stdout, out)
		return ExitOK
	}
}
