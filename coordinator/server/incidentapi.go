package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"regexp"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/pgdr/pgdr/coordinator/fsm"
	"github.com/pgdr/pgdr/coordinator/incident"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

var incidentIDRE = regexp.MustCompile(`^INC-[0-9]{1,20}$`)

func checkIncidentID(id string, required bool) error {
	if id == "" && !required {
		return nil
	}
	if !incidentIDRE.MatchString(id) {
		return invalid("id", "%q is not an incident id (like INC-42)", clipText(id, 64))
	}
	return nil
}

// incidentsReady refuses an incident request while incidents are not
// started (a rolling upgrade: a voter does not know the command yet).
func (a *adminAPI) incidentsReady() error {
	if !a.s.fsm.IncidentsStarted() {
		return status.Error(codes.FailedPrecondition, "incidents are not started yet: the leader starts them once every coordinator runs a version that knows them (a rolling upgrade in progress?)")
	}
	return nil
}

// ListIncidents lists the incidents kept, oldest first.
func (a *adminAPI) ListIncidents(ctx context.Context, req *pgdrv1.ListIncidentsRequest) (*pgdrv1.ListIncidentsResponse, error) {
	if err := a.s.stateReadable(); err != nil {
		return nil, err
	}
	if err := checkIncidentID(req.GetId(), false); err != nil {
		return nil, err
	}
	if req.GetCluster() != fsm.QuorumCluster {
		if err := checkName("cluster", req.GetCluster(), false); err != nil {
			return nil, err
		}
	}
	out := &pgdrv1.ListIncidentsResponse{Incidents: a.s.fsm.Incidents(req.GetCluster(), req.GetAll(), req.GetId())}
	if req.GetId() != "" && len(out.Incidents) == 0 {
		return nil, status.Errorf(codes.NotFound, "incident %s is not known (never opened, or compacted after its resolution)", req.GetId())
	}
	if proto.Size(out) > listIncidentsBudget {
		for _, in := range out.Incidents {
			in.Timeline, in.Notes = nil, nil
		}
		out.DetailsOmitted = true
	}
	return out, nil
}

// listIncidentsBudget: a list larger than this goes without timelines and
// notes (gRPC clients take 4 MiB by default; an incident's timeline and
// notes may hold up to 150 KB).
const listIncidentsBudget = 3 << 20

// OpenIncident opens an incident by hand (category manual).
func (a *adminAPI) OpenIncident(ctx context.Context, req *pgdrv1.OpenIncidentRequest) (*pgdrv1.OpenIncidentResponse, error) {
	if err := checkName("cluster", req.GetCluster(), true); err != nil {
		return nil, err
	}
	lim := incident.DefaultLimits()
	if t := req.GetTitle(); t == "" || len([]rune(t)) > lim.MaxTitle {
		return nil, invalid("title", "required, at most %d characters", lim.MaxTitle)
	}
	sev := req.GetSeverity()
	if sev == "" {
		sev = string(incident.High)
	}
	if !incident.Severity(sev).Valid() {
		return nil, invalid("severity", "%q: want critical, high, medium or low", clipText(sev, 32))
	}
	if len([]rune(req.GetNote())) > lim.MaxMessage {
		return nil, invalid("note", "at most %d characters", lim.MaxMessage)
	}
	if err := a.clusterMustExist(req.GetCluster()); err != nil {
		return nil, err
	}
	if err := a.incidentsReady(); err != nil {
		return nil, err
	}
	var nonce [6]byte
	_, _ = rand.Read(nonce[:])
	obs := &pgdrv1.IncidentObserve{DedupKey: "manual:" + req.GetCluster() + ":" + hex.EncodeToString(nonce[:]), Title: req.GetTitle(),
		Cluster: req.GetCluster(), Category: string(incident.Manual), Severity: sev, Message: req.GetNote()}
	res, err := a.proposeIncident(ctx, &pgdrv1.IncidentCommand{Op: &pgdrv1.IncidentCommand_Observe{Observe: obs}})
	if err != nil {
		return nil, err
	}
	in, err := a.waitIncident(incident.IDFor(res.GetIndex()), func(*pgdrv1.Incident) bool { return true })
	if err != nil {
		return nil, err
	}
	return &pgdrv1.OpenIncidentResponse{Incident: in}, nil
}

// UpdateIncident acknowledges, resolves or annotates an incident.
func (a *adminAPI) UpdateIncident(ctx context.Context, req *pgdrv1.UpdateIncidentRequest) (*pgdrv1.UpdateIncidentResponse, error) {
	if err := checkIncidentID(req.GetId(), true); err != nil {
		return nil, err
	}
	lim := incident.DefaultLimits()
	if len([]rune(req.GetNote())) > lim.MaxMessage {
		return nil, invalid("note", "at most %d characters", lim.MaxMessage)
	}
	tr := &pgdrv1.IncidentTransition{Id: req.GetId(), Note: req.GetNote()}
	op := &pgdrv1.IncidentCommand{}
	var done func(*pgdrv1.Incident) bool
	switch req.GetAction() {
	case "ack":
		op.Op = &pgdrv1.IncidentCommand_Ack{Ack: tr}
		done = func(in *pgdrv1.Incident) bool { return in.GetStatus() != string(incident.Open) }
	case "resolve":
		if req.GetNote() == "" {
			return nil, invalid("note", "required to resolve: say why the incident is over")
		}
		op.Op = &pgdrv1.IncidentCommand_Resolve{Resolve: tr}
		done = func(in *pgdrv1.Incident) bool { return in.GetStatus() == string(incident.Resolved) }
	case "note":
		if req.GetNote() == "" {
			return nil, invalid("note", "required")
		}
		op.Op = &pgdrv1.IncidentCommand_Note{Note: tr}
		n := -1
		done = func(in *pgdrv1.Incident) bool { return len(in.GetNotes()) > n }
		if cur := a.s.fsm.Incidents("", true, req.GetId()); len(cur) == 1 {
			n = len(cur[0].GetNotes())
		}
	default:
		return nil, invalid("action", "%q: want ack, resolve or note", clipText(req.GetAction(), 32))
	}
	if err := a.incidentsReady(); err != nil {
		return nil, err
	}
	if len(a.s.fsm.Incidents("", true, req.GetId())) == 0 {
		return nil, status.Errorf(codes.NotFound, "incident %s is not known (never opened, or compacted after its resolution)", req.GetId())
	}
	if _, err := a.proposeIncident(ctx, op); err != nil {
		return nil, err
	}
	in, err := a.waitIncident(req.GetId(), done)
	if err != nil {
		return nil, err
	}
	return &pgdrv1.UpdateIncidentResponse{Incident: in}, nil
}

func (a *adminAPI) proposeIncident(ctx context.Context, op *pgdrv1.IncidentCommand) (*pgdrv1.ApplyResult, error) {
	cmd, err := fsm.NewCommand(pgdrv1.CommandType_COMMAND_TYPE_INCIDENT, op, identityFrom(ctx).actor(), time.Now())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encoding command: %v", err)
	}
	cmd.IgnoreIfUnknown = true
	return a.s.proposeCommand(ctx, cmd)
}

// waitIncident returns incident id once this coordinator applied the
// write (a follower applies it a moment after the leader committed it).
func (a *adminAPI) waitIncident(id string, done func(*pgdrv1.Incident) bool) (*pgdrv1.Incident, error) {
	deadline := time.Now().Add(applyTimeout)
	for {
		if l := a.s.fsm.Incidents("", true, id); len(l) == 1 && done(l[0]) {
			return proto.Clone(l[0]).(*pgdrv1.Incident), nil
		}
		if time.Now().After(deadline) {
			return nil, status.Errorf(codes.Unavailable, "incident %s: the write was committed but this coordinator has not applied it yet; ask again", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
