// Command pgdrctl is the operator's command line for pgdr's coordinators:
// cluster status, members, history, maintenance mode and coordinator
// membership. See 'pgdrctl help'.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/pgdr/pgdr/coordinator/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := ctl.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
