package server

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgdr/pgdr/coordinator/config"
	"github.com/pgdr/pgdr/coordinator/fsm"
	"github.com/pgdr/pgdr/coordinator/incident"
	"github.com/pgdr/pgdr/coordinator/notify"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Incidents: the leader's part.
//
// The incidents themselves live in the replicated state and most are
// opened and cleared by the FSM from the commands that record their
// conditions (coordinator/fsm/incidents.go). While it leads, a coordinator
// runs incidentRunner.run once per incidents.interval:
//
//  1. it starts incidents (StartIncidents) once every voter knows the
//     command type (incidentsFeatureLevel);
//  2. it observes the conditions no command records: a member reporting
//     itself fenced (cleared when it reports a role again), a refused
//     failover whose cluster has a healthy primary again (cleared), and at
//     the start of its leadership a lost quorum, when this coordinator saw
//     no leader for longer than incidents.quorum_lost_after (recorded with
//     its duration, cleared at once: the alert rules page meanwhile). A
//     follower that saw such a gap end in an election records it too,
//     through the leader (reportAsFollower: the new leader may have
//     restarted during the outage and seen none), unless the outage is
//     recorded already; each coordinator reports a gap once;
//  3. it escalates: incident.Escalate on the state, each move proposed as
//     IncidentEscalate{from, to}, applied only if the incident is still
//     open at level from, so that two leaders proposing the same move
//     escalate once;
//  4. it resolves what the auto-resolve policy covers;
//  5. it delivers the outbox: incident.Due says which levels are owed which
//     status; the sends go out, every channel at once (with the notifier's
//     retries), and then
//     IncidentNotified records the mark and the deliveries on the
//     incident's timeline. A leader that dies between the sends and the
//     record leaves the mark behind, and the next leader sends again with
//     the same send ids (the signed webhook's delivery id, PagerDuty's
//     dedup_key is the incident id): a level is never lost, and a repeat
//     can be dropped by the receiver. Alertmanager channels are pushed
//     again every incidents.alertmanager_resend while the incident is
//     open (Alertmanager forgets an alert that is not re-sent).
//
// Only the runner proposes from the leader's loop; operators' commands
// (pgdrctl incident …) go through the admin API.

// incidentsFeatureLevel: the voters know COMMAND_TYPE_INCIDENT.
const incidentsFeatureLevel = 4

// sendRounds: how many times the leader sends an outbox whose receivers
// failed every attempt (an outage) before recording it with the failures;
// the rounds are sendRetryWait apart, doubling.
const sendRounds = 6

// sendRetryWait is the wait after failed round n (from 1): five intervals,
// doubling, at most five minutes.
func (r *incidentRunner) sendRetryWait(n int) time.Duration {
	return min(5*r.cfg.Interval.Duration<<(n-1), 5*time.Minute)
}

// maxSendsInFlight bounds the incidents whose outbox is being delivered at
// once, and the Alertmanager re-sends in flight.
const maxSendsInFlight = 16

// eventEntries: the newest timeline entries a notification carries; the
// leader's rounds read only these of each incident (IncidentStateTail).
const eventEntries = 5

// incidentStartRetry: how often the leader tries again to start incidents.
const incidentStartRetry = 5 * time.Second

// quorumCluster is the cluster name of lost-quorum incidents: they are
// about the coordinators, not one cluster.
const quorumCluster = fsm.QuorumCluster

type incidentRunner struct {
	s        *Server
	log      *slog.Logger
	cfg      config.Incidents
	policy   incident.EscalationPolicy
	auto     incident.AutoResolvePolicy
	notifier *notify.Notifier // nil without channels
	channels map[string]notify.Channel

	mu      sync.Mutex
	sending map[string]bool      // incident id → its outbox is being delivered
	amSent  map[string]time.Time // incident id → last Alertmanager push
	// failedRounds and retryAt: an outbox whose receivers were down
	// (notify.Transient) is sent again from retryAt, up to sendRounds
	// times, before it is recorded with the failures.
	failedRounds map[string]int
	retryAt      map[string]time.Time
	// resending: Alertmanager re-sends in flight (at most
	// maxSendsInFlight; hasAM: there is an Alertmanager channel).
	resending  int
	hasAM      bool
	startTried time.Time

	// Leader gaps this coordinator saw (watchLeaderChanges): no leader
	// from gapFrom (in Raft term gapTerm); the last gap that ended is
	// [lastGapFrom, lastGapTo], lastGapElection when a leader of a later
	// term ended it (a coordinator cut off from a leader that kept its
	// quorum finds that leader in the same term: no quorum was lost).
	gapFrom, lastGapFrom, lastGapTo time.Time
	gapTerm, lastGapTerm            uint64
	lastGapElection                 bool
	// termStart says when the leader of a term was elected (its first
	// log entry): Server.termStartedAt.
	termStart func(term uint64) (time.Time, bool)
}

func newIncidentRunner(s *Server, cfg config.Incidents, log *slog.Logger) (*incidentRunner, error) {
	cfg = cfg.WithDefaults()
	r := &incidentRunner{s: s, log: log.With("subsystem", "incidents"), cfg: cfg, policy: cfg.Policy(), auto: cfg.AutoResolvePolicy(),
		channels: map[string]notify.Channel{}, sending: map[string]bool{}, amSent: map[string]time.Time{},
		failedRounds: map[string]int{}, retryAt: map[string]time.Time{}, termStart: s.termStartedAt}
	if len(cfg.Channels) == 0 {
		return r, nil
	}
	n, err := notify.NewFromConfig(notify.Config{Channels: cfg.Channels}, notify.Options{Log: r.log, Backoff: 500 * time.Millisecond})
	if err != nil {
		return nil, fmt.Errorf("incidents: %w", err)
	}
	r.notifier = n
	for _, ch := range n.Channels() {
		r.channels[ch.Name()] = ch
		r.hasAM = r.hasAM || ch.Type() == notify.TypeAlertmanager
	}
	return r, nil
}

// leaderSeen is called on every leader observation (id "" when this
// coordinator lost its leader) with the Raft term then. It reports whether
// a gap just ended under another coordinator's leadership (this one, a
// follower, then reports it: reportAsFollower).
func (r *incidentRunner) leaderSeen(id string, term uint64, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case id == "" && r.gapFrom.IsZero():
		r.gapFrom, r.gapTerm = now, term
	case id != "" && !r.gapFrom.IsZero():
		r.lastGapFrom, r.lastGapTo, r.lastGapElection, r.lastGapTerm, r.gapFrom = r.gapFrom, now, term > r.gapTerm, term, time.Time{}
		return id != r.s.cfg.Name
	}
	return false
}

// run is the leader's loop; it ends with the leadership (ctx).
func (r *incidentRunner) run(ctx context.Context) {
	quorumChecked := false
	t := time.NewTicker(r.cfg.Interval.Duration)
	defer t.Stop()
	for {
		now := time.Now()
		if !r.s.fsm.IncidentsStarted() {
			r.start(ctx, now)
		} else {
			if !quorumChecked {
				quorumChecked = true
				r.quorum(ctx, now)
			}
			st := r.s.fsm.IncidentStateTail(eventEntries) // one copy per round
			r.conditions(ctx, st)
			r.escalate(ctx, st, now)
			r.autoResolve(ctx, st, now)
			r.deliver(ctx, now) // reads its own copy, after the sends in flight
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *incidentRunner) actor() string { return "coordinator:" + r.s.cfg.Name }

// propose proposes one incident operation (ignore_if_unknown: an older
// voter skips it). Errors are logged: the next round tries again.
func (r *incidentRunner) propose(ctx context.Context, what string, op *pgdrv1.IncidentCommand) bool {
	cmd, err := fsm.NewCommand(pgdrv1.CommandType_COMMAND_TYPE_INCIDENT, op, r.actor(), time.Now())
	if err != nil {
		r.log.Error("encoding incident command", "what", what, "err", err)
		return false
	}
	cmd.IgnoreIfUnknown = true
	res, err := r.s.proposeCommand(ctx, cmd)
	if err == nil && !res.GetOk() {
		err = fmt.Errorf("%s", res.GetError())
	}
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("incident command", "what", what, "err", err)
		}
		return false
	}
	return true
}

// start proposes StartIncidents once every voter knows the command.
func (r *incidentRunner) start(ctx context.Context, now time.Time) {
	r.mu.Lock()
	if !r.startTried.IsZero() && now.Sub(r.startTried) < incidentStartRetry {
		r.mu.Unlock()
		return
	}
	r.startTried = now
	r.mu.Unlock()
	servers := r.s.voters()
	levels := peerLevels(r.s.cfg.Name, servers, r.s.featureLevels(), r.s.askLevel)
	if ok, why := votersReadyFor(r.s.cfg.Name, servers, levels, incidentsFeatureLevel, "incidents"); !ok {
		r.log.Debug("incidents not started yet", "why", why)
		return
	}
	r.propose(ctx, "start", &pgdrv1.IncidentCommand{Op: &pgdrv1.IncidentCommand_Start{Start: &pgdrv1.StartIncidents{}}})
}

// quorum records the leaderless gap this coordinator saw just before it
// became leader, if it was longer than quorum_lost_after.
func (r *incidentRunner) quorum(ctx context.Context, now time.Time) {
	if from, to, _, ok := r.gapToReport(true, now); ok {
		r.reportGap(ctx, from, to)
	}
}

// reportAsFollower records, through the leader, the gap this follower saw
// end (the new leader may have restarted during the outage and seen
// none), unless the outage is recorded already: the new leader reports
// first, the follower waits a moment.
func (r *incidentRunner) reportAsFollower(ctx context.Context) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(2*r.cfg.Interval.Duration + time.Second):
	}
	if r.s.isLeader() || !r.s.fsm.IncidentsStarted() {
		return // as the leader, quorum reports it
	}
	from, to, term, ok := r.gapToReport(false, time.Now())
	if !ok {
		return
	}
	if start, known := r.termStart(term); !electedLate(from, start, known, r.cfg.QuorumLostAfter.Duration) {
		return // the others had a leader soon after this coordinator lost its own: it was cut off, not the quorum lost
	}
	r.reportGap(ctx, from, to)
}

// electedLate reports whether the leader a follower found after its gap
// (from) was elected (start, when known) more than after later: only then
// had the coordinators no leader, rather than this one being cut off from
// them (a leader cut off from the others, say, steps down and finds the
// leader they elected at once).
func electedLate(from, start time.Time, known bool, after time.Duration) bool {
	return known && start.Sub(from) > after
}

// reportGap records the gap [from, to] as a lost quorum, unless an active
// lost-quorum incident was seen since from (another coordinator reported
// the same outage).
func (r *incidentRunner) reportGap(ctx context.Context, from, to time.Time) {
	for _, in := range r.s.fsm.Incidents(quorumCluster, false, "") {
		if in.GetDedupKey() == "quorum" && !in.GetLastSeen().AsTime().Before(from) {
			return
		}
	}
	msg := fmt.Sprintf("no coordinator leader for %s (from %s to %s, as %s saw it): quorum was lost",
		to.Sub(from).Round(100*time.Millisecond), from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339), r.s.cfg.Name)
	r.propose(ctx, "quorum lost", &pgdrv1.IncidentCommand{Op: &pgdrv1.IncidentCommand_Observe{Observe: &pgdrv1.IncidentObserve{
		DedupKey: "quorum", Title: "Coordinators lost their quorum", Cluster: quorumCluster, Category: string(incident.QuorumLost),
		Severity: string(incident.High), Message: msg, ClearNow: true}}})
}

// gapToReport returns, once, the leaderless gap this coordinator saw and
// should record as a lost quorum if it lasted longer than
// quorum_lost_after: as the new leader (leader: a gap its own observation
// has not ended yet ends now) or as a follower that saw a new leader. A
// gap that ended more than a minute ago, or without an election (the
// leader of the same term found again), is not reported. term is the Raft
// term of the leader that ended a follower's gap.
func (r *incidentRunner) gapToReport(leader bool, now time.Time) (from, to time.Time, term uint64, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case leader && !r.gapFrom.IsZero():
		from, to, r.gapFrom = r.gapFrom, now, time.Time{}
	case !r.lastGapFrom.IsZero() && now.Sub(r.lastGapTo) <= time.Minute:
		from, to, term = r.lastGapFrom, r.lastGapTo, r.lastGapTerm
		if !r.lastGapElection {
			from = time.Time{}
		}
	default:
		return from, to, 0, false
	}
	r.lastGapFrom, r.lastGapTo = time.Time{}, time.Time{}
	return from, to, term, !from.IsZero() && to.Sub(from) > r.cfg.QuorumLostAfter.Duration
}

// termStartedAt returns when the leader of term was elected: the time its
// first entry (the election's no-op) was appended, reading the Raft log
// back from its end, at most 4096 entries. Unknown (false) when the log
// read holds no entry of an earlier term before it.
func (s *Server) termStartedAt(term uint64) (time.Time, bool) {
	if s.raftLogs == nil {
		return time.Time{}, false
	}
	first, err := s.raftLogs.FirstIndex()
	if err != nil {
		return time.Time{}, false
	}
	last, err := s.raftLogs.LastIndex()
	if err != nil {
		return time.Time{}, false
	}
	var at time.Time
	for i := last; i >= first && i > 0 && last-i < 4096; i-- {
		var l raft.Log
		if err := s.raftLogs.GetLog(i, &l); err != nil {
			return time.Time{}, false
		}
		switch {
		case l.Term < term:
			return at, !at.IsZero()
		case l.Term == term:
			at = l.AppendedAt
		}
	}
	return time.Time{}, false
}

// condition is one condition the leader sees in the agents' reports.
type condition struct {
	key, cluster string
	present      bool // seen now (observe) or seen gone (clear)
	sig          incident.Signal
}

// viewConditions lists the conditions the members' statuses show: a
// fenced member (present) or one reporting a role again (gone); a cluster
// whose recorded primary is healthy ends a refused failover (gone). A
// member without a fresh report says nothing.
func viewConditions(statuses []*pgdrv1.ClusterStatus) []condition {
	var out []condition
	for _, cs := range statuses {
		cl := cs.GetName()
		for _, ms := range cs.GetMembers() {
			key := "fencing:" + cl + ":" + ms.GetName()
			switch ms.GetRole() {
			case RoleFenced:
				out = append(out, condition{key: key, cluster: cl, present: true, sig: incident.Signal{DedupKey: key, Cluster: cl,
					Category: incident.Fencing, Severity: incident.High, Title: fmt.Sprintf("%s of cluster %s is fenced", ms.GetName(), cl),
					Message: fmt.Sprintf("%s reports itself fenced (writes refused until the coordinators tell it to follow)", ms.GetName())}})
			case RolePrimary, RoleReplica:
				out = append(out, condition{key: key, cluster: cl})
			}
			if ms.GetName() == cs.GetPrimary() && ms.GetRole() == RolePrimary && ms.GetHealthy() {
				out = append(out, condition{key: "failover-refused:" + cl, cluster: cl})
			}
		}
	}
	return out
}

// conditions observes the present conditions that have no active,
// uncleared incident, and clears the gone ones that have one.
//
// Only the clusters that can have such a condition are judged (a member
// reporting itself fenced, or an active fencing or refused-failover
// incident), so that a leader of thousands of agents does not build every
// cluster's status every round.
func (r *incidentRunner) conditions(ctx context.Context, st incident.State) {
	watch := map[string]bool{}
	for _, in := range st.Incidents {
		if in.Active() && (in.Category == incident.Fencing || in.Category == incident.FailoverRefused) {
			watch[in.Cluster] = true
		}
	}
	for cl := range r.s.view.fencedClusters() {
		watch[cl] = true
	}
	var statuses []*pgdrv1.ClusterStatus
	if len(watch) > 0 {
		views := r.s.fsm.ClusterViews()
		for name := range watch {
			if c, ok := views[name]; ok {
				statuses = append(statuses, r.s.statusOf(c)...)
			}
		}
	}
	cleared := map[string]bool{} // active incidents by dedup key: condition cleared (one lookup per member, not a scan)
	for _, in := range st.Incidents {
		if in.Active() {
			cleared[in.DedupKey] = in.ConditionCleared
		}
	}
	for _, c := range viewConditions(statuses) {
		isCleared, active := cleared[c.key]
		switch {
		case c.present && (!active || isCleared):
			r.propose(ctx, "observe "+c.key, &pgdrv1.IncidentCommand{Op: &pgdrv1.IncidentCommand_Observe{Observe: &pgdrv1.IncidentObserve{
				DedupKey: c.key, Title: c.sig.Title, Cluster: c.cluster, Category: string(c.sig.Category), Severity: string(c.sig.Severity), Message: c.sig.Message}}})
		case !c.present && active && !isCleared:
			r.propose(ctx, "clear "+c.key, &pgdrv1.IncidentCommand{Op: &pgdrv1.IncidentCommand_Clear{Clear: &pgdrv1.IncidentClear{
				DedupKey: c.key, Message: "condition over (seen in the members' reports)"}}})
		}
	}
}

// escalate proposes every move incident.Escalate decides now.
func (r *incidentRunner) escalate(ctx context.Context, st incident.State, now time.Time) {
	if len(r.policy.Levels) < 2 {
		return
	}
	next, moves, err := incident.Escalate(st, r.policy, now)
	if err != nil {
		r.log.Error("escalation policy", "err", err)
		return
	}
	for _, m := range moves {
		msg := ""
		if i := next.Find(m.ID); i >= 0 {
			tl := next.Incidents[i].Timeline
			msg = tl[len(tl)-1].Message
		}
		r.propose(ctx, "escalate "+m.ID, &pgdrv1.IncidentCommand{Op: &pgdrv1.IncidentCommand_Escalate{Escalate: &pgdrv1.IncidentEscalate{
			Id: m.ID, From: int32(m.From), To: int32(m.To), Message: msg}}})
	}
}

// autoResolve resolves what the auto-resolve policy covers.
func (r *incidentRunner) autoResolve(ctx context.Context, st incident.State, now time.Time) {
	if len(r.auto.Categories) == 0 {
		return
	}
	_, ids, err := incident.AutoResolve(st, r.auto, now)
	if err != nil {
		r.log.Error("auto-resolve policy", "err", err)
		return
	}
	for _, id := range ids {
		r.propose(ctx, "auto-resolve "+id, &pgdrv1.IncidentCommand{Op: &pgdrv1.IncidentCommand_Resolve{Resolve: &pgdrv1.IncidentTransition{
			Id: id, Note: fmt.Sprintf("auto-resolved: condition cleared for at least %s", r.auto.Hold)}}})
	}
}

// deliver sends every incident's outbox in its own goroutine (one at a
// time per incident) and pushes open incidents to Alertmanager again.
func (r *incidentRunner) deliver(ctx context.Context, now time.Time) {
	if r.notifier == nil {
		return
	}
	// The sends in flight are taken before the state is read: one that
	// ends (and records its outbox) after the read would otherwise look
	// idle with its outbox still due, and be sent twice.
	r.mu.Lock()
	inFlight := maps.Clone(r.sending)
	r.mu.Unlock()
	// The most severe first (then the oldest): when more are due than
	// maxSendsInFlight, a failover's page does not wait behind the rest.
	ins := r.s.fsm.IncidentStateTail(eventEntries).Incidents
	slices.SortStableFunc(ins, func(a, b incident.Incident) int {
		return cmp.Compare(severityRank(a.Severity), severityRank(b.Severity))
	})
	for _, in := range ins {
		sends, mark := incident.Due(in, r.policy)
		r.mu.Lock()
		busy := inFlight[in.ID] || r.sending[in.ID] || now.Before(r.retryAt[in.ID]) ||
			len(sends) > 0 && len(r.sending) >= maxSendsInFlight // the oldest first; the rest next round
		resend := r.hasAM && len(sends) == 0 && in.Active() && in.NotifiedLevels > 0 && now.Sub(r.amSent[in.ID]) >= r.cfg.AlertmanagerResend.Duration &&
			r.resending < maxSendsInFlight // the rest next round
		if len(sends) > 0 && !busy {
			r.sending[in.ID] = true
		}
		if resend && !busy {
			r.amSent[in.ID] = now
			r.resending++
		}
		r.mu.Unlock()
		switch {
		case busy:
		case len(sends) > 0:
			go r.send(ctx, in, sends, mark)
		case resend:
			go r.resendAlertmanager(ctx, in)
		}
	}
	r.forget(ins)
}

// severityRank orders severities for delivery: critical first, unknown
// last.
func severityRank(s incident.Severity) int {
	if p := incident.PriorityOf(s); p != "" {
		return int(p[1] - '0')
	}
	return 9
}

// forget drops the Alertmanager push times of incidents no longer kept.
func (r *incidentRunner) forget(ins []incident.Incident) {
	st := incident.State{Incidents: ins}
	r.mu.Lock()
	defer r.mu.Unlock()
	for id := range r.amSent {
		if i := st.Find(id); i < 0 || !st.Incidents[i].Active() {
			delete(r.amSent, id)
		}
	}
	for id := range r.failedRounds {
		if st.Find(id) < 0 {
			delete(r.failedRounds, id)
			delete(r.retryAt, id)
		}
	}
}

// send delivers sends and records the mark with what each delivery
// returned.
func (r *incidentRunner) send(ctx context.Context, in incident.Incident, sends []incident.Send, mark incident.Mark) {
	defer func() {
		r.mu.Lock()
		delete(r.sending, in.ID)
		r.mu.Unlock()
	}()
	// Every channel of every send goes out at once: a slow or rate-limited
	// channel (Slack's Retry-After) must not hold up the page of another.
	type result struct {
		line      string
		transient bool
	}
	n := 0
	for _, sd := range sends {
		n += len(sd.Channels)
	}
	results := make([]result, 0, n) // never grown: the goroutines write in place
	var wg sync.WaitGroup
	for _, sd := range sends {
		ev := r.event(in, sd.Level, sd.ID)
		for _, name := range sd.Channels {
			results = append(results, result{})
			res := &results[len(results)-1]
			ch := r.channels[name]
			if ch == nil {
				res.line = fmt.Sprintf("level %d %s %s: no such channel in this coordinator's config", sd.Level, sd.Status, name)
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := r.notifier.Deliver(ctx, ch, ev); err != nil {
					res.line, res.transient = fmt.Sprintf("level %d %s to %s (%s): failed: %v", sd.Level, sd.Status, name, ch.Type(), err), notify.Transient(err)
					return
				}
				res.line = fmt.Sprintf("level %d %s to %s (%s): delivered", sd.Level, sd.Status, name, ch.Type())
			}()
		}
	}
	wg.Wait()
	if ctx.Err() != nil {
		return // leadership lost: the next leader sends what was not recorded
	}
	var log []string
	outage := false
	for _, res := range results {
		log, outage = append(log, res.line), outage || res.transient
	}
	r.mu.Lock()
	if outage {
		r.failedRounds[in.ID]++
	}
	if n := r.failedRounds[in.ID]; outage && n < sendRounds {
		wait := r.sendRetryWait(n)
		r.retryAt[in.ID] = time.Now().Add(wait)
		r.mu.Unlock()
		r.log.Warn("incident notification not delivered: a receiver is down; sending again later", "incident", in.ID, "round", n, "wait", wait)
		return // the outbox is not recorded: the next round (or leader) sends it again
	} else if outage {
		log = append(log, fmt.Sprintf("gave up after %d rounds", n))
	}
	delete(r.failedRounds, in.ID)
	delete(r.retryAt, in.ID)
	if in.Active() {
		r.amSent[in.ID] = time.Now()
	}
	r.mu.Unlock()
	r.propose(ctx, "notified "+in.ID, &pgdrv1.IncidentCommand{Op: &pgdrv1.IncidentCommand_Notified{Notified: &pgdrv1.IncidentNotified{
		Id: in.ID, NotifiedLevels: uint32(mark.NotifiedLevels), Status: string(mark.NotifiedStatus), Deliveries: log}}})
}

// resendAlertmanager pushes an open incident to the Alertmanager channels
// of the levels notified (not recorded: Alertmanager dedupes by labels).
func (r *incidentRunner) resendAlertmanager(ctx context.Context, in incident.Incident) {
	defer func() {
		r.mu.Lock()
		r.resending--
		r.mu.Unlock()
	}()
	ev := r.event(in, in.EscalationLevel, "")
	for _, name := range r.policy.Channels(in.NotifiedLevels - 1) {
		if ch := r.channels[name]; ch != nil && ch.Type() == notify.TypeAlertmanager {
			if err := r.notifier.Deliver(ctx, ch, ev); err != nil && ctx.Err() == nil {
				r.log.Warn("alertmanager re-send", "incident", in.ID, "channel", name, "err", err)
			}
		}
	}
}

// event is what the channels render of in.
func (r *incidentRunner) event(in incident.Incident, level int, sendID string) notify.Event {
	st := notify.StatusTriggered
	switch in.Status {
	case incident.Acknowledged:
		st = notify.StatusAcknowledged
	case incident.Resolved:
		st = notify.StatusResolved
	}
	ev := notify.Event{IncidentID: in.ID, DedupKey: in.DedupKey, Cluster: in.Cluster, Title: in.Title, Category: string(in.Category),
		Severity: notify.Severity(in.Severity), Status: st, Source: r.s.cfg.Name, OpenedAt: in.Opened, ResolvedAt: in.Resolved,
		Link: r.cfg.Link, SendID: sendID, Level: level}
	var lines []string
	for _, e := range in.Timeline[max(0, len(in.Timeline)-eventEntries):] {
		if e.Kind == "notified" {
			continue
		}
		lines = append(lines, e.Time.UTC().Format("15:04:05")+" "+e.Kind+": "+e.Message)
		ev.UpdatedAt = e.Time
	}
	ev.Timeline = strings.Join(lines, "\n")
	return ev
}

// descIncidentsOpen: the active incidents, served by the caught-up leader.
var descIncidentsOpen = prometheus.NewDesc("pgdr_incidents_open",
	"Open and acknowledged incidents, by cluster, category (kind), severity and status (state) (leader only).",
	[]string{"cluster", "kind", "severity", "state"}, nil)

// incidentCollector serves pgdr_incidents_open from the replicated state.
type incidentCollector struct{ s *Server }

func (incidentCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descIncidentsOpen }

func (c incidentCollector) Collect(ch chan<- prometheus.Metric) {
	if !c.s.caughtUpLeader() {
		return
	}
	type key struct{ cluster, category, severity, status string }
	n := map[key]int{}
	for _, in := range c.s.fsm.Incidents("", false, "") {
		n[key{in.GetCluster(), in.GetCategory(), in.GetSeverity(), in.GetStatus()}]++
	}
	for k, v := range n {
		ch <- prometheus.MustNewConstMetric(descIncidentsOpen, prometheus.GaugeValue, float64(v), k.cluster, k.category, k.severity, k.status)
	}
}
