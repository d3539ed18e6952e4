package health

import (
	"net/http"
	"testing"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestStatus reads like a list of situations a load balancer probes in.
func TestStatus(t *testing.T) {
	const mb = 1 << 20
	primary := &pgdrv1.HealthReport{PostmasterAlive: true, Connectable: true, Timeline: 1, CurrentLsn: 0x3000060}
	replica := &pgdrv1.HealthReport{PostmasterAlive: true, Connectable: true, InRecovery: true, Streaming: true, ReceiveLsn: 0x3000060, ReplayLsn: 0x3000060, CurrentLsn: 0x3000060}
	with := func(base *pgdrv1.HealthReport, edit func(r *pgdrv1.HealthReport)) *pgdrv1.HealthReport {
		r := &pgdrv1.HealthReport{}
		*r = pgdrv1.HealthReport{PostmasterAlive: base.PostmasterAlive, Connectable: base.Connectable, InRecovery: base.InRecovery,
			Streaming: base.Streaming, ReceiveLsn: base.ReceiveLsn, ReplayLsn: base.ReplayLsn, CurrentLsn: base.CurrentLsn, Timeline: base.Timeline}
		edit(r)
		return r
	}
	cases := []struct {
		name                            string
		r                               *pgdrv1.HealthReport
		maxLag                          int64
		health, ready, primaryC, replic int
		role                            string
	}{
		{"#1 a healthy primary", primary, 16 * mb, 200, 200, 200, 503, RolePrimary},
		{"#2 a streaming replica, caught up", replica, 16 * mb, 200, 200, 503, 200, RoleReplica},
		{"#3 a replica 20 MB behind with a 16 MB limit", with(replica, func(r *pgdrv1.HealthReport) { r.LagBytes = 20 * mb }), 16 * mb, 200, 200, 503, 503, RoleReplica},
		{"#4 a replica exactly at the limit", with(replica, func(r *pgdrv1.HealthReport) { r.LagBytes = 16 * mb }), 16 * mb, 200, 200, 503, 200, RoleReplica},
		{"#5 a replica with no lag allowed and 1 byte behind", with(replica, func(r *pgdrv1.HealthReport) { r.LagBytes = 1 }), 0, 200, 200, 503, 503, RoleReplica},
		{"#6 a replica whose WAL receiver stopped (archive recovery)", with(replica, func(r *pgdrv1.HealthReport) { r.Streaming = false }), 16 * mb, 200, 200, 503, 503, RoleReplica},
		{"#7 a replica neither streaming nor replayed anything", with(replica, func(r *pgdrv1.HealthReport) { r.Streaming, r.ReplayLsn = false, 0 }), 16 * mb, 200, 503, 503, 503, RoleReplica},
		{"#8 PostgreSQL stopped", &pgdrv1.HealthReport{Error: "postmaster: not running"}, 16 * mb, 503, 503, 503, 503, RoleStopped},
		{"#9 postmaster alive but refusing connections (starting up)", &pgdrv1.HealthReport{PostmasterAlive: true}, 16 * mb, 503, 503, 503, 503, RoleUnknown},
		{"#10 connectable but postmaster.pid unreadable", with(primary, func(r *pgdrv1.HealthReport) { r.PostmasterAlive = false }), 16 * mb, 503, 200, 200, 503, RolePrimary},
		{"#11 a fenced primary", with(primary, func(r *pgdrv1.HealthReport) { r.Fenced = true }), 16 * mb, 200, 503, 503, 503, RoleFenced},
		{"#12 no check has finished yet", nil, 16 * mb, 503, 503, 503, 503, RoleUnknown},
		{"#13 a negative lag never passes", with(replica, func(r *pgdrv1.HealthReport) { r.LagBytes = -1 }), 16 * mb, 200, 200, 503, 503, RoleReplica},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for ep, want := range map[Endpoint]int{EndpointHealth: c.health, EndpointReady: c.ready, EndpointPrimary: c.primaryC, EndpointReplica: c.replic} {
				if got := Status(ep, c.r, c.maxLag); got != want {
					t.Errorf("%s = %d, want %d", ep, got, want)
				}
			}
			if got := Role(c.r); got != c.role {
				t.Errorf("role %q, want %q", got, c.role)
			}
			if b := BodyOf(c.r); b.Role != c.role || b.Healthy != (c.health == 200) {
				t.Errorf("body %+v", b)
			}
		})
	}
	if got := Status("/leader", primary, 0); got != http.StatusNotFound {
		t.Errorf("unknown endpoint: %d", got)
	}
}

func TestBodyLSN(t *testing.T) {
	b := BodyOf(&pgdrv1.HealthReport{Connectable: true, InRecovery: true, CurrentLsn: 0x1_0000_0028, ReceiveLsn: 0x1_0000_0100, ReplayLsn: 0x1_0000_0028})
	if b.LSN != "1/28" || b.ReceiveLSN != "1/100" || b.ReplayLSN != "1/28" {
		t.Fatalf("LSNs %q %q %q", b.LSN, b.ReceiveLSN, b.ReplayLSN)
	}
}
