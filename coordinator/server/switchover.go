package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/failover"
	"github.com/pgdr/pgdr/coordinator/fsm"
	"github.com/pgdr/pgdr/pkg/divergencesum"
	"github.com/pgdr/pgdr/pkg/tlsutil"
	"github.com/pgdr/pgdr/pkg/wal"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// History kinds of a planned switchover and of a manual failover. A manual
// failover runs executeFailover with the kind prefix "manual-" (see
// withKindPrefix), so its events are manual-failover-intent/-step/-result.
const (
	kindSwitchoverIntent = "switchover-intent"
	kindSwitchoverStep   = "switchover-step"
	kindSwitchoverResult = "switchover-result"
	manualPrefix         = "manual-"
	kindManualIntent     = manualPrefix + kindFailoverIntent
	kindManualResult     = manualPrefix + kindFailoverResult
	// switchoverKinds, as a kind prefix (withKindPrefix), makes a resumed
	// switchover's failover-* events switchover-* ones.
	switchoverKinds = "switchover:"
)

// Bounds of a switchover's steps.
const (
	// demoteTimeout: CHECKPOINT plus a clean stop (the agent's own bound
	// for the stop is 90s).
	demoteTimeout = 2 * time.Minute
	// checkpointWait: how long the target may take to report that it
	// received the old primary's shutdown checkpoint.
	checkpointWait = 30 * time.Second
	// rejoinTimeout: the old primary's rejoin (a clean stop needs no real
	// rewind, but pg_rewind and the start still take a moment), after the
	// divergence report the agent makes first (up to
	// divergencesum.ReportTimeout), so that it comes back with the result.
	rejoinTimeout = 5*time.Minute + divergencesum.ReportTimeout
	// forceFenceTimeout: how long a forced manual failover waits for the
	// old primary's agent to answer a fence order.
	forceFenceTimeout = 10 * time.Second
)

type kindPrefixKey struct{}

// withKindPrefix makes recordEvent prefix failover-* kinds with p, so that
// executeFailover can carry out a manual failover under its own kinds.
func withKindPrefix(ctx context.Context, p string) context.Context {
	return context.WithValue(ctx, kindPrefixKey{}, p)
}

// historyKind is kind as ctx asks recordEvent to record it.
func historyKind(ctx context.Context, kind string) string {
	if p, _ := ctx.Value(kindPrefixKey{}).(string); p != "" && strings.HasPrefix(kind, "failover-") {
		if p == switchoverKinds {
			return "switchover-" + strings.TrimPrefix(kind, "failover-")
		}
		return p + kind
	}
	return kind
}

// countsAsFailover: the event starts a failover, automatic or manual
// (failover.min_interval counts from it). A planned switchover does not:
// it is not a flap.
func countsAsFailover(kind string) bool {
	return kind == kindFailoverIntent || kind == kindManualIntent
}

// replacesPrimary: the event starts taking the primary role away from its
// details' old_primary (which must rejoin as a replica when it returns).
func replacesPrimary(kind string) bool {
	return countsAsFailover(kind) || kind == kindSwitchoverIntent
}

// rejoinedKind: an event of this kind with result "ok" says its node
// rejoined as a replica (rejoinTick's own, or a switchover's last step).
func rejoinedKind(kind string) bool {
	return kind == kindRejoin || kind == kindSwitchoverStep
}

// requestedByKey carries the operator's identity when a follower forwards
// an operator action to the leader (who sees the follower's certificate).
const requestedByKey = "pgdr-requested-by"

// requester is who asked for an operator action: the caller, or, for a
// call a follower coordinator forwarded, the operator it names.
func requester(ctx context.Context) string {
	id := identityFrom(ctx)
	if id.Role == tlsutil.RoleCoordinator {
		if md, ok := metadata.FromIncomingContext(ctx); ok {
			if v := md.Get(requestedByKey); len(v) == 1 && v[0] != "" && len(v[0]) <= 200 {
				return v[0] + " (via " + id.actor() + ")"
			}
		}
	}
	return id.actor()
}

// forwardCtx passes the operator's identity on to the leader.
func forwardCtx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, requestedByKey, identityFrom(ctx).actor())
}

// claim marks cluster as having a failover or switchover in flight, so
// that the automatic failover loop (and a second operator action) stays
// out; false if one already is.
func (s *Server) claim(cluster string) bool {
	s.judge.mu.Lock()
	defer s.judge.mu.Unlock()
	if s.judge.inFlight[cluster] {
		return false
	}
	s.judge.inFlight[cluster] = true
	return true
}

func (s *Server) release(cluster string) {
	s.judge.mu.Lock()
	delete(s.judge.inFlight, cluster)
	s.judge.mu.Unlock()
}

func busyError(cluster string) error {
	return status.Errorf(codes.FailedPrecondition,
		"a failover or switchover of cluster %s is already under way; see 'pgdrctl history --cluster %s'", cluster, cluster)
}

// memberProblem is why m is not a healthy primary ("" if it is one).
// It is failover.PrimaryProblem, but names the agent for a stale report.
func memberProblem(m failover.Member) string {
	if !m.Fresh {
		return "no fresh report from its agent"
	}
	return failover.PrimaryProblem(m)
}

// rankReplicas judges the replicas of in the way failover.Decide does
// (fresh, running, connectable, in recovery, not fenced, not tagged
// no-failover, not refusing promotion, on the newest timeline, within the
// lag limit; best first by received LSN, priority, preferred region, name)
// whatever the primary's health, pause, lease and min_interval.
// requireSync keeps the synchronous-mode rule (a synchronous standby only).
func rankReplicas(in failover.Input, requireSync bool) (ranked []string, rejected map[string]string) {
	in.Paused, in.LeaseExpiresAt, in.LastFailoverAt = false, time.Time{}, time.Time{}
	in.Members = maps.Clone(in.Members)
	pm := in.Members[in.Primary]
	pm.Fresh = false // Decide judges the replicas only for a primary it cannot trust
	in.Members[in.Primary] = pm
	if !requireSync {
		in.Policy.Synchronous = ""
	}
	d := failover.Decide(in)
	rejected = d.Rejected
	if rejected == nil {
		rejected = map[string]string{}
	}
	return d.Ranked, rejected
}

func rejectionList(rejected map[string]string) string {
	names := slices.Sorted(maps.Keys(rejected))
	parts := make([]string, 0, len(names))
	for _, n := range names {
		parts = append(parts, n+": "+rejected[n])
	}
	if len(parts) == 0 {
		return "there is no replica"
	}
	return strings.Join(parts, "; ")
}

// order sends one order to a member's agent and waits for its result.
func (s *Server) order(ctx context.Context, cluster, node string, epoch uint64, cmd *pgdrv1.AgentCommand, timeout time.Duration) (string, error) {
	res, err := s.orderResult(ctx, cluster, node, epoch, cmd, timeout)
	if err != nil {
		return "", err
	}
	if !res.Ok {
		return strings.TrimSpace(res.Output), errors.New(res.Error)
	}
	return strings.TrimSpace(res.Output), nil
}

// orderResult sends cmd to node's agent and returns its whole answer
// (Pending included), or the error of getting none within timeout.
func (s *Server) orderResult(ctx context.Context, cluster, node string, epoch uint64, cmd *pgdrv1.AgentCommand, timeout time.Duration) (*pgdrv1.CommandResult, error) {
	cmd.Id, cmd.Cluster, cmd.Node, cmd.Epoch, cmd.IssuedAt = newCommandID(), cluster, node, epoch, timestamppb.Now()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return s.hub.call(cctx, memberKey{cluster, node}, cmd)
}

// steps records history events of one operation and keeps their messages
// for the caller.
type steps struct {
	s       *Server
	ctx     context.Context
	cluster string
	list    []string
}

func (st *steps) add(kind, node string, epoch uint64, msg string, details map[string]string) {
	st.addMark(kind, node, epoch, msg, details, pgdrv1.PromoteMark_PROMOTE_MARK_UNSPECIFIED)
}

// addMark is add for an event that says what became of a promotion.
func (st *steps) addMark(kind, node string, epoch uint64, msg string, details map[string]string, mark pgdrv1.PromoteMark) {
	st.s.recordPromoteEvent(st.ctx, st.cluster, kind, node, epoch, msg, details, mark)
	st.list = append(st.list, msg)
}

var (
	ckptRE    = regexp.MustCompile(`shutdown_checkpoint_lsn=([0-9A-Fa-f]+/[0-9A-Fa-f]+)`)
	ckptEndRE = regexp.MustCompile(`shutdown_checkpoint_end_lsn=([0-9A-Fa-f]+/[0-9A-Fa-f]+)`)
)

func parseLSNText(s string) (uint64, bool) {
	l, err := wal.ParseLSN(s)
	return uint64(l), err == nil
}

// shutdownCheckpoint reads a demote order's output: the shutdown
// checkpoint and the end of its record (the checkpoint + 1 when the agent
// did not say, which still requires the record's first byte).
func shutdownCheckpoint(out string) (ckpt, end uint64, err error) {
	m := ckptRE.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("the agent's answer names no shutdown_checkpoint_lsn: %q", out)
	}
	ckpt, ok := parseLSNText(m[1])
	if !ok {
		return 0, 0, fmt.Errorf("shutdown_checkpoint_lsn %q is not an LSN", m[1])
	}
	end = ckpt + 1
	if m := ckptEndRE.FindStringSubmatch(out); m != nil {
		if e, ok := parseLSNText(m[1]); ok && e > ckpt {
			end = e
		}
	}
	return ckpt, end, nil
}

// Switchover is a planned change of primary with zero data loss: the
// primary is checkpointed and stopped cleanly, the target is promoted once
// it has received the shutdown checkpoint, the other replicas follow it
// and the old primary rejoins as a replica. It runs while the cluster is
// paused too (it is the operator's own action).
func (a *adminAPI) Switchover(ctx context.Context, req *pgdrv1.SwitchoverRequest) (*pgdrv1.SwitchoverResponse, error) {
	if err := checkName("cluster", req.Cluster, true); err != nil {
		return nil, err
	}
	if err := checkName("to", req.To, false); err != nil {
		return nil, err
	}
	if err := a.clusterMustExist(req.Cluster); err != nil {
		return nil, err
	}
	if !a.s.isLeader() {
		conn, err := a.s.leaderConn()
		if err != nil {
			return nil, err
		}
		return pgdrv1.NewAdminServiceClient(conn).Switchover(forwardCtx(ctx), req)
	}
	return a.s.switchover(req.Cluster, req.To, requester(ctx))
}

// switchover runs on the leader. It does not stop when the caller gives up
// (a half-done switchover is worse than a finished one), only when this
// node stops leading.
func (s *Server) switchover(name, to, actor string) (*pgdrv1.SwitchoverResponse, error) {
	ctx := s.currentLeaderCtx()
	if !s.claim(name) {
		return nil, busyError(name)
	}
	defer s.release(name)
	c, ok := s.fsm.Cluster(name)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "cluster %q is not known to the coordinators", name)
	}
	old := c.Primary
	if old == "" {
		return nil, status.Errorf(codes.FailedPrecondition, "cluster %s has no primary recorded yet: nothing to switch over from", name)
	}
	in := s.failoverInput(c, s.view.snapshot(), time.Now())
	if p := memberProblem(in.Members[old]); p != "" {
		return nil, status.Errorf(codes.FailedPrecondition,
			"refused: the primary %s is not healthy (%s); a switchover stops a working primary cleanly. If %s is gone, use 'pgdrctl failover --cluster %s --to NODE'", old, p, old, name)
	}
	ranked, rejected := rankReplicas(in, false)
	for _, n := range ranked {
		if !in.Members[n].Streaming {
			rejected[n] = "not streaming from the primary"
		}
	}
	ranked = slices.DeleteFunc(ranked, func(n string) bool { return !in.Members[n].Streaming })
	switch {
	case to == "":
		if len(ranked) == 0 {
			return nil, status.Errorf(codes.FailedPrecondition, "refused: no replica can take over: %s", rejectionList(rejected))
		}
		to = ranked[0]
	case c.Members[to] == nil:
		return nil, status.Errorf(codes.NotFound, "to: %q is not a member of cluster %s", to, name)
	case to == old:
		return nil, invalid("to", "%s is already the primary of cluster %s", to, name)
	case rejected[to] != "":
		return nil, status.Errorf(codes.FailedPrecondition, "refused: to: %s cannot take over: %s", to, rejected[to])
	case !slices.Contains(ranked, to):
		return nil, status.Errorf(codes.FailedPrecondition, "refused: to: %s is not a healthy streaming replica", to)
	}
	// The target would refuse its promote order, whichever primary's
	// failsafe ping it acknowledged lately: refuse before anything stops.
	if smp, ok := s.view.snapshot()[memberKey{name, to}]; ok {
		if why := failsafeRefusal(smp.report, "", s.cfg.Failover.LeaseTTL.Duration); why != "" {
			return nil, status.Errorf(codes.FailedPrecondition, "refused: to: %s refuses promotion for now: it %s; nothing was stopped, try again in a few seconds", to, why)
		}
	}
	tm := in.Members[to]
	log := s.log.With("cluster", name, "old_primary", old, "target", to)
	log.Warn("switchover", "requested_by", actor)
	st := &steps{s: s, ctx: ctx, cluster: name}
	epoch := c.Epoch
	intent := fmt.Sprintf("switch over from %s to %s (receive LSN %s), requested by %s", old, to, failover.FormatLSN(tm.ReceiveLSN), actor)
	if in.Paused {
		intent += "; the cluster is paused, but a switchover is the operator's own action and proceeds"
	}
	st.add(kindSwitchoverIntent, to, epoch, intent, map[string]string{"old_primary": old, "target": to, "requested_by": actor})
	var settleBy time.Time // of the promote order, once sent
	var honours bool       // its agent kept settle deadlines then
	fail := func(code codes.Code, msg string) (*pgdrv1.SwitchoverResponse, error) {
		// Once to is recorded (epoch moved), its promote order may still
		// complete; before, the mark does not apply (to is not the primary).
		st.s.recordUnsettled(st.ctx, st.cluster, kindSwitchoverResult, to, epoch, msg, map[string]string{"result": "failed"}, pgdrv1.PromoteMark_PROMOTE_MARK_UNSETTLED, settleBy, honours)
		st.list = append(st.list, msg)
		return nil, status.Errorf(code, "switchover of cluster %s: %s (steps: %s)", name, msg, strings.Join(st.list, " | "))
	}

	// (a) Stop the old primary cleanly; it answers with its shutdown checkpoint.
	out, err := s.order(ctx, name, old, epoch, &pgdrv1.AgentCommand{Kind: &pgdrv1.AgentCommand_Demote{Demote: &pgdrv1.Demote{
		Reason: fmt.Sprintf("switchover to %s requested by %s", to, actor)}}}, demoteTimeout)
	if err != nil {
		return fail(codes.Aborted, fmt.Sprintf("failed: demoting %s: %v; nothing was promoted. If %s's PostgreSQL stopped, the automatic failover replaces it once its lease expires (unless the cluster is paused)", old, err, old))
	}
	ckpt, end, err := shutdownCheckpoint(out)
	if err != nil {
		return fail(codes.Internal, fmt.Sprintf("failed: %s stopped, but %v; nothing was promoted", old, err))
	}
	st.add(kindSwitchoverStep, old, epoch, fmt.Sprintf("%s stopped cleanly: shutdown checkpoint at %s (its record ends at %s)",
		old, failover.FormatLSN(ckpt), failover.FormatLSN(end)), map[string]string{"shutdown_checkpoint_lsn": failover.FormatLSN(ckpt)})

	// (b) The target must hold every byte of WAL the old primary wrote.
	got, err := s.waitReceived(ctx, name, to, epoch, end, checkpointWait)
	if err != nil {
		// Nothing was promoted and the epoch is unchanged: the old primary
		// is still the only one that may write, so start it again.
		why := fmt.Sprintf("aborted: %s received WAL up to %s only, short of the end of %s's shutdown checkpoint %s (%v); nothing was promoted",
			to, failover.FormatLSN(got), old, failover.FormatLSN(end), err)
		rout, rerr := s.order(ctx, name, old, epoch, &pgdrv1.AgentCommand{Kind: &pgdrv1.AgentCommand_Restart{Restart: &pgdrv1.Restart{
			Reason: "switchover aborted"}}}, demoteTimeout)
		if rerr != nil {
			return fail(codes.Aborted, fmt.Sprintf("%s; restarting %s failed too (%v): it is stopped cleanly and still the recorded primary at epoch %d, and the automatic failover promotes the most advanced replica once its lease expires (if the cluster is paused: 'pgdrctl failover --cluster %s --to NODE')",
				why, old, rerr, epoch, name))
		}
		return fail(codes.Aborted, fmt.Sprintf("%s; %s is the primary again (%s)", why, old, rout))
	}
	st.add(kindSwitchoverStep, to, epoch, fmt.Sprintf("%s received WAL up to %s, past the shutdown checkpoint: no commit is lost",
		to, failover.FormatLSN(got)), map[string]string{"receive_lsn": failover.FormatLSN(got)})

	// (c) Record the new primary (compare-and-set on the epoch).
	s.leases.revoke(name, epoch)
	if _, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{
		Cluster: name, Name: to, ExpectedEpoch: epoch, Reason: "switchover requested by " + actor,
		Promote: true, PrimaryLsnSeed: max(s.primaryLSNSeed(c, to), got), SettleAfterMs: uint64(s.promoteSettleAfter().Milliseconds()),
		HonoursSettle: s.honoursSettle(name, to),
	}, "coordinator:"+s.cfg.Name); err != nil {
		return fail(codes.Aborted, fmt.Sprintf("failed: recording %s as primary: %v; nothing was promoted", to, err))
	}
	epoch++
	s.leases.renew(name, to, epoch, to, epoch, time.Now(), s.cfg.Failover.LeaseTTL.Duration)
	st.add(kindSwitchoverStep, to, epoch, fmt.Sprintf("epoch %d: %s recorded as primary; ordering it to promote", epoch, to), nil)
	if p := s.cfg.Failover.PauseBeforePromote.Duration; p > 0 { // fault-injection tests only
		log.Warn("failover.pause_before_promote: waiting before the promote order", "pause", p)
		select {
		case <-ctx.Done():
			return nil, status.Errorf(codes.Unavailable, "leadership lost during the switchover of cluster %s after %s was recorded as primary at epoch %d; the next leader completes it", name, to, epoch)
		case <-time.After(p):
		}
	}

	// (d) Promote the target. A target that refuses because it
	// acknowledged a failsafe ping (the old primary's, sent before it
	// stopped: its lease renewal failed meanwhile, say across a leader
	// change) refuses only for its refusal window, at most a lease TTL
	// (agent/failsafe), and the old primary is known stopped (it answered
	// the demote with its shutdown checkpoint): the order is sent again
	// until that window has passed, instead of leaving the recorded
	// primary unpromoted (for good while the cluster is paused).
	// The window is the one the target's latest report states (the larger
	// of its own lease_ttl and the ping's: longer than this coordinator's
	// during a rolling change of lease_ttl), at most ttlFactor lease TTLs.
	loopStart, ttl := time.Now(), s.cfg.Failover.LeaseTTL.Duration
	retryUntil := loopStart.Add(ttl + 2*time.Second)
	for {
		settleBy = s.promoteSettleBy(time.Now().Add(s.cfg.Failover.CommandTimeout.Duration))
		honours = s.honoursSettle(name, to)
		out, err = s.order(ctx, name, to, epoch, &pgdrv1.AgentCommand{Kind: &pgdrv1.AgentCommand_Promote{Promote: &pgdrv1.Promote{
			Reason: "switchover from " + old, SettleBy: timestamppb.New(settleBy),
			SettleAfterMs: uint64(s.promoteSettleAfter().Milliseconds())}}}, s.cfg.Failover.CommandTimeout.Duration)
		s.promoteClk.sent(name, to, epoch, time.Now()) // after it went out, if it did
		if err != nil && isFailsafeRefusal(err.Error()) {
			if sm, ok := s.view.get(memberKey{name, to}); ok {
				if end := refusalEnds(sm, ttl); end.After(retryUntil) {
					retryUntil = end.Add(2 * time.Second)
					if limit := loopStart.Add(failsafeTTLFactor*ttl + 2*time.Second); retryUntil.After(limit) {
						retryUntil = limit
					}
				}
			}
		}
		if err == nil || !isFailsafeRefusal(err.Error()) || !time.Now().Before(retryUntil) || ctx.Err() != nil {
			break
		}
		log.Info("switchover: the target refuses promotion for now (failsafe acknowledgement); ordering it again", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	if err != nil {
		return fail(codes.Aborted, fmt.Sprintf("failed: promoting %s: %v; %s is the recorded primary at epoch %d: while it is a running replica the leader orders it to promote again", to, err, to, epoch))
	}
	st.addMark(kindSwitchoverStep, to, epoch, fmt.Sprintf("%s %s", to, out), nil, pgdrv1.PromoteMark_PROMOTE_MARK_PROMOTED)
	writable := time.Now()

	// (e) The other replicas follow the new primary.
	cur, _ := s.fsm.Cluster(name)
	dsn := cur.GetMembers()[to].GetDsn()
	var others []string
	for m := range cur.GetMembers() {
		if m != to && m != old {
			others = append(others, m)
		}
	}
	slices.Sort(others)
	var mu sync.Mutex
	var wg sync.WaitGroup
	var notFollowing []string
	for _, m := range others {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.order(ctx, name, m, epoch, &pgdrv1.AgentCommand{Kind: &pgdrv1.AgentCommand_Follow{Follow: &pgdrv1.Follow{
				Primary: to, PrimaryDsn: dsn}}}, s.cfg.Failover.CommandTimeout.Duration)
			msg := fmt.Sprintf("%s follows %s", m, to)
			if err != nil {
				msg = fmt.Sprintf("%s could not follow %s: %v", m, to, err)
				mu.Lock()
				notFollowing = append(notFollowing, m)
				mu.Unlock()
			}
			mu.Lock()
			st.add(kindSwitchoverStep, m, epoch, msg, nil)
			mu.Unlock()
		}()
	}
	wg.Wait()

	// (f) The old primary, stopped cleanly, rejoins as a replica.
	result := fmt.Sprintf("done: %s is primary at epoch %d", to, epoch)
	res, err := s.orderResult(ctx, name, old, epoch, &pgdrv1.AgentCommand{Kind: &pgdrv1.AgentCommand_Rejoin{Rejoin: &pgdrv1.Rejoin{
		Primary: to, PrimaryDsn: dsn}}}, rejoinTimeout)
	s.recordDivergence(ctx, name, old, epoch, res)
	out = strings.TrimSpace(res.GetOutput())
	if err == nil && !res.GetOk() {
		err = errors.New(res.GetError())
	}
	if err != nil {
		st.add(kindSwitchoverStep, old, epoch, fmt.Sprintf("%s could not rejoin as a replica of %s yet (the leader retries): %v", old, to, err),
			map[string]string{"result": "failed"})
		result += fmt.Sprintf("; %s has not rejoined yet", old)
	} else {
		st.add(kindSwitchoverStep, old, epoch, fmt.Sprintf("%s rejoined as a replica of %s: %s", old, to, tailText(out, 300)),
			map[string]string{"result": "ok"})
		result += fmt.Sprintf("; %s rejoined as a replica", old)
	}
	if len(notFollowing) > 0 {
		slices.Sort(notFollowing)
		result += "; not following yet: " + strings.Join(notFollowing, ", ")
	}
	details := map[string]string{"result": "ok", "old_primary": old}
	for k, v := range s.measuredDetails(name, epoch, writable) {
		details[k] = v
	}
	st.addMark(kindSwitchoverResult, to, epoch, result, details, pgdrv1.PromoteMark_PROMOTE_MARK_PROMOTED)
	log.Warn("switchover done", "epoch", epoch)
	return &pgdrv1.SwitchoverResponse{Primary: to, Epoch: epoch, Steps: st.list}, nil
}

func tailText(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// waitReceived waits until node reports a receive LSN of at least lsn,
// asking its agent for fresh reports meanwhile. It returns the last
// receive LSN seen.
func (s *Server) waitReceived(ctx context.Context, cluster, node string, epoch, lsn uint64, timeout time.Duration) (uint64, error) {
	deadline := time.Now().Add(timeout)
	var got uint64
	var lastAsk time.Time
	for {
		if sm, ok := s.view.get(memberKey{cluster, node}); ok {
			got = max(got, sm.report.GetReceiveLsn())
		}
		if got >= lsn {
			return got, nil
		}
		if time.Now().After(deadline) {
			return got, fmt.Errorf("not within %s", timeout)
		}
		if time.Since(lastAsk) > 250*time.Millisecond {
			lastAsk = time.Now()
			// A fresh report at once instead of at the next health interval.
			go s.order(ctx, cluster, node, epoch, &pgdrv1.AgentCommand{Kind: &pgdrv1.AgentCommand_CheckNow{CheckNow: &pgdrv1.CheckNow{}}}, 5*time.Second)
		}
		select {
		case <-ctx.Done():
			return got, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Failover is a manual failover to a named replica, for when the primary is
// gone. It is refused while the primary is healthy or still holds its
// lease, unless force. It runs while the cluster is paused too.
func (a *adminAPI) Failover(ctx context.Context, req *pgdrv1.FailoverRequest) (*pgdrv1.FailoverResponse, error) {
	if err := checkName("cluster", req.Cluster, true); err != nil {
		return nil, err
	}
	if err := checkName("to", req.To, true); err != nil {
		return nil, err
	}
	if err := a.clusterMustExist(req.Cluster); err != nil {
		return nil, err
	}
	if !a.s.isLeader() {
		conn, err := a.s.leaderConn()
		if err != nil {
			return nil, err
		}
		return pgdrv1.NewAdminServiceClient(conn).Failover(forwardCtx(ctx), req)
	}
	return a.s.manualFailover(req.Cluster, req.To, req.Force, requester(ctx))
}

func (s *Server) manualFailover(name, to string, force bool, actor string) (*pgdrv1.FailoverResponse, error) {
	ctx := s.currentLeaderCtx()
	if !s.claim(name) {
		return nil, busyError(name)
	}
	defer s.release(name)
	c, ok := s.fsm.Cluster(name)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "cluster %q is not known to the coordinators", name)
	}
	old := c.Primary
	now := time.Now()
	in := s.failoverInput(c, s.view.snapshot(), now)
	switch {
	case c.Members[to] == nil:
		return nil, status.Errorf(codes.NotFound, "to: %q is not a member of cluster %s", to, name)
	case to == old && failover.UnpromotedPrimary(in.Members[to]):
		// Recorded but never promoted (its order was lost or failed):
		// promote it at the current epoch, nobody else.
		return s.manualRepromote(ctx, c, actor)
	case to == old && memberProblem(in.Members[to]) == "":
		return nil, invalid("to", "%s is already the primary of cluster %s", to, name)
	case to == old:
		return nil, status.Errorf(codes.FailedPrecondition,
			"refused: to: %s is the recorded primary of cluster %s, but neither a working primary nor a running replica that can be promoted (%s)", to, name, memberProblem(in.Members[to]))
	}
	problem := "no primary recorded"
	if old != "" {
		problem = memberProblem(in.Members[old])
	}
	var leaseLeft time.Duration
	le, hasLease := s.leases.get(name)
	hasLease = hasLease && old != "" && le.holder == old && le.epoch == c.Epoch && now.Before(le.expires)
	if hasLease {
		leaseLeft = le.expires.Sub(now)
	}
	if !force {
		switch {
		case problem == "":
			return nil, status.Errorf(codes.FailedPrecondition,
				"refused: the primary %s is healthy (running, connectable, writable); a manual failover is for a primary that is gone. For a planned change without data loss use 'pgdrctl switchover --cluster %s --to %s'; --force promotes %s anyway after fencing %s (commits %s has not sent to %s are lost)",
				old, name, to, to, old, old, to)
		case hasLease:
			return nil, status.Errorf(codes.FailedPrecondition,
				"refused: the primary %s is unhealthy (%s) but its lease runs %s more (it may still take writes until then); retry once it has expired (the automatic failover acts by then unless the cluster is paused), or use --force",
				old, problem, leaseLeft.Round(time.Millisecond))
		}
	}
	in.Forced = force // an unknown primary LSN blocks only an unforced failover
	ranked, rejected := rankReplicas(in, !force)
	if why := rejected[to]; why != "" {
		return nil, status.Errorf(codes.FailedPrecondition, "refused: to: %s cannot be promoted: %s", to, why)
	}
	if !slices.Contains(ranked, to) {
		return nil, status.Errorf(codes.FailedPrecondition, "refused: to: %s cannot be promoted", to)
	}
	reason := fmt.Sprintf("manual failover requested by %s", actor)
	if old != "" && problem != "" {
		reason += fmt.Sprintf(" (primary %s: %s)", old, problem)
	}
	if force && old != "" {
		// Never two primaries, even when forced: the old primary's lease is
		// revoked and it is told to fence; then, if it held a lease, the
		// lease is waited out, so that its agent (if alive) has fenced.
		s.leases.revoke(name, c.Epoch)
		fenced := "fence order: "
		if _, err := s.order(ctx, name, old, c.Epoch, &pgdrv1.AgentCommand{Kind: &pgdrv1.AgentCommand_Fence{Fence: &pgdrv1.Fence{
			Reason: reason + " with --force"}}}, forceFenceTimeout); err != nil {
			fenced += "not carried out: " + err.Error()
		} else {
			fenced += "done"
		}
		reason += fmt.Sprintf("; --force: %s's lease revoked, %s", old, fenced)
		if hasLease {
			wait := time.Until(le.expires)
			select {
			case <-ctx.Done():
				return nil, status.Errorf(codes.Unavailable, "leadership lost while waiting for %s's lease to expire", old)
			case <-time.After(wait):
			}
			reason += fmt.Sprintf(", its lease waited out (%s)", wait.Round(time.Millisecond))
		}
	}
	seq0 := s.historySeq(name)
	c, _ = s.fsm.Cluster(name)
	if c.GetPrimary() != old {
		return nil, status.Errorf(codes.Aborted, "the primary of cluster %s changed meanwhile (now %s at epoch %d); nothing done", name, c.GetPrimary(), c.GetEpoch())
	}
	s.executeFailover(withKindPrefix(withForcedFailover(ctx, force), manualPrefix), c, failover.Decision{
		Action: failover.ActionPromote, Candidate: to, Reason: reason, Rejected: rejected, Ranked: ranked,
	})
	return s.manualResponse(name, to, seq0)
}

// historySeq is the sequence number of cluster's newest history event.
func (s *Server) historySeq(cluster string) uint64 {
	if h := s.fsm.History(cluster, 0, 1); len(h) > 0 {
		return h[0].GetSeq()
	}
	return 0
}

// manualResponse answers a manual failover to to from the events recorded
// after seq0.
func (s *Server) manualResponse(name, to string, seq0 uint64) (*pgdrv1.FailoverResponse, error) {
	var list []string
	result := ""
	for _, ev := range s.fsm.History(name, seq0, 0) {
		if strings.HasPrefix(ev.GetKind(), manualPrefix+"failover-") || ev.GetKind() == kindPromoteRetry {
			list = append(list, ev.GetMessage())
			if ev.GetKind() == kindManualResult {
				result = ev.GetMessage()
			}
		}
	}
	if !strings.HasPrefix(result, "done") {
		return nil, status.Errorf(codes.Aborted, "manual failover of cluster %s to %s: %s (steps: %s)", name, to, result, strings.Join(list, " | "))
	}
	cur, _ := s.fsm.Cluster(name)
	return &pgdrv1.FailoverResponse{Primary: cur.GetPrimary(), Epoch: cur.GetEpoch(), Steps: list}, nil
}

// manualRepromote is a manual failover to c's recorded primary when that
// is a running replica that was never promoted: it is ordered to promote
// at the current epoch (no new epoch, no other member). The caller holds
// the cluster's in-flight mark.
func (s *Server) manualRepromote(ctx context.Context, c *pgdrv1.Cluster, actor string) (*pgdrv1.FailoverResponse, error) {
	seq0 := s.historySeq(c.GetName())
	if res, err := s.promoteRecorded(withKindPrefix(ctx, manualPrefix), c, "manual failover requested by "+actor); err != nil && res == "" {
		return nil, status.Errorf(codes.Aborted, "manual failover of cluster %s to %s: %v", c.GetName(), c.GetPrimary(), err)
	}
	return s.manualResponse(c.GetName(), c.GetPrimary(), seq0)
}

// SetPolicy replaces a cluster's failover policy (the pause fields stay as
// they are: pause and resume change them).
func (a *adminAPI) SetPolicy(ctx context.Context, req *pgdrv1.SetPolicyRequest) (*pgdrv1.SetPolicyResponse, error) {
	if err := checkName("cluster", req.Cluster, true); err != nil {
		return nil, err
	}
	p := req.GetPolicy()
	if p == nil {
		return nil, invalid("policy", "required")
	}
	if !fsm.ValidSynchronous(p.Synchronous) {
		return nil, invalid("policy.synchronous", "%q: want off, on or \"quorum N\" with N >= 1", p.Synchronous)
	}
	if len(p.PreferredRegions) > 32 {
		return nil, invalid("policy.preferred_regions", "more than 32 regions")
	}
	seen := map[string]bool{}
	for _, r := range p.PreferredRegions {
		if err := checkName("policy.preferred_regions", r, true); err != nil {
			return nil, err
		}
		if seen[r] {
			return nil, invalid("policy.preferred_regions", "%q is listed twice", r)
		}
		seen[r] = true
	}
	if err := a.clusterMustExist(req.Cluster); err != nil {
		return nil, err
	}
	if n, ok := strings.CutPrefix(p.Synchronous, "quorum "); ok {
		c, _ := a.s.fsm.Cluster(req.Cluster)
		q, _ := strconv.Atoi(n)
		if replicas := len(c.GetMembers()) - 1; q > replicas {
			return nil, status.Errorf(codes.FailedPrecondition, "policy.synchronous: quorum %d needs at least %d replicas; cluster %s has %d", q, q, req.Cluster, max(replicas, 0))
		}
	}
	if !a.s.isLeader() {
		conn, err := a.s.leaderConn()
		if err != nil {
			return nil, err
		}
		return pgdrv1.NewAdminServiceClient(conn).SetPolicy(forwardCtx(ctx), req)
	}
	if _, err := a.s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_SET_POLICY,
		&pgdrv1.SetPolicy{Cluster: req.Cluster, Policy: p}, requester(ctx)); err != nil {
		return nil, err
	}
	c, _ := a.s.fsm.Cluster(req.Cluster)
	return &pgdrv1.SetPolicyResponse{Policy: c.GetPolicy()}, nil
}
