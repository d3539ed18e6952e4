package server

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestStatusPageSharedBetweenViewers: however many viewers load the page
// at once, the coordinator builds it at most once per uiPageReuse (each
// build asks the leader for Status and reads the whole state); a change
// shows once that has passed, and each viewer still sees its own name.
func TestStatusPageSharedBetweenViewers(t *testing.T) {
	s, _, _ := uiServer(t)
	u, err := newStatusUI(s)
	if err != nil {
		t.Fatal(err)
	}
	h := u.handler()
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := uiReq{method: "GET", path: "/ui/", header: map[string]string{"Authorization": "Bearer read-secret"}}.do(t, h)
			if w.Code != http.StatusOK {
				t.Errorf("page: %d", w.Code)
			}
		}()
	}
	wg.Wait()
	if n := u.builds.Load(); n > 2 {
		t.Fatalf("%d page builds for 20 viewers at once, want at most 2", n)
	}
	w := uiReq{method: "GET", path: "/ui/", header: map[string]string{"Authorization": "Bearer admin-secret"}}.do(t, h)
	if !strings.Contains(w.Body.String(), "(admin)") {
		t.Fatalf("a shared page does not name its own viewer:\n%s", w.Body)
	}

	if _, err := s.propose(t.Context(), pgdrv1.CommandType_COMMAND_TYPE_SET_PAUSED, &pgdrv1.SetPaused{Cluster: "main", Paused: true, Reason: "maintenance window"}, "admin:test"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(uiPageReuse + 100*time.Millisecond)
	w = uiReq{method: "GET", path: "/ui/", header: map[string]string{"Authorization": "Bearer read-secret"}}.do(t, h)
	if !strings.Contains(w.Body.String(), "maintenance window") {
		t.Fatalf("the pause does not show after %s:\n%s", uiPageReuse, w.Body)
	}
}
