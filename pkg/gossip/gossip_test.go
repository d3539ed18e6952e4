package gossip

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/pgdr/pgdr/pkg/testutil"
)

func fast(c *memberlist.Config) {
	c.ProbeInterval = 100 * time.Millisecond
	c.ProbeTimeout = 50 * time.Millisecond
	c.GossipInterval = 50 * time.Millisecond
	c.SuspicionMult = 2
	c.PushPullInterval = time.Second
	c.TCPTimeout = time.Second
}

func keyFile(t *testing.T, dir, name string) string {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(k+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func start(t *testing.T, name, key string, join []string) (*Pool, string) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	p, err := Start(context.Background(), Config{
		Bind: addr, Join: join, KeyFile: key, Tune: fast,
		Meta:   Meta{Kind: KindCoordinator, Name: name, Region: "r1", API: "127.0.0.1:1"},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, addr
}

func TestPoolJoinMetaFailureAndWrongKey(t *testing.T) {
	dir := t.TempDir()
	key := keyFile(t, dir, "good")
	a, aAddr := start(t, "a", key, nil)
	b, _ := start(t, "b", key, []string{aAddr})
	testutil.WaitFor(t, 20*time.Second, "b visible alive from a", func() (bool, error) {
		return a.State("coordinator/b") == StateAlive, nil
	})
	for _, m := range a.Members() {
		if m.Name == "coordinator/b" && (m.Meta.Name != "b" || m.Meta.Region != "r1") {
			t.Fatalf("meta not carried: %+v", m)
		}
	}

	// A node with another key cannot join, and a never hears of it.
	bad, _ := start(t, "bad", keyFile(t, dir, "bad"), []string{aAddr})
	testutil.WaitFor(t, 20*time.Second, "join error recorded for the wrong key", func() (bool, error) {
		_, err := bad.Joined()
		return err != nil, nil
	})
	if ok, _ := bad.Joined(); ok {
		t.Fatal("node with a wrong key joined")
	}
	if s := a.State("coordinator/bad"); s != "unknown" {
		t.Fatalf("a sees the wrong-key node as %s", s)
	}

	// b leaves abruptly (shutdown without leave): a marks it failed.
	abort(b)
	testutil.WaitFor(t, 30*time.Second, "b dead at a", func() (bool, error) {
		s := a.State("coordinator/b")
		return s == StateDead || s == StateSuspect, fmt.Errorf("members %+v", a.Members())
	})
}

func TestLoadKeyErrors(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "k")
	os.WriteFile(p, []byte("not base64!!"), 0o600)
	if _, err := LoadKey(p); err == nil {
		t.Fatal("bad key accepted")
	}
	os.WriteFile(p, []byte("AAAA"), 0o600)
	if _, err := LoadKey(p); err == nil {
		t.Fatal("3-byte key accepted")
	}
	if _, err := Start(context.Background(), Config{Bind: "nonsense"}); err == nil {
		t.Fatal("bad bind accepted")
	}
}

// abort stops p without a graceful leave, as a crashed process would.
func abort(p *Pool) {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	<-p.done
	p.ml.Shutdown()
}
