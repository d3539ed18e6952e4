package server

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pgdr/pgdr/coordinator/config"
	"github.com/pgdr/pgdr/coordinator/ctl"
	"github.com/pgdr/pgdr/pkg/testutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// lockedBuffer is a log sink the server's goroutines may share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// uiServer is a one-voter leader with cluster main (member pg-a1), tokens
// read-secret (role read) and admin-secret, and its status page handler;
// logs gives everything it logged at debug level.
func uiServer(t *testing.T) (*Server, http.Handler, *lockedBuffer) {
	t.Helper()
	logs := &lockedBuffer{}
	s, _ := adminAPIServerWith(t, func(s *Server) {
		s.log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	testutil.WaitFor(t, 30*time.Second, "the leader caught up", func() (bool, error) { return s.caughtUpLeader(), nil })
	u, err := newStatusUI(s)
	if err != nil {
		t.Fatal(err)
	}
	return s, u.handler(), logs
}

type uiReq struct {
	method, path string
	header       map[string]string
	form         url.Values
}

func (r uiReq) do(t *testing.T, h http.Handler) *httptest.ResponseRecorder {
	t.Helper()
	var body *strings.Reader
	if r.form != nil {
		body = strings.NewReader(r.form.Encode())
	} else {
		body = strings.NewReader("")
	}
	req := httptest.NewRequest(r.method, "https://coord.example:8443"+r.path, body)
	if r.form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

// TestStatusPageAuth: the page lets in what the admin API lets read
// Status, and nothing else: no credentials, a bad bearer token or a bad
// login cookie get 401 with a page saying why; a read token (header or
// the login form's cookie) gets the page. The login cookie is HttpOnly,
// Secure and SameSite=Strict, a login posted from another site is refused,
// and no token is ever logged.
func TestStatusPageAuth(t *testing.T) {
	_, h, logs := uiServer(t)
	get := func(header map[string]string) *httptest.ResponseRecorder {
		return uiReq{method: "GET", path: "/ui/", header: header}.do(t, h)
	}

	w := get(nil)
	if w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), "not logged in") || !strings.Contains(w.Body.String(), `href="/ui/login"`) {
		t.Fatalf("no credentials: %d\n%s", w.Code, w.Body)
	}
	if got := w.Header().Get("WWW-Authenticate"); got == "" {
		t.Errorf("no credentials: no WWW-Authenticate header")
	}

	w = get(map[string]string{"Authorization": "Bearer wrong-secret"})
	if w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), "bearer token is not recognised") {
		t.Fatalf("bad bearer token: %d\n%s", w.Code, w.Body)
	}
	w = get(map[string]string{"Authorization": "Basic cmVhZDpzZWNyZXQ="})
	if w.Code != http.StatusUnauthorized {
		t.Fatalf("Basic authorization: %d, want 401", w.Code)
	}

	w = get(map[string]string{"Authorization": "Bearer read-secret"})
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "pg-a1") || !strings.Contains(w.Body.String(), "reader (read)") {
		t.Fatalf("read token: %d\n%s", w.Code, w.Body)
	}
	if os.Getenv("PGDR_UI_DUMP") != "" {
		_ = os.WriteFile(os.Getenv("PGDR_UI_DUMP"), w.Body.Bytes(), 0o644)
	}
	if !strings.Contains(w.Body.String(), `<meta http-equiv="refresh" content="10">`) {
		t.Errorf("the page does not refresh itself:\n%s", w.Body)
	}
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}

	bad := base64.RawURLEncoding.EncodeToString([]byte("stolen-or-revoked"))
	w = get(map[string]string{"Cookie": uiCookie + "=" + bad})
	if w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), "not recognised") {
		t.Fatalf("bad cookie: %d\n%s", w.Code, w.Body)
	}
	if sc := w.Header().Get("Set-Cookie"); !strings.Contains(sc, uiCookie+"=;") || !strings.Contains(sc, "Max-Age=0") {
		t.Errorf("bad cookie: not cleared (Set-Cookie %q)", sc)
	}
	w = get(map[string]string{"Cookie": uiCookie + "=%%%"})
	if w.Code != http.StatusUnauthorized {
		t.Fatalf("malformed cookie: %d, want 401", w.Code)
	}

	w = uiReq{method: "GET", path: "/ui/login"}.do(t, h)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `<form method="post" action="/ui/login">`) {
		t.Fatalf("login form: %d\n%s", w.Code, w.Body)
	}
	w = uiReq{method: "POST", path: "/ui/login", form: url.Values{"token": {"nope"}}}.do(t, h)
	if w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), "token not recognised") || w.Header().Get("Set-Cookie") != "" {
		t.Fatalf("login with a bad token: %d, Set-Cookie %q\n%s", w.Code, w.Header().Get("Set-Cookie"), w.Body)
	}
	w = uiReq{method: "POST", path: "/ui/login", form: url.Values{"token": {"read-secret"}},
		header: map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}}.do(t, h)
	if w.Code != http.StatusForbidden || w.Header().Get("Set-Cookie") != "" {
		t.Fatalf("login posted from another site: %d, Set-Cookie %q", w.Code, w.Header().Get("Set-Cookie"))
	}

	w = uiReq{method: "POST", path: "/ui/login", form: url.Values{"token": {"read-secret"}}}.do(t, h)
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/ui/" {
		t.Fatalf("login: %d, Location %q\n%s", w.Code, w.Header().Get("Location"), w.Body)
	}
	cookies := w.Result().Cookies()
	if len(cookies) != 1 {
		t.Fatalf("login set %d cookies, want 1: %v", len(cookies), w.Header().Values("Set-Cookie"))
	}
	c := cookies[0]
	if c.Name != uiCookie || !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.MaxAge <= 0 {
		t.Fatalf("login cookie %+v: want %s, HttpOnly, Secure, SameSite=Strict, Path=/, Max-Age > 0", c, uiCookie)
	}
	if strings.Contains(c.Value, "read-secret") {
		t.Errorf("the cookie holds the token in the clear form it was typed: %q", c.Value)
	}
	w = get(map[string]string{"Cookie": c.Name + "=" + c.Value})
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "pg-a1") || !strings.Contains(w.Body.String(), `action="/ui/logout"`) {
		t.Fatalf("page with the login cookie: %d\n%s", w.Code, w.Body)
	}
	w = uiReq{method: "POST", path: "/ui/logout", header: map[string]string{"Cookie": c.Name + "=" + c.Value}}.do(t, h)
	if sc := w.Header().Get("Set-Cookie"); w.Code != http.StatusSeeOther || !strings.Contains(sc, "Max-Age=0") {
		t.Fatalf("logout: %d, Set-Cookie %q", w.Code, sc)
	}

	w = uiReq{method: "GET", path: "/ui/static/style.css"}.do(t, h)
	if w.Code != http.StatusOK || !strings.Contains(w.Header().Get("Content-Type"), "text/css") {
		t.Fatalf("style sheet: %d %q", w.Code, w.Header().Get("Content-Type"))
	}

	for _, secret := range []string{"read-secret", "wrong-secret", "nope", c.Value, bad} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the log holds token %q:\n%s", secret, logs)
		}
	}
}

// TestStatusPageEscapes: names and free text are escaped, never markup:
// the pause reason (free text in the replicated state) through the whole
// page, and cluster, node and region names (which the FSM refuses unless
// they are plain names) through the template.
func TestStatusPageEscapes(t *testing.T) {
	s, h, _ := uiServer(t)
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_SET_PAUSED, &pgdrv1.SetPaused{Cluster: "main", Paused: true, Reason: "<b>kernel</b> & co"})
	w := uiReq{method: "GET", path: "/ui/", header: map[string]string{"Authorization": "Bearer admin-secret"}}.do(t, h)
	checkEscaped(t, w, []string{"<b>kernel</b>"}, []string{"&lt;b&gt;kernel&lt;/b&gt; &amp; co"})

	u, err := newStatusUI(s)
	if err != nil {
		t.Fatal(err)
	}
	d := s.statusPage(t.Context(), time.Now())
	evil := "<script>alert(1)</script>"
	d.Regions = []regionView{{Region: `r1"><img src=x>`, Clusters: []clusterView{{Name: evil, Primary: evil,
		Members: []memberView{{Name: evil, Region: `r1"><img src=x>`, Role: "primary", Primary: true, Problems: "<i>disk</i>"}}}}}}
	w = httptest.NewRecorder()
	u.render(w, http.StatusOK, "status.html", d)
	checkEscaped(t, w, []string{"<script>", "<img src=x>", "<i>disk</i>"},
		[]string{"&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;i&gt;disk&lt;/i&gt;", "r1&#34;&gt;&lt;img src=x&gt;"})
}

func checkEscaped(t *testing.T, w *httptest.ResponseRecorder, raw, escaped []string) {
	t.Helper()
	body := w.Body.String()
	if w.Code != http.StatusOK {
		t.Fatalf("page: %d\n%s", w.Code, body)
	}
	for _, r := range raw {
		if strings.Contains(body, r) {
			t.Errorf("the page holds %q unescaped", r)
		}
	}
	for _, e := range escaped {
		if !strings.Contains(body, e) {
			t.Errorf("the page lacks %q (escaped):\n%s", e, body)
		}
	}
}

// TestStatusPageLeaderlessFollower: a follower that has heard from no
// leader since it started can neither ask one for the health nor trust its
// own copy of the state: the page says so, names the coordinators to ask
// instead (no links) and answers 503, showing no cluster.
func TestStatusPageLeaderlessFollower(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	cfg := testConfig()
	s, err := newServer(cfg, log, Options{}, mustTokens(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	startLeaderlessFollower(t, s)
	u, err := newStatusUI(s)
	if err != nil {
		t.Fatal(err)
	}
	w := uiReq{method: "GET", path: "/ui/", header: map[string]string{"Authorization": "Bearer read-secret"}}.do(t, u.handler())
	body := w.Body.String()
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(body, "c1 cannot show the state") || !strings.Contains(body, "Ask another coordinator: c2, c3") {
		t.Fatalf("leaderless follower: %d\n%s", w.Code, body)
	}
	if strings.Contains(body, "Cluster ") || strings.Contains(body, "<a ") {
		t.Errorf("the refusal shows clusters or links:\n%s", body)
	}
}

// mustTokens is a tokens file with read-secret (role read).
func mustTokens(t *testing.T) *config.Tokens {
	t.Helper()
	f := filepath.Join(t.TempDir(), "tokens.yaml")
	if err := os.WriteFile(f, []byte("- {name: reader, role: read, sha256: "+config.HashToken("read-secret")+"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens, err := config.LoadTokens(f)
	if err != nil {
		t.Fatal(err)
	}
	return tokens
}

// TestStatusPageFollowerWithoutLeaderAnswer: a follower whose state is
// readable (it heard from the leader and applied the log) but that cannot
// get the health from the leader (here the leader has no known API
// address) renders its replicated state: the members with health, lag and
// lease unknown, the backups and the history, and says so at the top.
func TestStatusPageFollowerWithoutLeaderAnswer(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	type node struct {
		s     *Server
		addr  raft.ServerAddress
		trans *raft.InmemTransport
	}
	var nodes []*node
	for _, name := range []string{"c1", "c2"} {
		cfg := testConfig()
		cfg.Name = name
		s, err := newServer(cfg, log, Options{}, mustTokens(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		addr, trans := raft.NewInmemTransport("")
		nodes = append(nodes, &node{s: s, addr: addr, trans: trans})
	}
	nodes[0].trans.Connect(nodes[1].addr, nodes[1].trans)
	nodes[1].trans.Connect(nodes[0].addr, nodes[0].trans)
	servers := []raft.Server{{ID: "c1", Address: nodes[0].addr}, {ID: "c2", Address: nodes[1].addr}}
	for _, n := range nodes {
		rc := raft.DefaultConfig()
		rc.LocalID = raft.ServerID(n.s.cfg.Name)
		rc.Logger = hclogger(log, "raft", "")
		rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
		store := raft.NewInmemStore()
		r, err := raft.NewRaft(rc, n.s.fsm, store, store, raft.NewInmemSnapshotStore(), n.trans)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Shutdown().Error() })
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
			t.Fatal(err)
		}
		n.s.raft = r
	}
	var leader, follower *Server
	testutil.WaitFor(t, 30*time.Second, "a leader", func() (bool, error) {
		for i, n := range nodes {
			if n.s.isLeader() {
				leader, follower = n.s, nodes[1-i].s
				return true, nil
			}
		}
		return false, nil
	})
	mustPropose(t, leader, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
		Name: "pg-a1", Cluster: "main", Region: "r1", Dsn: "host=pg-a1", ApiUrl: "http://pg-a1:8008", GossipAddress: "pg-a1:7946"}})
	testutil.WaitFor(t, 30*time.Second, "the follower applied the registration and its state is readable", func() (bool, error) {
		_, ok := follower.fsm.Cluster("main")
		return ok && follower.stateReadable() == nil, fmt.Errorf("cluster main known: %v; readable: %v", ok, follower.stateReadable())
	})
	u, err := newStatusUI(follower)
	if err != nil {
		t.Fatal(err)
	}
	w := uiReq{method: "GET", path: "/ui/", header: map[string]string{"Authorization": "Bearer read-secret"}}.do(t, u.handler())
	body := w.Body.String()
	if w.Code != http.StatusOK || !strings.Contains(body, `id="degraded"`) || !strings.Contains(body, "no known API address") {
		t.Fatalf("follower without the leader's answer: %d\n%s", w.Code, body)
	}
	for _, want := range []string{`data-member="pg-a1"`, `class="health unknown">unknown<`, "member-registered", `data-tier="daily"`} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q:\n%s", want, body)
		}
	}
}

// TestStatusPageWriteAvailability: the page's targets table shows the
// write-availability SLO against its target, flagged when under it, and
// the replication lag measured from the heartbeat.
func TestStatusPageWriteAvailability(t *testing.T) {
	wa := &ctl.WriteAvailabilityJSON{GoodSeconds: 9990, BadSeconds: 10, Ratio: 0.999, Target: 0.9999, BudgetRemaining: -9,
		Lag: []ctl.HeartbeatLagJSON{{Node: "pg-a2", Seconds: 0.4}}}
	v := compliancePageView(ctl.ComplianceJSON{WriteAvailability: wa})
	var avail, lag *targetRow
	for i, r := range v.Rows {
		switch {
		case strings.HasPrefix(r.Name, "Write availability"):
			avail = &v.Rows[i]
		case strings.HasPrefix(r.Name, "Replication lag from the heartbeat"):
			lag = &v.Rows[i]
		}
	}
	if avail == nil || lag == nil {
		t.Fatalf("no write-availability or heartbeat-lag row: %+v", v.Rows)
	}
	if !avail.Breached || avail.Limit != "99.99%" || !strings.Contains(avail.Measured, "99.9000%") {
		t.Errorf("write availability row: %+v", *avail)
	}
	if !strings.Contains(lag.Measured, "pg-a2") {
		t.Errorf("heartbeat lag row: %+v", *lag)
	}
	wa.GoodSeconds, wa.BadSeconds, wa.Ratio = 0, 0, 0
	for _, r := range compliancePageView(ctl.ComplianceJSON{WriteAvailability: wa}).Rows {
		if strings.HasPrefix(r.Name, "Write availability") && (r.Breached || r.Measured != "not measured") {
			t.Errorf("an unmeasured cluster: %+v", r)
		}
	}
}
