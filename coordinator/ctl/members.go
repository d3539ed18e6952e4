package ctl

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// MembersJSON is `pgdrctl members --json`.
type MembersJSON struct {
	Members []RegisteredMemberJSON `json:"members"`
}

// RegisteredMemberJSON is a member as registered in the replicated state
// (what it is, not how it is doing: that is status).
type RegisteredMemberJSON struct {
	Name         string   `json:"name"`
	Cluster      string   `json:"cluster"`
	Region       string   `json:"region"`
	DSN          string   `json:"dsn"`
	APIURL       string   `json:"api_url"`
	Tags         []string `json:"tags"`
	Priority     int32    `json:"priority"`
	RegisteredAt string   `json:"registered_at"`
	UpdatedAt    string   `json:"updated_at"`
}

func membersView(r *pgdrv1.MembersResponse) MembersJSON {
	v := MembersJSON{Members: []RegisteredMemberJSON{}}
	for _, m := range r.GetMembers() {
		v.Members = append(v.Members, RegisteredMemberJSON{
			Name:         m.GetName(),
			Cluster:      m.GetCluster(),
			Region:       m.GetRegion(),
			DSN:          m.GetDsn(),
			APIURL:       m.GetApiUrl(),
			Tags:         nonNil(m.GetTags()),
			Priority:     m.GetPriority(),
			RegisteredAt: rfc3339(m.GetRegisteredAt()),
			UpdatedAt:    rfc3339(m.GetUpdatedAt()),
		})
	}
	slices.SortFunc(v.Members, func(a, b RegisteredMemberJSON) int {
		return cmp.Or(cmp.Compare(a.Cluster, b.Cluster), cmp.Compare(a.Region, b.Region), cmp.Compare(a.Name, b.Name))
	})
	return v
}

func cmdMembers(ctx context.Context, e env, cf *connFlags, args []string) error {
	f := newCmdFlags(e, "members", "members [--cluster C] [--json]", `Lists the members registered in the coordinators' replicated state: cluster,
region, DSN (never with a password), agent API URL, tags (e.g. no-failover),
failover priority and registration time. For their health, see status.`, cf)
	cluster := f.String("cluster", "", "list only this cluster's members")
	if _, err := f.parse(args, 0); err != nil {
		return err
	}
	cl, err := cf.client()
	if err != nil {
		return err
	}
	var resp *pgdrv1.MembersResponse
	if _, err := cl.call(ctx, "Members", func(ctx context.Context, c pgdrv1.AdminServiceClient) error {
		var err error
		resp, err = c.Members(ctx, &pgdrv1.MembersRequest{Cluster: *cluster})
		return err
	}); err != nil {
		return err
	}
	v := membersView(resp)
	if f.json() {
		return printJSON(e.stdout, v)
	}
	return writeMembers(e.stdout, v)
}

func writeMembers(w io.Writer, v MembersJSON) error {
	if len(v.Members) == 0 {
		_, err := fmt.Fprintln(w, "No members registered.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCLUSTER\tREGION\tDSN\tAPI-URL\tTAGS\tPRIORITY\tREGISTERED")
	for _, m := range v.Members {
		tags := "-"
		if len(m.Tags) > 0 {
			tags = strings.Join(m.Tags, ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", m.Name, m.Cluster, dash(m.Region), dash(m.DSN), dash(m.APIURL), tags, m.Priority, dash(m.RegisteredAt))
	}
	return tw.Flush()
}
