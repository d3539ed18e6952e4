package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/pkg/tlsutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// errNoStream: an order was not sent, the agent has no command stream.
var errNoStream = errors.New("no open command stream")

// hub holds the open command streams (one per member) on the leader and
// the last result each member reported.
type hub struct {
	mu      sync.Mutex
	streams map[memberKey]chan *pgdrv1.AgentCommand
	results map[memberKey]*pgdrv1.CommandResult
	waiters map[string]waiter
	// sent: when the latest commands to each member went out (echo.go).
	sent sentCommands
}

// waiter waits for the result of a command sent to member k: only k's
// result completes it. deadline is when it stops waiting (zero: never),
// with its monotonic reading (commandLeft).
type waiter struct {
	k        memberKey
	ch       chan *pgdrv1.CommandResult
	deadline time.Time
}

func newHub() *hub {
	return &hub{streams: map[memberKey]chan *pgdrv1.AgentCommand{}, results: map[memberKey]*pgdrv1.CommandResult{},
		waiters: map[string]waiter{}}
}

// call sends a command and waits for its result, ctx's end or the member
// having no open command stream. ctx's deadline travels as the order's
// (with the budget left when the stream sends it, stampSent): an agent
// does not start an order the leader no longer waits for.
func (h *hub) call(ctx context.Context, k memberKey, c *pgdrv1.AgentCommand) (*pgdrv1.CommandResult, error) {
	ch := make(chan *pgdrv1.CommandResult, 1)
	dl, _ := ctx.Deadline()
	h.mu.Lock()
	h.waiters[c.Id] = waiter{k: k, ch: ch, deadline: dl}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.waiters, c.Id)
		h.mu.Unlock()
	}()
	if dl, ok := ctx.Deadline(); ok && c.Deadline == nil {
		c.Deadline = timestamppb.New(dl) // the agent refuses to start it later
	}
	if !h.send(k, c) {
		return nil, fmt.Errorf("the agent of %s: %w", k.node, errNoStream)
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("no answer from the agent of %s: %w", k.node, ctx.Err())
	}
}

// waitStream waits up to d (and while ctx lasts) for k's agent to have a
// command stream open, as after a change of leader, when agents are still
// reconnecting. It reports whether one is open.
func (h *hub) waitStream(ctx context.Context, k memberKey, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		h.mu.Lock()
		_, ok := h.streams[k]
		h.mu.Unlock()
		if ok || !time.Now().Before(deadline) {
			return ok
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// hasStream reports whether k's agent has a command stream open.
func (h *hub) hasStream(k memberKey) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.streams[k]
	return ok
}

func (h *hub) open(k memberKey) chan *pgdrv1.AgentCommand {
	ch := make(chan *pgdrv1.AgentCommand, 16)
	h.mu.Lock()
	h.streams[k] = ch // a reconnecting agent replaces its old stream
	h.mu.Unlock()
	return ch
}

func (h *hub) close(k memberKey, ch chan *pgdrv1.AgentCommand) {
	h.mu.Lock()
	if h.streams[k] == ch {
		delete(h.streams, k)
	}
	h.mu.Unlock()
}

// send queues a command for a member; false if it has no open stream.
// When it went out is noted first, before the agent can receive it: a
// report that names it was sampled after then (echo.go).
func (h *hub) send(k memberKey, c *pgdrv1.AgentCommand) bool {
	h.mu.Lock()
	ch, ok := h.streams[k]
	h.mu.Unlock()
	if !ok {
		return false
	}
	h.sent.note(k, c.GetId(), time.Now())
	select {
	case ch <- c:
		return true
	default:
		return false
	}
}

// stampSent is cmd as it leaves on the stream at now (the leader's clock)
// from sender (this coordinator's name): with sent_at, the sender, and
// with its deadline's budget (deadline - now, <= 0 when it already
// passed) when it has one. The agent counts the budget from when it
// receives the order, on its monotonic clock, less its transit time, so a
// skewed agent clock neither refuses a fresh order nor keeps an old one
// alive; the absolute deadline stays for older agents. cmd itself is not
// changed.
func stampSent(cmd *pgdrv1.AgentCommand, now time.Time, sender string) *pgdrv1.AgentCommand {
	out := proto.Clone(cmd).(*pgdrv1.AgentCommand)
	out.SentAt, out.Sender = timestamppb.New(now), sender
	if dl := cmd.GetDeadline(); dl != nil {
		out.BudgetMs = dl.AsTime().Sub(now).Milliseconds()
	}
	return out
}

// stamp is stampSent for cmd sent to k at now (time.Now, with its
// monotonic reading): the budget is what the call waiting for cmd has
// left on the monotonic clock (no step of the wall clock since the call
// changes it); the wall-clock deadline only when nothing waits for it.
func (h *hub) stamp(k memberKey, cmd *pgdrv1.AgentCommand, now time.Time, sender string) *pgdrv1.AgentCommand {
	out := stampSent(cmd, now, sender)
	if left, ok := h.commandLeft(k, cmd.GetId(), now); ok && cmd.GetDeadline() != nil {
		out.BudgetMs = left.Milliseconds()
	}
	return out
}

// commandLeft is how long the leader still waits for command id sent to
// k (ok false: it does not wait for it, or without a deadline). The
// deadline comes from a context's timeout, which carries a monotonic
// reading: no step of the wall clock moves what is left.
func (h *hub) commandLeft(k memberKey, id string, now time.Time) (left time.Duration, ok bool) {
	h.mu.Lock()
	w, found := h.waiters[id]
	h.mu.Unlock()
	if !found || w.k != k || w.deadline.IsZero() {
		return 0, false
	}
	return w.deadline.Sub(now), true
}

func (h *hub) complete(r *pgdrv1.CommandResult) {
	k := memberKey{r.Cluster, r.Node}
	h.mu.Lock()
	h.results[k] = r
	w, ok := h.waiters[r.Id]
	h.mu.Unlock()
	if ok && w.k == k {
		select {
		case w.ch <- r:
		default:
		}
	}
}

func (h *hub) lastResult(k memberKey) *pgdrv1.CommandResult {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.results[k]
}

func newCommandID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

type agentAPI struct {
	pgdrv1.UnimplementedAgentServiceServer
	s *Server
}

// notLeader tells an agent where the leader is, in the message, so that it
// can reconnect there.
func (a *agentAPI) notLeader() error {
	name, api, ok := a.s.leaderInfo()
	if !ok {
		return status.Error(codes.Unavailable, "no raft leader is elected right now; retry shortly")
	}
	return status.Errorf(codes.FailedPrecondition, "not the leader; the leader is %s at %s", name, api)
}

func (a *agentAPI) Leader(ctx context.Context, _ *pgdrv1.LeaderRequest) (*pgdrv1.LeaderResponse, error) {
	name, api, ok := a.s.leaderInfo()
	resp := &pgdrv1.LeaderResponse{Name: name, ApiAddress: api, Known: ok}
	if a.s.isLeader() {
		// An agent in session measures the leader's clock with it (an
		// order's transit time is counted against its budget).
		resp.Now = timestamppb.Now()
	}
	return resp, nil
}

// checkCaller refuses an agent identity (certificate or token) acting for
// any member but its own: another node, or its node's name in another
// cluster. Coordinators are trusted for every member; other roles cannot
// reach the agent API (rolesFor).
func checkCaller(ctx context.Context, cluster, node string) error {
	id := identityFrom(ctx)
	if id.Role != tlsutil.RoleAgent {
		return nil
	}
	kind := "token"
	if id.ViaCert {
		kind = "certificate"
	}
	if id.Cluster == "" || id.Node == "" {
		return status.Errorf(codes.PermissionDenied,
			"agent %s %q is bound to no cluster (a certificate needs a %s<cluster> URI SAN, a token cluster and node fields); it may not act for node %q of cluster %q",
			kind, id.Name, tlsutil.ClusterURIPrefix, node, cluster)
	}
	if id.Cluster != cluster || id.Node != node {
		return status.Errorf(codes.PermissionDenied, "agent %s %q is bound to node %q of cluster %q; it may not act for node %q of cluster %q",
			kind, id.Name, id.Node, id.Cluster, node, cluster)
	}
	return nil
}

// sameMember compares what an agent registers, ignoring timestamps.
func sameMember(a, b *pgdrv1.Member) bool {
	return a.Region == b.Region && a.Dsn == b.Dsn && a.ApiUrl == b.ApiUrl && a.GossipAddress == b.GossipAddress &&
		slices.Equal(a.Tags, b.Tags) && a.Priority == b.Priority && bytes.Equal(a.FailsafeKey, b.FailsafeKey) &&
		a.HonoursSettleBy == b.HonoursSettleBy && a.SyncReceiver == b.SyncReceiver &&
		(b.SystemIdentifier == 0 || a.SystemIdentifier == b.SystemIdentifier)
}

func (a *agentAPI) Register(ctx context.Context, req *pgdrv1.RegisterRequest) (*pgdrv1.RegisterResponse, error) {
	if err := validMember(req.Member); err != nil {
		return nil, err
	}
	m := req.Member
	if err := checkCaller(ctx, m.Cluster, m.Name); err != nil {
		return nil, err
	}
	if !a.s.isLeader() {
		return nil, a.notLeader()
	}
	same, limited := false, true
	a.s.fsm.Read(func(st *pgdrv1.State) {
		if have := st.Clusters[m.Cluster].GetMembers()[m.Name]; have != nil {
			same = sameMember(have, m)
			limited = !onlyFillsSystemID(have, m)
		}
	})
	k := memberKey{m.Cluster, m.Name}
	now := time.Now()
	charge := !same && limited && identityFrom(ctx).Role != tlsutil.RoleCoordinator
	if charge {
		if err := a.s.memberWrites.take(k, now, a.s.memberUpdateEvery); err != nil {
			return nil, err
		}
	}
	if !same {
		reg := proto.Clone(m).(*pgdrv1.Member)
		reg.RegisteredAt, reg.UpdatedAt = nil, nil
		if _, err := a.s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER,
			&pgdrv1.RegisterMember{Member: reg}, "agent:"+m.Name); err != nil {
			if charge {
				a.s.memberWrites.refund(k)
			}
			return nil, err
		}
	}
	_, primary, epoch := a.s.fsm.MemberEpoch(m.Cluster, m.Name)
	return &pgdrv1.RegisterResponse{Epoch: epoch, Primary: primary, Now: timestamppb.Now()}, nil
}

func (a *agentAPI) registered(cluster, node string) error {
	if ok, _, _ := a.s.fsm.MemberEpoch(cluster, node); !ok {
		return status.Errorf(codes.FailedPrecondition, "member %q of cluster %q is not registered; call Register first", node, cluster)
	}
	return nil
}

// Report receives an agent's samples into the leader's view until the
// stream ends or this node stops leading.
func (a *agentAPI) Report(stream pgdrv1.AgentService_ReportServer) error {
	if !a.s.isLeader() {
		return a.notLeader()
	}
	lctx := a.s.currentLeaderCtx()
	ctx := stream.Context()
	a.s.metrics.streams.Inc()
	defer a.s.metrics.streams.Dec()
	type recv struct {
		r   *pgdrv1.HealthReport
		err error
	}
	ch := make(chan recv)
	go func() {
		for {
			r, err := stream.Recv()
			select {
			case ch <- recv{r, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var n uint64
	for {
		select {
		case <-lctx.Done():
			return a.notLeader()
		case <-ctx.Done():
			return ctx.Err()
		case m := <-ch:
			if errors.Is(m.err, io.EOF) {
				return stream.SendAndClose(&pgdrv1.ReportSummary{Received: n})
			}
			if m.err != nil {
				return m.err
			}
			r := m.r
			if err := checkName("cluster", r.Cluster, true); err != nil {
				return err
			}
			if err := checkName("node", r.Node, true); err != nil {
				return err
			}
			if err := checkCaller(ctx, r.Cluster, r.Node); err != nil {
				return err
			}
			if err := validReport(r); err != nil {
				return err
			}
			if err := a.registered(r.Cluster, r.Node); err != nil {
				return err
			}
			now := time.Now()
			if r.Time != nil {
				if d := now.Sub(r.Time.AsTime()); d >= 0 {
					a.s.metrics.reportDelay.Observe(d.Seconds())
				}
			}
			a.s.ingestReport(r, now)
			a.s.metrics.reports.Inc()
			n++
		}
	}
}

// Commands streams orders to one agent while this node leads. Opening the
// stream sends a ping, so the command path is proven end to end.
func (a *agentAPI) Commands(req *pgdrv1.CommandsRequest, stream pgdrv1.AgentService_CommandsServer) error {
	if err := checkName("cluster", req.Cluster, true); err != nil {
		return err
	}
	if err := checkName("node", req.Node, true); err != nil {
		return err
	}
	ctx := stream.Context()
	if err := checkCaller(ctx, req.Cluster, req.Node); err != nil {
		return err
	}
	if !a.s.isLeader() {
		return a.notLeader()
	}
	if err := a.registered(req.Cluster, req.Node); err != nil {
		return err
	}
	lctx := a.s.currentLeaderCtx()
	k := memberKey{req.Cluster, req.Node}
	ch := a.s.hub.open(k)
	defer a.s.hub.close(k, ch)
	a.s.metrics.streams.Inc()
	defer a.s.metrics.streams.Dec()
	_, _, epoch := a.s.fsm.MemberEpoch(req.Cluster, req.Node)
	ping := &pgdrv1.AgentCommand{Id: newCommandID(), Cluster: req.Cluster, Node: req.Node, Epoch: epoch,
		IssuedAt: timestamppb.Now(), Kind: &pgdrv1.AgentCommand_Ping{Ping: &pgdrv1.Ping{}}}
	// Noted like every command sent: the reports sampled after the agent
	// received it name it (echo.go).
	a.s.hub.sent.note(k, ping.Id, time.Now())
	ch <- ping
	if a.s.sched != nil {
		// The agent's backup runs in flight are ordered again: an answer
		// lost with its previous stream comes again.
		go a.s.sched.StreamOpened(lctx, req.Cluster, req.Node)
	}
	if a.s.drills != nil {
		go a.s.drills.streamOpened(lctx, req.Cluster, req.Node)
	}
	for {
		select {
		case <-lctx.Done():
			return a.notLeader()
		case <-ctx.Done():
			return ctx.Err()
		case cmd := <-ch:
			if err := stream.Send(a.s.hub.stamp(k, cmd, time.Now(), a.s.cfg.Name)); err != nil {
				return err
			}
		}
	}
}

func (a *agentAPI) CompleteCommand(ctx context.Context, r *pgdrv1.CommandResult) (*pgdrv1.CommandResultAck, error) {
	if r.Id == "" || len(r.Id) > maxCommandID {
		return nil, invalid("id", "required, at most %d bytes", maxCommandID)
	}
	if err := checkName("cluster", r.Cluster, true); err != nil {
		return nil, err
	}
	if err := checkName("node", r.Node, true); err != nil {
		return nil, err
	}
	if err := checkCaller(ctx, r.Cluster, r.Node); err != nil {
		return nil, err
	}
	// Results go into Raft history: cut, not refused, so that a long
	// pg_rewind output still completes its command.
	r.Error = clipText(r.Error, maxResultText)
	r.Output = clipText(r.Output, maxResultText)
	a.s.hub.complete(r)
	if err := a.s.answerBackup(ctx, r); err != nil {
		return nil, err
	}
	if a.s.drills != nil {
		if err := a.s.drills.answer(ctx, r); err != nil {
			return nil, err
		}
	}
	// A pending answer (a Backup order accepted, its result to come) is
	// no failure.
	if !r.Ok && !r.Pending {
		a.s.log.Warn("agent command failed", "cluster", r.Cluster, "node", r.Node, "id", r.Id, "err", r.Error)
	}
	return &pgdrv1.CommandResultAck{}, nil
}

// clipText returns s cut to at most n bytes of valid UTF-8 ending with a
// marker saying how many bytes were cut; s itself when it fits.
func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Room for the marker, with a digit more than this estimate's.
	keep := max(0, n-len(fmt.Sprintf(" … [truncated: %d of %d bytes]", len(s)-n, len(s)))-1)
	for keep > 0 && !utf8.RuneStart(s[keep]) {
		keep--
	}
	kept := strings.ToValidUTF8(s[:keep], "")
	return kept + fmt.Sprintf(" … [truncated: %d of %d bytes]", len(s)-len(kept), len(s))
}
