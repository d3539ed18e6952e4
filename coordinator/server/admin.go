package server

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"slices"
	"sort"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/fsm"
	"github.com/pgdr/pgdr/coordinator/outcome"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// invalid is an InvalidArgument error naming the field.
func invalid(field, format string, a ...any) error {
	return status.Errorf(codes.InvalidArgument, "%s: %s", field, fmt.Sprintf(format, a...))
}

func checkName(field, v string, required bool) error {
	if v == "" {
		if required {
			return invalid(field, "required")
		}
		return nil
	}
	if !fsm.ValidName(v) { // nameRE without a regexp: it runs twice per agent report
		return invalid(field, "%q is not a valid name (letters, digits, '.', '_', '-'; at most 63)", v)
	}
	return nil
}

func checkAddr(field, v string) error {
	if v == "" {
		return invalid(field, "required (host:port)")
	}
	if _, _, err := net.SplitHostPort(v); err != nil {
		return invalid(field, "%q is not host:port", v)
	}
	return nil
}

type adminAPI struct {
	pgdrv1.UnimplementedAdminServiceServer
	s *Server
}

func (a *adminAPI) clusterMustExist(name string) error {
	if _, ok := a.s.fsm.Cluster(name); !ok {
		return status.Errorf(codes.NotFound, "cluster %q is not known to the coordinators", name)
	}
	return nil
}

// Status is answered by the leader, whose memory holds agents' health; a
// follower forwards it.
func (a *adminAPI) Status(ctx context.Context, req *pgdrv1.StatusRequest) (*pgdrv1.StatusResponse, error) {
	if err := checkName("cluster", req.Cluster, false); err != nil {
		return nil, err
	}
	if req.Cluster != "" {
		if err := a.clusterMustExist(req.Cluster); err != nil {
			return nil, err
		}
	}
	if !a.s.isLeader() {
		conn, err := a.s.leaderConn()
		if err != nil {
			return nil, err
		}
		return pgdrv1.NewAdminServiceClient(conn).Status(ctx, req)
	}
	clusters := a.s.clusterStatus(req.Cluster)
	for _, cs := range clusters {
		if le, ok := a.s.leases.get(cs.Name); ok && le.holder == cs.Primary && le.epoch == cs.Epoch {
			cs.LeaseExpiresAt = timestamppb.New(le.expires)
		}
		cs.Failover = a.s.judge.get(cs.Name)
		cs.Compliance = a.s.complianceStatus(cs.Name)
		if c, ok := a.s.fsm.Cluster(cs.Name); ok && cs.Compliance != nil {
			cs.Compliance.WriteAvailability = a.s.writeAvailability(c, a.s.view.snapshotCluster(cs.Name), time.Now())
		}
	}
	return &pgdrv1.StatusResponse{
		Coordinators: a.s.coordinatorStatus(),
		Clusters:     clusters,
		AnsweredBy:   a.s.cfg.Name,
		Time:         timestamppb.Now(),
	}, nil
}

// coordinatorStatus lists the raft voters with their API addresses.
func (s *Server) coordinatorStatus() []*pgdrv1.CoordinatorStatus {
	known := map[string]*pgdrv1.Coordinator{}
	for _, c := range s.fsm.Coordinators() {
		known[c.Name] = c
	}
	_, leader := s.raft.LeaderWithID()
	gs := s.gossipStates()
	var out []*pgdrv1.CoordinatorStatus
	cf := s.raft.GetConfiguration()
	if cf.Error() == nil {
		for _, srv := range cf.Configuration().Servers {
			name := string(srv.ID)
			cs := &pgdrv1.CoordinatorStatus{Name: name, RaftAddress: string(srv.Address), Leader: srv.ID == leader,
				Voter: srv.Suffrage == raft.Voter, Gossip: gs["coordinator/"+name]}
			if c, ok := known[name]; ok {
				cs.Address, cs.Region = c.ApiAddress, c.Region
			}
			if cs.Gossip == "" {
				cs.Gossip = "unknown"
			}
			out = append(out, cs)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (a *adminAPI) Members(ctx context.Context, req *pgdrv1.MembersRequest) (*pgdrv1.MembersResponse, error) {
	if err := a.s.stateReadable(); err != nil {
		return nil, err
	}
	if err := checkName("cluster", req.Cluster, false); err != nil {
		return nil, err
	}
	st := a.s.fsm.State()
	resp := &pgdrv1.MembersResponse{}
	for name, c := range st.Clusters {
		if req.Cluster != "" && name != req.Cluster {
			continue
		}
		for _, m := range c.Members {
			resp.Members = append(resp.Members, m)
		}
	}
	if req.Cluster != "" && len(st.Clusters[req.Cluster].GetMembers()) == 0 {
		if err := a.clusterMustExist(req.Cluster); err != nil {
			return nil, err
		}
	}
	sort.Slice(resp.Members, func(i, j int) bool {
		if resp.Members[i].Cluster != resp.Members[j].Cluster {
			return resp.Members[i].Cluster < resp.Members[j].Cluster
		}
		return resp.Members[i].Name < resp.Members[j].Name
	})
	return resp, nil
}

func (a *adminAPI) History(ctx context.Context, req *pgdrv1.HistoryRequest) (*pgdrv1.HistoryResponse, error) {
	if err := a.s.stateReadable(); err != nil {
		return nil, err
	}
	if err := checkName("cluster", req.Cluster, false); err != nil {
		return nil, err
	}
	if req.Limit > 100000 {
		return nil, invalid("limit", "%d is more than 100000", req.Limit)
	}
	limit := int(req.Limit)
	if limit == 0 {
		limit = 100
	}
	if req.GetKind() == "" && req.GetDetailKey() == "" {
		return &pgdrv1.HistoryResponse{Events: a.s.fsm.History(req.Cluster, req.AfterSeq, limit)}, nil
	}
	var out []*pgdrv1.HistoryEvent
	a.s.fsm.ScanHistoryBack(req.Cluster, func(ev *pgdrv1.HistoryEvent) bool {
		if ev.GetSeq() <= req.GetAfterSeq() {
			return false
		}
		if (req.GetKind() == "" || ev.GetKind() == req.GetKind()) &&
			(req.GetDetailKey() == "" || ev.GetDetails()[req.GetDetailKey()] == req.GetDetailValue()) {
			out = append(out, proto.Clone(ev).(*pgdrv1.HistoryEvent))
		}
		return len(out) < limit
	})
	slices.Reverse(out)
	return &pgdrv1.HistoryResponse{Events: out}, nil
}

func (a *adminAPI) setPaused(ctx context.Context, cluster string, paused bool, reason string) (*pgdrv1.Policy, error) {
	if err := checkName("cluster", cluster, true); err != nil {
		return nil, err
	}
	if len(reason) > 1024 {
		return nil, invalid("reason", "longer than 1024 bytes")
	}
	if err := a.clusterMustExist(cluster); err != nil {
		return nil, err
	}
	if _, err := a.s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_SET_PAUSED,
		&pgdrv1.SetPaused{Cluster: cluster, Paused: paused, Reason: reason}, identityFrom(ctx).actor()); err != nil {
		return nil, err
	}
	// The write is committed; a follower may apply it a moment later.
	deadline := time.Now().Add(applyTimeout)
	for {
		c, _ := a.s.fsm.Cluster(cluster)
		if c.GetPolicy().GetPaused() == paused || time.Now().After(deadline) {
			return c.GetPolicy(), nil
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (a *adminAPI) Pause(ctx context.Context, req *pgdrv1.PauseRequest) (*pgdrv1.PauseResponse, error) {
	p, err := a.setPaused(ctx, req.Cluster, true, req.Reason)
	if err != nil {
		return nil, err
	}
	return &pgdrv1.PauseResponse{Policy: p}, nil
}

func (a *adminAPI) Resume(ctx context.Context, req *pgdrv1.ResumeRequest) (*pgdrv1.ResumeResponse, error) {
	p, err := a.setPaused(ctx, req.Cluster, false, "")
	if err != nil {
		return nil, err
	}
	return &pgdrv1.ResumeResponse{Policy: p}, nil
}

// AddCoordinator adds a voter: first as a non-voter that must catch up,
// then promoted. An existing name is refused unless req.Update, which
// changes its addresses or region (empty fields keep their value). Raft
// membership changes run on the leader, so a follower forwards the call.
func (a *adminAPI) AddCoordinator(ctx context.Context, req *pgdrv1.AddCoordinatorRequest) (*pgdrv1.AddCoordinatorResponse, error) {
	if err := checkName("name", req.Name, true); err != nil {
		return nil, err
	}
	if !req.Update || req.RaftAddress != "" {
		if err := checkAddr("raft_address", req.RaftAddress); err != nil {
			return nil, err
		}
	}
	if !req.Update || req.ApiAddress != "" {
		if err := checkAddr("api_address", req.ApiAddress); err != nil {
			return nil, err
		}
	}
	if !a.s.isLeader() {
		conn, err := a.s.leaderConn()
		if err != nil {
			return nil, err
		}
		resp, err := pgdrv1.NewAdminServiceClient(conn).AddCoordinator(ctx, req)
		return resp, outcome.Forwarded("forwarding to the leader", err)
	}
	var existing *pgdrv1.CoordinatorStatus
	for _, c := range a.s.coordinatorStatus() {
		if c.Name == req.Name {
			existing = c
		} else if req.RaftAddress != "" && c.RaftAddress == req.RaftAddress {
			return nil, status.Errorf(codes.AlreadyExists, "raft_address %s is already used by coordinator %s", req.RaftAddress, c.Name)
		}
	}
	switch {
	case existing != nil && !req.Update:
		return nil, status.Errorf(codes.AlreadyExists,
			"coordinator %s already exists (raft address %s, API address %s, region %q); pass --update to change it, or remove it first to add it anew",
			req.Name, existing.RaftAddress, existing.Address, existing.Region)
	case existing == nil && req.Update:
		return nil, status.Errorf(codes.NotFound, "coordinator %q is not a raft member; add it without --update", req.Name)
	}
	want := &pgdrv1.Coordinator{Name: req.Name, RaftAddress: req.RaftAddress, ApiAddress: req.ApiAddress, Region: req.Region}
	if existing != nil {
		if want.RaftAddress == "" {
			want.RaftAddress = existing.RaftAddress
		}
		if want.ApiAddress == "" {
			want.ApiAddress = existing.Address
		}
		if want.Region == "" {
			want.Region = existing.Region
		}
		if want.RaftAddress != existing.RaftAddress {
			// AddVoter (AddNonvoter for a non-voter) of a known ID changes
			// its address and keeps its suffrage.
			change := a.s.raft.AddVoter
			if !existing.Voter {
				change = a.s.raft.AddNonvoter
			}
			if err := change(raft.ServerID(req.Name), raft.ServerAddress(want.RaftAddress), 0, applyTimeout).Error(); err != nil {
				return nil, raftError("raft re-address "+req.Name, err)
			}
		}
	} else if err := a.s.addNonvoterCaughtUp(ctx, req.Name, req.RaftAddress, req.ApiAddress); err != nil {
		return nil, err
	}
	if _, err := a.s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_UPSERT_COORDINATOR, &pgdrv1.UpsertCoordinator{Coordinator: want}, identityFrom(ctx).actor()); err != nil {
		return nil, err
	}
	return &pgdrv1.AddCoordinatorResponse{Coordinators: a.s.coordinatorStatus()}, nil
}

func (a *adminAPI) RemoveCoordinator(ctx context.Context, req *pgdrv1.RemoveCoordinatorRequest) (*pgdrv1.RemoveCoordinatorResponse, error) {
	if err := checkName("name", req.Name, true); err != nil {
		return nil, err
	}
	if !a.s.isLeader() {
		conn, err := a.s.leaderConn()
		if err != nil {
			return nil, err
		}
		resp, err := pgdrv1.NewAdminServiceClient(conn).RemoveCoordinator(ctx, req)
		return resp, outcome.Forwarded("forwarding to the leader", err)
	}
	found := false
	voters := 0
	var names []string
	for _, c := range a.s.coordinatorStatus() {
		found = found || c.Name == req.Name
		if c.Voter {
			voters++
			names = append(names, c.Name)
		}
	}
	if !found {
		return nil, status.Errorf(codes.NotFound, "coordinator %q is not a raft member", req.Name)
	}
	if voters <= 1 {
		return nil, status.Errorf(codes.FailedPrecondition, "%s is the last voter; removing it would leave no cluster", req.Name)
	}
	if !req.Force {
		if err := checkRemovalQuorum(names, req.Name, a.s.cfg.Name, a.s.contacts.unreachable(), time.Now()); err != nil {
			return nil, err
		}
	}
	// Record first: if the leader removes itself, it may not lead afterwards.
	if _, ok := a.s.fsmCoordinator(req.Name); ok {
		if _, err := a.s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_REMOVE_COORDINATOR,
			&pgdrv1.RemoveCoordinator{Name: req.Name}, identityFrom(ctx).actor()); err != nil {
			return nil, err
		}
	}
	if err := a.s.raft.RemoveServer(raft.ServerID(req.Name), 0, applyTimeout).Error(); err != nil {
		return nil, raftError("raft remove server "+req.Name, err)
	}
	return &pgdrv1.RemoveCoordinatorResponse{Coordinators: a.s.coordinatorStatus()}, nil
}

func (s *Server) fsmCoordinator(name string) (*pgdrv1.Coordinator, bool) {
	for _, c := range s.fsm.Coordinators() {
		if c.Name == name {
			return c, true
		}
	}
	return nil, false
}

// coordAPI is spoken between coordinators.
type coordAPI struct {
	pgdrv1.UnimplementedCoordinatorServiceServer
	s *Server
}

// Apply proposes a forwarded command; the leader stamps its own time so
// that history follows one clock.
func (c *coordAPI) Apply(ctx context.Context, req *pgdrv1.ApplyRequest) (*pgdrv1.ApplyResult, error) {
	if req.Command == nil {
		return nil, invalid("command", "required")
	}
	if !c.s.isLeader() {
		return nil, outcome.NotSubmitted("%s is not the leader", c.s.cfg.Name)
	}
	req.Command.Time = timestamppb.Now()
	res, err := c.s.proposeCommand(ctx, req.Command)
	if res != nil && !res.Ok {
		return res, nil // the caller turns it into FailedPrecondition
	}
	return res, err
}
