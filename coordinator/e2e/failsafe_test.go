package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/ctl"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/faultproxy"
)

// labLeaseTTL is the lab's failover.lease_ttl (the default).
const labLeaseTTL = 5 * time.Second

// writeLog writes on nodes every 200 ms and records when each write
// started and whether it succeeded, and when each successful one returned.
type writeLog struct {
	l     *lab
	nodes []string
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	ok    map[string][]time.Time // start of each successful write
	fail  map[string][]time.Time
	// okEnd: when each successful write returned. A write commits at some
	// moment between its start and its return (which may be 5 s apart on
	// a loaded machine), so "no write on the old primary after X" must
	// compare the return times.
	okEnd map[string][]time.Time
}

func startWriteLog(t *testing.T, l *lab, nodes ...string) *writeLog {
	if _, err := l.psql("pg-a1", "CREATE TABLE IF NOT EXISTS failsafe_writes (node text, at timestamptz DEFAULT now())"); err != nil {
		t.Fatal(err)
	}
	w := &writeLog{l: l, nodes: nodes, stop: make(chan struct{}), done: make(chan struct{}), ok: map[string][]time.Time{}, fail: map[string][]time.Time{}, okEnd: map[string][]time.Time{}}
	go func() {
		defer close(w.done)
		tk := time.NewTicker(200 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tk.C:
			}
			var wg sync.WaitGroup
			for _, n := range w.nodes {
				wg.Add(1)
				go func() {
					defer wg.Done()
					at := time.Now()
					// A loaded machine may take over a second to connect
					// and commit: what matters is that the write is taken.
					ok := w.l.tryWriteWithin(n, "failsafe_writes", 5*time.Second)
					w.mu.Lock()
					if ok {
						w.ok[n] = append(w.ok[n], at)
						w.okEnd[n] = append(w.okEnd[n], time.Now())
					} else {
						w.fail[n] = append(w.fail[n], at)
					}
					w.mu.Unlock()
				}()
			}
			wg.Wait()
		}
	}()
	t.Cleanup(w.finish)
	return w
}

func (w *writeLog) finish() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// between returns the successes and failures of node in [from, to).
func (w *writeLog) between(node string, from, to time.Time) (ok, fail []time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	in := func(ts []time.Time) (out []time.Time) {
		for _, t := range ts {
			if !t.Before(from) && t.Before(to) {
				out = append(out, t)
			}
		}
		return out
	}
	return in(w.ok[node]), in(w.fail[node])
}

// lastReturned is when node's latest successful write returned (zero if
// none succeeded).
func (w *writeLog) lastReturned(node string) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	var last time.Time
	for _, t := range w.okEnd[node] {
		if t.After(last) {
			last = t
		}
	}
	return last
}

func (l *lab) history(t *testing.T) []ctl.EventJSON {
	t.Helper()
	h, err := l.tryHistory()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// tryHistory returns the main cluster's history (`pgdrctl history --json`).
func (l *lab) tryHistory() ([]ctl.EventJSON, error) {
	out, err := l.ctl("history", "--cluster", "main", "--json")
	if err != nil {
		return nil, fmt.Errorf("history: %w\n%s", err, out)
	}
	var h ctl.HistoryJSON
	if err := json.Unmarshal(out, &h); err != nil {
		return nil, fmt.Errorf("history --json: %w\n%s", err, out)
	}
	return h.Events, nil
}

// waitLeaseResumed waits until pg-a1 holds a live lease at epoch and is a
// healthy primary.
func (l *lab) waitLeaseResumed(t *testing.T, epoch uint64, timeout time.Duration) {
	t.Helper()
	testutil.WaitFor(t, timeout, "the lease of pg-a1 resumes at the same epoch", func() (bool, error) {
		c, err := l.clusterNow()
		if err != nil {
			return false, err
		}
		if c.Primary != "pg-a1" || c.Epoch != epoch {
			return false, fmt.Errorf("primary %s epoch %d (want pg-a1 at %d); failover: %s", c.Primary, c.Epoch, epoch, c.Failover)
		}
		exp, err := time.Parse(time.RFC3339Nano, c.LeaseExpiresAt)
		if err != nil || !exp.After(time.Now()) {
			return false, fmt.Errorf("lease_expires_at %q", c.LeaseExpiresAt)
		}
		m, _ := labMember(c, "pg-a1")
		if m.Role != "primary" || !m.Healthy {
			return false, fmt.Errorf("pg-a1 role %s healthy %v %v", m.Role, m.Healthy, m.Problems)
		}
		return true, nil
	})
}

func (l *lab) primaryCode(node string) int {
	code, _ := l.primaryProbe(node)
	return code
}

// primaryProbe answers node's /primary status and body (the body says why
// a 503 is a 503).
func (l *lab) primaryProbe(node string) (int, string) {
	cl := http.Client{Timeout: 3 * time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d/primary", l.healthPort(node)))
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8192))
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// agentLogTail is the end of node's agent log, for a failure message (the
// lab's full log tails come after the coordinators' and may be cut).
func (l *lab) agentLogTail(node string, n int) string {
	b, err := os.ReadFile(filepath.Join(l.dir, node, "agent.log"))
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// editAgentYAML rewrites a node's agent.yaml.
func (l *lab) editAgentYAML(t *testing.T, node string, edit func(string) string) {
	t.Helper()
	p := filepath.Join(l.dir, node, "agent.yaml")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	out := edit(string(b))
	if out == string(b) {
		t.Fatalf("%s: the edit changed nothing", p)
	}
	if err := os.WriteFile(p, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
}

// routeCoordinatorsThroughProxies points the agents of nodes (default
// pg-a1) at proxies to the three coordinators (asking who leads and
// dialing the leader).
func routeCoordinatorsThroughProxies(t *testing.T, l *lab, nodes ...string) []*faultproxy.Proxy {
	if len(nodes) == 0 {
		nodes = []string{"pg-a1"}
	}
	var ps []*faultproxy.Proxy
	var addrs, leaders []string
	for i := 1; i <= 3; i++ {
		p := faultproxy.Start(t, "", l.addr(i))
		ps = append(ps, p)
		addrs = append(addrs, fmt.Sprintf("%q", p.Addr))
		leaders = append(leaders, fmt.Sprintf("c%d: %q", i, p.Addr))
	}
	for _, n := range nodes {
		l.editAgentYAML(t, n, func(s string) string {
			return regexp.MustCompile(`(?m)^  addresses: \[.*\]$`).ReplaceAllString(s,
				"  addresses: ["+strings.Join(addrs, ", ")+"]\n  leader_addresses: {"+strings.Join(leaders, ", ")+"}")
		})
	}
	return ps
}

// failsafeLabStart starts the lab and returns pg-a1's epoch.
func failsafeLabStart(t *testing.T) (*lab, uint64) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	l := startLab(t)
	epoch := l.wantPrimary(t, "pg-a1")
	l.waitFailsafeReady(t, "pg-a1", 2)
	return l, epoch
}

// waitFailsafeReady waits until node's agent knows members other members
// and has every one's failsafe key from a granted renewal (its /metrics):
// the lab is up once the last replica registered, possibly after the
// primary's latest renewal, and until the next one that replica's
// acknowledgements cannot count.
func (l *lab) waitFailsafeReady(t *testing.T, node string, members int) {
	t.Helper()
	want := []string{fmt.Sprintf("pgdr_agent_failsafe_members{cluster=%q,node=%q} %d", "main", node, members),
		fmt.Sprintf("pgdr_agent_failsafe_unverifiable_members{cluster=%q,node=%q} 0", "main", node)}
	testutil.WaitFor(t, 60*time.Second, node+"'s failsafe knows every member's key", func() (bool, error) {
		cl := http.Client{Timeout: 3 * time.Second}
		resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", l.healthPort(node)))
		if err != nil {
			return false, nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, w := range want {
			if !strings.Contains(string(b), w) {
				return false, nil
			}
		}
		return true, nil
	})
}

// TestFailsafeAllCoordinatorsStopped: all three coordinators stopped, the
// primary keeps taking writes for 3 × lease_ttl and more (failsafe: both
// replicas acknowledge its pings); when they return, the lease resumes at
// the same epoch without a failover.
func TestFailsafeAllCoordinatorsStopped(t *testing.T) {
	l, epoch := failsafeLabStart(t)
	w := startWriteLog(t, l, "pg-a1")
	testutil.WaitFor(t, 30*time.Second, "writes on pg-a1", func() (bool, error) {
		ok, _ := w.between("pg-a1", time.Time{}, time.Now())
		return len(ok) > 0, nil
	})
	stopped := time.Now()
	for _, c := range []string{"c1", "c2", "c3"} {
		stopPid(t, filepath.Join(l.dir, c, "coordinator.pid"))
	}
	t.Logf("coordinators stopped in %s", time.Since(stopped).Round(time.Millisecond))
	hold := 3*labLeaseTTL + 3*time.Second
	for time.Since(stopped) < hold {
		if code, body := l.primaryProbe("pg-a1"); code != 200 {
			t.Fatalf("%s after the coordinators stopped: /primary on pg-a1 = %d: %s\npg-a1's agent log:\n%s",
				time.Since(stopped).Round(time.Millisecond), code, body, l.agentLogTail("pg-a1", 40))
		}
		time.Sleep(500 * time.Millisecond)
	}
	ok, fail := w.between("pg-a1", stopped, time.Now())
	t.Logf("without coordinators for %s: %d writes ok, %d failed", hold, len(ok), len(fail))
	if len(fail) > 0 {
		t.Fatalf("writes failed on pg-a1 without coordinators at %v", fail)
	}
	if len(ok) < int(hold/(400*time.Millisecond)) {
		t.Fatalf("only %d writes in %s", len(ok), hold)
	}
	for _, c := range []string{"c1", "c2", "c3"} {
		if out, err := l.labScript(t.Context(), "start-coordinator", c); err != nil {
			t.Fatalf("start-coordinator %s: %v\n%s", c, err, out)
		}
	}
	back := time.Now()
	l.waitLeaseResumed(t, epoch, 60*time.Second)
	t.Logf("lease resumed %s after the coordinators were started again", time.Since(back).Round(time.Millisecond))
	if _, fail := w.between("pg-a1", stopped, time.Now()); len(fail) > 0 {
		t.Fatalf("writes failed on pg-a1: %v", fail)
	}
	for _, ev := range l.history(t) {
		if ev.Kind == "failover-intent" {
			t.Fatalf("a failover was started: %+v", ev)
		}
	}
}

// TestFailsafePrimaryCutFromCoordinators: pg-a1 reaches every replica but
// no coordinator. It keeps taking writes (failsafe), no replica is
// promoted, and the refusal is reported; healed, its lease resumes.
func TestFailsafePrimaryCutFromCoordinators(t *testing.T) {
	l, epoch := failsafeLabStart(t)
	proxies := routeCoordinatorsThroughProxies(t, l)
	l.restartAgent(t, "pg-a1")
	l.waitLeaseResumed(t, epoch, 60*time.Second)
	checker := startWriteChecker(t, l, "pg-a1", "pg-a2", "pg-b1")
	w := startWriteLog(t, l, "pg-a1")
	time.Sleep(2 * time.Second)

	cut := time.Now()
	for _, p := range proxies {
		p.Cut(faultproxy.Blackhole)
	}
	hold := 3*labLeaseTTL + 5*time.Second
	seen := l.holdNoFailover(t, hold, epoch, func(el time.Duration) {
		if code, body := l.primaryProbe("pg-a1"); code != 200 {
			t.Fatalf("%s after the cut: /primary on pg-a1 = %d: %s\npg-a1's agent log:\n%s",
				el.Round(time.Millisecond), code, body, l.agentLogTail("pg-a1", 40))
		}
	})
	refusal := judgementWith(seen, "failsafe")
	ok, fail := w.between("pg-a1", cut, time.Now())
	t.Logf("cut off from the coordinators for %s: %d writes ok on pg-a1, %d failed; judgement: %s", hold, len(ok), len(fail), refusal)
	if len(fail) > 0 {
		t.Fatalf("writes failed on pg-a1 under failsafe at %v", fail)
	}
	if refusal == "" {
		t.Fatal("status never showed a failsafe failover judgement")
	}
	var refused []string
	for _, ev := range l.history(t) {
		if ev.Kind == "failover-intent" {
			t.Fatalf("a failover was started: %+v", ev)
		}
		if ev.Kind == "failover-refused" && strings.Contains(ev.Message, "failsafe") {
			refused = append(refused, ev.Message)
		}
	}
	if len(refused) == 0 {
		t.Fatal("history has no failover-refused event naming failsafe")
	}
	t.Logf("history: failover-refused %q", refused)

	healed := time.Now()
	for _, p := range proxies {
		p.Heal()
	}
	l.waitLeaseResumed(t, epoch, 60*time.Second)
	t.Logf("lease resumed %s after the heal", time.Since(healed).Round(time.Millisecond))
	if _, fail := w.between("pg-a1", cut, time.Now()); len(fail) > 0 {
		t.Fatalf("writes failed on pg-a1: %v", fail)
	}
	checker.finish(t)
}

// TestFailsafePrimaryIsolated: pg-a1 reaches neither the coordinators nor
// the replicas' agents (their advertised APIs go through proxies), while a
// client still reaches its PostgreSQL. It fences within the lease TTL, and
// only then is a replica promoted; healed, it rejoins as a replica.
func TestFailsafePrimaryIsolated(t *testing.T) {
	l, epoch := failsafeLabStart(t)
	proxies := routeCoordinatorsThroughProxies(t, l)
	for _, n := range []string{"pg-a2", "pg-b1"} {
		p := faultproxy.Start(t, "", fmt.Sprintf("127.0.0.1:%d", l.healthPort(n)))
		proxies = append(proxies, p)
		l.editAgentYAML(t, n, func(s string) string {
			return regexp.MustCompile(`(?m)^(  listen: .*)$`).ReplaceAllString(s, "$1\n  advertise: \""+p.Addr+"\"")
		})
		l.restartAgent(t, n)
	}
	l.restartAgent(t, "pg-a1")
	l.waitLeaseResumed(t, epoch, 60*time.Second)
	testutil.WaitFor(t, 60*time.Second, "the replicas healthy", func() (bool, error) {
		c, err := l.clusterNow()
		if err != nil {
			return false, err
		}
		for _, n := range []string{"pg-a2", "pg-b1"} {
			if m, _ := labMember(c, n); m.Role != "replica" || !m.Healthy {
				return false, fmt.Errorf("%s: %s healthy %v %v", n, m.Role, m.Healthy, m.Problems)
			}
		}
		return true, nil
	})
	checker := startWriteChecker(t, l, "pg-a1", "pg-a2", "pg-b1")
	w := startWriteLog(t, l, "pg-a1", "pg-a2", "pg-b1")
	time.Sleep(2 * time.Second)

	cut := time.Now()
	for _, p := range proxies {
		p.Cut(faultproxy.Blackhole)
	}
	var fenced time.Time
	testutil.WaitFor(t, 2*labLeaseTTL, "pg-a1 fences: /primary 503 and writes fail", func() (bool, error) {
		if code := l.primaryCode("pg-a1"); code == 200 {
			return false, fmt.Errorf("/primary still 200")
		}
		_, fail := w.between("pg-a1", cut, time.Now())
		if len(fail) == 0 {
			return false, fmt.Errorf("writes still succeed")
		}
		fenced = fail[0]
		return true, nil
	})
	// The old primary's writes count until they returned (conservative:
	// the commit may have happened at any moment before); the new
	// primary's from when they started.
	lastA1 := cut
	if e := w.lastReturned("pg-a1"); e.After(lastA1) {
		lastA1 = e
	}
	t.Logf("pg-a1 fenced: last successful write returned %s after the cut, first failure %s after", lastA1.Sub(cut).Round(time.Millisecond), fenced.Sub(cut).Round(time.Millisecond))
	if lastA1.Sub(cut) >= labLeaseTTL {
		t.Fatalf("pg-a1 took writes %s after the cut (lease TTL %s)", lastA1.Sub(cut), labLeaseTTL)
	}

	var newPrimary string
	testutil.WaitFor(t, 90*time.Second, "a replica promoted", func() (bool, error) {
		c, err := l.clusterNow()
		if err != nil {
			return false, err
		}
		if c.Epoch <= epoch || c.Primary == "pg-a1" {
			return false, fmt.Errorf("primary %s epoch %d; failover: %s", c.Primary, c.Epoch, c.Failover)
		}
		ok, _ := w.between(c.Primary, cut, time.Now())
		if len(ok) == 0 {
			return false, fmt.Errorf("%s takes no writes yet", c.Primary)
		}
		newPrimary = c.Primary
		return true, nil
	})
	okNew, _ := w.between(newPrimary, cut, time.Now())
	if e := w.lastReturned("pg-a1"); e.After(lastA1) {
		lastA1 = e // a write on pg-a1 that returned after the wait above
		if lastA1.Sub(cut) >= labLeaseTTL {
			t.Fatalf("a write on pg-a1 returned successfully %s after the cut (lease TTL %s)", lastA1.Sub(cut), labLeaseTTL)
		}
	}
	t.Logf("%s promoted: first write started %s after the cut", newPrimary, okNew[0].Sub(cut).Round(time.Millisecond))
	if !okNew[0].After(lastA1) {
		t.Fatalf("%s took a write started at %s, before pg-a1's last successful write returned at %s", newPrimary, okNew[0], lastA1)
	}

	healed := time.Now()
	for _, p := range proxies {
		p.Heal()
	}
	l.waitHealthyReplica(t, "pg-a1", 150*time.Second)
	t.Logf("pg-a1 rejoined %s after the heal", time.Since(healed).Round(time.Millisecond))
	for _, ev := range l.history(t) {
		if at, err := time.Parse(time.RFC3339Nano, ev.Time); err == nil && at.After(cut.Add(-time.Second)) {
			t.Logf("history (%s, cut at %s): %s %s: %s", ev.Time, cut.UTC().Format("15:04:05.000"), ev.Kind, ev.Node, ev.Message)
		}
	}
	checker.finish(t)
}

// TestFailsafeMemberOutsideGossip: pg-b1's agent runs without gossip, so
// the primary never hears of it there; only Raft records it. pg-a1 and
// pg-a2 are then cut off from the coordinators together. pg-a1 must still
// ask pg-b1 (it learns it from its lease grants): pg-b1 acknowledges, the
// coordinators (which see pg-b1 fresh, pg-a1's lease expired and pg-a2
// silent) hold back, and there is never a second primary. Were pg-b1
// left out of the primary's set, it would be promoted while pg-a1 served
// on pg-a2's acknowledgement alone.
func TestFailsafeMemberOutsideGossip(t *testing.T) {
	l, epoch := failsafeLabStart(t)
	l.editAgentYAML(t, "pg-b1", func(s string) string {
		return regexp.MustCompile(`(?m)^  (bind|join): .*\n`).ReplaceAllString(s, "")
	})
	l.restartAgent(t, "pg-b1")
	// The pool forgets pg-b1's old gossip identity before pg-a1 restarts
	// (a restarted agent keeps every member its pool still reports).
	testutil.WaitFor(t, 90*time.Second, "pg-b1 gone from gossip", func() (bool, error) {
		c, err := l.clusterNow()
		if err != nil {
			return false, nil
		}
		for _, m := range c.Members {
			if m.Name == "pg-b1" {
				return m.Gossip != "alive" && m.Gossip != "suspect" && m.LastReportAgeSeconds >= 0 && m.LastReportAgeSeconds < 3, nil
			}
		}
		return false, nil
	})
	proxies := routeCoordinatorsThroughProxies(t, l, "pg-a1", "pg-a2")
	l.restartAgent(t, "pg-a2")
	l.restartAgent(t, "pg-a1")
	l.waitLeaseResumed(t, epoch, 60*time.Second)
	checker := startWriteChecker(t, l, "pg-a1", "pg-a2", "pg-b1")
	w := startWriteLog(t, l, "pg-a1")
	time.Sleep(2 * time.Second)

	cut := time.Now()
	for _, p := range proxies {
		p.Cut(faultproxy.Blackhole)
	}
	hold := 3*labLeaseTTL + 5*time.Second
	judgement := judgementWith(l.holdNoFailover(t, hold, epoch, nil), "failsafe")
	ok, fail := w.between("pg-a1", cut, time.Now())
	t.Logf("pg-a1 and pg-a2 cut off from the coordinators for %s: %d writes ok on pg-a1, %d failed; judgement: %s", hold, len(ok), len(fail), judgement)
	if len(fail) > 0 {
		t.Fatalf("writes failed on pg-a1 under failsafe (pg-b1 did not acknowledge?) at %v", fail)
	}
	if judgement == "" {
		t.Fatal("status never showed a failsafe failover judgement (pg-b1's acknowledgement)")
	}
	if n := countEvents(l.history(t), "failover-intent", ""); n > 0 {
		t.Fatalf("%d failovers were started", n)
	}
	for _, p := range proxies {
		p.Heal()
	}
	l.waitLeaseResumed(t, epoch, 60*time.Second)
	checker.finish(t)
}
