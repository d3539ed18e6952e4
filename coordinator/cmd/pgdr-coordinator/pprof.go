package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// pprofEnv names the environment variable that, set to HOST:PORT, serves
// Go's runtime profiles (net/http/pprof, under /debug/pprof/) on a listener
// of their own, for performance work: go tool pprof
// http://HOST:PORT/debug/pprof/profile?seconds=30 profiles the CPU for 30 s.
// No TLS and no authentication: bind it to a loopback address. Unset (the
// default) nothing listens.
const pprofEnv = "PGDR_PPROF_LISTEN"

// startPprof serves the profiles on addr until ctx ends. An address that
// cannot be bound is an error (the operator asked for it).
func startPprof(ctx context.Context, addr string, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s %q: %w", pprofEnv, addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("pprof listener stopped", "address", addr, "err", err)
		}
	}()
	log.Warn("serving runtime profiles without TLS or authentication", "address", ln.Addr().String(), "env", pprofEnv)
	return nil
}
