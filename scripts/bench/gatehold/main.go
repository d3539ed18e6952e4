// Command gatehold is the commit gate of scripts/bench/commitgate.sh: it
// runs agent/commitgate against --dsn on the agent's own lease type,
// granted once with a TTL of --ttl (a stand-in for a coordinator that
// renews it), so that every commit pays the gate's round trip, until
// interrupted. It makes the server's synchronous_standby_names name the
// gate (the daemon's Settle) and prints "ready" once connected.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/pgdr/pgdr/agent/commitgate"
	"github.com/pgdr/pgdr/agent/lease"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

func main() {
	dsn := flag.String("dsn", "", "the local server (libpq key=value)")
	ttl := flag.Duration("ttl", time.Hour, "how long the lease stays granted")
	flag.Parse()
	if *dsn == "" {
		fmt.Fprintln(os.Stderr, "gatehold: --dsn is required")
		os.Exit(2)
	}
	now := time.Now()
	l := lease.NewLease(now, *ttl, time.Second)
	l.Answer("bench", 1, now, &pgdrv1.RenewLeaseResponse{Granted: true, Epoch: 1})
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	g := commitgate.New(commitgate.Config{DSN: *dsn, Settle: true}, lease.NewHolder(l), log)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		for ctx.Err() == nil && !g.Stats().Connected {
			time.Sleep(20 * time.Millisecond)
		}
		fmt.Println("ready")
	}()
	g.Run(ctx)
}
