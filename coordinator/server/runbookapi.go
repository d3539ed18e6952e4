package server

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pgdr/pgdr/coordinator/fsm"
	"github.com/pgdr/pgdr/coordinator/runbook"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// ApplyRunbook stores a runbook (replacing one of the same name).
func (a *adminAPI) ApplyRunbook(ctx context.Context, req *pgdrv1.ApplyRunbookRequest) (*pgdrv1.ApplyRunbookResponse, error) {
	if len(req.GetYaml()) > fsm.MaxRunbookYAML {
		return nil, invalid("yaml", "%d bytes, at most %d", len(req.GetYaml()), fsm.MaxRunbookYAML)
	}
	rb, err := runbook.Parse([]byte(req.GetYaml()))
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if _, builtin := runbook.BuiltinText(rb.Name); builtin {
		return nil, invalid("name", "%q is the name of a runbook pgdr ships; choose another", rb.Name)
	}
	if err := a.runbooksReady(); err != nil {
		return nil, err
	}
	if _, err := a.proposeRunbook(ctx, &pgdrv1.RunbookCommand{Op: &pgdrv1.RunbookCommand_Put{Put: &pgdrv1.RunbookPut{Yaml: req.GetYaml()}}}); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(applyTimeout)
	for {
		for _, d := range a.s.fsm.Runbooks() {
			if d.GetName() == rb.Name && d.GetYaml() == req.GetYaml() {
				return &pgdrv1.ApplyRunbookResponse{Runbook: d}, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, status.Errorf(codes.Unavailable, "runbook %s: the write was committed but this coordinator has not applied it yet", rb.Name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ListRunbooks lists the shipped runbooks and the applied ones.
func (a *adminAPI) ListRunbooks(ctx context.Context, req *pgdrv1.ListRunbooksRequest) (*pgdrv1.ListRunbooksResponse, error) {
	if err := a.s.stateReadable(); err != nil {
		return nil, err
	}
	out := &pgdrv1.ListRunbooksResponse{}
	for _, rb := range runbook.Builtin() {
		text, _ := runbook.BuiltinText(rb.Name)
		out.Runbooks = append(out.Runbooks, &pgdrv1.RunbookDef{Name: rb.Name, Yaml: string(text), Builtin: true, Description: rb.Description})
	}
	out.Runbooks = append(out.Runbooks, a.s.fsm.Runbooks()...)
	if n := req.GetName(); n != "" {
		for _, d := range out.Runbooks {
			if d.GetName() == n {
				return &pgdrv1.ListRunbooksResponse{Runbooks: []*pgdrv1.RunbookDef{d}}, nil
			}
		}
		return nil, status.Errorf(codes.NotFound, "runbook %q is not known (see 'pgdrctl runbook list')", clipText(n, 64))
	}
	return out, nil
}

// ListRunbookRuns lists the runs kept, oldest first.
func (a *adminAPI) ListRunbookRuns(ctx context.Context, req *pgdrv1.ListRunbookRunsRequest) (*pgdrv1.ListRunbookRunsResponse, error) {
	if err := a.s.stateReadable(); err != nil {
		return nil, err
	}
	if err := checkName("cluster", req.GetCluster(), false); err != nil {
		return nil, err
	}
	runs := a.s.fsm.RunbookRuns(req.GetCluster(), req.GetId())
	if req.GetId() != "" && len(runs) == 0 {
		return nil, status.Errorf(codes.NotFound, "runbook run %q is not known", clipText(req.GetId(), 64))
	}
	return &pgdrv1.ListRunbookRunsResponse{Runs: runs}, nil
}

// RunRunbook checks a run against the leader's view of the cluster and,
// unless it is a dry run, starts it. A follower forwards it.
func (a *adminAPI) RunRunbook(ctx context.Context, req *pgdrv1.RunRunbookRequest) (*pgdrv1.RunRunbookResponse, error) {
	if err := checkName("cluster", req.GetCluster(), true); err != nil {
		return nil, err
	}
	if err := checkName("runbook", req.GetRunbook(), true); err != nil {
		return nil, err
	}
	if err := checkIncidentID(req.GetIncident(), false); err != nil {
		return nil, err
	}
	if len(req.GetParams()) > 32 {
		return nil, invalid("params", "%d parameters, at most 32", len(req.GetParams()))
	}
	if !a.s.isLeader() {
		conn, err := a.s.leaderConn()
		if err != nil {
			return nil, err
		}
		return pgdrv1.NewAdminServiceClient(conn).RunRunbook(forwardCtx(ctx), req)
	}
	if !a.s.caughtUpLeader() {
		return nil, errCatchingUp
	}
	if err := a.runbooksReady(); err != nil {
		return nil, err
	}
	c, ok := a.s.fsm.Cluster(req.GetCluster())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "cluster %q is not known to the coordinators", req.GetCluster())
	}
	var text string
	var found bool
	a.s.fsm.Read(func(st *pgdrv1.State) { text, found = fsm.RunbookText(st, req.GetRunbook()) })
	if !found {
		return nil, status.Errorf(codes.NotFound, "runbook %q is not known (see 'pgdrctl runbook list')", req.GetRunbook())
	}
	rb, err := runbook.Parse([]byte(text))
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "runbook %s: %v", req.GetRunbook(), err)
	}
	plan, err := runbook.DryRun(rb, req.GetParams(), a.s.runbooks.view(c, ""))
	switch {
	case errors.Is(err, runbook.ErrInvalid):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case err != nil:
		return nil, status.Errorf(codes.FailedPrecondition, "runbook %s on cluster %s: %v", rb.Name, c.GetName(), err)
	}
	out := &pgdrv1.RunRunbookResponse{Plan: plan.Lines}
	if req.GetDryRun() {
		return out, nil
	}
	res, err := a.proposeRunbook(ctx, &pgdrv1.RunbookCommand{Op: &pgdrv1.RunbookCommand_Start{Start: &pgdrv1.RunbookStart{
		Cluster: c.GetName(), Runbook: rb.Name, Params: req.GetParams(), Incident: req.GetIncident(), Yaml: text}}})
	if err != nil {
		return nil, err
	}
	if runs := a.s.fsm.RunbookRuns("", fsm.RunbookRunID(res.GetIndex())); len(runs) == 1 {
		out.Run = runs[0]
	}
	return out, nil
}

// runbooksReady refuses runbook writes until incidents started and every
// coordinator knows the runbook command (runbooksFeatureLevel).
func (a *adminAPI) runbooksReady() error {
	if err := a.incidentsReady(); err != nil {
		return err
	}
	if ok, why := a.s.runbooksReady(); !ok {
		return status.Errorf(codes.FailedPrecondition, "runbooks are not available yet: %s", why)
	}
	return nil
}

func (a *adminAPI) proposeRunbook(ctx context.Context, op *pgdrv1.RunbookCommand) (*pgdrv1.ApplyResult, error) {
	cmd, err := fsm.NewCommand(pgdrv1.CommandType_COMMAND_TYPE_RUNBOOK, op, requester(ctx), time.Now())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encoding command: %v", err)
	}
	cmd.IgnoreIfUnknown = true
	return a.s.proposeCommand(ctx, cmd)
}
