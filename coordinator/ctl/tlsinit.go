package ctl

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/pgdr/pgdr/pkg/tlsutil"
)

var clusterNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// TLSInitJSON is what `tls init --json` prints.
type TLSInitJSON struct {
	Dir   string   `json:"dir"`
	Files []string `json:"files"`
}

const tlsUsage = `Usage: pgdrctl tls init --dir D --coordinators c1,c2,c3 --agents a1,a2 --cluster C [--force]

Run 'pgdrctl tls init --help' for its flags.
`

func cmdTLS(ctx context.Context, e env, _ *connFlags, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, tlsUsage)
		return &usageError{}
	}
	switch args[0] {
	case "init":
		return tlsInit(ctx, e, args[1:])
	case "-h", "--help", "-help", "help":
		fmt.Fprint(e.stdout, tlsUsage)
		return nil
	}
	return usagef("unknown subcommand %q (init)", args[0])
}

func tlsInit(_ context.Context, e env, args []string) error {
	f := newCmdFlags(e, "tls init", "tls init --dir D --coordinators c1,c2,c3 --agents a1,a2 --cluster C [--force] [--json]",
		`Creates a development CA and certificates for a lab or demo, valid for
127.0.0.1 and localhost: one per coordinator (role coordinator), one per agent
(role agent, bound to its node and to --cluster), plus admin (role admin) and
reader (role read) for pgdrctl. Keys are written with mode 0600. Needs no
server. Not for production: use your own PKI there, with the role as the
certificate's first OU and, for an agent, the node name as CN and the URI
SAN urn:pgdr:cluster:<cluster>. An agent certificate acts for that one node
of that one cluster only.`, nil)
	dir := f.String("dir", "", "directory to write into (created 0700; required)")
	coords := f.String("coordinators", "", "coordinator names, comma-separated")
	agents := f.String("agents", "", "agent (node) names, comma-separated")
	cluster := f.String("cluster", "", "the cluster the --agents belong to (required with --agents)")
	force := f.Bool("force", false, "replace an existing CA and certificates in --dir")
	if _, err := f.parse(args, 0); err != nil {
		return err
	}
	if *dir == "" {
		return usagef("--dir is required")
	}
	seen := map[string]string{"ca": "the CA", "admin": "pgdrctl's admin", "reader": "pgdrctl's reader"}
	cn, err := certNames("--coordinators", *coords, seen)
	if err != nil {
		return err
	}
	an, err := certNames("--agents", *agents, seen)
	if err != nil {
		return err
	}
	if len(an) > 0 && *cluster == "" {
		return usagef("--cluster is required with --agents: an agent certificate acts for its node of one cluster only")
	}
	if *cluster != "" && !clusterNameRE.MatchString(*cluster) {
		return usagef("--cluster: %q is not a valid name (letters, digits, '.', '_', '-'; at most 63)", *cluster)
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return fmt.Errorf("--dir: %w", err)
	}
	if err := tlsutil.DevInit(abs, cn, an, *cluster, *force); err != nil {
		return err
	}
	v := TLSInitJSON{Dir: abs, Files: []string{}}
	for _, n := range append(append(append([]string{"ca"}, cn...), an...), "admin", "reader") {
		v.Files = append(v.Files, filepath.Join(abs, n+".crt"), filepath.Join(abs, n+".key"))
	}
	if f.json() {
		return printJSON(e.stdout, v)
	}
	fmt.Fprintf(e.stdout, "Wrote %d files in %s:\n", len(v.Files), abs)
	for _, p := range v.Files {
		fmt.Fprintf(e.stdout, "  %s\n", p)
	}
	_, err = fmt.Fprintf(e.stdout, "\nFor pgdrctl as an admin:\n  export PGDR_CA=%s PGDR_CERT=%s PGDR_KEY=%s\n",
		filepath.Join(abs, "ca.crt"), filepath.Join(abs, "admin.crt"), filepath.Join(abs, "admin.key"))
	return err
}

// certNames splits a comma-separated list of names that become file names
// in the directory: each must be a plain, new name, so that no certificate
// silently replaces another (an agent named "ca" would replace the CA).
func certNames(flagName, list string, seen map[string]string) ([]string, error) {
	var out []string
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if strings.ContainsAny(n, `/\`) || strings.HasPrefix(n, ".") {
			return nil, usagef("%s: %q cannot be a file name", flagName, n)
		}
		if prev, dup := seen[n]; dup {
			return nil, usagef("%s: %q is already used by %s", flagName, n, prev)
		}
		seen[n] = flagName
		out = append(out, n)
	}
	return out, nil
}
