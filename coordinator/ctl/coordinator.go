package ctl

import (
	"context"
	"fmt"
	"io"
	"net"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// CoordinatorsJSON is what coordinator list, add and remove print with --json.
type CoordinatorsJSON struct {
	Coordinators []CoordinatorJSON `json:"coordinators"`
	AnsweredBy   string            `json:"answered_by,omitempty"`
	Address      string            `json:"address"`
}

const coordinatorUsage = `Usage: pgdrctl coordinator list|add|remove [flags]

  list                     the coordinators, their leader, region and gossip state
  add --name N --raft-address A --api-address B [--region R]
                           add a Raft voter (start its process first, then add it):
                           it joins as a non-voter and is promoted once caught up
  add --update --name N [--raft-address A] [--api-address B] [--region R]
                           change an existing coordinator's addresses or region
  remove --name N [--force]
                           remove a Raft voter (then stop its process); refused when
                           the voters left would lack a quorum the leader reaches

Run 'pgdrctl coordinator SUBCOMMAND --help' for its flags.
`

func cmdCoordinator(ctx context.Context, e env, cf *connFlags, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, coordinatorUsage)
		return &usageError{}
	}
	switch args[0] {
	case "list":
		return coordinatorList(ctx, e, cf, args[1:])
	case "add":
		return coordinatorAdd(ctx, e, cf, args[1:])
	case "remove":
		return coordinatorRemove(ctx, e, cf, args[1:])
	case "-h", "--help", "-help", "help":
		fmt.Fprint(e.stdout, coordinatorUsage)
		return nil
	}
	return usagef("unknown subcommand %q (list, add or remove)", args[0])
}

func coordinatorList(ctx context.Context, e env, cf *connFlags, args []string) error {
	f := newCmdFlags(e, "coordinator list", "coordinator list [--json]", "Lists the coordinators as status shows them: address, leader, region, gossip state, Raft address.", cf)
	if _, err := f.parse(args, 0); err != nil {
		return err
	}
	cl, err := cf.client()
	if err != nil {
		return err
	}
	var resp *pgdrv1.StatusResponse
	addr, err := cl.call(ctx, "Status", func(ctx context.Context, c pgdrv1.AdminServiceClient) error {
		var err error
		resp, err = c.Status(ctx, &pgdrv1.StatusRequest{})
		return err
	})
	if err != nil {
		return err
	}
	return writeCoordinatorResult(e.stdout, f.json(), "", CoordinatorsJSON{
		Coordinators: coordinatorsView(resp.GetCoordinators()), AnsweredBy: resp.GetAnsweredBy(), Address: addr})
}

func coordinatorAdd(ctx context.Context, e env, cf *connFlags, args []string) error {
	f := newCmdFlags(e, "coordinator add", "coordinator add [--update] --name N --raft-address A --api-address B [--region R] [--json]",
		`Adds a coordinator as a Raft voter. Start the new coordinator's process first
(with the same CA and gossip key, an empty data_dir and without --bootstrap).
It joins as a non-voter; the leader replicates the log to it and promotes it
to voter once it has caught up. One that does not catch up within --timeout
(less a few seconds) is removed again and the command fails, so an
unreachable address never counts against the quorum. A name that exists is
refused; --update changes an existing coordinator's addresses or region
instead (flags left out keep their value). Keep an odd number of voters (3 or
5) spread over regions. Needs role admin.`, cf)
	name := f.String("name", "", "the new coordinator's name (required)")
	raftAddr := f.String("raft-address", "", "its Raft address host:port (required unless --update)")
	apiAddr := f.String("api-address", "", "its admin API address host:port (required unless --update)")
	region := f.String("region", "", "its region")
	update := f.Bool("update", false, "change an existing coordinator instead of adding one")
	if _, err := f.parse(args, 0); err != nil {
		return err
	}
	for _, r := range []struct{ flag, val string }{{"--name", *name}, {"--raft-address", *raftAddr}, {"--api-address", *apiAddr}} {
		if r.val == "" && (!*update || r.flag == "--name") {
			return usagef("%s is required", r.flag)
		}
	}
	for _, r := range []struct{ flag, val string }{{"--raft-address", *raftAddr}, {"--api-address", *apiAddr}} {
		if r.val == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(r.val); err != nil {
			return usagef("%s: %q is not host:port", r.flag, r.val)
		}
	}
	cl, err := cf.client()
	if err != nil {
		return err
	}
	var resp *pgdrv1.AddCoordinatorResponse
	addr, err := cl.call(ctx, "AddCoordinator", func(ctx context.Context, c pgdrv1.AdminServiceClient) error {
		var err error
		resp, err = c.AddCoordinator(ctx, &pgdrv1.AddCoordinatorRequest{Name: *name, RaftAddress: *raftAddr, ApiAddress: *apiAddr, Region: *region, Update: *update})
		return err
	})
	if err != nil {
		return err
	}
	done := "added"
	if *update {
		done = "updated"
	}
	return writeCoordinatorResult(e.stdout, f.json(), fmt.Sprintf("coordinator %s %s", *name, done),
		CoordinatorsJSON{Coordinators: coordinatorsView(resp.GetCoordinators()), Address: addr})
}

func coordinatorRemove(ctx context.Context, e env, cf *connFlags, args []string) error {
	f := newCmdFlags(e, "coordinator remove", "coordinator remove --name N [--force] [--json]",
		`Removes a coordinator from the Raft voters; stop its process afterwards.
Removing the leader makes the others elect a new one. Refused when the voters
left would lack a quorum the leader currently reaches (the change could not
commit and the cluster would stay without a leader): the error names the
unreachable voters. --force removes anyway. Needs role admin.`, cf)
	name := f.String("name", "", "the coordinator to remove (required)")
	force := f.Bool("force", false, "remove even though the voters left lack a reachable quorum")
	if _, err := f.parse(args, 0); err != nil {
		return err
	}
	if *name == "" {
		return usagef("--name is required")
	}
	cl, err := cf.client()
	if err != nil {
		return err
	}
	var resp *pgdrv1.RemoveCoordinatorResponse
	addr, err := cl.call(ctx, "RemoveCoordinator", func(ctx context.Context, c pgdrv1.AdminServiceClient) error {
		var err error
		resp, err = c.RemoveCoordinator(ctx, &pgdrv1.RemoveCoordinatorRequest{Name: *name, Force: *force})
		return err
	})
	if err != nil {
		return err
	}
	return writeCoordinatorResult(e.stdout, f.json(), fmt.Sprintf("coordinator %s removed", *name),
		CoordinatorsJSON{Coordinators: coordinatorsView(resp.GetCoordinators()), Address: addr})
}

func writeCoordinatorResult(w io.Writer, asJSON bool, headline string, v CoordinatorsJSON) error {
	if asJSON {
		return printJSON(w, v)
	}
	if headline != "" {
		fmt.Fprintln(w, headline)
	}
	fmt.Fprintln(w, "Coordinators:")
	return writeCoordinators(w, v.Coordinators)
}
