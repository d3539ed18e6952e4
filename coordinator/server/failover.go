package server

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/compliance"
	"github.com/pgdr/pgdr/coordinator/failover"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// History kinds of a failover, recorded as intent → steps → result.
const (
	kindFailoverIntent  = "failover-intent"
	kindFailoverStep    = "failover-step"
	kindFailoverResult  = "failover-result"
	kindFailoverRefused = "failover-refused"
	kindRejoin          = "rejoin"
)

// judgements holds, per cluster, the leader's latest failover judgement and
// which orders are in flight, so that a tick never starts one twice.
type judgements struct {
	mu       sync.Mutex
	reason   map[string]string
	refused  map[string]string // last refusal recorded in history
	inFlight map[string]bool   // cluster → a failover is running
	rejoins  map[memberKey]time.Time
	// rejoinBusy: a rejoin order to the member is running;
	// rejoinFails: its rejoins that failed in a row (rejoinTick backs off).
	rejoinBusy  map[memberKey]bool
	rejoinFails map[memberKey]int
	stray       map[memberKey]time.Time // replica → first seen not streaming (followTick)
	follows     map[memberKey]time.Time // replica → last follow order (followTick)
	// repromotes: cluster → orders to its unpromoted recorded primary (repromoteTick)
	repromotes map[string]repromoteState
}

func newJudgements() *judgements {
	j := &judgements{}
	j.reset()
	return j
}

func (j *judgements) get(cluster string) string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.reason[cluster]
}

func (j *judgements) reset() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.reason, j.refused, j.inFlight = map[string]string{}, map[string]string{}, map[string]bool{}
	j.rejoins, j.stray, j.follows = map[memberKey]time.Time{}, map[memberKey]time.Time{}, map[memberKey]time.Time{}
	j.repromotes = map[string]repromoteState{}
	j.rejoinBusy, j.rejoinFails = map[memberKey]bool{}, map[memberKey]int{}
}

// failoverInput builds the decision's view of one cluster from the
// replicated state and the leader's in-memory reports.
func (s *Server) failoverInput(c *pgdrv1.Cluster, samples map[memberKey]sample, now time.Time) failover.Input {
	in := s.membersInput(c, samples, now)
	if le, ok := s.leases.get(c.Name); ok && le.epoch == c.Epoch && le.holder == c.Primary {
		in.LeaseExpiresAt = le.expires
	}
	if ev := s.fsm.LatestEvent(c.Name, kindFailoverIntent, kindManualIntent); ev.GetTime() != nil { // countsAsFailover
		in.LastFailoverAt = ev.GetTime().AsTime()
	} else if ev != nil { // (every event has a time; should one not, the newest that has)
		s.fsm.ScanHistoryBack(c.Name, func(ev *pgdrv1.HistoryEvent) bool {
			if countsAsFailover(ev.Kind) && ev.Time != nil {
				in.LastFailoverAt = ev.Time.AsTime() // the newest one
				return false
			}
			return true
		})
	}
	if failover.UnpromotedPrimary(in.Members[c.Primary]) { // rule 2a reads history only then
		in.PrimaryPromoted = s.primaryPromoted(c)
	}
	s.syncEligibility(c, samples, &in)
	return in
}

// membersInput is the decision's view of cluster c's members, policy and
// primary LSN, without the lease, the history or synchronous eligibility
// (failoverInput adds them; the metrics read it at scrape time).
func (s *Server) membersInput(c *pgdrv1.Cluster, samples map[memberKey]sample, now time.Time) failover.Input {
	in := failover.Input{
		Cluster: c.Name, Primary: c.Primary, Epoch: c.Epoch, Now: now,
		Members: make(map[string]failover.Member, len(c.Members)),
		Policy: failover.Policy{
			MinInterval: s.cfg.Failover.MinInterval.Duration,
		},
	}
	if p := c.Policy; p != nil {
		in.Paused = p.Paused
		in.Policy.MaxLagOnFailover = p.MaximumLagOnFailover
		in.Policy.PreferredRegions = p.PreferredRegions
		in.Policy.Synchronous = p.Synchronous
	}
	// Never the latest report's LSN: one from an agent whose PostgreSQL is
	// down carries none (see primarylsn.go).
	in.PrimaryLastLSN = s.primaryLastLSN(c)
	for name, m := range c.Members {
		fm := failover.Member{Name: name, Region: m.Region, Tags: m.Tags, Priority: m.Priority}
		if sm, ok := samples[memberKey{c.Name, name}]; ok {
			r := sm.report
			fm.Fresh = now.Sub(sm.at) <= s.cfg.Health.StaleAfter.Duration
			fm.PostmasterAlive, fm.Connectable, fm.InRecovery = r.PostmasterAlive, r.Connectable, r.InRecovery
			fm.Streaming, fm.Fenced, fm.Timeline = r.Streaming, r.Fenced, r.Timeline
			fm.ReceiveLSN, fm.ReplayLSN = r.ReceiveLsn, r.ReplayLsn
			if !c.GetPolicy().GetFailsafeDisabled() {
				fm.RefusesPromotion = failsafeRefusal(r, c.Primary, s.cfg.Failover.LeaseTTL.Duration)
			}
		}
		in.Members[name] = fm
	}
	return in
}

// failoverTick judges every cluster once; the leader loop calls it. The
// clusters are the FSM's shared views: read only, here and in everything
// it hands them to.
func (s *Server) failoverTick(ctx context.Context) {
	clusters := s.fsm.ClusterViews()
	samples := s.view.snapshot()
	now := time.Now()
	for name, c := range clusters {
		if c.Primary == "" {
			continue
		}
		s.judge.mu.Lock()
		busy := s.judge.inFlight[name]
		s.judge.mu.Unlock()
		if busy || s.resumeTick(ctx, c, samples, now) {
			continue
		}
		s.leases.ensure(name, c.Primary, c.Epoch, now, s.cfg.Failover.LeaseTTL.Duration)
		pm := failover.Member{}
		if sm, ok := samples[memberKey{name, c.Primary}]; ok {
			pm = failover.Member{Fresh: now.Sub(sm.at) <= s.cfg.Health.StaleAfter.Duration,
				PostmasterAlive: sm.report.PostmasterAlive, Connectable: sm.report.Connectable,
				InRecovery: sm.report.InRecovery, Fenced: sm.report.Fenced}
		}
		s.comp.notePrimary(name, c.Epoch, failover.PrimaryHealthy(pm), now) // a failover's detection time
		in := s.failoverInput(c, samples, now)
		d := failover.Decide(in)
		s.judge.mu.Lock()
		s.judge.reason[name] = d.Reason
		lastRefusal := s.judge.refused[name]
		s.judge.mu.Unlock()
		switch d.Action {
		case failover.ActionPromote:
			s.judge.mu.Lock()
			s.judge.inFlight[name] = true
			s.judge.mu.Unlock()
			go func() {
				defer func() {
					s.judge.mu.Lock()
					delete(s.judge.inFlight, name)
					s.judge.mu.Unlock()
				}()
				s.executeFailover(ctx, c, d)
			}()
		case failover.ActionRepromote:
			s.repromoteTick(ctx, c, d, now)
		case failover.ActionNone:
			// A primary that is down but cannot be replaced is recorded once
			// per distinct reason, so that history says why nothing happened.
			if key := refusalKey(in, d); !failover.PrimaryHealthy(pm) && key != lastRefusal {
				s.judge.mu.Lock()
				s.judge.refused[name] = key
				s.judge.mu.Unlock()
				s.recordEvent(ctx, name, kindFailoverRefused, c.Primary, c.Epoch, d.Reason, rejectedDetails(d))
				s.metrics.failoverRefused(d.Refused)
			}
		}
		if d.Action != failover.ActionPromote {
			s.rejoinTick(ctx, c, samples, now)
			s.followTick(ctx, c, samples, now)
		}
	}
}

// refusalKey is what tells one refusal from the next: its reason, but
// for min_interval (whose reason counts the time since the last failover
// and until the next, new at every tick) the last failover's time and the
// primary's problem, so that it is recorded and counted once.
func refusalKey(in failover.Input, d failover.Decision) string {
	if d.Refused == failover.RefusedMinInterval {
		return fmt.Sprintf("%s since %s: %s", d.Refused, in.LastFailoverAt.UTC().Format(time.RFC3339Nano), failover.PrimaryProblem(in.Members[in.Primary]))
	}
	return d.Reason
}

func rejectedDetails(d failover.Decision) map[string]string {
	out := map[string]string{}
	for k, v := range d.Rejected {
		out["rejected:"+k] = v
	}
	return out
}

func (s *Server) recordEvent(ctx context.Context, cluster, kind, node string, epoch uint64, msg string, details map[string]string) {
	s.recordPromoteEvent(ctx, cluster, kind, node, epoch, msg, details, pgdrv1.PromoteMark_PROMOTE_MARK_UNSPECIFIED)
}

// recordPromoteEvent records an event that also says what became of the
// promotion of node at epoch (Cluster.unsettled_promote, promote.go).
//
// It returns the error of recording it (logged): a promote order whose
// ORDERED mark was not committed must not be sent.
func (s *Server) recordPromoteEvent(ctx context.Context, cluster, kind, node string, epoch uint64, msg string, details map[string]string, mark pgdrv1.PromoteMark) error {
	return s.recordUnsettled(ctx, cluster, kind, node, epoch, msg, details, mark, time.Time{}, s.honoursSettle(cluster, node))
}

// honoursSettle reports whether node's agent, as registered now, keeps
// settle deadlines: recorded with a promote order as it goes out, so that
// a later registration does not change what that order promised.
func (s *Server) honoursSettle(cluster, node string) bool {
	c, ok := s.fsm.Cluster(cluster)
	return ok && c.GetMembers()[node].GetHonoursSettleBy()
}

// recordUnsettled is recordPromoteEvent with the settle_by of the order
// the event is about (zero: none; shown only), its settle window, and
// whether node's agent kept settle deadlines when it went out (honours).
// An ORDERED mark is of an order this leader is about to send: it carries
// this leader's settle window.
func (s *Server) recordUnsettled(ctx context.Context, cluster, kind, node string, epoch uint64, msg string, details map[string]string, mark pgdrv1.PromoteMark, settleBy time.Time, honours bool) error {
	rec := &pgdrv1.RecordEvent{Event: &pgdrv1.HistoryEvent{
		Cluster: cluster, Kind: historyKind(ctx, kind), Node: node, Epoch: epoch, Message: msg, Details: details,
	}, Promote: mark, HonoursSettle: honours}
	if !settleBy.IsZero() {
		rec.SettleBy = timestamppb.New(settleBy)
	}
	if mark == pgdrv1.PromoteMark_PROMOTE_MARK_ORDERED || mark == pgdrv1.PromoteMark_PROMOTE_MARK_UNSETTLED && !settleBy.IsZero() {
		rec.SettleAfterMs = uint64(s.promoteSettleAfter().Milliseconds())
	}
	_, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_RECORD_EVENT, rec, "coordinator:"+s.cfg.Name)
	if err != nil {
		s.log.Warn("recording history", "cluster", cluster, "kind", kind, "err", err)
		return fmt.Errorf("recording %s event of %s at epoch %d in cluster %s: %w", kind, node, epoch, cluster, err)
	}
	s.notifyEvent(cluster, kind, node, epoch, msg, details)
	return nil
}

// executeFailover carries out a promotion decided by failover.Decide:
// revoke the old lease, record the intent, move the primary (and epoch) in
// Raft, order the candidate to promote, then re-point the other replicas.
func (s *Server) executeFailover(ctx context.Context, c *pgdrv1.Cluster, d failover.Decision) {
	name, old, cand := c.Name, c.Primary, d.Candidate
	log := s.log.With("cluster", name, "old_primary", old, "candidate", cand)
	if !s.leases.revokeExpired(name, c.Epoch, time.Now()) {
		log.Info("failover abandoned: the primary renewed its lease meanwhile (failsafe)", "reason", d.Reason)
		return
	}
	fenced, wait := s.settlePromote(ctx, c, cand) // never two promotions that may both complete (promote.go)
	if wait != "" {
		log.Warn("failover waits", "reason", wait)
		s.judge.mu.Lock()
		s.judge.reason[name] = wait // status says why nothing happens
		s.judge.mu.Unlock()
		key := fmt.Sprintf("unsettled promote of %s at epoch %d", old, c.Epoch) // recorded once, whatever the fence's error
		s.judge.mu.Lock()
		again := s.judge.refused[name] == key
		s.judge.refused[name] = key
		s.judge.mu.Unlock()
		if !again {
			s.recordEvent(ctx, name, kindFailoverRefused, cand, c.Epoch, wait, nil)
			s.metrics.failoverRefused(refusedUnsettled)
		}
		return
	}
	log.Warn("failover", "reason", d.Reason)
	if p := s.pendingFailover(name); p != nil {
		s.abandon(ctx, name, p, fmt.Sprintf("%s never confirmed its promotion at epoch %d; failing over again", p.cand, p.epoch+1))
	}
	details := rejectedDetails(d)
	details["old_primary"] = old
	if fenced != "" {
		details["fenced_first"] = fenced
	}
	if t, ok := s.comp.detectedAt(name, c.Epoch); ok {
		details[compliance.DetailDetectedAt] = compliance.FormatTime(t)
	}
	s.recordEvent(ctx, name, kindFailoverIntent, cand, c.Epoch, fmt.Sprintf("promote %s in place of %s: %s", cand, old, d.Reason), details)
	if _, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{
		Cluster: name, Name: cand, ExpectedEpoch: c.Epoch, Reason: "failover: " + d.Reason,
		Promote: true, PrimaryLsnSeed: s.primaryLSNSeed(c, cand), SettleAfterMs: uint64(s.promoteSettleAfter().Milliseconds()),
		HonoursSettle: c.GetMembers()[cand].GetHonoursSettleBy(),
	}, "coordinator:"+s.cfg.Name); err != nil {
		s.recordEvent(ctx, name, kindFailoverResult, cand, c.Epoch, "failed: recording the new primary: "+err.Error(), nil)
		return
	}
	epoch := c.Epoch + 1
	// The new primary gets a lease at once, so that a failed promotion is
	// not followed by another before a TTL has passed.
	s.leases.renew(name, cand, epoch, cand, epoch, time.Now(), s.cfg.Failover.LeaseTTL.Duration)
	s.recordEvent(ctx, name, kindFailoverStep, cand, epoch, fmt.Sprintf("epoch %d: %s recorded as primary; ordering it to promote", epoch, cand), nil)
	if p := s.cfg.Failover.PauseBeforePromote.Duration; p > 0 { // fault-injection tests only
		log.Warn("failover.pause_before_promote: waiting before the promote order", "pause", p)
		select {
		case <-ctx.Done():
			return
		case <-time.After(p):
		}
	}
	cur, _ := s.fsm.Cluster(name)
	s.completeFailover(ctx, cur, old, cand, epoch, d.Reason, false)
}

// completeFailover carries a failover on from its new primary recorded in
// Raft at epoch: promote cand (unless already promoted, when a new leader
// resumes it), re-point every other replica, and record the result.
func (s *Server) completeFailover(ctx context.Context, c *pgdrv1.Cluster, old, cand string, epoch uint64, reason string, promoted bool) {
	name := c.GetName()
	var writable time.Time // when cand confirmed its promotion (zero: resumed, not seen here)
	if !promoted {
		if err := s.syncBeforePromote(ctx, c, cand, epoch); err != nil {
			s.recordPromoteEvent(ctx, name, kindFailoverResult, cand, epoch, "failed: "+err.Error(), nil, pgdrv1.PromoteMark_PROMOTE_MARK_NOT_SENT)
			return
		}
		cctx, cancel := context.WithTimeout(ctx, s.cfg.Failover.CommandTimeout.Duration)
		deadline, _ := cctx.Deadline()
		settleBy := s.promoteSettleBy(deadline)
		honours := s.honoursSettle(name, cand)
		s.hub.waitStream(cctx, memberKey{name, cand}, streamWait)
		res, err := s.hub.call(cctx, memberKey{name, cand}, &pgdrv1.AgentCommand{
			Id: newCommandID(), Cluster: name, Node: cand, Epoch: epoch, IssuedAt: timestamppb.Now(), Deadline: timestamppb.New(deadline),
			Kind: &pgdrv1.AgentCommand_Promote{Promote: &pgdrv1.Promote{Reason: reason, SettleBy: timestamppb.New(settleBy),
				SettleAfterMs: uint64(s.promoteSettleAfter().Milliseconds())}},
		})
		s.promoteClk.sent(name, cand, epoch, time.Now()) // after it went out, if it did
		cancel()
		if msg, unsettled := promoteOutcome(res, err); msg != "" {
			if err == nil && isFailsafeRefusal(res.Error) { // primary alive per the candidate: reported, not retried
				s.recordEvent(ctx, name, kindFailoverRefused, cand, epoch, "primary alive per "+cand+"'s failsafe acknowledgement: "+res.Error, nil)
				s.metrics.failoverRefused(failover.RefusedFailsafe)
			}
			var details map[string]string
			mark := pgdrv1.PromoteMark_PROMOTE_MARK_NOT_SENT
			if unsettled { // fenced (or waited for) before anyone else is promoted (promote.go)
				details = map[string]string{detailPromote: promoteUnsettled}
				mark = pgdrv1.PromoteMark_PROMOTE_MARK_UNSETTLED
			}
			s.recordUnsettled(ctx, name, kindFailoverResult, cand, epoch, msg, details, mark, settleBy, honours)
			return
		}
		writable = time.Now()
		msg := strings.TrimSpace(res.Output)
		if !strings.HasPrefix(msg, "promoted") {
			msg = "promoted: " + msg
		}
		s.recordPromoteEvent(ctx, name, kindFailoverStep, cand, epoch, msg, nil, pgdrv1.PromoteMark_PROMOTE_MARK_PROMOTED)
	}

	// Re-point every other replica; the old primary rejoins when it returns.
	cur, _ := s.fsm.Cluster(name)
	primaryDSN := cur.GetMembers()[cand].GetDsn()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []string
	for m := range cur.GetMembers() {
		if m == cand || m == old {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg, err := s.repoint(ctx, name, m, cand, primaryDSN, epoch, true)
			result := "ok"
			if err != nil {
				mu.Lock()
				failed = append(failed, m)
				mu.Unlock()
				result = "failed"
			}
			// step/result let rejoinTick find a replica that missed it
			// (stoppedMustRejoin).
			s.recordEvent(ctx, name, kindFailoverStep, m, epoch, msg, map[string]string{"step": stepFollow, "result": result})
		}()
	}
	wg.Wait()
	slices.Sort(failed)
	result := fmt.Sprintf("done: %s is primary at epoch %d", cand, epoch)
	if len(failed) > 0 {
		result += "; not following yet: " + strings.Join(failed, ", ")
	}
	s.recordPromoteEvent(ctx, name, kindFailoverResult, cand, epoch, result, s.measuredDetails(name, epoch, writable), pgdrv1.PromoteMark_PROMOTE_MARK_PROMOTED)
}

// measuredDetails are a recovery result's measurement: when the new
// primary at epoch became writable and how long after its start (the
// intent's detection time, else the intent's time; compliance.Recoveries
// reads the same). Nil when writable is not known.
func (s *Server) measuredDetails(cluster string, epoch uint64, writable time.Time) map[string]string {
	if writable.IsZero() {
		return nil
	}
	out := map[string]string{compliance.DetailWritableAt: compliance.FormatTime(writable)}
	var started time.Time
	s.fsm.ScanHistoryBack(cluster, func(ev *pgdrv1.HistoryEvent) bool {
		if strings.HasSuffix(ev.GetKind(), "-intent") && ev.GetEpoch()+1 == epoch && ev.GetTime() != nil {
			started = ev.GetTime().AsTime()
			if t, ok := compliance.ParseTime(ev.GetDetails()[compliance.DetailDetectedAt]); ok && t.Before(started) {
				started = t
			}
			return false
		}
		return ev.GetEpoch()+1 >= epoch
	})
	if !started.IsZero() && !writable.Before(started) {
		out[compliance.DetailDurationMS] = strconv.FormatInt(writable.Sub(started).Milliseconds(), 10)
	}
	return out
}

// promoteSettleBy is the settle_by of a promote order that must start by
// deadline: a lease TTL later. Shown, and kept for older agents; newer
// ones keep promoteSettleAfter instead.
func (s *Server) promoteSettleBy(deadline time.Time) time.Time {
	return deadline.Add(s.cfg.Failover.LeaseTTL.Duration)
}

// promoteSettleAfter is a promote order's settle window
// (Promote.settle_after_ms): its longest wait plus a lease TTL, from its
// sending. The agent drops (fences) a promotion that was not granted a
// lease by then, counted on its monotonic clock, so the leader may count
// one it never heard the outcome of as settled once the window (plus the
// safety margin) has passed on its own monotonic clock since the order
// went out (promoteClock).
func (s *Server) promoteSettleAfter() time.Duration {
	return s.cfg.Failover.CommandTimeout.Duration + s.cfg.Failover.LeaseTTL.Duration
}

// streamWait bounds how long an order waits for the agent's command stream
// (agents reconnect within seconds after a change of leader; a replica that
// is down is left to followTick once it is back).
const streamWait = 10 * time.Second

// repoint orders replica m to follow primary cand. When the agent answers
// that its server cannot stream from cand (it received WAL past the point
// where cand's timeline forked: an asynchronous replica ahead of the
// promoted one) and rejoin is set, m is ordered to rejoin (pg_rewind). It
// returns the step's message.
func (s *Server) repoint(ctx context.Context, name, m, cand, primaryDSN string, epoch uint64, rejoin bool) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Failover.CommandTimeout.Duration)
	defer cancel()
	s.hub.waitStream(cctx, memberKey{name, m}, streamWait)
	res, err := s.hub.call(cctx, memberKey{name, m}, &pgdrv1.AgentCommand{
		Id: newCommandID(), Cluster: name, Node: m, Epoch: epoch, IssuedAt: timestamppb.Now(),
		Kind: &pgdrv1.AgentCommand_Follow{Follow: &pgdrv1.Follow{Primary: cand, PrimaryDsn: primaryDSN}},
	})
	msg := fmt.Sprintf("%s follows %s", m, cand)
	if err == nil && !res.Ok {
		err = fmt.Errorf("%s", res.Error)
	}
	if err != nil && res != nil && rejoin {
		s.recordEvent(ctx, name, kindFailoverStep, m, epoch, fmt.Sprintf("%s could not follow %s (%v); ordering it to rejoin", m, cand, err), nil)
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Minute)
		defer rcancel()
		res, err = s.hub.call(rctx, memberKey{name, m}, &pgdrv1.AgentCommand{
			Id: newCommandID(), Cluster: name, Node: m, Epoch: epoch, IssuedAt: timestamppb.Now(),
			Kind: &pgdrv1.AgentCommand_Rejoin{Rejoin: &pgdrv1.Rejoin{Primary: cand, PrimaryDsn: primaryDSN}},
		})
		msg = fmt.Sprintf("%s rejoined as a replica of %s", m, cand)
		s.recordDivergence(ctx, name, m, epoch, res)
		if err == nil && !res.Ok {
			err = fmt.Errorf("%s", res.Error)
		}
	}
	if err != nil {
		return fmt.Sprintf("%s could not follow %s: %v", m, cand, err), err
	}
	return msg, nil
}

// rejoinInterval spaces rejoin orders to one member; after failed ones
// the wait doubles per failure in a row, up to rejoinMaxInterval (each
// order writes two history events, decisions that are kept).
const (
	rejoinInterval    = 30 * time.Second
	rejoinMaxInterval = 30 * time.Minute
)

// rejoinWait is the wait after a rejoin order when fails rejoins in a
// row failed.
func rejoinWait(fails int) time.Duration {
	return min(rejoinInterval<<min(fails, 10), rejoinMaxInterval)
}

// rejoinTick orders a former primary that is back (writable, or fenced)
// to become a replica of the recorded primary, once the primary is healthy.
// Never while the cluster is paused (maintenance mode, as followTick): the
// operator may have stopped, fenced or promoted a member on purpose, and a
// rejoin rewinds and restarts it.
func (s *Server) rejoinTick(ctx context.Context, c *pgdrv1.Cluster, samples map[memberKey]sample, now time.Time) {
	if c.GetPolicy().GetPaused() {
		return
	}
	ps, ok := samples[memberKey{c.Name, c.Primary}]
	if !ok || now.Sub(ps.at) > s.cfg.Health.StaleAfter.Duration || !ps.report.Connectable || ps.report.InRecovery {
		return
	}
	for name := range c.Members {
		if name == c.Primary {
			continue
		}
		sm, ok := samples[memberKey{c.Name, name}]
		if !ok || now.Sub(sm.at) > s.cfg.Health.StaleAfter.Duration {
			continue
		}
		r := sm.report
		// A member needs to rejoin when it is writable but not the primary,
		// fenced, or stopped after it lost the primary role in a failover
		// (its data may have diverged; pg_rewind puts it back in line), or
		// stopped while a failover re-pointed the replicas (its follow
		// order failed: it would come back streaming from, or ahead of, a
		// primary that is gone — the loss of a whole region).
		if !(r.Fenced || (r.Connectable && !r.InRecovery) ||
			(!r.PostmasterAlive && s.stoppedMustRejoin(c.Name, name))) {
			continue
		}
		k := memberKey{c.Name, name}
		s.judge.mu.Lock()
		last := s.judge.rejoins[k]
		due := !s.judge.rejoinBusy[k] && now.Sub(last) >= rejoinWait(s.judge.rejoinFails[k])
		if due {
			s.judge.rejoins[k] = now
			s.judge.rejoinBusy[k] = true
		}
		s.judge.mu.Unlock()
		if !due {
			continue
		}
		primaryDSN := c.Members[c.Primary].GetDsn()
		go func() {
			s.recordEvent(ctx, c.Name, kindRejoin, name, c.Epoch, fmt.Sprintf("ordering %s to rejoin as a replica of %s", name, c.Primary), nil)
			cctx, cancel := context.WithTimeout(ctx, rejoinTimeout) // with the divergence report's time
			defer cancel()
			res, err := s.hub.call(cctx, k, &pgdrv1.AgentCommand{
				Id: newCommandID(), Cluster: c.Name, Node: name, Epoch: c.Epoch, IssuedAt: timestamppb.Now(),
				Kind: &pgdrv1.AgentCommand_Rejoin{Rejoin: &pgdrv1.Rejoin{Primary: c.Primary, PrimaryDsn: primaryDSN}},
			})
			msg, result := fmt.Sprintf("%s rejoined as a replica of %s", name, c.Primary), "ok"
			s.recordDivergence(ctx, c.Name, name, c.Epoch, res)
			if err == nil && !res.Ok {
				err = fmt.Errorf("%s", res.Error)
			}
			if err != nil {
				msg, result = fmt.Sprintf("%s could not rejoin: %v", name, err), "failed"
			}
			s.recordEvent(ctx, c.Name, kindRejoin, name, c.Epoch, msg, map[string]string{"result": result})
			s.judge.mu.Lock()
			delete(s.judge.rejoinBusy, k)
			if err != nil {
				s.judge.rejoinFails[k]++
			} else {
				delete(s.judge.rejoinFails, k)
			}
			s.judge.mu.Unlock()
		}()
	}
}

// stepFollow is the "step" detail of a failover step that re-pointed a
// replica at the new primary.
const stepFollow = "follow"

// stoppedMustRejoin reports whether member, found stopped, must rejoin:
// it lost the primary role in a failover and has not rejoined successfully
// since (replaced), or a failover's order to it to follow the new primary
// failed (it was down) and it has not rejoined, followed or been re-pointed
// successfully since (missed). Both in one pass over the cluster's history.
func (s *Server) stoppedMustRejoin(cluster, member string) bool {
	replaced, missed := false, false
	s.fsm.ScanHistory(cluster, func(ev *pgdrv1.HistoryEvent) {
		switch {
		case replacesPrimary(ev.Kind) && ev.Details["old_primary"] == member:
			replaced = true
		case rejoinedKind(ev.Kind) && ev.Node == member && ev.Details["result"] == "ok":
			replaced = false
		}
		if ev.Node != member {
			return
		}
		switch {
		case ev.Kind == kindFailoverStep && ev.Details["step"] == stepFollow:
			missed = ev.Details["result"] == "failed"
		case rejoinedKind(ev.Kind) && ev.Details["result"] == "ok", ev.Kind == kindFollow:
			missed = false
		}
	})
	return replaced || missed
}
