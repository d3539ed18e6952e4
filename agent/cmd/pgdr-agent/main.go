// Command pgdr-agent runs next to each PostgreSQL server: WAL archiving and
// fetching, base backups, restores and the agent daemon. See 'pgdr-agent help'.
//
// For performance work, PGDR_CPUPROFILE=FILE writes a CPU profile of the
// whole command to FILE (go tool pprof), and PGDR_MEMPROFILE=FILE a heap
// profile (allocations) at its end, and PGDR_TRACE=FILE an execution trace
// (go tool trace).
package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"

	"github.com/pgdr/pgdr/agent/cli"
)

func main() {
	os.Exit(run())
}

func run() int {
	// A profile that cannot be written is reported and skipped, never the
	// command's exit status: for wal-fetch an exit 1 would read as "not in
	// the archive" and could end recovery early.
	if path := os.Getenv("PGDR_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err != nil {
			fmt.Fprintf(os.Stderr, "PGDR_CPUPROFILE (not profiling): %v\n", err)
		} else if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(os.Stderr, "PGDR_CPUPROFILE (not profiling): %v\n", err)
			f.Close()
		} else {
			defer f.Close()
			defer pprof.StopCPUProfile()
		}
	}
	if path := os.Getenv("PGDR_TRACE"); path != "" {
		if f, err := os.Create(path); err != nil {
			fmt.Fprintf(os.Stderr, "PGDR_TRACE (not tracing): %v\n", err)
		} else if err := trace.Start(f); err != nil {
			fmt.Fprintf(os.Stderr, "PGDR_TRACE (not tracing): %v\n", err)
			f.Close()
		} else {
			defer f.Close()
			defer trace.Stop()
		}
	}
	if path := os.Getenv("PGDR_MEMPROFILE"); path != "" {
		runtime.MemProfileRate = 64 << 10
		defer func() {
			f, err := os.Create(path)
			if err != nil {
				fmt.Fprintf(os.Stderr, "PGDR_MEMPROFILE: %v\n", err)
				return
			}
			defer f.Close()
			if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
				fmt.Fprintf(os.Stderr, "PGDR_MEMPROFILE: %v\n", err)
			}
		}()
	}
	return cli.Main(os.Args[1:], os.Stdout, os.Stderr)
}
