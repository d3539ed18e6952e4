package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// webhookNote is what a coordinator posts (coordinator/notify.Notification).
type webhookNote struct {
	ID          string            `json:"id"`
	Cluster     string            `json:"cluster"`
	Kind        string            `json:"kind"`
	Node        string            `json:"node"`
	Epoch       uint64            `json:"epoch"`
	Message     string            `json:"message"`
	Details     map[string]string `json:"details"`
	Time        time.Time         `json:"time"`
	Coordinator string            `json:"coordinator"`
}

// webhookSink is the test's webhook receiver: it checks every signature
// and keeps every notification.
type webhookSink struct {
	secret []byte
	mu     sync.Mutex
	notes  []webhookNote
	bad    []string
}

func (s *webhookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	m := hmac.New(sha256.New, s.secret)
	m.Write(body)
	want := "sha256=" + hex.EncodeToString(m.Sum(nil))
	s.mu.Lock()
	defer s.mu.Unlock()
	var n webhookNote
	switch {
	case r.Method != http.MethodPost:
		s.bad = append(s.bad, "method "+r.Method)
	case !hmac.Equal([]byte(r.Header.Get("X-Pgdr-Signature")), []byte(want)):
		s.bad = append(s.bad, fmt.Sprintf("bad signature %q on %s", r.Header.Get("X-Pgdr-Signature"), body))
	case json.Unmarshal(body, &n) != nil:
		s.bad = append(s.bad, "not JSON: "+string(body))
	default:
		s.notes = append(s.notes, n)
	}
}

func (s *webhookSink) find(kind string) []webhookNote {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []webhookNote
	for _, n := range s.notes {
		if n.Kind == kind {
			out = append(out, n)
		}
	}
	return out
}

func (s *webhookSink) kinds() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, n := range s.notes {
		out = append(out, n.Kind+"@"+n.Node)
	}
	return out
}

// roleLog reads the lines the role-change hook wrote for node:
// "role previous epoch cluster".
func roleLog(dir, node string) []string {
	b, err := os.ReadFile(filepath.Join(dir, "roles-"+node+".log"))
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n")
}

// TestNotifyFailover: with webhooks and role-change hooks configured in
// the lab, kill -9 the primary's postmaster and agent. The webhook (signed)
// receives failover-intent and failover-result once each, from the leader,
// naming the cluster and the epochs; the promoted node's hook runs with
// PGDR_ROLE=primary; when the old node's agent returns it rejoins, which
// is notified too, and its hook reports it a replica.
func TestNotifyFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	sink := &webhookSink{secret: []byte("lab-webhook-secret")}
	srv := httptest.NewServer(sink)
	defer srv.Close()
	hookDir := pgtest.OwnedDir(t, "pgdr-role-hooks-")
	script := filepath.Join(hookDir, "on-role-change.sh")
	if err := os.WriteFile(script, []byte(`#!/bin/sh
echo "$PGDR_ROLE ${PGDR_PREVIOUS_ROLE:--} $PGDR_EPOCH $PGDR_CLUSTER" >>`+hookDir+`/roles-"$PGDR_NODE".log
echo "role-change hook: $PGDR_NODE is $PGDR_ROLE"
`), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PGDR_LAB_WEBHOOK_URL", srv.URL+"/pgdr")
	t.Setenv("PGDR_LAB_WEBHOOK_SECRET", string(sink.secret))
	t.Setenv("PGDR_LAB_ROLE_HOOK", script)
	l := startLab(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("notifications received: %v; rejected: %v", sink.kinds(), sink.bad)
			for _, n := range []string{"pg-a1", "pg-a2", "pg-b1"} {
				t.Logf("role hook on %s: %q", n, roleLog(hookDir, n))
			}
		}
	})

	// Every agent announced its role on its first report.
	for n, role := range map[string]string{"pg-a1": "primary", "pg-a2": "replica", "pg-b1": "replica"} {
		testutil.WaitFor(t, 30*time.Second, n+"'s hook ran", func() (bool, error) {
			lines := roleLog(hookDir, n)
			return len(lines) > 0 && strings.HasPrefix(lines[0], role+" - "), fmt.Errorf("%q", lines)
		})
	}

	epoch0 := l.wantPrimary(t, "pg-a1")
	killed := l.killNode(t, "pg-a1")
	newPrimary, _ := l.waitNewPrimary(t, "pg-a1", epoch0, 90*time.Second)
	t.Logf("%s promoted %.1fs after kill -9 of pg-a1", newPrimary, time.Since(killed).Seconds())

	var result webhookNote
	testutil.WaitFor(t, 60*time.Second, "failover-result notified", func() (bool, error) {
		rs := sink.find("failover-result")
		if len(rs) == 0 {
			return false, fmt.Errorf("received %v", sink.kinds())
		}
		result = rs[len(rs)-1]
		return true, nil
	})
	t.Logf("failover-result notification %.1fs after the kill: %+v", time.Since(killed).Seconds(), result)
	intents := sink.find("failover-intent")
	if len(intents) != 1 {
		t.Fatalf("%d failover-intent notifications, want exactly 1 (only the leader sends): %+v", len(intents), intents)
	}
	in := intents[0]
	if in.Cluster != "main" || in.Node != newPrimary || in.Epoch != epoch0 || in.Details["old_primary"] != "pg-a1" ||
		!strings.Contains(in.Message, "promote "+newPrimary) || in.Time.IsZero() || in.ID == "" {
		t.Errorf("failover-intent: %+v (want cluster main, node %s, epoch %d, old_primary pg-a1)", in, newPrimary, epoch0)
	}
	if result.Cluster != "main" || result.Node != newPrimary || result.Epoch != epoch0+1 || !strings.HasPrefix(result.Message, "done: ") {
		t.Errorf("failover-result: %+v (want cluster main, node %s, epoch %d, done)", result, newPrimary, epoch0+1)
	}
	if in.Coordinator == "" || in.Coordinator != result.Coordinator {
		t.Errorf("intent from %q, result from %q: want the same leader", in.Coordinator, result.Coordinator)
	}
	if !in.Time.Before(result.Time) && !in.Time.Equal(result.Time) {
		t.Errorf("intent at %s after the result at %s", in.Time, result.Time)
	}

	// The promoted node's hook announced the new role, with the new epoch.
	want := fmt.Sprintf("primary replica %d main", epoch0+1)
	testutil.WaitFor(t, 30*time.Second, newPrimary+"'s hook ran with PGDR_ROLE=primary", func() (bool, error) {
		lines := roleLog(hookDir, newPrimary)
		return len(lines) > 0 && lines[len(lines)-1] == want, fmt.Errorf("%q, want last %q", lines, want)
	})

	// The old node's agent returns: it is ordered to rejoin (notified),
	// and its hook reports it a replica.
	l.startAgent(t, "pg-a1")
	testutil.WaitFor(t, 120*time.Second, "pg-a1 rejoined, notified", func() (bool, error) {
		for _, n := range sink.find("rejoin") {
			if n.Node == "pg-a1" && n.Details["result"] == "ok" && n.Epoch == epoch0+1 {
				return true, nil
			}
		}
		return false, fmt.Errorf("received %v", sink.kinds())
	})
	testutil.WaitFor(t, 30*time.Second, "pg-a1's hook reported replica", func() (bool, error) {
		lines := roleLog(hookDir, "pg-a1")
		return len(lines) > 0 && strings.HasPrefix(lines[len(lines)-1], "replica "), fmt.Errorf("%q", lines)
	})
	t.Logf("role hook on pg-a1: %q", roleLog(hookDir, "pg-a1"))

	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.bad) > 0 {
		t.Errorf("the receiver rejected deliveries: %v", sink.bad)
	}
	for _, n := range sink.notes {
		switch n.Kind {
		case "failover-step", "member-registered", "primary-set":
			t.Errorf("notified kind %s, which is not in the default kinds", n.Kind)
		}
	}
}
