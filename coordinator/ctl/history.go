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

// HistoryJSON is `pgdrctl history --json`: events oldest first.
type HistoryJSON struct {
	Events []EventJSON `json:"events"`
}

// EventJSON is one audit history event; Time is RFC 3339 in UTC.
type EventJSON struct {
	Time    string            `json:"time"`
	Seq     uint64            `json:"seq"`
	Index   uint64            `json:"index"`
	Cluster string            `json:"cluster"`
	Kind    string            `json:"kind"`
	Node    string            `json:"node"`
	Epoch   uint64            `json:"epoch"`
	Actor   string            `json:"actor"`
	Message string            `json:"message"`
	Details map[string]string `json:"details"`
}

// historyView orders events by seq whatever order the server used: seq
// numbers events without gaps, so it is the order things happened.
func historyView(r *pgdrv1.HistoryResponse) HistoryJSON {
	v := HistoryJSON{Events: []EventJSON{}}
	for _, ev := range r.GetEvents() {
		d := ev.GetDetails()
		if d == nil {
			d = map[string]string{}
		}
		v.Events = append(v.Events, EventJSON{
			Time:    rfc3339(ev.GetTime()),
			Seq:     ev.GetSeq(),
			Index:   ev.GetIndex(),
			Cluster: ev.GetCluster(),
			Kind:    ev.GetKind(),
			Node:    ev.GetNode(),
			Epoch:   ev.GetEpoch(),
			Actor:   ev.GetActor(),
			Message: ev.GetMessage(),
			Details: d,
		})
	}
	slices.SortStableFunc(v.Events, func(a, b EventJSON) int { return cmp.Compare(a.Seq, b.Seq) })
	return v
}

func cmdHistory(ctx context.Context, e env, cf *connFlags, args []string) error {
	f := newCmdFlags(e, "history", "history [--cluster C] [--limit N] [--after SEQ] [--json]", `Prints the append-only audit history recorded in Raft, oldest first: member
registrations, primary changes, pause/resume, coordinator membership and the
leader's decisions. Times are RFC 3339 in UTC.`, cf)
	cluster := f.String("cluster", "", "only this cluster's events (and not coordinator-wide ones)")
	limit := f.Uint("limit", 0, "the newest N events (0: the server's default, 100)")
	after := f.Uint64("after", 0, "only events with a sequence number above SEQ")
	if _, err := f.parse(args, 0); err != nil {
		return err
	}
	if *limit > 1<<32-1 {
		return usagef("--limit %d is too large", *limit)
	}
	cl, err := cf.client()
	if err != nil {
		return err
	}
	var resp *pgdrv1.HistoryResponse
	if _, err := cl.call(ctx, "History", func(ctx context.Context, c pgdrv1.AdminServiceClient) error {
		var err error
		resp, err = c.History(ctx, &pgdrv1.HistoryRequest{Cluster: *cluster, Limit: uint32(*limit), AfterSeq: *after})
		return err
	}); err != nil {
		return err
	}
	v := historyView(resp)
	if f.json() {
		return printJSON(e.stdout, v)
	}
	return writeHistory(e.stdout, v)
}

func writeHistory(w io.Writer, v HistoryJSON) error {
	if len(v.Events) == 0 {
		_, err := fmt.Fprintln(w, "No events.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tSEQ\tCLUSTER\tKIND\tNODE\tEPOCH\tACTOR\tMESSAGE")
	for _, ev := range v.Events {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d\t%s\t%s\n", dash(ev.Time), ev.Seq, dash(ev.Cluster), ev.Kind, dash(ev.Node), ev.Epoch, dash(ev.Actor), oneLine(ev.Message, historyMessageWidth))
	}
	return tw.Flush()
}

// historyMessageWidth bounds a message in the table; --json has it whole.
const historyMessageWidth = 240

// oneLine keeps a table row on one line: a program's multi-line output in a
// message (pg_rewind's, a hook's) is joined with " | " and cut to width
// runes, marked with "…".
func oneLine(s string, width int) string {
	s = strings.TrimSpace(s)
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(strings.ReplaceAll(s, "\n", " | "), "\t", " ")
	if r := []rune(s); len(r) > width {
		s = string(r[:width-1]) + "…"
	}
	return s
}
