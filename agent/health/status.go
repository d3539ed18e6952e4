package health

import (
	"net/http"
	"time"

	"github.com/pgdr/pgdr/pkg/wal"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Endpoint names one of the agent's HTTP probes.
type Endpoint string

// The probes. Each answers 200 when its condition holds and 503 otherwise.
const (
	// EndpointHealth: the postmaster is alive and accepts connections.
	EndpointHealth Endpoint = "/health"
	// EndpointReady: connectable, and a replica streams or has replayed WAL.
	EndpointReady Endpoint = "/ready"
	// EndpointPrimary: connectable, not in recovery and not fenced.
	EndpointPrimary Endpoint = "/primary"
	// EndpointReplica: connectable, in recovery, streaming, and at most
	// the allowed lag behind what it received.
	EndpointReplica Endpoint = "/replica"
)

// Endpoints lists the probes in the order documentation shows them.
func Endpoints() []Endpoint {
	return []Endpoint{EndpointHealth, EndpointReady, EndpointPrimary, EndpointReplica}
}

// Roles reported in Body.Role (and by the coordinator's status).
const (
	RolePrimary = "primary"
	RoleReplica = "replica"
	RoleFenced  = "fenced"
	RoleStopped = "stopped"
	RoleUnknown = "unknown"
)

// Role is what a report says this server is: stopped when no postmaster
// runs, unknown while it runs but cannot be queried.
func Role(r *pgdrv1.HealthReport) string {
	switch {
	case r == nil:
		return RoleUnknown
	case r.Fenced:
		return RoleFenced
	case r.Connectable && r.RecoveryUnknown:
		return RoleUnknown
	case r.Connectable && r.InRecovery:
		return RoleReplica
	case r.Connectable:
		return RolePrimary
	case !r.PostmasterAlive:
		return RoleStopped
	}
	return RoleUnknown
}

// Healthy is /health's condition.
func Healthy(r *pgdrv1.HealthReport) bool {
	return r != nil && r.PostmasterAlive && r.Connectable
}

// Status is the HTTP status of endpoint for report r: 200 when the
// endpoint's condition holds, 503 when it does not (or there is no report),
// 404 for an unknown endpoint. maxLagBytes is /replica's limit.
func Status(endpoint Endpoint, r *pgdrv1.HealthReport, maxLagBytes int64) int {
	ok := false
	switch endpoint {
	case EndpointHealth:
		ok = Healthy(r)
	case EndpointReady:
		ok = r != nil && r.Connectable && !r.RecoveryUnknown && !r.Fenced &&
			(!r.InRecovery || r.Streaming || r.ReplayLsn > 0)
	case EndpointPrimary:
		ok = r != nil && r.Connectable && !r.RecoveryUnknown && !r.InRecovery && !r.Fenced
	case EndpointReplica:
		ok = r != nil && r.Connectable && !r.RecoveryUnknown && r.InRecovery && !r.Fenced && r.Streaming &&
			r.LagBytes >= 0 && r.LagBytes <= maxLagBytes
	default:
		return http.StatusNotFound
	}
	if ok {
		return http.StatusOK
	}
	return http.StatusServiceUnavailable
}

// Body is the JSON the probes answer with.
type Body struct {
	Cluster         string    `json:"cluster"`
	Node            string    `json:"node"`
	Role            string    `json:"role"`
	Healthy         bool      `json:"healthy"`
	PostmasterAlive bool      `json:"postmaster_alive"`
	Connectable     bool      `json:"connectable"`
	InRecovery      bool      `json:"in_recovery"`
	Timeline        uint32    `json:"timeline"`
	LSN             string    `json:"lsn"`
	ReceiveLSN      string    `json:"receive_lsn,omitempty"`
	ReplayLSN       string    `json:"replay_lsn,omitempty"`
	LagBytes        int64     `json:"lag_bytes"`
	LagSeconds      float64   `json:"lag_seconds"`
	Streaming       bool      `json:"streaming"`
	Error           string    `json:"error,omitempty"`
	Time            time.Time `json:"time"`
}

// BodyOf renders a report for the probes; a nil report (no round of checks
// finished yet) gives role unknown and the reason in Error.
func BodyOf(r *pgdrv1.HealthReport) Body {
	if r == nil {
		return Body{Role: RoleUnknown, Error: "no health check has finished yet", Time: time.Now().UTC()}
	}
	b := Body{
		Cluster:         r.Cluster,
		Node:            r.Node,
		Role:            Role(r),
		Healthy:         Healthy(r),
		PostmasterAlive: r.PostmasterAlive,
		Connectable:     r.Connectable,
		InRecovery:      r.InRecovery,
		Timeline:        r.Timeline,
		LSN:             wal.LSN(r.CurrentLsn).String(),
		LagBytes:        r.LagBytes,
		LagSeconds:      r.LagSeconds,
		Streaming:       r.Streaming,
		Error:           r.Error,
		Time:            r.GetTime().AsTime().UTC(),
	}
	if r.InRecovery {
		b.ReceiveLSN = wal.LSN(r.ReceiveLsn).String()
		b.ReplayLSN = wal.LSN(r.ReplayLsn).String()
	}
	return b
}
