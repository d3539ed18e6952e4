package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pgdr/pgdr/coordinator/config"
	"github.com/pgdr/pgdr/coordinator/notify"
	"github.com/pgdr/pgdr/pkg/testutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
	"google.golang.org/protobuf/proto"
)

// TestGapToReport: the leaderless gap is recorded as a lost quorum by
// whoever saw it, once: a follower that saw the new leader reports it
// (the new leader may have restarted and seen no gap), a new leader whose
// own observation is not processed yet reports the gap still open, and a
// second leadership within a minute does not report the same gap again;
// a coordinator cut off alone from a leader that kept its quorum reports
// nothing.
func TestGapToReport(t *testing.T) {
	newRunner := func() *incidentRunner {
		r, err := newIncidentRunner(&Server{cfg: &config.Config{Name: "c1"}}, config.Incidents{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

	r := newRunner()
	r.leaderSeen("", 5, t0)
	r.leaderSeen("c2", 6, t0.Add(40*time.Second))
	if _, _, _, ok := r.gapToReport(false, t0.Add(40*time.Second)); !ok {
		t.Errorf("a follower that saw a 40s gap end does not report it")
	}

	r = newRunner()
	r.leaderSeen("", 5, t0)
	if from, to, _, ok := r.gapToReport(true, t0.Add(40*time.Second)); !ok || !from.Equal(t0) || !to.Equal(t0.Add(40*time.Second)) {
		t.Errorf("new leader before its own observation: gap %s..%s %v, want %s..+40s", from, to, ok, t0)
	}

	r = newRunner()
	r.leaderSeen("", 5, t0)
	r.leaderSeen("c1", 6, t0.Add(40*time.Second))
	if _, _, _, ok := r.gapToReport(true, t0.Add(41*time.Second)); !ok {
		t.Fatalf("new leader after a 40s gap does not report it")
	}
	r.leaderSeen("c2", 7, t0.Add(50*time.Second)) // leadership moved without a gap
	r.leaderSeen("c1", 8, t0.Add(55*time.Second)) // and back
	if _, _, _, ok := r.gapToReport(true, t0.Add(56*time.Second)); ok {
		t.Errorf("the same gap reported again by the next leadership")
	}
	if _, _, _, ok := r.gapToReport(false, t0.Add(56*time.Second)); ok {
		t.Errorf("the same gap reported again as a follower")
	}

	// Cut off for five minutes from a leader that kept its quorum: the
	// same leader, in the same term, is found again.
	r = newRunner()
	r.leaderSeen("c2", 5, t0)
	r.leaderSeen("", 5, t0.Add(time.Second))
	if r.leaderSeen("c2", 5, t0.Add(5*time.Minute)) {
		if _, _, _, ok := r.gapToReport(false, t0.Add(5*time.Minute+3*time.Second)); ok {
			t.Errorf("a coordinator cut off from a leader that kept its quorum reports a lost quorum")
		}
	}
}

// webhookLeader is the leader of a one-voter Raft whose incidents go to the
// webhooks at urls (channels hook0, hook1, …, all at level 0; its
// notifier retrying at once), with incidents started and a cluster "main".
func webhookLeader(t *testing.T, urls ...string) *Server {
	t.Helper()
	var chans []notify.ChannelConfig
	for i, u := range urls {
		chans = append(chans, notify.ChannelConfig{Name: fmt.Sprintf("hook%d", i), Type: notify.TypeWebhook, URL: u})
	}
	return notifyLeader(t, chans...)
}

// notifyLeader is webhookLeader with the channels given.
func notifyLeader(t *testing.T, chans ...notify.ChannelConfig) *Server {
	t.Helper()
	cfg := testConfig()
	cfg.Incidents.Channels = chans
	cfg.Incidents.AlertmanagerResend.Duration = time.Second
	cfg.Incidents.Interval.Duration = 50 * time.Millisecond
	log := slog.New(slog.DiscardHandler)
	s, err := newServer(cfg, log, Options{}, &config.Tokens{}, &tls.Config{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := notify.NewFromConfig(notify.Config{Channels: cfg.Incidents.Channels}, notify.Options{Log: log, Backoff: time.Millisecond, MaxBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s.incidents.notifier = n
	s.incidents.channels = map[string]notify.Channel{}
	for _, ch := range n.Channels() {
		s.incidents.channels[ch.Name()] = ch
	}
	startInmemRaft(t, s)
	testutil.WaitFor(t, 20*time.Second, "incidents started", func() (bool, error) { return s.fsm.IncidentsStarted(), nil })
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{Cluster: "main", Name: "a", Region: "eu-west-1"}})
	return s
}

// TestIncidentDeliveryOutlivesReceiverOutage: a receiver that fails every
// attempt of one delivery (a PagerDuty outage of a few seconds) does not
// lose the notification: the leader sends it again later, and records the
// outbox only once it went out.
func TestIncidentDeliveryOutlivesReceiverOutage(t *testing.T) {
	var calls, delivered atomic.Int32
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if calls.Add(1) <= 5 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		delivered.Add(1)
	}))
	defer recv.Close()
	s := webhookLeader(t, recv.URL)
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_INCIDENT, &pgdrv1.IncidentCommand{Op: &pgdrv1.IncidentCommand_Observe{Observe: &pgdrv1.IncidentObserve{
		DedupKey: "manual:main:1", Title: "disk", Cluster: "main", Category: "manual", Severity: "high"}}})
	testutil.WaitFor(t, 20*time.Second, "the notification delivered after the outage", func() (bool, error) {
		if delivered.Load() > 0 {
			return true, nil
		}
		var marks []uint32
		for _, in := range s.fsm.Incidents("main", true, "") {
			marks = append(marks, in.GetNotifiedLevels())
		}
		return false, fmt.Errorf("%d requests, outbox marks %v", calls.Load(), marks)
	})
	testutil.WaitFor(t, 20*time.Second, "the outbox recorded", func() (bool, error) {
		l := s.fsm.Incidents("main", false, "")
		return len(l) == 1 && l[0].GetNotifiedLevels() == 1, nil
	})
}

// TestListIncidentsFitsAResponse: a list of incidents whose timelines are
// full of long entries still fits the 4 MiB a gRPC client takes by default
// (the timelines and notes are left out beyond a budget, and said so);
// one incident by id comes whole.
func TestListIncidentsFitsAResponse(t *testing.T) {
	s := testServer(t, Options{})
	startInmemRaft(t, s)
	testutil.WaitFor(t, 20*time.Second, "incidents started", func() (bool, error) { return s.fsm.IncidentsStarted(), nil })
	long := strings.Repeat("x", 990)
	var ids []string
	for _, cl := range []string{"main", "other"} {
		mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{Cluster: cl, Name: "a", Region: "eu-west-1"}})
		for i := range 45 {
			res, err := s.propose(context.Background(), pgdrv1.CommandType_COMMAND_TYPE_INCIDENT, &pgdrv1.IncidentCommand{Op: &pgdrv1.IncidentCommand_Observe{Observe: &pgdrv1.IncidentObserve{
				DedupKey: fmt.Sprintf("manual:%s:%d", cl, i), Title: "t", Cluster: cl, Category: "manual", Severity: "low"}}}, "admin:test")
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, fmt.Sprintf("INC-%d", res.GetIndex()))
		}
	}
	// A full timeline each: 50 delivery records of ~1000 characters.
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				if _, err := s.propose(context.Background(), pgdrv1.CommandType_COMMAND_TYPE_INCIDENT, &pgdrv1.IncidentCommand{Op: &pgdrv1.IncidentCommand_Notified{Notified: &pgdrv1.IncidentNotified{
					Id: id, NotifiedLevels: 1, Status: "open", Deliveries: []string{fmt.Sprintf("%d %s", i, long)}}}}, "admin:test"); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	a := &adminAPI{s: s}
	resp, err := a.ListIncidents(context.Background(), &pgdrv1.ListIncidentsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := proto.Size(resp); n > 4<<20-64<<10 || len(resp.GetIncidents()) != len(ids) {
		t.Fatalf("list of %d incidents: %d bytes (%d incidents), more than a gRPC client takes", len(ids), n, len(resp.GetIncidents()))
	}
	if !resp.GetDetailsOmitted() {
		t.Errorf("the list left the timelines out without saying so")
	}
	one, err := a.ListIncidents(context.Background(), &pgdrv1.ListIncidentsRequest{Id: ids[0]})
	if err != nil || len(one.GetIncidents()) != 1 || len(one.GetIncidents()[0].GetTimeline()) != 50 {
		t.Fatalf("one incident by id: %v %v", one, err)
	}
}

// peakReceiver is a receiver taking 20 ms per request that counts the
// requests answered and the most in flight at once.
func peakReceiver(t *testing.T) (recv *httptest.Server, peak, answered *atomic.Int32) {
	var cur atomic.Int32
	peak, answered = new(atomic.Int32), new(atomic.Int32)
	recv = httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		n := cur.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		cur.Add(-1)
		answered.Add(1)
	}))
	t.Cleanup(recv.Close)
	return recv, peak, answered
}

// TestIncidentSendsBounded: many incidents opening at once (a regional
// outage) are delivered a bounded number at a time, not one goroutine and
// connection per incident against a receiver that rate-limits.
func TestIncidentSendsBounded(t *testing.T) {
	recv, peak, done := peakReceiver(t)
	s := webhookLeader(t, recv.URL)
	const n = 3 * maxSendsInFlight
	var ops []*pgdrv1.IncidentCommand
	for i := range n {
		ops = append(ops, &pgdrv1.IncidentCommand{Op: &pgdrv1.IncidentCommand_Observe{Observe: &pgdrv1.IncidentObserve{
			DedupKey: fmt.Sprintf("manual:main:%d", i), Title: "disk", Cluster: "main", Category: "manual", Severity: "high"}}})
	}
	// Opened together: the leader's round finds them all due at once.
	for _, op := range ops {
		mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_INCIDENT, op)
	}
	testutil.WaitFor(t, 60*time.Second, "every incident delivered", func() (bool, error) {
		return done.Load() >= n, fmt.Errorf("%d delivered", done.Load())
	})
	if p := peak.Load(); p > maxSendsInFlight {
		t.Errorf("%d deliveries at once, want at most %d", p, maxSendsInFlight)
	}
}

// TestIncidentChannelsDeliveredTogether: a slow channel (Slack answering
// 429 with Retry-After, say) does not hold up the other channels of the
// same notification (the PagerDuty page).
func TestIncidentChannelsDeliveredTogether(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	defer slow.Close()
	defer close(release)
	var fastAt atomic.Int64
	fast := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { fastAt.CompareAndSwap(0, time.Now().UnixNano()) }))
	defer fast.Close()
	s := webhookLeader(t, slow.URL, fast.URL)
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_INCIDENT, &pgdrv1.IncidentCommand{Op: &pgdrv1.IncidentCommand_Observe{Observe: &pgdrv1.IncidentObserve{
		DedupKey: "manual:main:1", Title: "disk", Cluster: "main", Category: "manual", Severity: "high"}}})
	testutil.WaitFor(t, 5*time.Second, "the fast channel notified while the slow one hangs", func() (bool, error) {
		return fastAt.Load() != 0, nil
	})
}

// TestAlertmanagerResendsBounded: the minutely re-sends of every open
// incident to Alertmanager go out a bounded number at a time, not one
// goroutine and connection per incident (thousands of descriptors at once
// would starve the coordinator's own Raft and gRPC connections).
func TestAlertmanagerResendsBounded(t *testing.T) {
	recv, peak, posts := peakReceiver(t)
	s := notifyLeader(t, notify.ChannelConfig{Name: "am", Type: notify.TypeAlertmanager, URL: recv.URL})
	const n = 3 * maxSendsInFlight
	for i := range n {
		mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_INCIDENT, &pgdrv1.IncidentCommand{Op: &pgdrv1.IncidentCommand_Observe{Observe: &pgdrv1.IncidentObserve{
			DedupKey: fmt.Sprintf("manual:main:%d", i), Title: "disk", Cluster: "main", Category: "manual", Severity: "high"}}})
	}
	testutil.WaitFor(t, 60*time.Second, "every incident sent", func() (bool, error) {
		l := s.fsm.Incidents("main", false, "")
		for _, in := range l {
			if in.GetNotifiedLevels() == 0 {
				return false, fmt.Errorf("%s not sent yet", in.GetId())
			}
		}
		return len(l) == n, nil
	})
	// As a new leader finds them: none re-sent yet by this coordinator.
	s.incidents.mu.Lock()
	clear(s.incidents.amSent)
	s.incidents.mu.Unlock()
	peak.Store(0)
	base := posts.Load()
	testutil.WaitFor(t, 60*time.Second, "every incident re-sent", func() (bool, error) {
		return posts.Load() >= base+n, fmt.Errorf("%d posts", posts.Load()-base)
	})
	if p := peak.Load(); p > maxSendsInFlight {
		t.Errorf("%d posts to Alertmanager at once, want at most %d", p, maxSendsInFlight)
	}
}

// TestFollowerReportsOnlyALateElection: a follower reports its gap only
// when the leader it found was elected well after it lost its own: a
// leader cut off from the others steps down, and when the partition heals
// finds the leader they elected a second after the cut, five minutes ago.
// When the term began is read back from the Raft log (its first entry).
func TestFollowerReportsOnlyALateElection(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	after := 15 * time.Second
	if electedLate(t0, t0.Add(time.Second), true, after) {
		t.Errorf("a leader elected 1s after this coordinator lost its own: reported as a lost quorum")
	}
	if !electedLate(t0, t0.Add(40*time.Second), true, after) {
		t.Errorf("a leader elected 40s after: not reported")
	}
	if electedLate(t0, time.Time{}, false, after) {
		t.Errorf("election time unknown: reported")
	}

	store := raft.NewInmemStore()
	for i, l := range []raft.Log{{Term: 3, AppendedAt: t0}, {Term: 3, AppendedAt: t0.Add(time.Second)},
		{Term: 5, AppendedAt: t0.Add(40 * time.Second)}, {Term: 5, AppendedAt: t0.Add(41 * time.Second)}} {
		l.Index, l.Type = uint64(i+1), raft.LogCommand
		if err := store.StoreLog(&l); err != nil {
			t.Fatal(err)
		}
	}
	s := &Server{raftLogs: store}
	if at, ok := s.termStartedAt(5); !ok || !at.Equal(t0.Add(40*time.Second)) {
		t.Errorf("term 5 started %s %v, want %s", at, ok, t0.Add(40*time.Second))
	}
	if _, ok := s.termStartedAt(3); ok {
		t.Errorf("term 3, whose start is not in the log read, is known")
	}
}

// TestCriticalSentFirst: when more incidents are due than can be sent at
// once, the critical ones go first: a failover's page does not wait
// behind the low-severity notifications already queued.
func TestCriticalSentFirst(t *testing.T) {
	gate := make(chan struct{})
	var mu sync.Mutex
	var order []string // severities, in the order the receiver got them
	recv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		sev := "low"
		if strings.Contains(string(body), `"severity":"critical"`) {
			sev = "critical"
		}
		mu.Lock()
		order = append(order, sev)
		mu.Unlock()
		<-gate
	}))
	defer recv.Close()
	defer close(gate)
	s := webhookLeader(t, recv.URL)
	observe := func(key, sev string) {
		mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_INCIDENT, &pgdrv1.IncidentCommand{Op: &pgdrv1.IncidentCommand_Observe{Observe: &pgdrv1.IncidentObserve{
			DedupKey: key, Title: "t", Cluster: "main", Category: "manual", Severity: sev}}})
	}
	for i := range 3 * maxSendsInFlight {
		observe(fmt.Sprintf("manual:main:%d", i), "low")
	}
	testutil.WaitFor(t, 20*time.Second, "every slot taken", func() (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return len(order) == maxSendsInFlight, fmt.Errorf("%d received", len(order))
	})
	observe("manual:main:page", "critical")
	for range maxSendsInFlight {
		gate <- struct{}{} // free the slots one by one
	}
	testutil.WaitFor(t, 20*time.Second, "the next sends", func() (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return len(order) >= 2*maxSendsInFlight, fmt.Errorf("%d received", len(order))
	})
	mu.Lock()
	defer mu.Unlock()
	for i, sev := range order[maxSendsInFlight : 2*maxSendsInFlight] {
		if sev == "critical" {
			t.Logf("critical sent %d after the slots freed", i+1)
			return
		}
	}
	t.Errorf("the critical incident was not among the %d sent once slots freed: %v", maxSendsInFlight, order)
}
