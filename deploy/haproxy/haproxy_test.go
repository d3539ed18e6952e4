// Package haproxy holds the example HAProxy configuration; its test checks
// the example.
package haproxy

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The lab's port map (scripts/lab.sh, default PGDR_LAB_PORT_BASE 26000):
// node j: PostgreSQL base+10j+1, agent HTTP base+10j+2.
var labNodes = map[string]int{"pg-a1": 4, "pg-a2": 5, "pg-b1": 6}

const labBase = 26000

// TestExample checks what routing depends on: each backend's probe, the
// session cut on mark-down, every lab node checked on its agent's port;
// and, with haproxy installed, that haproxy accepts the file.
func TestExample(t *testing.T) {
	b, err := os.ReadFile("haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string][]string{}
	var cur string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.Index(line, "#"); i >= 0 {
			line = line[:i]
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			cur = strings.Join(strings.Fields(line), " ")
			continue
		}
		sections[cur] = append(sections[cur], strings.Join(strings.Fields(line), " "))
	}
	for backend, probe := range map[string]string{"backend primary": "option httpchk GET /primary", "backend replicas": "option httpchk GET /replica?lag="} {
		lines, ok := sections[backend]
		if !ok {
			t.Fatalf("no %q section", backend)
		}
		all := strings.Join(lines, "\n")
		for _, want := range []string{probe, "http-check expect status 200", "on-marked-down shutdown-sessions"} {
			if !strings.Contains(all, want) {
				t.Errorf("%s lacks %q", backend, want)
			}
		}
		servers := 0
		for _, l := range lines {
			f := strings.Fields(l)
			if f[0] != "server" {
				continue
			}
			servers++
			j, ok := labNodes[f[1]]
			if !ok {
				t.Errorf("%s: unknown lab node %q", backend, f[1])
				continue
			}
			want := fmt.Sprintf("server %s 127.0.0.1:%d check port %d", f[1], labBase+10*j+1, labBase+10*j+2)
			if l != want {
				t.Errorf("%s: %q, want %q", backend, l, want)
			}
		}
		if servers != len(labNodes) {
			t.Errorf("%s: %d servers, want %d", backend, servers, len(labNodes))
		}
	}
	checkPrimaryTiming(t, sections["backend primary"])

	hp, err := exec.LookPath("haproxy")
	if err != nil {
		hp, err = exec.LookPath("/usr/sbin/haproxy")
	}
	if err != nil {
		if testing.Short() {
			t.Skip("haproxy is not installed: syntax not checked (haproxy -c -f haproxy.cfg)")
		}
		t.Fatal("haproxy is not installed (scripts/ci-deps.sh installs it): the example's syntax cannot be checked")
	}
	out, err := exec.Command(hp, "-c", "-f", "haproxy.cfg").CombinedOutput()
	if err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	t.Logf("haproxy -c: %s", strings.TrimSpace(string(out)))
}

// Routing timing of the primary backend (issue 20 item 5): what HAProxy
// adds to a failover is the time from the new primary's /primary turning
// 200 to HAProxy marking it up, at most downinter (it is down until then)
// plus one check, and rise checks. An agent restart on the primary (an
// upgrade) leaves /primary unanswered for a second or two while
// PostgreSQL keeps serving: it must not take the primary out of routing
// (fall-1 further checks, fastinter apart, after the first failure).
const (
	maxPickUp       = 250 * time.Millisecond // downinter: the new primary is checked this often
	minAgentRestart = 2 * time.Second        // (fall-1) x fastinter: an agent restart tolerated
)

// checkPrimaryTiming checks the primary backend's default-server line.
func checkPrimaryTiming(t *testing.T, lines []string) {
	t.Helper()
	opts := map[string]string{}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != "default-server" {
			continue
		}
		for i := 1; i+1 < len(f); i += 2 {
			opts[f[i]] = f[i+1]
		}
	}
	dur := func(k string) time.Duration {
		v, ok := opts[k]
		if !ok {
			t.Errorf("backend primary: default-server lacks %s", k)
			return 0
		}
		if n, err := strconv.Atoi(v); err == nil { // HAProxy's unit is ms
			return time.Duration(n) * time.Millisecond
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Errorf("backend primary: %s %q: %v", k, v, err)
		}
		return d
	}
	count := func(k string) int {
		n, err := strconv.Atoi(opts[k])
		if err != nil {
			t.Errorf("backend primary: %s %q: %v", k, opts[k], err)
		}
		return n
	}
	if d := dur("downinter"); d > maxPickUp || d <= 0 {
		t.Errorf("backend primary: downinter %s: a new primary must be checked at least every %s", d, maxPickUp)
	}
	if r := count("rise"); r != 1 {
		t.Errorf("backend primary: rise %d: /primary is authoritative, one good check must bring a server up", r)
	}
	if d := dur("inter"); d > time.Second || d <= 0 {
		t.Errorf("backend primary: inter %s, want at most 1s", d)
	}
	if tol := time.Duration(count("fall")-1) * dur("fastinter"); tol < minAgentRestart {
		t.Errorf("backend primary: (fall-1) x fastinter = %s: an agent restart of %s (an upgrade) would take the primary out", tol, minAgentRestart)
	}
	// PostgreSQL itself refusing connections (the node died) takes the
	// server out at once, without waiting for fall checks.
	if opts["observe"] != "layer4" || opts["on-error"] != "mark-down" {
		t.Errorf("backend primary: want observe layer4 and on-error mark-down, have %v", opts)
	}
}
