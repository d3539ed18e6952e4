package cli

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/pgdr/pgdr/agent/divergence"
	"github.com/pgdr/pgdr/pkg/divergencesum"
)

// cmdDivergenceShow prints a divergence report from the repositories: the
// whole list of transactions, where the coordinators keep the first ones
// (pgdrctl divergence show).
func cmdDivergenceShow(ctx context.Context, e env, args []string) int {
	f := newFlags(e, "divergence-show", "divergence-show --config FILE [--json] ID",
		`Prints a divergence report from the repositories, with every transaction the
former primary committed past the fork point (pgdrctl divergence show prints
the first ones the coordinators keep). It reads the report as WAL is read:
decrypted with encryption.identity_file, its signature checked when signing
is configured. IDs are listed by pgdrctl divergence.`, true).withJSON()
	pos, code, ok := f.parse(args, 1)
	if !ok {
		return code
	}
	if err := divergence.CheckID(pos[0]); err != nil {
		fmt.Fprintf(e.stderr, "pgdr-agent divergence-show: %v\n", err)
		return ExitUsage
	}
	cfg, log, code := f.config(e)
	if cfg == nil {
		return code
	}
	r, err := divergence.Load(ctx, cfg, pos[0])
	if errors.Is(err, divergence.ErrNotFound) {
		fmt.Fprintf(e.stderr, "pgdr-agent divergence-show: %v\n", err)
		return ExitNotFound
	}
	if err != nil {
		log.Error("divergence-show", "id", pos[0], "err", err)
		return ExitFailure
	}
	if *f.jsonOut {
		printJSON(e.stdout, r)
		return 0
	}
	printable(r)
	fmt.Fprintf(e.stdout, "divergence report %s of %s (cluster %s), rejoining %s at epoch %d: %s\n", r.ID, r.Node, r.Cluster, r.NewPrimary, r.Epoch, r.Status)
	if r.StoreError != "" {
		fmt.Fprintf(e.stdout, "  not all stored: %s\n", r.StoreError)
	}
	if r.NameError != "" {
		fmt.Fprintf(e.stdout, "  relation names not resolved: %s\n", r.NameError)
	}
	switch r.Status {
	case divergence.StatusKnown:
	case divergence.StatusReplica:
		fmt.Fprintf(e.stdout, "  a replica: the WAL it received past the fork, not committed by it (the old primary's transactions)\n")
	case divergence.StatusReplicaUnknown:
		fmt.Fprintf(e.stdout, "  a replica that received WAL past the fork (not commits of its own), which could not be read: %s\n", r.Error)
		return 0
	default:
		fmt.Fprintf(e.stdout, "  the transactions it committed past the fork are not known: %s\n", r.Error)
		return 0
	}
	fmt.Fprintf(e.stdout, "  WAL %s..%s of timeline %d (%d bytes; ends: %s), raw segments %v\n", r.Fork, r.End, r.Timeline, r.Bytes, r.EndReason, r.Segments)
	fmt.Fprintf(e.stdout, "  %d committed (%d not listed), %d aborted, %d in progress\n", r.Committed, r.Omitted, r.Aborted, r.InProgress)
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "XID\tCOMMIT TIME\tCOMMIT LSN\tDATABASE\tRELFILENODE\tRELATION\tINSERTS\tUPDATES\tDELETES")
	for _, tx := range r.Transactions {
		for _, rel := range tx.Relations {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%s\t%d\t%d\t%d\n", tx.XID, tx.CommitTime.Format("2006-01-02T15:04:05.000000Z07:00"), tx.LSN,
				rel.Database, rel.RelFileNode, dash(rel.Name), rel.Inserts, rel.Updates, rel.Deletes)
		}
		if len(tx.Relations) == 0 {
			fmt.Fprintf(tw, "%d\t%s\t%s\t-\t-\t-\t0\t0\t0\n", tx.XID, tx.CommitTime.Format("2006-01-02T15:04:05.000000Z07:00"), tx.LSN)
		}
	}
	tw.Flush()
	return 0
}

// printable makes r's texts safe to print on a terminal (relation names
// and errors come from catalogs and servers): divergencesum.Printable.
func printable(r *divergence.Report) {
	p := divergencesum.Printable
	r.ID, r.Node, r.Cluster, r.NewPrimary, r.Status, r.Error = p(r.ID), p(r.Node), p(r.Cluster), p(r.NewPrimary), p(r.Status), p(r.Error)
	r.Fork, r.End, r.EndReason, r.StoreError, r.NameError = p(r.Fork), p(r.End), p(r.EndReason), p(r.StoreError), p(r.NameError)
	for i := range r.Segments {
		r.Segments[i] = p(r.Segments[i])
	}
	for i := range r.Transactions {
		tx := &r.Transactions[i]
		tx.LSN = p(tx.LSN)
		for j := range tx.Relations {
			rel := &tx.Relations[j]
			rel.Name, rel.DatabaseName = p(rel.Name), p(rel.DatabaseName)
		}
	}
}
