package server

import (
	"bytes"
	"context"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgdr/pgdr/coordinator/config"
	"github.com/pgdr/pgdr/pkg/tlsutil"
)

// The status page (/ui/): an HTML rendering, on request only, of what
// `pgdrctl status`, `report` and `history` show, served over HTTPS by
// every coordinator that sets ui.listen. It authenticates like the admin
// API (a client certificate or a bearer token of role read or admin), and
// a browser, which cannot send a header, logs in once through /ui/login:
// the token is kept in an HttpOnly, Secure, SameSite=Strict cookie and
// checked against the tokens file on every request. See docs/status-page.md.

//go:embed ui
var uiFiles embed.FS

const (
	// uiCookie holds the token of a browser that logged in (base64url, as
	// a cookie value cannot hold every byte a token may). __Host- makes
	// the browser refuse it unless Secure, host-only and Path=/.
	uiCookie = "__Host-pgdr-ui"
	// uiCookieAge bounds a login: the browser forgets the token after it.
	uiCookieAge = 12 * time.Hour
	// uiStatusTimeout bounds the Status call (a follower forwards it to the
	// leader) made for one page.
	uiStatusTimeout = 5 * time.Second
	// uiHistory is how many of the newest history events the page shows.
	uiHistory = 20
	// uiMaxForm bounds the login form's body.
	uiMaxForm = 4096
	// uiDefaultRefresh: when the configuration gives none (tests).
	uiDefaultRefresh = 10 * time.Second
	// uiPageReuse: how long a built page is shown to every viewer again.
	// A build asks the leader for Status and reads the whole state; with
	// one build at a time and at most one per uiPageReuse, any number of
	// viewers costs the coordinator and its leader no more than one.
	uiPageReuse = time.Second
)

// statusUI serves the status page of one coordinator.
type statusUI struct {
	s       *Server
	tokens  *config.Tokens
	pages   *template.Template
	static  http.Handler
	refresh time.Duration
	// builds counts the pages built (statusPage calls).
	builds atomic.Int64
	// mu: one build at a time; last is the newest, built at lastAt.
	mu     sync.Mutex
	last   statusPageData
	lastAt time.Time
}

// pageData is the newest page if built less than uiPageReuse ago, or a
// new one (builds wait for each other, then share the result). The build
// does not end with the request that started it (the others wait for it);
// statusPage bounds it.
func (u *statusUI) pageData(ctx context.Context) statusPageData {
	u.mu.Lock()
	defer u.mu.Unlock()
	// The time is read once the lock is held: a request that waited for
	// a build takes it.
	now := time.Now()
	if !u.lastAt.IsZero() && now.Sub(u.lastAt) < uiPageReuse {
		return u.last
	}
	u.builds.Add(1)
	u.last = u.s.statusPage(context.WithoutCancel(ctx), now)
	u.lastAt = time.Now()
	return u.last
}

func newStatusUI(s *Server) (*statusUI, error) {
	pages, err := template.ParseFS(uiFiles, "ui/*.html")
	if err != nil {
		return nil, fmt.Errorf("status page templates: %w", err)
	}
	static, err := fs.Sub(uiFiles, "ui/static")
	if err != nil {
		return nil, fmt.Errorf("status page assets: %w", err)
	}
	refresh := s.cfg.UI.Refresh.Duration
	if refresh <= 0 {
		refresh = uiDefaultRefresh
	}
	return &statusUI{s: s, tokens: s.tokens, pages: pages, static: http.StripPrefix("/ui/static/", http.FileServerFS(static)), refresh: refresh}, nil
}

// handler routes the status page's paths. Unsafe methods from another
// origin (a form on another site posting a login) are refused.
func (u *statusUI) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ui/", http.StatusFound) })
	mux.HandleFunc("GET /ui/{$}", u.page)
	mux.HandleFunc("GET /ui/login", u.loginForm)
	mux.HandleFunc("POST /ui/login", u.login)
	mux.HandleFunc("POST /ui/logout", u.logout)
	mux.Handle("GET /ui/static/", u.static)
	return http.NewCrossOriginProtection().Handler(securityHeaders(mux))
}

// securityHeaders: nothing is cached, framed, sniffed or loaded from
// anywhere but this origin (the page has no script at all).
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Frame-Options", "DENY")
		if !strings.HasPrefix(r.URL.Path, "/ui/static/") {
			hd.Set("Cache-Control", "no-store")
		}
		h.ServeHTTP(w, r)
	})
}

// uiRefusal is why a request is not let in, and the status to answer.
type uiRefusal struct {
	code int
	msg  string
	// clearCookie: the cookie's token is not (or no longer) valid.
	clearCookie bool
}

// authenticate finds who is asking, as the admin API does: a verified
// client certificate with a role wins; then an Authorization: Bearer
// header; then the login cookie. The roles that may read the page are
// those that may call Status.
func (u *statusUI) authenticate(r *http.Request) (identity, *uiRefusal) {
	id, ref := u.identify(r)
	if ref != nil {
		return id, ref
	}
	ok := id.Role == tlsutil.RoleCoordinator
	allowed := rolesFor("/pgdr.v1.AdminService/Status")
	for _, role := range allowed {
		ok = ok || id.Role == role
	}
	if !ok {
		return id, &uiRefusal{code: http.StatusForbidden,
			msg: fmt.Sprintf("%s has role %s; the status page needs role %s", id.Name, id.Role, strings.Join(allowed, " or "))}
	}
	return id, nil
}

func (u *statusUI) identify(r *http.Request) (identity, *uiRefusal) {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		leaf := r.TLS.VerifiedChains[0][0]
		if role := tlsutil.Role(leaf); role != "" {
			return identity{Name: leaf.Subject.CommonName, Role: role, ViaCert: true}, nil
		}
	}
	if h := r.Header.Get("Authorization"); h != "" {
		secret, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			return identity{}, &uiRefusal{code: http.StatusUnauthorized, msg: `the Authorization header must be "Bearer <token>"`}
		}
		tok, ok := u.tokens.Lookup(strings.TrimSpace(secret))
		if !ok {
			return identity{}, &uiRefusal{code: http.StatusUnauthorized, msg: "the bearer token is not recognised"}
		}
		return identity{Name: tok.Name, Role: tok.Role}, nil
	}
	if c, err := r.Cookie(uiCookie); err == nil {
		secret, err := base64.RawURLEncoding.DecodeString(c.Value)
		if err != nil {
			return identity{}, &uiRefusal{code: http.StatusUnauthorized, msg: "the login cookie is malformed; log in again", clearCookie: true}
		}
		tok, ok := u.tokens.Lookup(string(secret))
		if !ok {
			return identity{}, &uiRefusal{code: http.StatusUnauthorized, msg: "the token of this login is not recognised (revoked?); log in again", clearCookie: true}
		}
		return identity{Name: tok.Name, Role: tok.Role}, nil
	}
	return identity{}, &uiRefusal{code: http.StatusUnauthorized,
		msg: "not logged in: log in with a token of role read or admin, send an \"Authorization: Bearer <token>\" header, or present a client certificate signed by the pgdr CA"}
}

// refuse answers a refused request with a page that says why (and, for a
// missing or bad login, offers the login form). The token is never logged.
func (u *statusUI) refuse(w http.ResponseWriter, r *http.Request, ref *uiRefusal) {
	if u.s.metrics != nil {
		u.s.metrics.authFailures.Inc()
	}
	u.s.log.Debug("status page: request refused", "remote", r.RemoteAddr, "path", r.URL.Path, "status", ref.code, "reason", ref.msg)
	if ref.clearCookie {
		clearLoginCookie(w)
	}
	if ref.code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="pgdr"`)
	}
	u.render(w, ref.code, "refused.html", refusedPage{Coordinator: u.s.cfg.Name, Code: ref.code, Status: http.StatusText(ref.code), Message: ref.msg,
		Login: ref.code == http.StatusUnauthorized})
}

type refusedPage struct {
	Coordinator string
	Code        int
	Status      string
	Message     string
	Login       bool
	Refresh     int // never: the layout's field
}

// Title is the page's title (layout.html).
func (p refusedPage) Title() string {
	return fmt.Sprintf("pgdr %s: %d %s", p.Coordinator, p.Code, p.Status)
}

type loginPage struct {
	Coordinator string
	Error       string
	Refresh     int // never: the layout's field
}

// Title is the page's title (layout.html).
func (p loginPage) Title() string { return "pgdr " + p.Coordinator + ": log in" }

func (u *statusUI) loginForm(w http.ResponseWriter, r *http.Request) {
	u.render(w, http.StatusOK, "login.html", loginPage{Coordinator: u.s.cfg.Name})
}

// login checks the posted token against the tokens file (in constant
// time, as the admin API does) and, when it may read the page, keeps it in
// the login cookie.
func (u *statusUI) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, uiMaxForm)
	if err := r.ParseForm(); err != nil {
		u.render(w, http.StatusBadRequest, "login.html", loginPage{Coordinator: u.s.cfg.Name, Error: "the form could not be read"})
		return
	}
	secret := strings.TrimSpace(r.PostForm.Get("token"))
	fail := func(code int, msg string) {
		if u.s.metrics != nil {
			u.s.metrics.authFailures.Inc()
		}
		u.s.log.Debug("status page: login refused", "remote", r.RemoteAddr, "status", code, "reason", msg)
		u.render(w, code, "login.html", loginPage{Coordinator: u.s.cfg.Name, Error: msg})
	}
	if secret == "" {
		fail(http.StatusUnauthorized, "enter a token")
		return
	}
	tok, ok := u.tokens.Lookup(secret)
	if !ok {
		fail(http.StatusUnauthorized, "token not recognised")
		return
	}
	allowed := rolesFor("/pgdr.v1.AdminService/Status")
	if !contains(allowed, tok.Role) && tok.Role != tlsutil.RoleCoordinator {
		fail(http.StatusForbidden, fmt.Sprintf("token %s has role %s; the status page needs role %s", tok.Name, tok.Role, strings.Join(allowed, " or ")))
		return
	}
	http.SetCookie(w, &http.Cookie{Name: uiCookie, Value: base64.RawURLEncoding.EncodeToString([]byte(secret)), Path: "/",
		MaxAge: int(uiCookieAge / time.Second), HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	u.s.log.Info("status page: logged in", "token", tok.Name, "role", tok.Role, "remote", r.RemoteAddr)
	http.Redirect(w, r, "/ui/", http.StatusSeeOther)
}

func (u *statusUI) logout(w http.ResponseWriter, r *http.Request) {
	clearLoginCookie(w)
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

func clearLoginCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: uiCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// page renders the status page for an authenticated caller.
func (u *statusUI) page(w http.ResponseWriter, r *http.Request) {
	id, ref := u.authenticate(r)
	if ref != nil {
		u.refuse(w, r, ref)
		return
	}
	_, viaCookie := r.Cookie(uiCookie)
	data := u.pageData(r.Context()) // a copy: the fields below are this viewer's
	data.Refresh = int(u.refresh / time.Second)
	data.Viewer = id.Name + " (" + id.Role + ")"
	data.Logout = viaCookie == nil && !id.ViaCert && r.Header.Get("Authorization") == ""
	code := http.StatusOK
	if data.Unavailable != "" {
		code = http.StatusServiceUnavailable
	}
	u.render(w, code, "status.html", data)
}

// render executes a template into memory first, so that a template error
// is a clean 500 rather than half a page.
func (u *statusUI) render(w http.ResponseWriter, code int, name string, data any) {
	var b bytes.Buffer
	if err := u.pages.ExecuteTemplate(&b, name, data); err != nil {
		u.s.log.Error("status page: rendering failed", "template", name, "err", err)
		http.Error(w, "the status page could not be rendered; see the coordinator's log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(b.Bytes())
}

// startUI serves the status page on ui.listen over TLS with the API's
// certificate (client certificates verified when given). The returned
// function stops it; a serving error goes to errc.
func (s *Server) startUI(errc chan<- error) (func(), error) {
	u, err := newStatusUI(s)
	if err != nil {
		return nil, err
	}
	tc, err := tlsutil.ServerConfig(s.cfg.TLS, false)
	if err != nil {
		return nil, fmt.Errorf("ui: %w", err)
	}
	ln, err := net.Listen("tcp", s.cfg.UI.Listen)
	if err != nil {
		return nil, fmt.Errorf("ui.listen %s: %w", s.cfg.UI.Listen, err)
	}
	hs := &http.Server{Handler: u.handler(), TLSConfig: tc, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	go func() {
		if err := hs.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("ui: %w", err)
		}
	}()
	s.log.Info("status page serving", "url", "https://"+ln.Addr().String()+"/ui/")
	return func() { _ = hs.Close() }, nil
}
