package server

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/pgdr/pgdr/coordinator/failover"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// A failover interrupted by a change of coordinator leader.
//
// executeFailover records, in order: the intent, the new primary (SET_PRIMARY,
// epoch+1), the promote order, the re-pointed replicas, and the result. A
// leader that dies in between leaves an intent without a result. The next
// leader finds it in the replicated history before it judges the cluster
// again (resumeTick), and:
//   - when SET_PRIMARY was never committed (the primary and epoch are still
//     the intent's), records the failover as abandoned and judges afresh:
//     nobody was promoted, so the failover is simply redone (rolled back);
//   - when it was, and the recorded candidate reports (fresh) in recovery,
//     orders it to promote at the recorded epoch: the same order the old
//     leader would have sent, so a promote that the old leader did send
//     and the resumed one promote one server once;
//   - when the candidate already reports writable, records that and
//     re-points the other replicas;
//   - when the candidate does not report, does nothing special: the
//     candidate is the recorded primary without a lease renewal, so the
//     ordinary judgement fails over from it once its lease (a full TTL
//     from this leader's first sight) expires, and that new failover
//     records the old one as abandoned. An agent only ever promotes on an
//     order of the current epoch, so the abandoned candidate cannot be
//     promoted afterwards.
//
// A switchover is resumed the same way, under its own kinds
// (switchover-step, switchover-result): its intent is recorded before the
// old primary is stopped, and the target is recorded as primary only once
// it holds the old primary's shutdown checkpoint, so completing it loses
// nothing. One abandoned before the target was recorded leaves the old
// primary stopped cleanly and still recorded: the ordinary judgement
// replaces it once its lease expires.
//
// A recorded primary that was never promoted, with no unfinished intent
// (its promote order failed or was lost and the failure was recorded, a
// synchronous-mode change before the promotion failed, or a resumed
// failover's order failed), is the decision's rule 2a
// (failover.ActionRepromote): while it is a running replica, not fenced,
// and the state does not show its promotion confirmed at this epoch
// (Cluster.unsettled_promote, primaryPromoted), the leader
// orders it to promote again at the current epoch (repromoteTick), first
// repromoteInterval after it sees it so and then after doubling pauses,
// and records each attempt (kind promote-retry) and its steps and result
// under the kinds of the operation that recorded it. No other member is
// chosen meanwhile: a cluster is never left without a primary because its
// candidate's first order did not arrive.

// pendingFailover is a failover whose intent has no result yet.
type pendingFailover struct {
	prefix string // "", manualPrefix or switchoverKinds
	cand   string
	old    string
	epoch  uint64 // the epoch the intent was recorded at (the new one is +1)
	reason string
}

// pendingFailover returns cluster's unfinished failover or switchover, or
// nil: the newest of its failover and switchover intents and results, if
// that is an intent. (It runs on every leader tick: the FSM keeps each
// kind's newest event, so the history is not scanned.)
func (s *Server) pendingFailover(cluster string) *pendingFailover {
	var p *pendingFailover
	ev := s.fsm.LatestEvent(cluster, kindFailoverIntent, kindManualIntent, kindSwitchoverIntent,
		kindFailoverResult, kindManualResult, kindSwitchoverResult)
	switch ev.GetKind() {
	case kindFailoverIntent, kindManualIntent:
		p = &pendingFailover{cand: ev.GetNode(), old: ev.GetDetails()["old_primary"], epoch: ev.GetEpoch(), reason: ev.GetMessage()}
		if ev.GetKind() == kindManualIntent {
			p.prefix = manualPrefix
		}
	case kindSwitchoverIntent:
		p = &pendingFailover{prefix: switchoverKinds, cand: ev.GetNode(), old: ev.GetDetails()["old_primary"], epoch: ev.GetEpoch(), reason: ev.GetMessage()}
	}
	return p
}

// abandon records p's result: it was not carried out.
func (s *Server) abandon(ctx context.Context, cluster string, p *pendingFailover, why string) {
	s.log.Warn("failover abandoned", "cluster", cluster, "candidate", p.cand, "reason", why)
	s.recordEvent(withKindPrefix(ctx, p.prefix), cluster, kindFailoverResult, p.cand, p.epoch, "abandoned: "+why, nil)
}

// resumeTick finishes or abandons an interrupted failover of c (see the
// comment above). It returns true when it started resuming one (the caller
// then judges nothing else this tick); the caller holds the cluster's
// in-flight mark unset and has checked no failover runs on this leader.
func (s *Server) resumeTick(ctx context.Context, c *pgdrv1.Cluster, samples map[memberKey]sample, now time.Time) bool {
	p := s.pendingFailover(c.Name)
	if p == nil {
		return false
	}
	switch {
	case c.Primary == p.old && c.Epoch == p.epoch:
		s.abandon(ctx, c.Name, p, fmt.Sprintf("the coordinator leader changed before %s was recorded as primary; nobody was promoted, the cluster is judged again", p.cand))
		return false
	case c.Primary != p.cand || c.Epoch != p.epoch+1:
		s.abandon(ctx, c.Name, p, fmt.Sprintf("the primary is now %s at epoch %d", c.Primary, c.Epoch))
		return false
	}
	sm, ok := samples[memberKey{c.Name, p.cand}]
	if !ok || now.Sub(sm.at) > s.cfg.Health.StaleAfter.Duration || sm.report.GetFenced() || !sm.report.GetPostmasterAlive() || !sm.report.GetConnectable() {
		return false // the ordinary judgement decides (see above)
	}
	promoted := !sm.report.GetInRecovery()
	s.judge.mu.Lock()
	if s.judge.inFlight[c.Name] {
		s.judge.mu.Unlock()
		return true
	}
	s.judge.inFlight[c.Name] = true
	s.judge.mu.Unlock()
	epoch := c.Epoch
	msg := fmt.Sprintf("resumed by coordinator %s after a leader change: %s is recorded as primary at epoch %d and is still in recovery; ordering it to promote", s.cfg.Name, p.cand, epoch)
	if promoted {
		msg = fmt.Sprintf("resumed by coordinator %s after a leader change: %s is recorded as primary at epoch %d and already promoted", s.cfg.Name, p.cand, epoch)
	}
	go func() {
		defer func() {
			s.judge.mu.Lock()
			delete(s.judge.inFlight, c.Name)
			s.judge.mu.Unlock()
		}()
		rctx := withKindPrefix(ctx, p.prefix)
		s.log.Warn("resuming an interrupted failover", "cluster", c.Name, "candidate", p.cand, "epoch", epoch, "promoted", promoted)
		// The new primary's lease starts now, as executeFailover gives it.
		s.leases.renew(c.Name, p.cand, epoch, p.cand, epoch, time.Now(), s.cfg.Failover.LeaseTTL.Duration)
		mark := pgdrv1.PromoteMark_PROMOTE_MARK_ORDERED
		if promoted {
			mark = pgdrv1.PromoteMark_PROMOTE_MARK_UNSPECIFIED // confirmed by the result
		}
		if err := s.recordPromoteEvent(rctx, c.Name, kindFailoverStep, p.cand, epoch, msg, nil, mark); err != nil && !promoted {
			// Never send a promote order whose ORDERED mark was not
			// committed; the next tick resumes it again.
			s.log.Warn("not resuming the failover now: its promote order could not be recorded", "cluster", c.Name, "candidate", p.cand, "epoch", epoch, "err", err)
			return
		}
		s.completeFailover(rctx, c, p.old, p.cand, epoch, p.reason, promoted)
	}()
	return true
}

// kindPromoteRetry: the leader orders a recorded primary that was never
// promoted to promote again.
const kindPromoteRetry = "promote-retry"

// Promote orders to a recorded primary that was never promoted: the first
// repromoteInterval after the leader first sees it so, then after pauses
// that double from repromoteInterval up to repromoteMaxPause while they
// fail.
const (
	repromoteInterval = 10 * time.Second
	repromoteMaxPause = 2 * time.Minute
)

// repromoteState: the leader's attempts at promoting node, recorded as
// primary at epoch, again.
type repromoteState struct {
	epoch       uint64
	node        string
	first, last time.Time
	failures    int
}

// repromotePause is the pause after failures failed attempts.
func repromotePause(failures int) time.Duration {
	pause := repromoteInterval
	for i := 0; i < failures && pause < repromoteMaxPause; i++ {
		pause *= 2
	}
	return min(pause, repromoteMaxPause)
}

// primaryPromoted reports whether the recorded primary of c is promoted
// at its epoch, from the replicated state (not the bounded history): it is
// unless Cluster.unsettled_promote names it at this epoch, which SetPrimary
// sets for a candidate ordered to promote and only its confirmed promotion
// clears. The initial primary (recorded writable) was never unsettled.
func (s *Server) primaryPromoted(c *pgdrv1.Cluster) bool {
	u := c.GetUnsettledPromote()
	return c.GetPrimary() == "" || u.GetNode() != c.GetPrimary() || u.GetEpoch() != c.GetEpoch()
}

// recordedBy returns the kind prefix of the operation that recorded node
// as primary at epoch (its intent was recorded at epoch-1), and the
// primary it replaced.
func (s *Server) recordedBy(cluster, node string, epoch uint64) (prefix, old string) {
	s.fsm.ScanHistoryBack(cluster, func(ev *pgdrv1.HistoryEvent) bool {
		if ev.GetNode() != node || ev.GetEpoch()+1 != epoch {
			return true
		}
		switch ev.GetKind() {
		case kindFailoverIntent:
			prefix, old = "", ev.GetDetails()["old_primary"]
		case kindManualIntent:
			prefix, old = manualPrefix, ev.GetDetails()["old_primary"]
		case kindSwitchoverIntent:
			prefix, old = switchoverKinds, ev.GetDetails()["old_primary"]
		default:
			return true
		}
		return false
	})
	return prefix, old
}

// repromoteTick carries out d, an ActionRepromote of c's recorded primary,
// when due (see repromoteInterval); the caller has checked that no
// failover or switchover of c runs on this leader.
func (s *Server) repromoteTick(ctx context.Context, c *pgdrv1.Cluster, d failover.Decision, now time.Time) {
	s.judge.mu.Lock()
	st := s.judge.repromotes[c.Name]
	if st.epoch != c.Epoch || st.node != c.Primary {
		st = repromoteState{epoch: c.Epoch, node: c.Primary, first: now}
	}
	due := now.Sub(st.first) >= repromoteInterval && now.Sub(st.last) >= repromotePause(st.failures) && !s.judge.inFlight[c.Name]
	if due {
		st.last = now
		s.judge.inFlight[c.Name] = true
	}
	s.judge.repromotes[c.Name] = st
	s.judge.mu.Unlock()
	if !due {
		return
	}
	go func() {
		defer s.release(c.Name)
		prefix, _ := s.recordedBy(c.Name, c.Primary, c.Epoch)
		_, err := s.promoteRecorded(withKindPrefix(ctx, prefix), c, d.Reason)
		s.judge.mu.Lock()
		defer s.judge.mu.Unlock()
		if st, ok := s.judge.repromotes[c.Name]; ok && st.epoch == c.Epoch && st.node == c.Primary {
			if err != nil {
				st.failures++
			} else {
				st.failures = 0
			}
			s.judge.repromotes[c.Name] = st
		}
	}()
}

// promoteRecorded orders c's recorded primary, a replica that was never
// promoted, to promote at the current epoch, then re-points the other
// replicas and records the result (completeFailover), under the kinds ctx
// asks for. It returns the result's message, and an error unless it says
// done. The caller holds the cluster's in-flight mark.
func (s *Server) promoteRecorded(ctx context.Context, c *pgdrv1.Cluster, why string) (string, error) {
	name, cand, epoch := c.GetName(), c.GetPrimary(), c.GetEpoch()
	_, old := s.recordedBy(name, cand, epoch)
	s.log.Warn("ordering the recorded primary to promote again", "cluster", name, "primary", cand, "epoch", epoch, "reason", why)
	if err := s.recordPromoteEvent(ctx, name, kindPromoteRetry, cand, epoch, fmt.Sprintf("%s is recorded as primary at epoch %d but still in recovery; ordering it to promote again (%s)", cand, epoch, why), nil,
		pgdrv1.PromoteMark_PROMOTE_MARK_ORDERED); err != nil {
		// Never send a promote order whose ORDERED mark was not committed.
		return "", fmt.Errorf("not ordering %s to promote again at epoch %d: %w", cand, epoch, err)
	}
	cur, ok := s.fsm.Cluster(name)
	if !ok || cur.GetPrimary() != cand || cur.GetEpoch() != epoch {
		return "", fmt.Errorf("the primary of cluster %s changed meanwhile (now %s at epoch %d)", name, cur.GetPrimary(), cur.GetEpoch())
	}
	// The primary gets a lease at once, as in executeFailover.
	s.leases.renew(name, cand, epoch, cand, epoch, time.Now(), s.cfg.Failover.LeaseTTL.Duration)
	s.completeFailover(ctx, cur, old, cand, epoch, why, false)
	result := ""
	s.fsm.ScanHistoryBack(name, func(ev *pgdrv1.HistoryEvent) bool {
		if ev.GetNode() == cand && ev.GetEpoch() == epoch && strings.HasSuffix(ev.GetKind(), "-result") {
			result = ev.GetMessage()
			return false
		}
		return true
	})
	if !strings.HasPrefix(result, "done") {
		return result, fmt.Errorf("promoting %s again at epoch %d: %s", cand, epoch, result)
	}
	return result, nil
}

// Re-pointing stray replicas: a replica that is up but has not streamed for
// followAfter while the recorded primary is healthy (its follow order was
// lost with a leader, or its primary_conninfo is wrong) is ordered to follow
// the primary, at most once per followInterval. Never while paused.
const (
	followAfter    = 5 * time.Second
	followInterval = 30 * time.Second
)

// followTick orders stray replicas of c to follow its primary.
func (s *Server) followTick(ctx context.Context, c *pgdrv1.Cluster, samples map[memberKey]sample, now time.Time) {
	stale := s.cfg.Health.StaleAfter.Duration
	ps, ok := samples[memberKey{c.Name, c.Primary}]
	healthy := ok && now.Sub(ps.at) <= stale && ps.report.GetConnectable() && !ps.report.GetInRecovery() && !ps.report.GetFenced()
	s.judge.mu.Lock()
	defer s.judge.mu.Unlock()
	for name := range c.Members {
		k := memberKey{c.Name, name}
		sm, ok := samples[k]
		r := sm.report
		stray := healthy && !c.GetPolicy().GetPaused() && name != c.Primary && ok && now.Sub(sm.at) <= stale &&
			r.GetPostmasterAlive() && r.GetConnectable() && r.GetInRecovery() && !r.GetStreaming() && !r.GetFenced() &&
			s.hub.waitStream(ctx, k, 0)
		if !stray {
			delete(s.judge.stray, k)
			continue
		}
		since, seen := s.judge.stray[k]
		if !seen {
			s.judge.stray[k] = now
			continue
		}
		if now.Sub(since) < followAfter || now.Sub(s.judge.follows[k]) < followInterval {
			continue
		}
		s.judge.follows[k] = now
		primary, epoch, dsn := c.Primary, c.Epoch, c.Members[c.Primary].GetDsn()
		go func() {
			// History records what changed; a replica that still cannot
			// stream (catching up from the archive, or broken) is logged
			// and tried again in followInterval.
			msg, err := s.repoint(ctx, c.Name, name, primary, dsn, epoch, false)
			if err != nil {
				s.log.Warn("a replica that is not streaming could not be re-pointed", "cluster", c.Name, "member", name, "primary", primary, "err", msg)
				return
			}
			s.recordEvent(ctx, c.Name, kindFollow, name, epoch, fmt.Sprintf("%s was not streaming for %s or more; it follows %s again", name, followAfter, primary), nil)
		}()
	}
}

// kindFollow: the leader re-pointed a stray replica.
const kindFollow = "follow"
