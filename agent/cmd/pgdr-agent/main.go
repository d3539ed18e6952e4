// Command pgdr-agent runs next to each PostgreSQL server: WAL archiving and
// fetching, base backups, restores and the agent daemon. See 'pgdr-agent help'.
package main

import (
	"os"

	"github.com/pgdr/pgdr/agent/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
