package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// History event kinds written by the appliers. RecordEvent carries its own
// kinds (intent, step, result, ...).
const (
	KindMemberRegistered   = "member-registered"
	KindMemberUpdated      = "member-updated"
	KindMemberRemoved      = "member-removed"
	KindPrimarySet         = "primary-set"
	KindSyncStandbysSet    = "sync-standbys-set"
	KindPaused             = "paused"
	KindResumed            = "resumed"
	KindPolicySet          = "policy-set"
	KindCoordinatorAdded   = "coordinator-added"
	KindCoordinatorUpdated = "coordinator-updated"
	KindCoordinatorRemoved = "coordinator-removed"
)

// ValidName reports whether s is acceptable as a cluster, member or
// coordinator name: ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$. Names end up in
// metric labels, file paths, DNS labels and object keys, so they are kept
// to a conservative alphabet; exported so front ends can reject early.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		alnum := ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9'
		if alnum || i > 0 && (ch == '.' || ch == '_' || ch == '-') {
			continue
		}
		return false
	}
	return true
}

// ValidSynchronous reports whether s is a valid Policy.synchronous value:
// "", "off", "on" or "quorum N" with N >= 1.
func ValidSynchronous(s string) bool {
	switch s {
	case "", "off", "on":
		return true
	}
	n, ok := strings.CutPrefix(s, "quorum ")
	if !ok {
		return false
	}
	v, err := strconv.ParseUint(n, 10, 31)
	return err == nil && v >= 1
}

// cmdTime is the proposer's timestamp, copied so the State never shares a
// message with the decoded command.
func cmdTime(c *pgdrv1.Command) *timestamppb.Timestamp {
	t := c.GetTime()
	if t == nil {
		return nil
	}
	return &timestamppb.Timestamp{Seconds: t.GetSeconds(), Nanos: t.GetNanos()}
}

// addEvent appends ev to the history, stamping the fields the FSM owns. It
// is the last thing an applier does, after every check has passed.
func addEvent(st *pgdrv1.State, c *pgdrv1.Command, index uint64, ev *pgdrv1.HistoryEvent) {
	if st.NextSeq == 0 {
		st.NextSeq = 1
	}
	ev.Seq = st.NextSeq
	st.NextSeq++
	ev.Index = index
	ev.Time = cmdTime(c)
	ev.Actor = c.GetActor()
	st.History = append(st.History, ev)
}

// findCluster returns the named cluster or a rejection naming it.
func findCluster(st *pgdrv1.State, name string) (*pgdrv1.Cluster, error) {
	cl, ok := st.GetClusters()[name]
	if !ok {
		return nil, fmt.Errorf("cluster %q not found", name)
	}
	return cl, nil
}

// memberChanges lists the registration fields that differ between old and
// m, in a fixed order so that the history message is deterministic.
func memberChanges(old, m *pgdrv1.Member) []string {
	var changed []string
	if old.GetRegion() != m.GetRegion() {
		changed = append(changed, "region")
	}
	if old.GetDsn() != m.GetDsn() {
		changed = append(changed, "dsn")
	}
	if old.GetApiUrl() != m.GetApiUrl() {
		changed = append(changed, "api_url")
	}
	if old.GetGossipAddress() != m.GetGossipAddress() {
		changed = append(changed, "gossip_address")
	}
	if !slices.Equal(old.GetTags(), m.GetTags()) {
		changed = append(changed, "tags")
	}
	if old.GetPriority() != m.GetPriority() {
		changed = append(changed, "priority")
	}
	if old.GetSystemIdentifier() != m.GetSystemIdentifier() {
		changed = append(changed, "system_identifier")
	}
	if !bytes.Equal(old.GetFailsafeKey(), m.GetFailsafeKey()) {
		changed = append(changed, "failsafe_key")
	}
	if old.GetHonoursSettleBy() != m.GetHonoursSettleBy() {
		changed = append(changed, "honours_settle_by")
	}
	if old.GetSyncReceiver() != m.GetSyncReceiver() {
		changed = append(changed, "sync_receiver")
	}
	return changed
}

// applyRegisterMember creates or updates a member, creating its cluster on
// first sight. A member whose PostgreSQL system identifier differs from the
// cluster's belongs to another database cluster (a wrong pgdata, a cloned
// VM): joining it would let it be promoted over unrelated data, so it is
// refused.
func applyRegisterMember(st *pgdrv1.State, c *pgdrv1.Command, p *pgdrv1.RegisterMember, index uint64) error {
	m := p.GetMember()
	if m == nil {
		return errors.New("register member: member is missing")
	}
	if !ValidName(m.GetCluster()) {
		return fmt.Errorf("register member %q: invalid cluster name %q", m.GetName(), m.GetCluster())
	}
	if !ValidName(m.GetName()) {
		return fmt.Errorf("register member: invalid member name %q in cluster %q", m.GetName(), m.GetCluster())
	}
	if m.GetRegion() == "" {
		return fmt.Errorf("register member %q in cluster %q: region is empty", m.GetName(), m.GetCluster())
	}
	cl := st.GetClusters()[m.GetCluster()]
	if cl != nil && cl.GetSystemIdentifier() != 0 && m.GetSystemIdentifier() != 0 &&
		cl.GetSystemIdentifier() != m.GetSystemIdentifier() {
		return fmt.Errorf("register member %q: system identifier %d differs from cluster %q system identifier %d",
			m.GetName(), m.GetSystemIdentifier(), m.GetCluster(), cl.GetSystemIdentifier())
	}
	old := cl.GetMembers()[m.GetName()]
	var changed []string
	if old != nil {
		if changed = memberChanges(old, m); len(changed) == 0 {
			return nil // a re-registration after an agent restart: nothing to record
		}
	}

	// Every check has passed; mutate from here on.
	now := cmdTime(c)
	created := false
	if cl == nil {
		cl = &pgdrv1.Cluster{
			Name:             m.GetCluster(),
			Members:          map[string]*pgdrv1.Member{},
			Policy:           &pgdrv1.Policy{},
			CreatedAt:        now,
			SystemIdentifier: m.GetSystemIdentifier(),
		}
		if st.Clusters == nil {
			st.Clusters = map[string]*pgdrv1.Cluster{}
		}
		st.Clusters[cl.Name] = cl
		created = true
	} else if cl.GetSystemIdentifier() == 0 {
		// The first members may register before their agent could read
		// pg_control; the first identifier reported becomes the cluster's.
		cl.SystemIdentifier = m.GetSystemIdentifier()
	}
	if cl.Members == nil {
		cl.Members = map[string]*pgdrv1.Member{}
	}
	nm := proto.Clone(m).(*pgdrv1.Member)
	nm.UpdatedAt = now
	if old != nil {
		nm.RegisteredAt = old.GetRegisteredAt()
	} else {
		nm.RegisteredAt = cmdTime(c)
	}
	cl.Members[nm.Name] = nm

	ev := &pgdrv1.HistoryEvent{Cluster: cl.Name, Node: nm.Name, Epoch: cl.Epoch}
	switch {
	case old != nil:
		ev.Kind = KindMemberUpdated
		ev.Message = fmt.Sprintf("member %s updated: %s", nm.Name, strings.Join(changed, ", "))
		ev.Details = map[string]string{"changed": strings.Join(changed, ",")}
	case created:
		ev.Kind = KindMemberRegistered
		ev.Message = fmt.Sprintf("member %s registered in region %s (cluster created)", nm.Name, nm.Region)
	default:
		ev.Kind = KindMemberRegistered
		ev.Message = fmt.Sprintf("member %s registered in region %s", nm.Name, nm.Region)
	}
	addEvent(st, c, index, ev)
	return nil
}

// applyRemoveMember removes a member. The current primary cannot be
// removed: the cluster would be left with a primary nobody tracks; switch
// over first.
func applyRemoveMember(st *pgdrv1.State, c *pgdrv1.Command, p *pgdrv1.RemoveMember, index uint64) error {
	cl, err := findCluster(st, p.GetCluster())
	if err != nil {
		return fmt.Errorf("remove member %q: %w", p.GetName(), err)
	}
	if _, ok := cl.GetMembers()[p.GetName()]; !ok {
		return fmt.Errorf("remove member: member %q not found in cluster %q", p.GetName(), cl.GetName())
	}
	if cl.GetPrimary() == p.GetName() {
		return fmt.Errorf("remove member: %q is the primary of cluster %q; switch over first", p.GetName(), cl.GetName())
	}
	delete(cl.Members, p.GetName())
	addEvent(st, c, index, &pgdrv1.HistoryEvent{
		Kind: KindMemberRemoved, Cluster: cl.GetName(), Node: p.GetName(), Epoch: cl.GetEpoch(),
		Message: fmt.Sprintf("member %s removed", p.GetName()),
	})
	return nil
}

// applySetPrimary is a compare-and-set on the cluster's epoch: a decision
// taken on a stale view (another failover committed meanwhile) is rejected
// instead of overwriting the newer primary.
func applySetPrimary(st *pgdrv1.State, c *pgdrv1.Command, p *pgdrv1.SetPrimary, index uint64) error {
	cl, err := findCluster(st, p.GetCluster())
	if err != nil {
		return fmt.Errorf("set primary %q: %w", p.GetName(), err)
	}
	if p.GetExpectedEpoch() != cl.GetEpoch() {
		return fmt.Errorf("set primary %q: epoch mismatch in cluster %q: expected %d, current %d",
			p.GetName(), cl.GetName(), p.GetExpectedEpoch(), cl.GetEpoch())
	}
	if _, ok := cl.GetMembers()[p.GetName()]; !ok {
		return fmt.Errorf("set primary: member %q not found in cluster %q", p.GetName(), cl.GetName())
	}
	prev, prevEpoch := cl.GetPrimary(), cl.GetEpoch()
	cl.Primary = p.GetName()
	cl.Epoch++
	// The new primary's promotion is unsettled until confirmed; a primary
	// recorded writable (the initial one) has nothing to confirm.
	cl.UnsettledPromote = nil
	if p.GetPromote() {
		cl.UnsettledPromote = &pgdrv1.UnsettledPromote{Node: cl.Primary, Epoch: cl.Epoch, InFlight: true, OrderedAt: cmdTime(c),
			InFlightSettleAfterMs: p.GetSettleAfterMs(), InFlightHonoured: p.GetHonoursSettle(), InFlightActor: c.GetActor()}
	}
	// The new epoch's LSN floor: never below the old epoch's (a failover
	// within the lag limit does not reset what later ones are judged
	// against) nor below the new primary's position when it was chosen.
	if p.GetPromote() || p.GetPrimaryLsnSeed() > 0 {
		floor := p.GetPrimaryLsnSeed()
		if cl.GetPrimaryLastLsnEpoch() == prevEpoch {
			floor = max(floor, cl.GetPrimaryLastLsn())
		}
		if floor > 0 {
			cl.PrimaryLastLsn, cl.PrimaryLastLsnEpoch = floor, cl.Epoch
		}
	}
	msg := fmt.Sprintf("primary set to %s at epoch %d (was %q)", cl.Primary, cl.Epoch, prev)
	if p.GetReason() != "" {
		msg += ": " + p.GetReason()
	}
	addEvent(st, c, index, &pgdrv1.HistoryEvent{
		Kind: KindPrimarySet, Cluster: cl.GetName(), Node: cl.GetPrimary(), Epoch: cl.GetEpoch(),
		Message: msg, Details: map[string]string{"previous": prev, "reason": p.GetReason()},
	})
	return nil
}

// applyRecordPrimaryLSN records the recorded primary's last known LSN at
// its epoch (compare-and-set on primary and epoch). It never lowers the LSN
// of the same epoch: a lower one is accepted and changes nothing. No
// history event: it is written every few seconds and says nothing an
// operator needs in the audit trail.
func applyRecordPrimaryLSN(st *pgdrv1.State, _ *pgdrv1.Command, p *pgdrv1.RecordPrimaryLSN, _ uint64) error {
	cl, err := findCluster(st, p.GetCluster())
	if err != nil {
		return fmt.Errorf("record primary LSN: %w", err)
	}
	switch {
	case p.GetEpoch() != cl.GetEpoch() || p.GetPrimary() != cl.GetPrimary():
		return fmt.Errorf("record primary LSN of cluster %q: %s at epoch %d is not the recorded primary (%q at epoch %d)",
			cl.GetName(), p.GetPrimary(), p.GetEpoch(), cl.GetPrimary(), cl.GetEpoch())
	case p.GetLsn() == 0:
		return fmt.Errorf("record primary LSN of cluster %q: LSN 0 is not a position", cl.GetName())
	}
	if cl.GetPrimaryLastLsnEpoch() == p.GetEpoch() && cl.GetPrimaryLastLsn() >= p.GetLsn() {
		return nil
	}
	cl.PrimaryLastLsn, cl.PrimaryLastLsnEpoch = p.GetLsn(), p.GetEpoch()
	return nil
}

// applySetSyncStandbys records the synchronous standbys and their quorum
// (compare-and-set on the epoch). The primary itself and unknown members
// are refused; an unchanged list and quorum are accepted without an event.
func applySetSyncStandbys(st *pgdrv1.State, c *pgdrv1.Command, p *pgdrv1.SetSyncStandbys, index uint64) error {
	cl, err := findCluster(st, p.GetCluster())
	if err != nil {
		return fmt.Errorf("set sync standbys: %w", err)
	}
	if p.GetExpectedEpoch() != cl.GetEpoch() {
		return fmt.Errorf("set sync standbys: epoch mismatch in cluster %q: expected %d, current %d",
			cl.GetName(), p.GetExpectedEpoch(), cl.GetEpoch())
	}
	seen := map[string]bool{}
	for _, n := range p.GetNames() {
		if _, ok := cl.GetMembers()[n]; !ok {
			return fmt.Errorf("set sync standbys: member %q not found in cluster %q", n, cl.GetName())
		}
		if n == cl.GetPrimary() {
			return fmt.Errorf("set sync standbys: %q is the primary", n)
		}
		if seen[n] {
			return fmt.Errorf("set sync standbys: %q listed twice", n)
		}
		seen[n] = true
	}
	if slices.Equal(cl.GetSyncStandbys(), p.GetNames()) && cl.GetSyncQuorum() == p.GetQuorum() {
		return nil
	}
	cl.SyncStandbys = slices.Clone(p.GetNames())
	cl.SyncQuorum = p.GetQuorum()
	msg := fmt.Sprintf("synchronous standbys: %v", cl.SyncStandbys)
	if cl.SyncQuorum > 0 {
		msg += fmt.Sprintf(", every acknowledged commit on at least %d of them", cl.SyncQuorum)
	}
	addEvent(st, c, index, &pgdrv1.HistoryEvent{
		Kind: KindSyncStandbysSet, Cluster: cl.GetName(), Epoch: cl.GetEpoch(), Message: msg,
	})
	return nil
}

// applySetPaused enters or leaves maintenance mode. Repeating the current
// mode is accepted without an event, so that retries are harmless and the
// original pause reason, author and time are kept.
func applySetPaused(st *pgdrv1.State, c *pgdrv1.Command, p *pgdrv1.SetPaused, index uint64) error {
	cl, err := findCluster(st, p.GetCluster())
	if err != nil {
		return fmt.Errorf("set paused: %w", err)
	}
	if cl.GetPolicy().GetPaused() == p.GetPaused() {
		return nil
	}
	if cl.Policy == nil {
		cl.Policy = &pgdrv1.Policy{}
	}
	ev := &pgdrv1.HistoryEvent{Cluster: cl.GetName(), Epoch: cl.GetEpoch(), Message: p.GetReason()}
	if p.GetPaused() {
		cl.Policy.Paused = true
		cl.Policy.PausedReason = p.GetReason()
		cl.Policy.PausedBy = c.GetActor()
		cl.Policy.PausedAt = cmdTime(c)
		ev.Kind = KindPaused
	} else {
		cl.Policy.Paused = false
		cl.Policy.PausedReason = ""
		cl.Policy.PausedBy = ""
		cl.Policy.PausedAt = nil
		ev.Kind = KindResumed
	}
	addEvent(st, c, index, ev)
	return nil
}

// applySetPolicy replaces a cluster's policy except the pause fields, which
// only SetPaused changes so that a policy edit cannot silently resume (or
// pause) automatic failover.
func applySetPolicy(st *pgdrv1.State, c *pgdrv1.Command, p *pgdrv1.SetPolicy, index uint64) error {
	cl, err := findCluster(st, p.GetCluster())
	if err != nil {
		return fmt.Errorf("set policy: %w", err)
	}
	np := &pgdrv1.Policy{}
	if p.GetPolicy() != nil {
		np = proto.Clone(p.GetPolicy()).(*pgdrv1.Policy)
	}
	if !ValidSynchronous(np.GetSynchronous()) {
		return fmt.Errorf("set policy for cluster %q: invalid synchronous %q: want off, on or \"quorum N\" with N >= 1",
			cl.GetName(), np.GetSynchronous())
	}
	if slices.Contains(np.GetPreferredRegions(), "") {
		return fmt.Errorf("set policy for cluster %q: empty preferred region", cl.GetName())
	}
	old := cl.GetPolicy()
	if old == nil {
		old = &pgdrv1.Policy{} // a cluster restored from an older snapshot
	}
	np.Paused = old.GetPaused()
	np.PausedReason = old.GetPausedReason()
	np.PausedBy = old.GetPausedBy()
	if old.GetPausedAt() != nil {
		np.PausedAt = &timestamppb.Timestamp{Seconds: old.GetPausedAt().GetSeconds(), Nanos: old.GetPausedAt().GetNanos()}
	} else {
		np.PausedAt = nil
	}
	if proto.Equal(np, old) {
		return nil
	}
	cl.Policy = np
	addEvent(st, c, index, &pgdrv1.HistoryEvent{
		Kind: KindPolicySet, Cluster: cl.GetName(), Epoch: cl.GetEpoch(),
		Message: fmt.Sprintf("policy set: synchronous=%q maximum_lag_on_failover=%d preferred_regions=%s",
			np.GetSynchronous(), np.GetMaximumLagOnFailover(), strings.Join(np.GetPreferredRegions(), ",")),
	})
	return nil
}

// applyUpsertCoordinator records a coordinator voter's addresses.
func applyUpsertCoordinator(st *pgdrv1.State, c *pgdrv1.Command, p *pgdrv1.UpsertCoordinator, index uint64) error {
	co := p.GetCoordinator()
	if co == nil {
		return errors.New("upsert coordinator: coordinator is missing")
	}
	if !ValidName(co.GetName()) {
		return fmt.Errorf("upsert coordinator: invalid name %q", co.GetName())
	}
	if co.GetRaftAddress() == "" {
		return fmt.Errorf("upsert coordinator %q: raft_address is empty", co.GetName())
	}
	old, exists := st.GetCoordinators()[co.GetName()]
	if exists && proto.Equal(old, co) {
		return nil
	}
	if st.Coordinators == nil {
		st.Coordinators = map[string]*pgdrv1.Coordinator{}
	}
	st.Coordinators[co.GetName()] = proto.Clone(co).(*pgdrv1.Coordinator)
	ev := &pgdrv1.HistoryEvent{Kind: KindCoordinatorAdded, Node: co.GetName(),
		Message: fmt.Sprintf("coordinator %s added (raft %s, region %s)", co.GetName(), co.GetRaftAddress(), co.GetRegion())}
	if exists {
		ev.Kind = KindCoordinatorUpdated
		ev.Message = fmt.Sprintf("coordinator %s updated (raft %s, region %s)", co.GetName(), co.GetRaftAddress(), co.GetRegion())
	}
	addEvent(st, c, index, ev)
	return nil
}

// applyRemoveCoordinator forgets a coordinator voter.
func applyRemoveCoordinator(st *pgdrv1.State, c *pgdrv1.Command, p *pgdrv1.RemoveCoordinator, index uint64) error {
	if _, ok := st.GetCoordinators()[p.GetName()]; !ok {
		return fmt.Errorf("remove coordinator: coordinator %q not found", p.GetName())
	}
	delete(st.Coordinators, p.GetName())
	addEvent(st, c, index, &pgdrv1.HistoryEvent{
		Kind: KindCoordinatorRemoved, Node: p.GetName(),
		Message: fmt.Sprintf("coordinator %s removed", p.GetName()),
	})
	return nil
}

// applyRecordEvent appends a leader decision (intent, step, result) to the
// history. Seq, index, time and actor are the FSM's, not the proposer's, so
// the audit trail cannot be back-dated or forged into another's name.
func applyRecordEvent(st *pgdrv1.State, c *pgdrv1.Command, p *pgdrv1.RecordEvent, index uint64) error {
	if p.GetEvent() == nil {
		return errors.New("record event: event is missing")
	}
	if p.GetEvent().GetKind() == "" {
		return errors.New("record event: kind is empty")
	}
	mark := p.GetPromote()
	if _, ok := pgdrv1.PromoteMark_name[int32(mark)]; !ok {
		return fmt.Errorf("record event %s: unknown promote mark %d", p.GetEvent().GetKind(), int32(mark))
	}
	ev := proto.Clone(p.GetEvent()).(*pgdrv1.HistoryEvent)
	addEvent(st, c, index, ev)
	countPrimaryChange(st, ev)
	observeEvent(st, c, ev, index)
	if cl := st.GetClusters()[ev.GetCluster()]; mark != pgdrv1.PromoteMark_PROMOTE_MARK_UNSPECIFIED && cl != nil &&
		ev.GetNode() == cl.GetPrimary() && ev.GetEpoch() == cl.GetEpoch() && cl.GetPrimary() != "" {
		markPromote(cl, mark, cmdTime(c), c.GetActor(), p.GetSettleBy(), p.GetSettleAfterMs(), p.GetHonoursSettle())
	}
	return nil
}

// markPromote applies what an event says about the promotion of cl's
// recorded primary at cl's epoch to cl.unsettled_promote (see PromoteMark).
// Only PROMOTED and SETTLED clear what an earlier order left: a later
// order's NOT_SENT or UNSETTLED ends only its own, and an ORDERED while
// an order is still in flight (a leader died before recording its
// outcome) counts that one as possibly completing, its promise unknown.
//
// The settle windows (settle_after_ms) fold the same way: an order that
// may complete adds its window, the longest one is kept, and one without
// a window (0) makes it unknown until nothing may complete any more.
//
// A NOT_SENT or UNSETTLED mark from another actor than the one whose order
// is in flight is of another order (its own ORDERED mark was never
// committed): the one in flight is folded first, as ORDERED folds it.
func markPromote(cl *pgdrv1.Cluster, mark pgdrv1.PromoteMark, now *timestamppb.Timestamp, actor string, settleBy *timestamppb.Timestamp, window uint64, honoured bool) {
	if mark == pgdrv1.PromoteMark_PROMOTE_MARK_PROMOTED {
		cl.UnsettledPromote = nil
		return
	}
	u := cl.GetUnsettledPromote()
	if u.GetNode() != cl.GetPrimary() || u.GetEpoch() != cl.GetEpoch() {
		u = &pgdrv1.UnsettledPromote{Node: cl.GetPrimary(), Epoch: cl.GetEpoch()}
		cl.UnsettledPromote = u
	}
	foldInFlight := func() {
		// The order in flight never had its outcome recorded (its
		// leader died meanwhile): it may still complete, its settle
		// deadline unknown (its window, if it carried one, is known).
		foldWindow(u, u.GetInFlightSettleAfterMs(), u.GetInFlightHonoured())
		u.MayComplete, u.SettleBy = true, nil
		u.InFlight, u.InFlightSettleAfterMs, u.InFlightHonoured, u.InFlightActor = false, 0, false, ""
	}
	if (mark == pgdrv1.PromoteMark_PROMOTE_MARK_NOT_SENT || mark == pgdrv1.PromoteMark_PROMOTE_MARK_UNSETTLED) &&
		u.GetInFlight() && u.GetInFlightActor() != "" && u.GetInFlightActor() != actor {
		foldInFlight()
	}
	switch mark {
	case pgdrv1.PromoteMark_PROMOTE_MARK_ORDERED:
		if u.GetInFlight() {
			foldInFlight()
		}
		u.InFlight, u.OrderedAt, u.InFlightSettleAfterMs, u.InFlightHonoured, u.InFlightActor = true, now, window, honoured, actor
	case pgdrv1.PromoteMark_PROMOTE_MARK_UNSETTLED:
		// settle_by covers every order that may complete: the latest of
		// theirs, or none once one of them carried none.
		switch {
		case !u.GetMayComplete() || (settleBy != nil && u.GetSettleBy() != nil && settleBy.AsTime().After(u.GetSettleBy().AsTime())):
			u.SettleBy = nil
			if settleBy != nil {
				u.SettleBy = &timestamppb.Timestamp{Seconds: settleBy.GetSeconds(), Nanos: settleBy.GetNanos()}
			}
		case settleBy == nil:
			u.SettleBy = nil
		}
		foldWindow(u, window, honoured)
		u.InFlight, u.MayComplete, u.InFlightSettleAfterMs, u.InFlightHonoured, u.InFlightActor = false, true, 0, false, ""
		if u.OrderedAt == nil {
			u.OrderedAt = now
		}
	case pgdrv1.PromoteMark_PROMOTE_MARK_NOT_SENT:
		// This order cannot complete; an earlier one that may (answered
		// unsettled, or folded in above) still may: may_complete stays.
		u.InFlight, u.InFlightSettleAfterMs, u.InFlightHonoured, u.InFlightActor = false, 0, false, ""
	case pgdrv1.PromoteMark_PROMOTE_MARK_SETTLED:
		u.InFlight, u.MayComplete, u.SettleBy, u.InFlightActor = false, false, nil, ""
		u.InFlightSettleAfterMs, u.SettleAfterMs, u.InFlightHonoured, u.Honoured = 0, 0, false, false
	}
}

// foldWindow adds the settle window of one more order that may complete
// (0: none) to u's, before u.may_complete is set: the longest, or none
// once one of them carried none; and whether its agent kept settle
// deadlines when it went out (honoured only while every one's did).
func foldWindow(u *pgdrv1.UnsettledPromote, window uint64, honoured bool) {
	if u.GetMayComplete() {
		u.Honoured = u.GetHonoured() && honoured
	} else {
		u.Honoured = honoured
	}
	switch {
	case !u.GetMayComplete():
		u.SettleAfterMs = window
	case window == 0 || u.GetSettleAfterMs() == 0:
		u.SettleAfterMs = 0
	default:
		u.SettleAfterMs = max(u.GetSettleAfterMs(), window)
	}
}
