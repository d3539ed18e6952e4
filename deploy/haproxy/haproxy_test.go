// Package haproxy holds the example HAProxy configuration; its test checks
// the example.
package haproxy

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
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
	if !strings.Contains(strings.Join(sections["backend primary"], "\n"), "inter 1s") {
		t.Error("backend primary: want checks every second (inter 1s)")
	}

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
