package ctl

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/pgdr/pgdr/pkg/buildinfo"
	"github.com/pgdr/pgdr/pkg/clidoc"
)

// hiddenCommands are left out of the usage: the packaging runs them
// (scripts/dist.sh ships their output).
func hiddenCommands() []command {
	return []command{
		{"completion", "completion bash|zsh: shell completion generated from the command table", cmdCompletion},
		{"man", "the man page generated from the command table", cmdMan},
	}
}

// program describes pgdrctl for the generated completion and man page: the
// command table, the connection flags and each command's own --help output
// (its usage and its flags as the flag package prints them). The
// environment is left out, so that no PGDR_* value shows up as a default.
func program(ctx context.Context) clidoc.Program {
	noenv := func(string) string { return "" }
	var intro, global bytes.Buffer
	usage(&intro)
	fs := flag.NewFlagSet("pgdrctl", flag.ContinueOnError)
	fs.SetOutput(&global)
	newConnFlags(noenv).register(fs)
	fs.PrintDefaults()
	p := clidoc.Program{
		Name:        "pgdrctl",
		Summary:     "the operator's command line for pgdr coordinators",
		Synopsis:    "[connection flags] COMMAND [flags]",
		Intro:       intro.String(),
		Version:     buildinfo.Get().Version,
		GlobalFlags: clidoc.ParseFlags(global.String()),
	}
	for _, c := range commands() {
		helpOf := func(args ...string) string {
			var out bytes.Buffer
			_ = c.run(ctx, env{stdout: &out, stderr: &out, getenv: noenv}, newConnFlags(noenv), args)
			return out.String()
		}
		help := "Usage: pgdrctl help [COMMAND]\n\n" + c.summary
		if c.run != nil {
			help = helpOf("--help")
		}
		cmd := clidoc.NewCommand(p.Name, c.name, c.summary, help)
		for _, sub := range cmd.Subs {
			cmd.AddSub(sub, helpOf(sub, "--help"))
		}
		p.Commands = append(p.Commands, cmd)
	}
	return p
}

func cmdCompletion(ctx context.Context, e env, _ *connFlags, args []string) error {
	if len(args) != 1 || (args[0] != "bash" && args[0] != "zsh") {
		return usagef("usage: completion bash|zsh")
	}
	return generate(ctx, e.stdout, args[0])
}

func cmdMan(ctx context.Context, e env, _ *connFlags, args []string) error {
	if len(args) != 0 {
		return usagef("man takes no arguments")
	}
	return generate(ctx, e.stdout, "man")
}

func generate(ctx context.Context, w io.Writer, format string) error {
	out, err := clidoc.Generate(program(ctx), format)
	if err != nil {
		return usagef("%v", err)
	}
	if _, err := io.WriteString(w, out); err != nil {
		return fmt.Errorf("writing the %s output: %w", format, err)
	}
	return nil
}
