package e2e

import (
	"context"
	"encoding/csv"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgdr/pgdr/pkg/testutil"
)

// labHAProxy is HAProxy running the shipped deploy/haproxy/haproxy.cfg in
// front of a lab: only the addresses are rewritten (the file is written
// for the lab at port base 26000 and binds :5000, :5001, 127.0.0.1:7000).
type labHAProxy struct {
	primary, stats int // the primary frontend's and the stats page's ports
}

var labHAProxyPort = regexp.MustCompile(`\b260(\d\d)\b`)

// startLabHAProxy starts HAProxy in front of l and stops it at cleanup; it
// skips the test when haproxy is not installed and -short is set.
func startLabHAProxy(t *testing.T, l *lab) *labHAProxy {
	t.Helper()
	hp, err := exec.LookPath("haproxy")
	if err != nil {
		hp, err = exec.LookPath("/usr/sbin/haproxy")
	}
	if err != nil {
		t.Fatal("haproxy is not installed (scripts/ci-deps.sh installs it)")
	}
	src, err := os.ReadFile(filepath.Join(l.root, "deploy", "haproxy", "haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	h := &labHAProxy{primary: testutil.FreePort(t), stats: testutil.FreePort(t)}
	cfg := labHAProxyPort.ReplaceAllStringFunc(string(src), func(p string) string {
		n, _ := strconv.Atoi(p[3:])
		return strconv.Itoa(l.base + n)
	})
	for from, to := range map[string]string{
		"bind *:5000":         fmt.Sprintf("bind 127.0.0.1:%d", h.primary),
		"bind *:5001":         fmt.Sprintf("bind 127.0.0.1:%d", testutil.FreePort(t)),
		"bind 127.0.0.1:7000": fmt.Sprintf("bind 127.0.0.1:%d", h.stats),
	} {
		if !strings.Contains(cfg, from) {
			t.Fatalf("deploy/haproxy/haproxy.cfg has no %q", from)
		}
		cfg = strings.Replace(cfg, from, to, 1)
	}
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(hp, "-db", "-f", path)
	logf, err := os.Create(filepath.Join(filepath.Dir(path), "haproxy.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("----- haproxy log -----\n%s", b)
		}
	})
	return h
}

// server is one server of the primary backend on HAProxy's stats page:
// its status (UP, DOWN, ...) and chkdown, its UP -> DOWN transitions.
func (h *labHAProxy) server(name string) (status string, chkdown int, err error) {
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d/;csv", h.stats))
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	r := csv.NewReader(resp.Body)
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil || len(rows) == 0 {
		return "", 0, fmt.Errorf("haproxy stats csv: %v", err)
	}
	col := map[string]int{}
	for i, c := range rows[0] {
		col[strings.TrimPrefix(strings.TrimSpace(c), "# ")] = i
	}
	for _, row := range rows[1:] {
		if row[col["pxname"]] == "primary" && row[col["svname"]] == name {
			n, _ := strconv.Atoi(row[col["chkdown"]])
			return row[col["status"]], n, nil
		}
	}
	return "", 0, fmt.Errorf("no server %s in haproxy's primary backend", name)
}

// waitRouting waits until the primary backend has primary, and only it, up,
// and every other server checked and DOWN: a server HAProxy has not checked
// yet since it started is in a transitional state ("UP 1/3", "no check")
// and still takes connections, so "not UP" is not enough (CI: a write went
// to pg-b1 right after HAProxy started).
func (h *labHAProxy) waitRouting(t *testing.T, primary string) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, "HAProxy routes to "+primary+" only", func() (bool, error) {
		for _, n := range []string{"pg-a1", "pg-a2", "pg-b1"} {
			st, _, err := h.server(n)
			if err != nil {
				return false, err
			}
			want := "DOWN"
			if n == primary {
				want = "UP"
			}
			if st != want {
				return false, fmt.Errorf("%s is %q, want %q", n, st, want)
			}
		}
		return true, nil
	})
}

// proxyWriter inserts through HAProxy's primary frontend every 200 ms, a
// new connection each time with a 5 s budget, and keeps when each write
// was started and whether it committed.
type proxyWriter struct {
	stop, done chan struct{}
	mu         sync.Mutex
	ok, fail   []time.Time
}

func startProxyWriter(t *testing.T, l *lab, port int) *proxyWriter {
	t.Helper()
	if _, err := l.psql("pg-a1", "CREATE TABLE IF NOT EXISTS proxy_writes (node text, at timestamptz DEFAULT now())"); err != nil {
		t.Fatal(err)
	}
	w := &proxyWriter{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tk := time.NewTicker(200 * time.Millisecond)
		defer tk.Stop()
		for deadline := time.Now().Add(upgradeMonitorBound); time.Now().Before(deadline); {
			select {
			case <-w.stop:
				return
			case <-tk.C:
			}
			at := time.Now()
			err := func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				conn, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=5", port))
				if err != nil {
					return err
				}
				defer conn.Close(context.Background())
				_, err = conn.Exec(ctx, "INSERT INTO proxy_writes (node) VALUES (current_setting('cluster_name'))")
				return err
			}()
			w.mu.Lock()
			if err == nil {
				w.ok = append(w.ok, at)
			} else {
				w.fail = append(w.fail, at)
			}
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *proxyWriter) finish() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}
