package e2e

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// imposter answers {"ok":true} to whatever is sent on the unix socket
// path, as a local user who bound the agent's socket first would; it
// counts the requests it was sent.
type imposter struct {
	ln       net.Listener
	requests atomic.Int64
}

func startImposter(t *testing.T, path string) *imposter {
	t.Helper()
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o777); err != nil {
		t.Fatal(err)
	}
	im := &imposter{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := bufio.NewReader(c).ReadBytes('\n'); err != nil {
					return
				}
				im.requests.Add(1)
				c.Write([]byte("{\"ok\":true}\n"))
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); os.Remove(path) })
	return im
}

// TestWalPushRefusesImposterSocket: a process of another user listening on
// the agent's socket is not believed when it says a segment is archived.
// wal-push (PostgreSQL's archive_command, as postgres) refuses a socket
// file owned by another user, and a socket file of its own user served by
// another user's process (SO_PEERCRED), and pushes the segment itself, so
// that it is in the repository when PostgreSQL recycles it (issue 13
// item 5).
func TestWalPushRefusesImposterSocket(t *testing.T) {
	skipShort(t)
	if pgtest.Credential(t) == nil {
		t.Skip("needs root: the imposter must be another user than PostgreSQL's")
	}
	l := newLab(t, labOpts{})
	sock := filepath.Join(l.dir, "agent-agent.yaml.sock")
	for _, c := range []struct {
		name  string
		chown bool // the socket file given to PostgreSQL's user; the listener stays root's
		why   string
	}{
		{"a socket file of another user", false, "belongs to uid 0"},
		{"another user's process behind the socket", true, "runs as uid 0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			im := startImposter(t, sock)
			if c.chown {
				pgtest.Chown(t, sock)
			}
			seg := l.switchWAL(t)
			l.waitArchived(t, seg, 2*time.Minute)
			testutil.WaitFor(t, 30*time.Second, seg+" in the repository", func() (bool, error) {
				_, err := os.Stat(l.objectPath(seg))
				return err == nil, err
			})
			if n := im.requests.Load(); n != 0 {
				t.Errorf("wal-push sent %d requests to the imposter", n)
			}
			if log := l.pg.Log(); !strings.Contains(log, c.why) {
				t.Errorf("archive_command did not log why it pushed alone (%q); server log:\n%s", c.why, tail(log, 3000))
			}
		})
	}
}
