package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pgdr/pgdr/agent/failsafe"
	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/agent/monitor"
	"github.com/pgdr/pgdr/agent/repocopy"
	"github.com/pgdr/pgdr/agent/walrecv"
	"github.com/pgdr/pgdr/pkg/config"
)

// Handler serves the probes (/health, /ready, /primary, /replica) and
// /metrics. A probe answers from the latest report; a report older than
// the staleness limit (the checks hang) counts as a failed check.
func (d *Daemon) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, ep := range health.Endpoints() {
		mux.HandleFunc(string(ep), func(w http.ResponseWriter, req *http.Request) { d.serveProbe(w, req, ep) })
	}
	mux.Handle(failsafe.Path, d.failsafe)
	mux.HandleFunc("/status", d.serveStatus)
	mux.Handle("/metrics", promhttp.HandlerFor(d.metrics.reg, promhttp.HandlerOpts{Registry: d.metrics.reg}))
	return mux
}

func (d *Daemon) serveProbe(w http.ResponseWriter, req *http.Request, ep health.Endpoint) {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions: // HAProxy's httpchk sends OPTIONS
	default:
		w.Header().Set("Allow", "GET, HEAD, OPTIONS")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	maxLag := d.cfg.Health.MaxReplicaLag.Bytes
	if s := req.URL.Query().Get("lag"); s != "" && ep == health.EndpointReplica {
		v, err := config.ParseByteSize(s)
		if err != nil {
			http.Error(w, fmt.Sprintf("lag=%q: want a number of bytes or a size with a unit (16MB, 1GB)", s), http.StatusBadRequest)
			return
		}
		maxLag = v
	}
	r, age := d.monitor.LatestAge()
	body := health.BodyOf(r)
	code := health.Status(ep, r, maxLag)
	// Stale on the monotonic clock: a wall clock stepped back must not make
	// a hung check's old report look fresh.
	if r != nil && age > monitor.StaleAfter(monitor.Interval(d.cfg.Health.Interval.Duration)) {
		code = http.StatusServiceUnavailable
		body.Healthy = false
		body.Error = fmt.Sprintf("the latest health check is stale (from %s)", body.Time.Format(time.RFC3339))
	}
	// With coordinators, /primary follows the lease: 200 only while a
	// grant holds and the node is not fenced.
	if ep == health.EndpointPrimary {
		if ok, why := d.failsafe.Serving(time.Now()); !ok && code == http.StatusOK {
			code = http.StatusServiceUnavailable
			body.Error = why
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if req.Method == http.MethodHead {
		return
	}
	json.NewEncoder(w).Encode(body)
}

// serveHTTP runs the HTTP server on health.listen until ctx ends. A taken
// port is retried instead of stopping the daemon: WAL shipping and reports
// matter more than probes, and a probe that cannot connect fails safe.
func (d *Daemon) serveHTTP(ctx context.Context) {
	srv := &http.Server{
		Handler:           d.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	addr := d.cfg.Health.Listen
	var ln net.Listener
	for {
		var err error
		var lc net.ListenConfig
		if ln, err = lc.Listen(ctx, "tcp", addr); err == nil {
			break
		}
		d.log.Error("health HTTP server cannot listen; retrying", "listen", addr, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
	d.log.Info("health HTTP server listening", "listen", ln.Addr().String())
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		d.log.Error("health HTTP server", "err", err)
	}
	<-done
}

// statusBody is /status's answer: what the daemon does besides the
// probes (today: the async repositories' copy lag).
type statusBody struct {
	Cluster    string            `json:"cluster"`
	Node       string            `json:"node"`
	RepoCopies []repocopy.Status `json:"repo_copies"`
	// WALReceiver: the WAL receiver's progress (wal.receive.enabled only).
	WALReceiver *walrecv.Status `json:"wal_receiver,omitempty"`
}

func (d *Daemon) serveStatus(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body := statusBody{Cluster: d.cfg.Cluster, Node: d.cfg.Node.Name, RepoCopies: d.copier.Status()}
	if body.RepoCopies == nil {
		body.RepoCopies = []repocopy.Status{}
	}
	if d.receiver != nil {
		st := d.receiver.Status()
		body.WALReceiver = &st
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if req.Method == http.MethodHead {
		return
	}
	json.NewEncoder(w).Encode(body)
}
