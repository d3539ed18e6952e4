package ctl

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/pgdr/pgdr/coordinator/divergence"
	"github.com/pgdr/pgdr/pkg/divergenceid"
	"github.com/pgdr/pgdr/pkg/divergencesum"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// DivergencesJSON is `pgdrctl divergence --json`: the reports recorded,
// oldest first, without their transactions.
type DivergencesJSON struct {
	Reports []DivergenceJSON `json:"reports"`
}

// DivergenceJSON is one divergence report as the coordinators recorded it
// (`pgdrctl divergence show ID --json`: with the transactions listed).
// Times are RFC 3339 in UTC.
type DivergenceJSON struct {
	ID          string `json:"id"`
	Cluster     string `json:"cluster"`
	Node        string `json:"node"`
	Epoch       uint64 `json:"epoch"`
	Recorded    string `json:"recorded"`
	Created     string `json:"created"`
	Status      string `json:"status"`
	Error       string `json:"error,omitempty"`
	Timeline    uint32 `json:"timeline"`
	NewTimeline uint32 `json:"new_timeline"`
	ForkLSN     string `json:"fork_lsn"`
	EndLSN      string `json:"end_lsn"`
	Bytes       uint64 `json:"bytes"`
	Committed   uint64 `json:"committed"`
	Aborted     uint64 `json:"aborted"`
	InProgress  uint64 `json:"in_progress"`
	// Listed: how many of the committed transactions the coordinators
	// keep (Transactions); the rest are in the report in the repositories
	// (RepositoryKey).
	Listed        int    `json:"listed"`
	Stored        bool   `json:"stored"`
	StoreError    string `json:"store_error,omitempty"`
	NameError     string `json:"name_error,omitempty"`
	RepositoryKey string `json:"repository_key"`
	// Transactions only in `show`.
	Transactions []DivergentTxJSON `json:"transactions,omitempty"`
}

// DivergentTxJSON is one transaction committed past the fork point.
type DivergentTxJSON struct {
	XID        uint32             `json:"xid"`
	CommitLSN  string             `json:"commit_lsn"`
	CommitTime string             `json:"commit_time"`
	Relations  []DivergentRelJSON `json:"relations"`
}

// DivergentRelJSON is what a transaction did to one relation (Name empty:
// the new primary does not know its relfilenode).
type DivergentRelJSON struct {
	Database     uint32 `json:"database"`
	DatabaseName string `json:"database_name,omitempty"`
	RelFileNode  uint32 `json:"relfilenode"`
	OID          uint32 `json:"oid,omitempty"`
	Name         string `json:"name,omitempty"`
	Inserts      uint64 `json:"inserts"`
	Updates      uint64 `json:"updates"`
	Deletes      uint64 `json:"deletes"`
}

func divergenceView(ev *pgdrv1.HistoryEvent, withTx bool) (DivergenceJSON, error) {
	s, err := divergence.FromEvent(ev)
	if err != nil {
		return DivergenceJSON{}, err
	}
	v := DivergenceJSON{
		ID: s.GetId(), Cluster: ev.GetCluster(), Node: ev.GetNode(), Epoch: ev.GetEpoch(), Recorded: rfc3339(ev.GetTime()),
		Created: rfc3339(s.GetCreated()), Status: s.GetStatus(), Error: s.GetError(), Timeline: s.GetTimeline(),
		NewTimeline: s.GetNewTimeline(), ForkLSN: s.GetForkLsn(), EndLSN: s.GetEndLsn(), Bytes: s.GetBytes(),
		Committed: s.GetCommitted(), Aborted: s.GetAborted(), InProgress: s.GetInProgress(), Listed: len(s.GetTransactions()),
		Stored: s.GetStored(), StoreError: s.GetStoreError(), NameError: s.GetNameError(),
		RepositoryKey: ev.GetCluster() + "/divergence/" + s.GetId() + "/report.json",
	}
	if !withTx {
		return v, nil
	}
	v.Transactions = []DivergentTxJSON{}
	for _, tx := range s.GetTransactions() {
		t := DivergentTxJSON{XID: tx.GetXid(), CommitLSN: tx.GetCommitLsn(), CommitTime: rfc3339(tx.GetCommitTime()), Relations: []DivergentRelJSON{}}
		for _, r := range tx.GetRelations() {
			t.Relations = append(t.Relations, DivergentRelJSON{Database: r.GetDatabase(), DatabaseName: r.GetDatabaseName(),
				RelFileNode: r.GetRelfilenode(), OID: r.GetOid(), Name: r.GetName(), Inserts: r.GetInserts(), Updates: r.GetUpdates(), Deletes: r.GetDeletes()})
		}
		v.Transactions = append(v.Transactions, t)
	}
	return v, nil
}

const divergenceUsage = "divergence [--cluster C] [--limit N] [--json] | divergence show ID [--cluster C] [--json]"

func cmdDivergence(ctx context.Context, e env, cf *connFlags, args []string) error {
	if len(args) > 0 && args[0] == "show" {
		return cmdDivergenceShow(ctx, e, cf, args[1:])
	}
	f := newCmdFlags(e, "divergence", divergenceUsage, `Lists the divergence reports: before a rejoin rewinds or re-clones a former
primary, its agent reads its own WAL past the point where the new primary's
timeline forked off and records the range, its size and the transactions
committed in it, which the rewind throws away. STATUS unknown: the node could
not be read (its data directory or WAL gone): its transactions are not known,
which is not the same as none. 'pgdrctl divergence show ID' prints one with its
transactions. Needs role read.`, cf)
	cluster := f.String("cluster", "", "only this cluster's reports")
	limit := f.Uint("limit", 100, "the newest N reports")
	if _, err := f.parse(args, 0); err != nil {
		return err
	}
	if *limit == 0 || *limit > 1000 {
		return usagef("--limit %d: want 1 to 1000", *limit)
	}
	evs, err := divergenceEvents(ctx, cf, &pgdrv1.HistoryRequest{Cluster: *cluster, Kind: divergence.Kind, Limit: uint32(*limit)})
	if err != nil {
		return err
	}
	v := DivergencesJSON{Reports: []DivergenceJSON{}}
	for _, ev := range evs {
		d, err := divergenceView(ev, false)
		if err != nil {
			fmt.Fprintf(e.stderr, "pgdrctl: skipping history event %d: %v\n", ev.GetSeq(), err)
			continue
		}
		v.Reports = append(v.Reports, d)
	}
	if f.json() {
		return printJSON(e.stdout, v)
	}
	if len(v.Reports) == 0 {
		_, err := fmt.Fprintln(e.stdout, "No divergence reports.")
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCLUSTER\tNODE\tEPOCH\tRECORDED\tSTATUS\tRANGE\tBYTES\tCOMMITTED\tABORTED\tSTORED")
	for _, d := range v.Reports {
		d = printableView(d)
		rng, bytes, committed, aborted := "-", "-", "unknown", "-"
		if d.Status == divergence.StatusKnown || d.Status == divergence.StatusReplica {
			rng, bytes = d.ForkLSN+".."+d.EndLSN, fmt.Sprint(d.Bytes)
			committed, aborted = fmt.Sprint(d.Committed), fmt.Sprint(d.Aborted)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%v\n", d.ID, d.Cluster, d.Node, d.Epoch, dash(d.Recorded), d.Status, rng, bytes, committed, aborted, d.Stored)
	}
	return tw.Flush()
}

func cmdDivergenceShow(ctx context.Context, e env, cf *connFlags, args []string) error {
	f := newCmdFlags(e, "divergence show", "divergence show ID [--cluster C] [--json]", `Prints one divergence report with the transactions committed past the fork
point: xid, commit time and LSN, and per relation (named as the new primary's
catalogs know it) the rows inserted, updated and deleted. The coordinators keep
the first transactions of a report; all of them, and the raw WAL, are in the
repositories under <cluster>/divergence/<id>/ ('pgdr-agent divergence-show ID'
prints the whole report). Needs role read.`, cf)
	cluster := f.String("cluster", "", "the report's cluster (needed when the id is in more than one)")
	pos, err := f.parse(args, 1)
	if err != nil {
		return err
	}
	id := pos[0]
	if err := divergenceid.Check(id); err != nil {
		return usagef("%v", err)
	}
	// Ids are unique within a cluster only: without --cluster, ask for
	// two to tell an id in two clusters.
	evs, err := divergenceEvents(ctx, cf, &pgdrv1.HistoryRequest{Cluster: *cluster, Kind: divergence.Kind, DetailKey: divergence.DetailID, DetailValue: id, Limit: 2})
	if err != nil {
		return err
	}
	var found *pgdrv1.HistoryEvent
	clusters := map[string]bool{}
	for _, ev := range evs {
		if ev.GetDetails()[divergence.DetailID] == id && (*cluster == "" || ev.GetCluster() == *cluster) {
			found = ev
			clusters[ev.GetCluster()] = true
		}
	}
	if len(clusters) > 1 {
		return usagef("divergence report %s is in more than one cluster: give --cluster", id)
	}
	if found == nil {
		return fmt.Errorf("no divergence report %s in the coordinators' history ('pgdrctl divergence' lists them; an old one may have been compacted away, its full report stays in the repositories)", id)
	}
	v, err := divergenceView(found, true)
	if err != nil {
		return err
	}
	if f.json() {
		return printJSON(e.stdout, v)
	}
	return writeDivergence(e.stdout, v)
}

// divergenceEvents asks for divergence events and keeps only those (an
// older coordinator ignores the request's filters).
func divergenceEvents(ctx context.Context, cf *connFlags, req *pgdrv1.HistoryRequest) ([]*pgdrv1.HistoryEvent, error) {
	cl, err := cf.client()
	if err != nil {
		return nil, err
	}
	var resp *pgdrv1.HistoryResponse
	if _, err := cl.call(ctx, "History", func(ctx context.Context, c pgdrv1.AdminServiceClient) error {
		var err error
		resp, err = c.History(ctx, req)
		return err
	}); err != nil {
		return nil, err
	}
	var out []*pgdrv1.HistoryEvent
	for _, ev := range resp.GetEvents() {
		if ev.GetKind() == divergence.Kind {
			out = append(out, ev)
		}
	}
	return out, nil
}

// printableView is d with every text made safe to print on a terminal
// (divergencesum.Printable): names and errors come from the nodes.
func printableView(d DivergenceJSON) DivergenceJSON {
	p := divergencesum.Printable
	d.ID, d.Cluster, d.Node, d.Recorded, d.Created, d.Status = p(d.ID), p(d.Cluster), p(d.Node), p(d.Recorded), p(d.Created), p(d.Status)
	d.Error, d.ForkLSN, d.EndLSN, d.StoreError, d.NameError, d.RepositoryKey = p(d.Error), p(d.ForkLSN), p(d.EndLSN), p(d.StoreError), p(d.NameError), p(d.RepositoryKey)
	txs := make([]DivergentTxJSON, len(d.Transactions))
	for i, tx := range d.Transactions {
		tx.CommitLSN, tx.CommitTime = p(tx.CommitLSN), p(tx.CommitTime)
		rels := make([]DivergentRelJSON, len(tx.Relations))
		for j, r := range tx.Relations {
			r.Name, r.DatabaseName = p(r.Name), p(r.DatabaseName)
			rels[j] = r
		}
		tx.Relations = rels
		txs[i] = tx
	}
	d.Transactions = txs
	return d
}

func writeDivergence(w io.Writer, d DivergenceJSON) error {
	d = printableView(d)
	fmt.Fprintf(w, "Divergence report %s\n", d.ID)
	fmt.Fprintf(w, "  node %s of cluster %s, rejoin at epoch %d, recorded %s\n", d.Node, d.Cluster, d.Epoch, dash(d.Recorded))
	switch d.Status {
	case divergence.StatusReplicaUnknown:
		fmt.Fprintf(w, "  status: replica-unknown: a replica that received WAL past the fork (not commits of its own), which could not be read\n  error: %s\n", d.Error)
	case divergence.StatusReplica:
		fmt.Fprintf(w, "  status: replica: WAL received past the fork, not committed by this node (the old primary's transactions)\n  WAL %s..%s of timeline %d, past the point where timeline %d forked off it: %d bytes\n", d.ForkLSN, d.EndLSN, d.Timeline, d.NewTimeline, d.Bytes)
		fmt.Fprintf(w, "  transactions: %d committed by the old primary, %d aborted, %d in progress at the end of the WAL\n", d.Committed, d.Aborted, d.InProgress)
	case divergence.StatusKnown:
		fmt.Fprintf(w, "  status: known\n  WAL %s..%s of timeline %d, past the point where timeline %d forked off it: %d bytes\n", d.ForkLSN, d.EndLSN, d.Timeline, d.NewTimeline, d.Bytes)
		fmt.Fprintf(w, "  transactions: %d committed, %d aborted, %d in progress at the end of the WAL\n", d.Committed, d.Aborted, d.InProgress)
	default:
		fmt.Fprintf(w, "  status: UNKNOWN: the transactions this node committed past the fork are not known (not the same as none)\n  error: %s\n", d.Error)
	}
	if d.Stored {
		fmt.Fprintf(w, "  stored in the repositories: %s (and the raw WAL beside it)\n", d.RepositoryKey)
	} else {
		fmt.Fprintf(w, "  NOT stored in the repositories: %s\n", dash(d.StoreError))
	}
	if d.NameError != "" {
		fmt.Fprintf(w, "  relation names not resolved: %s\n", d.NameError)
	}
	if d.Status != divergence.StatusKnown && d.Status != divergence.StatusReplica {
		return nil
	}
	if d.Committed == 0 {
		_, err := fmt.Fprintln(w, "\nNo transaction committed past the fork point.")
		return err
	}
	if uint64(d.Listed) < d.Committed {
		fmt.Fprintf(w, "\nThe first %d of %d transactions (all of them: 'pgdr-agent divergence-show %s' on a node holding the repositories' identity):\n", d.Listed, d.Committed, d.ID)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "XID\tCOMMIT TIME\tCOMMIT LSN\tRELATION\tINSERTS\tUPDATES\tDELETES")
	for _, tx := range d.Transactions {
		if len(tx.Relations) == 0 {
			fmt.Fprintf(tw, "%d\t%s\t%s\t-\t0\t0\t0\n", tx.XID, dash(tx.CommitTime), tx.CommitLSN)
		}
		for i, r := range tx.Relations {
			name := r.Name
			if name == "" {
				name = fmt.Sprintf("relfilenode %d (database %d, not known to the new primary)", r.RelFileNode, r.Database)
			} else if r.DatabaseName != "" {
				name = r.DatabaseName + ":" + name
			}
			xid, at, lsn := fmt.Sprint(tx.XID), dash(tx.CommitTime), tx.CommitLSN
			if i > 0 {
				xid, at, lsn = "", "", ""
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\n", xid, at, lsn, name, r.Inserts, r.Updates, r.Deletes)
		}
	}
	return tw.Flush()
}
