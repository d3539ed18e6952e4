package server

// Synchronous mode (policy.synchronous "on" or "quorum N").
//
// The leader manages the primary's synchronous_standby_names and records in
// Raft (Cluster.sync_standbys, "R") every standby that may hold an
// acknowledged commit. The invariant, kept by the order of the steps (as in
// Patroni):
//
//	every acknowledged commit is on at least N members of R
//	(N = 1 for "on", N for "quorum N"; the primary's setting names only
//	members of R, and N is at most its own number).
//
//   - To add standbys, R is first recorded as old R ∪ new names ∪ the names
//     the primary uses now, and only then is the primary told the new
//     setting. A crash in between leaves a larger R: promotion needs more
//     members to be reachable, never fewer.
//   - To drop standbys, the primary is told first; once its reports show the
//     new setting, the leader notes the primary's LSN L at that moment
//     (every commit acknowledged under the old setting is at or below L),
//     waits until N members of the new set have flushed L, and only then
//     records the smaller R.
//   - A promoted standby gets, before pg_promote, ANY n (every other member)
//     and R = every other member, so it acknowledges nothing that only it
//     holds; the leader then narrows it as above.
//   - "on" with no healthy replica keeps the old setting: writes wait for a
//     synchronous standby (the contract of synchronous mode). "off" (or "")
//     clears the setting, then records an empty R.
//
// Promotion (syncEligibility → failover.SyncCandidates): with M = |R|, any
// M−N+1 members of R include one that holds each acknowledged commit, so a
// member may be promoted only if it has the highest durable LSN among at
// least M−N+1 reachable members of R whose reports arrived after the old
// primary's lease expired (so it stopped writing). With N = M (e.g. "on"
// with one recorded standby) every member of R holds every commit. N is
// kept in Raft with R (Cluster.sync_quorum; unknown counts as 1), never
// above the policy's or the primary's reported number:
//
//   - Lowering N (quorum 3 → quorum 2, or → on) is recorded before the
//     primary is told the smaller number.
//   - Raising N (on → quorum 2) tells the primary first and keeps the old
//     N recorded; once its reports show the new setting the leader notes
//     its LSN L and records the new N only when N members of the new set
//     have flushed L, as for dropping standbys. Until then a commit that
//     only the old synchronous standby acknowledged may be on one member
//     of R, and the rule counts it so.
//
// The caveat that remains is PostgreSQL's own: a commit whose wait for
// synchronous replication is cancelled (pg_cancel_backend, a client timeout
// that sends a cancel request) is reported to that client with a WARNING,
// not an error. Clients must not treat such a commit as acknowledged.

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/failover"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// kindSyncSetting is the history kind of a change of the primary's
// synchronous_standby_names.
const kindSyncSetting = "sync-standby-names"

// syncRetell: the same setting is not sent to the same primary again
// within it (its report may lag the order's answer).
const syncRetell = 3 * time.Second

// syncer is the leader's bookkeeping for synchronous mode.
type syncer struct {
	mu      sync.Mutex
	busy    map[string]bool
	confirm map[string]syncConfirm
	told    map[string]syncTold
	note    map[string]string // last logged note per cluster
}

// syncConfirm: the primary of epoch was first seen using value when its LSN
// was lsn.
type syncConfirm struct {
	epoch uint64
	value string
	lsn   uint64
}

type syncTold struct {
	epoch uint64
	value string
	at    time.Time
}

func newSyncer() *syncer {
	return &syncer{busy: map[string]bool{}, confirm: map[string]syncConfirm{}, told: map[string]syncTold{}, note: map[string]string{}}
}

func (y *syncer) reset() {
	y.mu.Lock()
	defer y.mu.Unlock()
	y.busy, y.confirm, y.told, y.note = map[string]bool{}, map[string]syncConfirm{}, map[string]syncTold{}, map[string]string{}
}

// syncAction is what planSync asks for.
type syncAction int

const (
	syncNone    syncAction = iota
	syncRecord             // record Names as sync_standbys
	syncTell               // set the primary's synchronous_standby_names to Value
	syncNoteLSN            // note the primary's LSN as the confirmation point
)

// syncInput is one cluster's view for planSync; it does no I/O.
type syncInput struct {
	Policy   string
	Primary  string
	Members  []string
	NoSync   map[string]bool // tagged no-failover: never made synchronous
	Recorded []string
	// Quorum: the recorded sync_quorum (0 = unknown, read as 1).
	Quorum int
	// Reported: the primary's synchronous_standby_names now.
	Reported string
	// Healthy: fresh, connectable, streaming replicas that the primary's
	// pg_stat_replication shows streaming.
	Healthy map[string]bool
	// Flush: each replica's flush LSN in the primary's pg_stat_replication.
	Flush      map[string]uint64
	PrimaryLSN uint64
	// Confirm: the confirmation point of the current setting (nil: none).
	Confirm *syncConfirm
	// Receivers: the application names of the members' synchronous WAL
	// receivers (Member.sync_receiver) that the primary waits for, sorted
	// (syncInputFor: those streaming from it, and those named already whose
	// node is up and not fenced; never the primary's own). With policy
	// "on" the primary waits for every one of them besides its synchronous
	// standby (a commit is acknowledged only once it is also in their
	// spools, outside the primary), named even while one is away if its
	// node is up: commits then wait, the contract of a synchronous archive. They are not members:
	// never recorded in R, never counted in the quorum, never promoted.
	// PostgreSQL 15 cannot require a named standby besides a quorum of
	// others, so "quorum N" does not name them.
	Receivers []string
}

type syncPlan struct {
	Action syncAction
	Names  []string
	Quorum int // with syncRecord: the quorum recorded with Names
	Value  string
	// Note explains a plan that waits (or why nothing changes).
	Note string
}

// planSync decides the next step of synchronous-mode management for one
// cluster whose primary is healthy. One step per call: the caller acts and
// calls again with fresh state.
func planSync(in syncInput) syncPlan {
	n := failover.SyncQuorum(in.Policy)
	others := make([]string, 0, len(in.Members))
	for _, m := range in.Members {
		if m != in.Primary {
			others = append(others, m)
		}
	}
	slices.Sort(others)
	isOther := func(m string) bool { _, ok := slices.BinarySearch(others, m); return ok }
	rec := setOf(in.Recorded, isOther)
	reported, repOK := failover.ParseSyncStandbyNames(in.Reported)
	var repNames []string
	if repOK {
		for _, name := range reported.Names {
			if name == "*" {
				repNames = append(repNames, others...)
			} else if isOther(name) {
				repNames = append(repNames, name)
			}
		}
	}
	recordedExactly := func(names []string) bool {
		return slices.Equal(sortedSet(in.Recorded), sortedSet(names))
	}

	if !failover.SynchronousMode(in.Policy) {
		switch {
		case strings.TrimSpace(in.Reported) != "":
			return syncPlan{Action: syncTell, Value: "", Note: "synchronous mode off: clearing synchronous_standby_names"}
		case len(in.Recorded) > 0 || in.Quorum != 0:
			return syncPlan{Action: syncRecord, Names: []string{}, Note: "synchronous mode off: the primary waits for no standby"}
		}
		return syncPlan{}
	}
	if n == 0 {
		return syncPlan{Note: fmt.Sprintf("policy synchronous %q is not understood; the synchronous standbys are left as they are", in.Policy)}
	}

	var cands []string // may be made synchronous now
	for _, m := range others {
		if in.Healthy[m] && !in.NoSync[m] {
			cands = append(cands, m)
		}
	}
	var want []string
	var setting failover.SyncSetting
	num := n // of the members: what the recorded quorum claims
	if strings.EqualFold(strings.TrimSpace(in.Policy), "on") {
		switch {
		case repOK && len(repNames) == 1 && slices.Contains(cands, repNames[0]):
			want = []string{repNames[0]} // keep a healthy synchronous standby
		case len(cands) > 0:
			want = []string{bestSync(cands, rec, in.Flush)}
		case repOK:
			return syncPlan{Note: fmt.Sprintf("no healthy streaming replica: keeping synchronous_standby_names %q; commits wait until a synchronous standby acknowledges them", in.Reported)}
		default:
			// Just switched on and nobody is healthy: name one anyway, so
			// that commits wait instead of being acknowledged alone.
			var pool []string
			for _, m := range others {
				if !in.NoSync[m] {
					pool = append(pool, m)
				}
			}
			if len(pool) == 0 {
				return syncPlan{Note: "no member can be a synchronous standby"}
			}
			want = []string{bestSync(pool, rec, in.Flush)}
		}
		// FIRST k of k names: every receiver and the standby.
		setting = failover.SyncSetting{Method: "FIRST", Num: 1 + len(in.Receivers), Names: append(slices.Clone(in.Receivers), want...)}
		num = 1
	} else {
		want = slices.Clone(cands)
		// Fewer healthy replicas than N: keep the standbys named now, then
		// any other member, so that commits wait rather than count fewer.
		for _, pool := range [][]string{repNames, others} {
			for _, m := range pool {
				if len(want) >= n {
					break
				}
				if !slices.Contains(want, m) && !in.NoSync[m] {
					want = append(want, m)
				}
			}
		}
		if len(want) < n {
			return syncPlan{Note: fmt.Sprintf("policy synchronous %q needs %d standbys but only %d members can be synchronous; synchronous_standby_names is left as %q", in.Policy, n, len(want), in.Reported)}
		}
		slices.Sort(want)
		setting = failover.SyncSetting{Method: "ANY", Num: n, Names: want}
	}
	value := setting.String()
	// The recorded quorum claims every acknowledged commit is on that many
	// members of the recorded set. Lowering the claim is always true, so a
	// smaller number is recorded before the primary uses it; a larger one
	// only once that many of the new set flushed the LSN noted when the
	// primary was seen using it (min(old, new) until then).
	recQ := max(in.Quorum, 1)
	lowQ := min(recQ, num)

	if value != in.Reported {
		// Adding comes first: everyone named now or soon is recorded
		// before the primary waits for them.
		grown := union(rec, want, repNames)
		if !subset(grown, in.Recorded) || containsName(in.Recorded, in.Primary) || recQ > num {
			return syncPlan{Action: syncRecord, Names: grown, Quorum: lowQ, Note: "recording the synchronous standbys before the primary uses them"}
		}
		return syncPlan{Action: syncTell, Value: value}
	}
	// The primary uses the wanted setting.
	if !subset(want, in.Recorded) || containsName(in.Recorded, in.Primary) || recQ > num {
		return syncPlan{Action: syncRecord, Names: union(rec, want), Quorum: lowQ, Note: "recording the standbys the primary waits for"}
	}
	if recordedExactly(want) && recQ == num {
		return syncPlan{}
	}
	// Dropping standbys or raising the quorum: only once N of the wanted
	// standbys hold everything acknowledged under the old setting.
	if in.Confirm == nil || in.Confirm.value != value {
		return syncPlan{Action: syncNoteLSN, Note: fmt.Sprintf("the primary uses %s; waiting for the standbys to catch up before the others are dropped or the quorum is raised", value)}
	}
	caught := 0
	for _, m := range want {
		if in.Flush[m] >= in.Confirm.lsn {
			caught++
		}
	}
	if caught < num {
		return syncPlan{Note: fmt.Sprintf("the primary uses %s; %d of the wanted standbys flushed %s, %d needed before %v are dropped from the recorded set and the recorded quorum goes from %d to %d",
			value, caught, failover.FormatLSN(in.Confirm.lsn), num, minus(in.Recorded, want), recQ, num)}
	}
	return syncPlan{Action: syncRecord, Names: slices.Clone(want), Quorum: num, Note: "the wanted standbys caught up: dropping standbys the primary no longer waits for, recording its quorum"}
}

// bestSync picks a synchronous standby: one already recorded, then the
// highest flush LSN, then the name.
func bestSync(cands []string, rec map[string]bool, flush map[string]uint64) string {
	best := cands[0]
	for _, c := range cands[1:] {
		switch {
		case rec[c] != rec[best]:
			if rec[c] {
				best = c
			}
		case flush[c] != flush[best]:
			if flush[c] > flush[best] {
				best = c
			}
		case c < best:
			best = c
		}
	}
	return best
}

func setOf(names []string, keep func(string) bool) map[string]bool {
	out := map[string]bool{}
	for _, n := range names {
		if keep == nil || keep(n) {
			out[n] = true
		}
	}
	return out
}

func sortedSet(names []string) []string {
	out := slices.Clone(names)
	slices.Sort(out)
	return slices.Compact(out)
}

func union(base map[string]bool, lists ...[]string) []string {
	all := slices.Collect(maps.Keys(base))
	for _, l := range lists {
		all = append(all, l...)
	}
	return sortedSet(all)
}

// subset reports whether every name in a is in b.
func subset(a, b []string) bool {
	for _, n := range a {
		if !slices.Contains(b, n) {
			return false
		}
	}
	return true
}

func containsName(list []string, name string) bool { return name != "" && slices.Contains(list, name) }

func minus(a, b []string) []string {
	var out []string
	for _, n := range sortedSet(a) {
		if !slices.Contains(b, n) {
			out = append(out, n)
		}
	}
	return out
}

// syncInputFor builds planSync's input; ok is false when the primary is
// not a healthy, fresh primary (nothing is changed then).
func (s *Server) syncInputFor(c *pgdrv1.Cluster, samples map[memberKey]sample, now time.Time) (syncInput, bool) {
	stale := s.cfg.Health.StaleAfter.Duration
	ps, ok := samples[memberKey{c.Name, c.Primary}]
	if !ok || now.Sub(ps.at) > stale {
		return syncInput{}, false
	}
	pr := ps.report
	if !pr.PostmasterAlive || !pr.Connectable || pr.InRecovery || pr.Fenced {
		return syncInput{}, false
	}
	in := syncInput{
		Policy: c.GetPolicy().GetSynchronous(), Primary: c.Primary, Recorded: c.SyncStandbys, Quorum: int(c.SyncQuorum),
		Reported: pr.SynchronousStandbyNames, PrimaryLSN: pr.CurrentLsn,
		NoSync: map[string]bool{}, Healthy: map[string]bool{}, Flush: map[string]uint64{},
	}
	streaming := map[string]bool{}
	for _, r := range pr.Replicas {
		if r.State == "streaming" {
			streaming[r.ApplicationName] = true
		}
		in.Flush[r.ApplicationName] = max(in.Flush[r.ApplicationName], r.FlushLsn)
	}
	reported, _ := failover.ParseSyncStandbyNames(pr.SynchronousStandbyNames)
	for name, m := range c.Members {
		in.Members = append(in.Members, name)
		if slices.Contains(m.Tags, failover.TagNoFailover) {
			in.NoSync[name] = true
		}
		sm, ok := samples[memberKey{c.Name, name}]
		if r := m.GetSyncReceiver(); r != "" && name != c.Primary {
			// A receiver is named once it streams from this primary (never
			// the primary's own: it holds nothing outside the primary). A
			// named one that stops streaming stays named while its node is
			// up and not fenced (commits wait for it, as for the synchronous
			// standby); it is dropped once its node is lost or fenced (an
			// old primary's receiver connects nowhere).
			nodeUp := ok && now.Sub(sm.at) <= stale && sm.report.PostmasterAlive && !sm.report.Fenced
			fresh := ok && now.Sub(sm.at) <= stale
			switch {
			case fresh && sm.report.Fenced:
			case streaming[r]:
				in.Receivers = append(in.Receivers, r)
			case nodeUp && slices.Contains(reported.Names, r):
				in.Receivers = append(in.Receivers, r)
			}
		}
		if !ok || now.Sub(sm.at) > stale || name == c.Primary {
			continue
		}
		r := sm.report
		in.Healthy[name] = r.PostmasterAlive && r.Connectable && r.InRecovery && r.Streaming && !r.Fenced && streaming[name]
	}
	slices.Sort(in.Members)
	slices.Sort(in.Receivers)
	return in, true
}

// syncTick runs one step of synchronous-mode management per cluster; the
// leader loop calls it every tick. Steps run in the background, one at a
// time per cluster, so that they never delay a failover decision.
func (s *Server) syncTick(ctx context.Context) {
	samples := s.view.snapshot()
	now := time.Now()
	type job struct {
		c  *pgdrv1.Cluster
		in syncInput
	}
	var jobs []job
	s.fsm.Read(func(st *pgdrv1.State) {
		for name, c := range st.Clusters {
			if c.Primary == "" || c.GetPolicy().GetPaused() {
				continue
			}
			if !failover.SynchronousMode(c.GetPolicy().GetSynchronous()) && len(c.SyncStandbys) == 0 {
				// Asynchronous and nothing recorded: only a leftover setting
				// on the primary needs clearing.
				if ps, ok := samples[memberKey{name, c.Primary}]; !ok || ps.report.SynchronousStandbyNames == "" {
					continue
				}
			}
			in, ok := s.syncInputFor(c, samples, now)
			if !ok {
				continue
			}
			jobs = append(jobs, job{c: &pgdrv1.Cluster{Name: name, Primary: c.Primary, Epoch: c.Epoch}, in: in})
		}
	})
	for _, j := range jobs {
		name := j.c.Name
		s.judge.mu.Lock()
		busy := s.judge.inFlight[name]
		s.judge.mu.Unlock()
		s.syncer.mu.Lock()
		if busy || s.syncer.busy[name] {
			s.syncer.mu.Unlock()
			continue
		}
		if cf, ok := s.syncer.confirm[name]; ok && cf.epoch == j.c.Epoch {
			j.in.Confirm = &cf
		}
		p := planSync(j.in)
		if p.Note != s.syncer.note[name] {
			s.syncer.note[name] = p.Note
			if p.Note != "" {
				s.log.Info("synchronous mode", "cluster", name, "primary", j.c.Primary, "epoch", j.c.Epoch, "note", p.Note)
			}
		}
		switch p.Action {
		case syncNone:
			s.syncer.mu.Unlock()
			continue
		case syncNoteLSN:
			s.syncer.confirm[name] = syncConfirm{epoch: j.c.Epoch, value: j.in.Reported, lsn: j.in.PrimaryLSN}
			s.syncer.mu.Unlock()
			continue
		case syncTell:
			if t, ok := s.syncer.told[name]; ok && t.epoch == j.c.Epoch && t.value == p.Value && now.Sub(t.at) < syncRetell {
				s.syncer.mu.Unlock()
				continue
			}
		}
		s.syncer.busy[name] = true
		s.syncer.mu.Unlock()
		go func() {
			defer func() {
				s.syncer.mu.Lock()
				delete(s.syncer.busy, name)
				s.syncer.mu.Unlock()
			}()
			s.syncStep(ctx, j.c, p)
		}()
	}
}

// syncStep carries out one plan.
func (s *Server) syncStep(ctx context.Context, c *pgdrv1.Cluster, p syncPlan) {
	log := s.log.With("cluster", c.Name, "primary", c.Primary, "epoch", c.Epoch)
	switch p.Action {
	case syncRecord:
		names := p.Names
		if names == nil {
			names = []string{}
		}
		if _, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_SET_SYNC_STANDBYS, &pgdrv1.SetSyncStandbys{
			Cluster: c.Name, Names: names, ExpectedEpoch: c.Epoch, Quorum: uint32(p.Quorum),
		}, "coordinator:"+s.cfg.Name); err != nil {
			log.Warn("recording the synchronous standbys", "names", names, "quorum", p.Quorum, "err", err)
			return
		}
		log.Info("synchronous standbys recorded", "names", names, "quorum", p.Quorum, "why", p.Note)
	case syncTell:
		s.syncer.mu.Lock()
		s.syncer.told[c.Name] = syncTold{epoch: c.Epoch, value: p.Value, at: time.Now()}
		s.syncer.mu.Unlock()
		if err := s.tellSync(ctx, c.Name, c.Primary, c.Epoch, p.Value); err != nil {
			log.Warn("setting synchronous_standby_names", "value", p.Value, "err", err)
			return
		}
		s.recordEvent(ctx, c.Name, kindSyncSetting, c.Primary, c.Epoch, fmt.Sprintf("%s: synchronous_standby_names = '%s'", c.Primary, p.Value), nil)
	}
}

// tellSync orders node to set synchronous_standby_names to value.
func (s *Server) tellSync(ctx context.Context, cluster, node string, epoch uint64, value string) error {
	cctx, cancel := context.WithTimeout(ctx, min(s.cfg.Failover.CommandTimeout.Duration, 30*time.Second))
	defer cancel()
	res, err := s.hub.call(cctx, memberKey{cluster, node}, &pgdrv1.AgentCommand{
		Id: newCommandID(), Cluster: cluster, Node: node, Epoch: epoch, IssuedAt: timestamppb.Now(),
		Kind: &pgdrv1.AgentCommand_SetSynchronous{SetSynchronous: &pgdrv1.SetSynchronous{Value: value}},
	})
	if err != nil {
		return err
	}
	if !res.Ok {
		return fmt.Errorf("%s", res.Error)
	}
	return nil
}

// syncBeforePromote prepares a synchronous-mode promotion at the new
// epoch: it records every other member as a synchronous standby and sets
// the candidate's synchronous_standby_names to ANY n of them while it is
// still a standby, so the new primary acknowledges no commit that only it
// holds. An error stops the failover before pg_promote.
func (s *Server) syncBeforePromote(ctx context.Context, c *pgdrv1.Cluster, cand string, epoch uint64) error {
	policy := c.GetPolicy().GetSynchronous()
	if !failover.SynchronousMode(policy) {
		return nil
	}
	var others []string
	for m := range c.Members {
		if m != cand {
			others = append(others, m)
		}
	}
	if len(others) == 0 {
		return nil
	}
	slices.Sort(others)
	s.syncer.mu.Lock()
	delete(s.syncer.confirm, c.Name)
	s.syncer.mu.Unlock()
	n := min(max(failover.SyncQuorum(policy), 1), len(others))
	// The quorum recorded is the one the new primary will wait for (as the
	// promotion rule read it from that setting before it was recorded).
	if _, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_SET_SYNC_STANDBYS, &pgdrv1.SetSyncStandbys{
		Cluster: c.Name, Names: others, ExpectedEpoch: epoch, Quorum: uint32(n),
	}, "coordinator:"+s.cfg.Name); err != nil {
		// Fatal for this step: the new primary must not acknowledge commits
		// on standbys the recorded set does not name (the next failover
		// would judge by the old set and could lose them). The leader
		// retries the promotion later.
		return fmt.Errorf("recording the synchronous standbys %v (ANY %d) of cluster %s at epoch %d before promoting %s: %w",
			others, n, c.Name, epoch, cand, err)
	}
	value := failover.SyncSetting{Method: "ANY", Num: n, Names: others}.String()
	if err := s.tellSync(ctx, c.Name, cand, epoch, value); err != nil {
		return fmt.Errorf("setting synchronous_standby_names = '%s' on %s before its promotion: %w", value, cand, err)
	}
	s.recordEvent(ctx, c.Name, kindFailoverStep, cand, epoch, fmt.Sprintf("synchronous mode: %s set synchronous_standby_names = '%s' before its promotion", cand, value), nil)
	return nil
}

// syncEligibility marks, in synchronous mode, which members may be
// promoted without losing an acknowledged commit (Member.Synchronous) and
// why the others may not (Member.SyncNote).
func (s *Server) syncEligibility(c *pgdrv1.Cluster, samples map[memberKey]sample, in *failover.Input) {
	if !failover.SynchronousMode(in.Policy.Synchronous) {
		return
	}
	var reported string
	if ps, ok := samples[memberKey{c.Name, c.Primary}]; ok {
		reported = ps.report.SynchronousStandbyNames
	}
	quorum := failover.EffectiveSyncQuorum(in.Policy.Synchronous, reported, int(c.SyncQuorum))
	v := failover.SyncView{Recorded: c.SyncStandbys, Quorum: quorum, Positions: map[string]uint64{}}
	for _, name := range c.SyncStandbys {
		sm, ok := samples[memberKey{c.Name, name}]
		if !ok || in.Now.Sub(sm.at) > s.cfg.Health.StaleAfter.Duration {
			continue
		}
		// A position is final only if reported after the old primary's
		// lease ran out (it had stopped writing by then).
		if !in.LeaseExpiresAt.IsZero() && !sm.at.After(in.LeaseExpiresAt) {
			continue
		}
		if r := sm.report; r.Connectable && r.InRecovery {
			v.Positions[name] = max(r.ReceiveLsn, r.ReplayLsn)
		}
	}
	eligible, why, general := failover.SyncCandidates(v)
	for name, m := range in.Members {
		m.Synchronous = eligible[name]
		m.SyncNote = ""
		if !m.Synchronous {
			m.SyncNote = why[name]
			if m.SyncNote == "" {
				m.SyncNote = general
			}
		}
		in.Members[name] = m
	}
}
