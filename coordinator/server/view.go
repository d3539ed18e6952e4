package server

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Member roles as status reports them.
const (
	RolePrimary = "primary"
	RoleReplica = "replica"
	RoleFenced  = "fenced"
	RoleStopped = "stopped"
	RoleUnknown = "unknown"
)

type memberKey struct{ cluster, node string }

// sample is the latest health report of one member and when it arrived.
type sample struct {
	report *pgdrv1.HealthReport
	at     time.Time
	// sampledAfter: the report's checks began after this time on the
	// leader's clock, with its monotonic reading: when this leader sent
	// the command the report names as the latest its agent had received
	// (zero: unknown; echo.go).
	sampledAfter time.Time
}

// view is the leader's in-memory picture of agent health. It is rebuilt
// from reports after every leadership change and never written to Raft.
type view struct {
	mu      sync.Mutex
	samples map[memberKey]sample
}

func newView() *view { return &view{samples: map[memberKey]sample{}} }

// put stores r, received at at and sampled after sampledAfter (zero:
// unknown), as its member's latest report.
func (v *view) put(r *pgdrv1.HealthReport, at, sampledAfter time.Time) {
	v.mu.Lock()
	v.samples[memberKey{r.Cluster, r.Node}] = sample{report: r, at: at, sampledAfter: sampledAfter}
	v.mu.Unlock()
}

// fencedClusters are the clusters with a member whose latest report says
// fenced (read under the lock, without copying every sample).
func (v *view) fencedClusters() map[string]bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := map[string]bool{}
	for k, s := range v.samples {
		if s.report.GetFenced() {
			out[k.cluster] = true
		}
	}
	return out
}

func (v *view) snapshot() map[memberKey]sample {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make(map[memberKey]sample, len(v.samples))
	for k, s := range v.samples {
		out[k] = s
	}
	return out
}

// snapshotCluster is snapshot restricted to cluster's members.
func (v *view) snapshotCluster(cluster string) map[memberKey]sample {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := map[memberKey]sample{}
	for k, s := range v.samples {
		if k.cluster == cluster {
			out[k] = s
		}
	}
	return out
}

// get returns one member's latest sample.
func (v *view) get(k memberKey) (sample, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	s, ok := v.samples[k]
	return s, ok
}

func (v *view) reset() {
	v.mu.Lock()
	v.samples = map[memberKey]sample{}
	v.mu.Unlock()
}

// statusInput is everything clusterStatus needs; it does no I/O.
type statusInput struct {
	state      *pgdrv1.State
	samples    map[memberKey]sample
	gossip     map[string]string // gossip.NodeName → state
	now        time.Time
	staleAfter time.Duration
	// primaryLSN: each cluster's primary's last known LSN at its epoch
	// (primarylsn.go), which a report without an LSN does not lower.
	primaryLSN map[string]uint64
}

// defaultMaxLag is used when a cluster's policy leaves maximum_lag_on_failover at 0.
const defaultMaxLag = 1 << 20

// clusterStatus judges every member of every cluster from its latest
// report: role, health, lag against the primary's LSN, and the problems
// that make it unhealthy. It is a pure function of its input.
func clusterStatus(in statusInput, only string) []*pgdrv1.ClusterStatus {
	names := make([]string, 0, len(in.state.Clusters))
	for n := range in.state.Clusters {
		if only == "" || n == only {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	out := make([]*pgdrv1.ClusterStatus, 0, len(names))
	for _, name := range names {
		c := in.state.Clusters[name]
		cs := &pgdrv1.ClusterStatus{Name: name, Primary: c.Primary, Epoch: c.Epoch, Policy: proto.Clone(c.Policy).(*pgdrv1.Policy)}
		if c.Policy != nil {
			cs.Paused, cs.PausedReason = c.Policy.Paused, c.Policy.PausedReason
		}
		maxLag := int64(defaultMaxLag)
		if c.Policy != nil && c.Policy.MaximumLagOnFailover > 0 {
			maxLag = int64(c.Policy.MaximumLagOnFailover)
		}
		fresh := func(node string) (*pgdrv1.HealthReport, float64, bool) {
			s, ok := in.samples[memberKey{name, node}]
			if !ok {
				return nil, -1, false
			}
			age := in.now.Sub(s.at).Seconds()
			return s.report, age, in.now.Sub(s.at) <= in.staleAfter
		}
		primaryLSN := in.primaryLSN[name]
		if pr, _, ok := fresh(c.Primary); ok && pr.Connectable && !pr.InRecovery {
			primaryLSN = max(primaryLSN, pr.CurrentLsn)
		}
		members := make([]string, 0, len(c.Members))
		for n := range c.Members {
			members = append(members, n)
		}
		sort.Strings(members)
		for _, n := range members {
			m := c.Members[n]
			ms := &pgdrv1.MemberStatus{
				Name: n, Region: m.Region, Dsn: m.Dsn, Tags: m.Tags, Priority: m.Priority, ApiUrl: m.ApiUrl,
				Role: RoleUnknown, Problems: []string{}, LastReportAgeSeconds: -1,
				Gossip: in.gossip["agent/"+name+"/"+n],
			}
			if ms.Gossip == "" {
				ms.Gossip = "unknown"
			}
			r, age, ok := fresh(n)
			ms.LastReportAgeSeconds = age
			switch {
			case r == nil:
				ms.Problems = append(ms.Problems, "no report received from the agent")
			case !ok:
				ms.Problems = append(ms.Problems, fmt.Sprintf("last report is %.1fs old", age))
			default:
				judge(ms, r, n == c.Primary, c.Primary, primaryLSN, maxLag)
			}
			ms.Healthy = len(ms.Problems) == 0
			cs.Members = append(cs.Members, ms)
		}
		out = append(out, cs)
	}
	return out
}

func judge(ms *pgdrv1.MemberStatus, r *pgdrv1.HealthReport, isPrimary bool, primary string, primaryLSN uint64, maxLag int64) {
	ms.Timeline, ms.Lsn, ms.ReceiveLsn, ms.ReplayLsn = r.Timeline, r.CurrentLsn, r.ReceiveLsn, r.ReplayLsn
	ms.Streaming, ms.ArchiveFailedCount = r.Streaming, r.ArchiveFailedCount
	ms.LagBytes, ms.LagSeconds = r.LagBytes, r.LagSeconds
	switch {
	case r.Fenced:
		ms.Role = RoleFenced
		ms.Problems = append(ms.Problems, "fenced")
		return
	case !r.PostmasterAlive:
		ms.Role = RoleStopped
		ms.Problems = append(ms.Problems, "PostgreSQL is not running")
		return
	case r.RecoveryUnknown:
		ms.Problems = append(ms.Problems, "connected, but its recovery state could not be read: "+r.Error)
		return
	case !r.Connectable:
		ms.Problems = append(ms.Problems, "cannot connect: "+r.Error)
		return
	case r.InRecovery:
		ms.Role = RoleReplica
	default:
		ms.Role = RolePrimary
	}
	if ms.Role == RoleReplica {
		if primaryLSN > 0 {
			pos := r.ReceiveLsn
			if pos == 0 {
				pos = r.ReplayLsn
			}
			ms.LagBytes = 0
			if primaryLSN > pos {
				ms.LagBytes = int64(primaryLSN - pos)
			}
		}
		if ms.LagBytes < 0 {
			ms.LagBytes = 0
		}
		if !r.Streaming {
			ms.Problems = append(ms.Problems, "not streaming from a primary")
		}
		if ms.LagBytes > maxLag {
			ms.Problems = append(ms.Problems, fmt.Sprintf("lags %d bytes behind the primary (limit %d)", ms.LagBytes, maxLag))
		}
		if isPrimary {
			ms.Problems = append(ms.Problems, "the coordinators' primary is in recovery")
		}
	}
	if ms.Role == RolePrimary && !isPrimary {
		if primary == "" {
			ms.Problems = append(ms.Problems, "writable, not yet recorded as primary")
		} else {
			ms.Problems = append(ms.Problems, fmt.Sprintf("writable, but the coordinators' primary is %s", primary))
		}
	}
	if r.ArchiveFailedCount > 0 && r.ArchiveLastFailedTime != nil && r.Time != nil &&
		r.Time.AsTime().Sub(r.ArchiveLastFailedTime.AsTime()) < time.Minute {
		ms.Problems = append(ms.Problems, "WAL archiving failed in the last minute ("+r.ArchiveLastFailedWal+")")
	}
	if r.Error != "" {
		ms.Problems = append(ms.Problems, r.Error)
	}
}
