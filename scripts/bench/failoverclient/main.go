// Command failoverclient is the write probe of scripts/bench/failover.sh.
//
// It keeps one connection per node (opened again after any error, with a
// short connect timeout) and tries an INSERT on every node every --interval.
// A write is acknowledged when its COMMIT returned; the wall-clock time of
// every acknowledged write is kept per node. A replica answers "read-only
// transaction" at once; a dead node refuses or times out the connection.
//
// Once the first node has taken a write it prints "ready <node>" on stdout
// (the script then kills or switches over). It ends when a node other than
// that first writer has taken --settle acknowledged writes in a row, or after
// --timeout, and prints one JSON object:
//
//	old          the first writer
//	last_old_ns  its last acknowledged write before the first one elsewhere
//	new          the first other node that took a write
//	first_new_ns that write's acknowledgement time
//	window_s     first_new_ns - last_old_ns: the write-unavailability window
//	old_after_new  writes the old node acknowledged after the new one's first
//	               (a second writer: should be 0)
//	error        set when no other node took a write within --timeout
//
// With --proxy host:port (HAProxy in front of the nodes) it also writes
// through the proxy, on one connection opened again after any error, and
// tells which node took each write by the server's cluster_name (the lab
// sets it to the node's name). It then ends only once the proxy too has
// sent --settle writes in a row to a node other than the first writer, and
// adds:
//
//	proxy_new          the first other node a write through the proxy reached
//	proxy_last_old_ns  the last write through the proxy on the first writer
//	proxy_first_new_ns the first write through the proxy on another node
//	proxy_window_s     proxy_first_new_ns - proxy_last_old_ns
//	proxy_error        set when the proxy never reached another node
//
// Times are Unix nanoseconds from the wall clock, comparable with bash's
// $EPOCHREALTIME.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

type event struct {
	node  string
	at    int64
	proxy bool // written through --proxy; node is the server's cluster_name
}

func main() {
	nodes := flag.String("nodes", "", "comma-separated name=host:port list")
	user := flag.String("user", "postgres", "database user")
	password := flag.String("password", "", "password (optional)")
	interval := flag.Duration("interval", 20*time.Millisecond, "time between two attempts on a node")
	connTimeout := flag.Duration("connect-timeout", 200*time.Millisecond, "connect timeout")
	stmtTimeout := flag.Duration("statement-timeout", 500*time.Millisecond, "bound of one INSERT (client side)")
	timeout := flag.Duration("timeout", 120*time.Second, "give up after this long")
	settle := flag.Int("settle", 5, "acknowledged writes in a row on the new node that end the run")
	proxy := flag.String("proxy", "", "host:port of a proxy in front of the nodes (HAProxy) to write through as well")
	flag.Parse()

	type nodeAddr struct{ name, addr string }
	var list []nodeAddr
	for _, p := range strings.Split(*nodes, ",") {
		name, addr, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok || name == "" || addr == "" {
			fmt.Fprintf(os.Stderr, "failoverclient: bad --nodes entry %q (want name=host:port)\n", p)
			os.Exit(2)
		}
		list = append(list, nodeAddr{name, addr})
	}
	if len(list) < 2 {
		fmt.Fprintln(os.Stderr, "failoverclient: --nodes needs at least two nodes")
		os.Exit(2)
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	events := make(chan event, 1024)
	var wg sync.WaitGroup
	writer := func(name, addr string, viaProxy bool) {
		defer wg.Done()
		host, port, _ := strings.Cut(addr, ":")
		dsn := fmt.Sprintf("host=%s port=%s user=%s dbname=postgres sslmode=disable application_name=failoverclient", host, port, *user)
		if *password != "" {
			dsn += " password=" + *password
		}
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			fmt.Fprintln(os.Stderr, "failoverclient:", err)
			os.Exit(2)
		}
		cfg.ConnectTimeout = *connTimeout
		cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
		var conn *pgx.Conn
		created := false
		tick := time.NewTicker(*interval)
		defer tick.Stop()
		for ctx.Err() == nil {
			if conn == nil {
				cctx, ccancel := context.WithTimeout(ctx, *connTimeout)
				conn, err = pgx.ConnectConfig(cctx, cfg)
				ccancel()
				if err != nil {
					conn = nil
				}
			}
			if conn != nil {
				sctx, scancel := context.WithTimeout(ctx, *stmtTimeout)
				if !created {
					_, err = conn.Exec(sctx, "CREATE TABLE IF NOT EXISTS bench_failover (id bigserial PRIMARY KEY, node text, at timestamptz DEFAULT now())")
					if err == nil {
						created = true
					}
				}
				took := name
				if created && viaProxy {
					// The node behind the proxy names itself.
					err = conn.QueryRow(sctx, "INSERT INTO bench_failover (node) VALUES (current_setting('cluster_name')) RETURNING node").Scan(&took)
				} else if created {
					_, err = conn.Exec(sctx, "INSERT INTO bench_failover (node) VALUES ('"+name+"')")
				}
				scancel()
				if err == nil {
					events <- event{took, time.Now().UnixNano(), viaProxy}
				} else if !strings.Contains(err.Error(), "read-only") && !strings.Contains(err.Error(), "does not exist") {
					// Anything but "this is a replica": drop the connection.
					conn.Close(context.Background())
					conn = nil
				} else if strings.Contains(err.Error(), "does not exist") {
					created = false
				}
			}
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
		}
		if conn != nil {
			conn.Close(context.Background())
		}
	}
	for _, n := range list {
		wg.Add(1)
		go writer(n.name, n.addr, false)
	}
	if *proxy != "" {
		wg.Add(1)
		go writer("proxy", *proxy, true)
	}
	go func() { wg.Wait(); close(events) }()

	out := map[string]any{}
	var old, newNode string
	var lastOld, firstNew int64
	inRow, oldAfterNew, total := 0, 0, 0
	done := false
	var pLastOld, pFirstNew int64
	pNew, pInRow, pTotal := "", 0, 0
	proxyDone := *proxy == ""
	for ev := range events {
		if done {
			continue
		}
		if ev.proxy {
			pTotal++
			switch {
			case old == "" || pNew != "":
				if ev.node == pNew {
					pInRow++
				} else {
					pInRow = 0
				}
			case ev.node == old:
				pLastOld = ev.at
			default:
				pNew, pFirstNew, pInRow = ev.node, ev.at, 1
			}
			proxyDone = proxyDone || pInRow >= *settle
			if newNode != "" && inRow >= *settle && proxyDone {
				done = true
				cancel()
			}
			continue
		}
		total++
		switch {
		case old == "":
			old, lastOld = ev.node, ev.at
			fmt.Printf("ready %s\n", old)
			os.Stdout.Sync()
		case ev.node == old:
			if newNode == "" {
				lastOld = ev.at
			} else {
				oldAfterNew++
				inRow = 0
			}
		case newNode == "":
			newNode, firstNew, inRow = ev.node, ev.at, 1
		case ev.node == newNode:
			inRow++
		default:
			// a third node also took writes
			out["third_writer"] = ev.node
		}
		if newNode != "" && inRow >= *settle && proxyDone {
			done = true
			cancel()
		}
	}
	if *proxy != "" {
		out["proxy_writes"] = pTotal
		out["proxy_last_old_ns"] = pLastOld
		if pNew != "" {
			out["proxy_new"] = pNew
			out["proxy_first_new_ns"] = pFirstNew
			out["proxy_window_s"] = float64(pFirstNew-pLastOld) / 1e9
		} else {
			out["proxy_error"] = fmt.Sprintf("no write through %s reached a node other than %s within %s", *proxy, old, *timeout)
		}
	}
	out["old"] = old
	out["last_old_ns"] = lastOld
	out["writes"] = total
	out["old_after_new"] = oldAfterNew
	if newNode != "" {
		out["new"] = newNode
		out["first_new_ns"] = firstNew
		out["window_s"] = float64(firstNew-lastOld) / 1e9
	}
	if !done {
		if old == "" {
			out["error"] = "no node took a write"
		} else {
			out["error"] = fmt.Sprintf("no node other than %s took %d writes in a row within %s", old, *settle, *timeout)
		}
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}
