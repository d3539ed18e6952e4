package clidoc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Validate checks generated output with the tools that read it, where they
// are installed: `bash -n` on the bash script, `zsh -n` on the zsh one and
// `groff -man -ww -z` (every warning) on the man page. It returns the
// problems found and the tools that are missing (those checks did not run).
func Validate(ctx context.Context, bash, zsh, man string) (missing []string, err error) {
	dir, err := os.MkdirTemp("", "clidoc-")
	if err != nil {
		return nil, fmt.Errorf("validating: %w", err)
	}
	defer os.RemoveAll(dir)
	var errs []error
	for _, c := range []struct {
		tool, file, text string
		args             []string
	}{
		{"bash", "completion.bash", bash, []string{"-n"}},
		{"zsh", "completion.zsh", zsh, []string{"-n"}},
		{"groff", "page.1", man, []string{"-man", "-Tutf8", "-ww", "-z"}},
	} {
		path, lerr := exec.LookPath(c.tool)
		if lerr != nil {
			missing = append(missing, c.tool)
			continue
		}
		f := filepath.Join(dir, c.file)
		if werr := os.WriteFile(f, []byte(c.text), 0o600); werr != nil {
			return missing, fmt.Errorf("validating: %w", werr)
		}
		out, rerr := exec.CommandContext(ctx, path, append(c.args, f)...).CombinedOutput()
		if rerr != nil || len(bytes.TrimSpace(out)) > 0 {
			errs = append(errs, fmt.Errorf("%s %v: %v\n%s", c.tool, c.args, rerr, out))
		}
	}
	return missing, errors.Join(errs...)
}
