package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// lease is one cluster's primary lease as the leader knows it.
//
// Why promotion after expiry is safe: the agent counts its lease from the
// moment it sent the renewal and fences at ttl − safety_margin; the leader
// counts from the moment it received the renewal (later) and considers the
// lease expired only at ttl. So the old primary has stopped taking writes
// before any promotion, provided the two clocks' rates differ by less than
// the margin over one TTL. A new leader does not know what its predecessor
// granted, so it assumes every primary holds a lease for a full TTL from
// its election. A lease that expired is renewed again only while no
// failover of its epoch began: a primary serving under failsafe (every
// member acknowledged its pings, see agent/failsafe) renews when
// the leader is reachable again, and a failover revokes the lease
// atomically with checking that it expired (revokeExpired) before anyone
// is promoted, so a renewal never overlaps a promotion.
type lease struct {
	holder  string
	epoch   uint64
	expires time.Time
	// revoked: a failover of this epoch began; the lease is never renewed.
	revoked bool
}

type leases struct {
	mu sync.Mutex
	m  map[string]lease
}

func newLeases() *leases { return &leases{m: map[string]lease{}} }

// assumeHeld starts a leadership term: every recorded primary is taken to
// hold its lease for ttl from now.
func (l *leases) assumeHeld(st *pgdrv1.State, now time.Time, ttl time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.m = map[string]lease{}
	for name, c := range st.Clusters {
		if c.Primary != "" {
			l.m[name] = lease{holder: c.Primary, epoch: c.Epoch, expires: now.Add(ttl)}
		}
	}
}

// ensure gives a recorded primary that holds no lease of its epoch yet (it
// was just recorded, or has not renewed since) one lasting ttl from now.
// Without it a primary the leader never saw renew would count as expired
// at once, while its agent fences only ttl − margin after it started.
func (l *leases) ensure(cluster, holder string, epoch uint64, now time.Time, ttl time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if le, ok := l.m[cluster]; ok && le.holder == holder && le.epoch == epoch {
		return
	}
	l.m[cluster] = lease{holder: holder, epoch: epoch, expires: now.Add(ttl)}
}

func (l *leases) get(cluster string) (lease, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	le, ok := l.m[cluster]
	return le, ok
}

// revoke marks the lease of epoch as never renewable (a failover began).
func (l *leases) revoke(cluster string, epoch uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	le := l.m[cluster]
	if le.epoch == epoch {
		le.revoked = true
		l.m[cluster] = le
	}
}

// renew grants or refuses a renewal by holder at epoch, given the
// recorded primary and epoch. It returns a refusal reason ("" = granted).
func (l *leases) renew(cluster, holder string, epoch uint64, primary string, current uint64, now time.Time, ttl time.Duration) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case primary == "":
		return fmt.Sprintf("no primary recorded yet for cluster %s", cluster)
	case primary != holder:
		return fmt.Sprintf("the recorded primary of cluster %s is %s at epoch %d", cluster, primary, current)
	case epoch != current:
		return fmt.Sprintf("stale epoch %d: the recorded primary of cluster %s is %s at epoch %d", epoch, cluster, primary, current)
	}
	le, ok := l.m[cluster]
	if ok && le.epoch == epoch && le.holder == holder {
		if le.revoked {
			return fmt.Sprintf("the lease of epoch %d was revoked: a failover of cluster %s is under way", epoch, cluster)
		}
	}
	l.m[cluster] = lease{holder: holder, epoch: epoch, expires: now.Add(ttl)}
	return ""
}

// RenewLease grants the recorded primary's agent another TTL.
func (a *agentAPI) RenewLease(ctx context.Context, req *pgdrv1.RenewLeaseRequest) (*pgdrv1.RenewLeaseResponse, error) {
	if err := checkName("cluster", req.Cluster, true); err != nil {
		return nil, err
	}
	if err := checkName("node", req.Node, true); err != nil {
		return nil, err
	}
	if err := checkCaller(ctx, req.Cluster, req.Node); err != nil {
		return nil, err
	}
	if !a.s.isLeader() {
		return nil, a.notLeader()
	}
	if !a.s.caughtUpLeader() {
		return nil, errCatchingUp
	}
	now := time.Now()
	member, primary, epoch := a.s.fsm.MemberEpoch(req.Cluster, req.Node)
	if !member {
		return nil, status.Errorf(codes.FailedPrecondition, "member %q of cluster %q is not registered", req.Node, req.Cluster)
	}
	f := a.s.cfg.Failover
	resp := &pgdrv1.RenewLeaseResponse{TtlMs: f.LeaseTTL.Milliseconds(), SafetyMarginMs: f.SafetyMargin.Milliseconds(), Epoch: epoch, Primary: primary}
	resp.Reason = a.s.leases.renew(req.Cluster, req.Node, req.Epoch, primary, epoch, now, f.LeaseTTL.Duration)
	resp.Granted = resp.Reason == ""
	if resp.Granted {
		resp.Members = a.s.fsm.Peers(req.Cluster, req.Node)
	}
	if !resp.Granted {
		a.s.log.Warn("lease refused", "cluster", req.Cluster, "node", req.Node, "epoch", req.Epoch, "reason", resp.Reason)
	}
	return resp, nil
}
