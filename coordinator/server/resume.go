package server

import (
	"context"
	"fmt"
	"time"

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

// pendingFailover is a failover whose intent has no result yet.
type pendingFailover struct {
	prefix string // "" or manualPrefix
	cand   string
	old    string
	epoch  uint64 // the epoch the intent was recorded at (the new one is +1)
	reason string
}

// pendingFailover returns cluster's unfinished failover, or nil: the
// newest of its failover intents, results and switchover intents, if that
// is an intent. (It runs on every leader tick: it reads back from the
// newest event and stops at the first of those.)
func (s *Server) pendingFailover(cluster string) *pendingFailover {
	var p *pendingFailover
	s.fsm.ScanHistoryBack(cluster, func(ev *pgdrv1.HistoryEvent) bool {
		switch ev.GetKind() {
		case kindFailoverIntent, kindManualIntent:
			p = &pendingFailover{cand: ev.GetNode(), old: ev.GetDetails()["old_primary"], epoch: ev.GetEpoch(), reason: ev.GetMessage()}
			if ev.GetKind() == kindManualIntent {
				p.prefix = manualPrefix
			}
			return false
		case kindFailoverResult, kindManualResult, kindSwitchoverIntent:
			return false
		}
		return true
	})
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
		s.recordEvent(rctx, c.Name, kindFailoverStep, p.cand, epoch, msg, nil)
		s.completeFailover(rctx, c, p.old, p.cand, epoch, p.reason, promoted)
	}()
	return true
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
