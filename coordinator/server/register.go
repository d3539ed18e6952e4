package server

import (
	"crypto/ed25519"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Bounds on what an agent registers and reports. Registrations are written
// to Raft and shown by Status and Members; reports are held by the leader
// and shown by Status, so both are bounded per field and per count.
const (
	maxDSN        = 1024
	maxAddress    = 256 // api_url, gossip_address
	maxTags       = 32
	maxTagLen     = 64
	maxReportText = 8192 // HealthReport.error
	maxReportStr  = 1024 // the other strings of a report
	maxReplicas   = 256
	maxCommandID  = 64

	// memberUpdateEvery: a member's registration changes (written to
	// Raft) at most this often, unless the caller is a coordinator. An
	// unchanged re-registration writes nothing and is always accepted.
	memberUpdateEvery = 10 * time.Second
)

func validMember(m *pgdrv1.Member) error {
	if m == nil {
		return invalid("member", "required")
	}
	if err := checkName("member.cluster", m.Cluster, true); err != nil {
		return err
	}
	if err := checkName("member.name", m.Name, true); err != nil {
		return err
	}
	if err := checkName("member.region", m.Region, true); err != nil {
		return err
	}
	if len(m.Dsn) > maxDSN {
		return invalid("member.dsn", "longer than %d bytes", maxDSN)
	}
	if m.ApiUrl != "" {
		if len(m.ApiUrl) > maxAddress {
			return invalid("member.api_url", "longer than %d bytes", maxAddress)
		}
		if u, err := url.Parse(m.ApiUrl); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return invalid("member.api_url", "%q is not an http(s)://host:port URL", m.ApiUrl)
		}
	}
	if m.GossipAddress != "" {
		if len(m.GossipAddress) > maxAddress {
			return invalid("member.gossip_address", "longer than %d bytes", maxAddress)
		}
		if _, _, err := net.SplitHostPort(m.GossipAddress); err != nil {
			return invalid("member.gossip_address", "%q is not host:port", m.GossipAddress)
		}
	}
	if n := len(m.FailsafeKey); n != 0 && n != ed25519.PublicKeySize {
		return invalid("member.failsafe_key", "%d bytes; an Ed25519 public key has %d", n, ed25519.PublicKeySize)
	}
	if len(m.Tags) > maxTags {
		return invalid("member.tags", "%d tags; at most %d", len(m.Tags), maxTags)
	}
	for i, t := range m.Tags {
		if t == "" || len(t) > maxTagLen {
			return invalid("member.tags", "tag %d is empty or longer than %d bytes", i, maxTagLen)
		}
	}
	return nil
}

// validReport bounds the strings and counts of a health report.
func validReport(r *pgdrv1.HealthReport) error {
	if len(r.Error) > maxReportText {
		return invalid("error", "longer than %d bytes", maxReportText)
	}
	for _, f := range []struct{ name, v string }{
		{"archive_last_failed_wal", r.ArchiveLastFailedWal}, {"pg_version", r.PgVersion},
		{"synchronous_standby_names", r.SynchronousStandbyNames}, {"failsafe_primary", r.FailsafePrimary},
	} {
		if len(f.v) > maxReportStr {
			return invalid(f.name, "longer than %d bytes", maxReportStr)
		}
	}
	if len(r.Replicas) > maxReplicas {
		return invalid("replicas", "%d replicas; at most %d", len(r.Replicas), maxReplicas)
	}
	for i, rep := range r.Replicas {
		if len(rep.ApplicationName) > maxReportStr || len(rep.State) > maxReportStr || len(rep.SyncState) > maxReportStr {
			return invalid("replicas", "replica %d has a field longer than %d bytes", i, maxReportStr)
		}
	}
	return nil
}

// onlyFillsSystemID: the change from have to m only records a system
// identifier that was not known (an agent learns it from its first
// report); it happens at most once per member, so it is not rate-limited.
func onlyFillsSystemID(have, m *pgdrv1.Member) bool {
	if have.SystemIdentifier != 0 || m.SystemIdentifier == 0 {
		return false
	}
	c := proto.Clone(m).(*pgdrv1.Member)
	c.SystemIdentifier = 0
	return sameMember(have, c)
}

// memberWrites remembers, on the leader, when each member's registration
// was last written to Raft, to rate-limit changes.
type memberWrites struct {
	mu   sync.Mutex
	last map[memberKey]time.Time
}

func newMemberWrites() *memberWrites { return &memberWrites{last: map[memberKey]time.Time{}} }

// allow reports whether k's registration may change at now, and if not,
// a ResourceExhausted error naming the member.
func (w *memberWrites) allow(k memberKey, now time.Time, every time.Duration) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if last, ok := w.last[k]; ok && now.Sub(last) < every {
		return status.Error(codes.ResourceExhausted, fmt.Sprintf(
			"member %q of cluster %q: its registration changed %s ago; a change is accepted at most every %s (an unchanged registration always is)",
			k.node, k.cluster, now.Sub(last).Round(time.Millisecond), every))
	}
	return nil
}

func (w *memberWrites) wrote(k memberKey, now time.Time) {
	w.mu.Lock()
	w.last[k] = now
	w.mu.Unlock()
}
