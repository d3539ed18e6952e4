package server

import (
	"crypto/ed25519"
	"fmt"
	"math"
	"net"
	"net/url"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	agentconfig "github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/conninfo"
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
	// maxArchiveRPO: repositories in a report's archive RPO; each is a
	// metric label and may be a breach (compliance.MaxOpen per cluster).
	// An agent's configuration holds at most as many.
	maxArchiveRPO = agentconfig.MaxRepos
	maxCommandID  = 64
	maxResultText = 8192 // CommandResult.error and .output, each (cut, not refused)

	// memberUpdateEvery, memberUpdateBurst: a member's registration
	// changes (written to Raft) at most memberUpdateBurst times at once and
	// then once per memberUpdateEvery, unless the caller is a coordinator.
	// An unchanged re-registration writes nothing and is always accepted.
	memberUpdateEvery = 10 * time.Second
	memberUpdateBurst = 3
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
	// The DSN reaches other nodes' primary_conninfo (docs/security.md).
	if err := conninfo.Check(m.Dsn); err != nil {
		return invalid("member.dsn", "%v", err)
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
	// The name reaches the primary's synchronous_standby_names: only the
	// member's own receiver's.
	if m.SyncReceiver != "" && m.SyncReceiver != agentconfig.ReceiveAppName(m.Name) {
		return invalid("member.sync_receiver", "%q is not this member's WAL receiver (%q)", m.SyncReceiver, agentconfig.ReceiveAppName(m.Name))
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
	if len(r.AfterCommandId) > maxCommandID {
		return invalid("after_command_id", "longer than %d bytes", maxCommandID)
	}
	if len(r.Replicas) > maxReplicas {
		return invalid("replicas", "%d replicas; at most %d", len(r.Replicas), maxReplicas)
	}
	for i, rep := range r.Replicas {
		if len(rep.ApplicationName) > maxReportStr || len(rep.State) > maxReportStr || len(rep.SyncState) > maxReportStr {
			return invalid("replicas", "replica %d has a field longer than %d bytes", i, maxReportStr)
		}
	}
	return validArchiveRPO(r.ArchiveRpo)
}

// validArchiveRPO: the archive RPO entries become metric labels and
// breaches, so they are few, each a repository name (as the agent's
// configuration requires), each once (two samples with the same labels
// fail the whole /metrics scrape), with a finite, non-negative age.
func validArchiveRPO(as []*pgdrv1.ArchiveRPO) error {
	if len(as) > maxArchiveRPO {
		return invalid("archive_rpo", "%d repositories; at most %d", len(as), maxArchiveRPO)
	}
	seen := make(map[string]bool, len(as))
	for i, a := range as {
		if err := checkName(fmt.Sprintf("archive_rpo[%d].repository", i), a.GetRepository(), true); err != nil {
			return err
		}
		if seen[a.GetRepository()] {
			return invalid("archive_rpo", "repository %q listed twice", a.GetRepository())
		}
		seen[a.GetRepository()] = true
		if len(a.GetMode()) > maxTagLen {
			return invalid("archive_rpo", "mode of %q longer than %d bytes", a.GetRepository(), maxTagLen)
		}
		if sec := a.GetSeconds(); sec < 0 || math.IsNaN(sec) || math.IsInf(sec, 0) {
			return invalid("archive_rpo", "age of %q is %v seconds", a.GetRepository(), sec)
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

// memberWrites remembers, on the leader, how often each member's
// registration was written to Raft, to rate-limit changes: a token bucket
// per member holding up to memberUpdateBurst changes, refilled by one per
// interval. A restart with a new configuration right after the first
// registration goes through; a stream of changes gets one per interval.
type memberWrites struct {
	mu sync.Mutex
	b  map[memberKey]bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newMemberWrites() *memberWrites { return &memberWrites{b: map[memberKey]bucket{}} }

func (w *memberWrites) refill(k memberKey, now time.Time, every time.Duration) bucket {
	b, ok := w.b[k]
	if !ok {
		return bucket{tokens: memberUpdateBurst, at: now}
	}
	if d := now.Sub(b.at); d > 0 && every > 0 {
		b.tokens = min(memberUpdateBurst, b.tokens+float64(d)/float64(every))
	}
	b.at = now
	return b
}

// take spends one of k's changes at now, or returns a ResourceExhausted
// error naming the member and when to retry. A change that is then not
// written gives it back (refund).
func (w *memberWrites) take(k memberKey, now time.Time, every time.Duration) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	b := w.refill(k, now, every)
	if b.tokens < 1 {
		w.b[k] = b
		wait := time.Duration((1 - b.tokens) * float64(every))
		return status.Error(codes.ResourceExhausted, fmt.Sprintf(
			"member %q of cluster %q changes its registration too often (at most %d changes at once, then one every %s); retry in %s (an unchanged registration is always accepted)",
			k.node, k.cluster, memberUpdateBurst, every, wait.Round(time.Millisecond)))
	}
	b.tokens--
	w.b[k] = b
	return nil
}

// refund gives back a change taken for a write that did not happen.
func (w *memberWrites) refund(k memberKey) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if b, ok := w.b[k]; ok {
		b.tokens = min(memberUpdateBurst, b.tokens+1)
		w.b[k] = b
	}
}
