package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pgdr/pgdr/coordinator/fsm"
	"github.com/pgdr/pgdr/coordinator/runbook"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// RunbookJSON is one runbook in `pgdrctl runbook list|show --json`.
type RunbookJSON struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Builtin     bool   `json:"builtin"`
	Updated     string `json:"updated"`
	UpdatedBy   string `json:"updated_by"`
	YAML        string `json:"yaml,omitempty"`
}

// RunbookRunJSON is one run in `pgdrctl runbook runs|status|run --json`.
type RunbookRunJSON struct {
	ID          string            `json:"id"`
	Cluster     string            `json:"cluster"`
	Runbook     string            `json:"runbook"`
	Incident    string            `json:"incident"`
	RequestedBy string            `json:"requested_by"`
	Params      map[string]string `json:"params"`
	Result      string            `json:"result"` // "running" while in flight
	Reason      string            `json:"reason"`
	RollingBack bool              `json:"rolling_back"`
	Started     string            `json:"started"`
	Ended       string            `json:"ended"`
	Steps       []RunbookStepJSON `json:"steps"`
	Plan        []string          `json:"plan,omitempty"`
}

// RunbookStepJSON is one step of a run.
type RunbookStepJSON struct {
	ID       string `json:"id"`
	Status   string `json:"status"`
	Applied  bool   `json:"applied"`
	Target   string `json:"target,omitempty"`
	Rollback string `json:"rollback,omitempty"`
	Reason   string `json:"reason"`
}

func runView(r *pgdrv1.RunbookRun) RunbookRunJSON {
	v := RunbookRunJSON{ID: r.GetId(), Cluster: r.GetCluster(), Runbook: r.GetRunbook(), Incident: r.GetIncident(), RequestedBy: r.GetRequestedBy(),
		Steps: []RunbookStepJSON{}, Result: "unreadable"}
	rs, err := fsm.RunState(r)
	if err != nil {
		v.Reason = err.Error()
		return v
	}
	v.Params, v.Result, v.Reason, v.RollingBack = rs.Params, string(rs.Result), rs.Reason, rs.RollingBack
	if v.Result == "" {
		v.Result = "running"
	}
	v.Started = timeText(rs.Started)
	v.Ended = timeText(rs.Ended)
	for _, s := range rs.Steps {
		v.Steps = append(v.Steps, RunbookStepJSON{ID: s.ID, Status: string(s.Status), Applied: s.Applied, Target: s.Exec.Target,
			Rollback: string(s.RollbackStatus), Reason: s.Reason})
	}
	return v
}

func timeText(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

const runbookUsage = "runbook list | show NAME | apply -f FILE | run NAME [--param K=V]... [--incident ID] [--dry-run] [--yes] [--wait] | runs | status RUN_ID"

func cmdRunbook(ctx context.Context, e env, cf *connFlags, args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "--help" || args[0] == "-h" || args[0] == "-help") {
			fmt.Fprintf(e.stdout, "Usage: pgdrctl %s\n\nRun 'pgdrctl runbook SUBCOMMAND --help' for its flags. docs/runbooks/format.md describes the YAML.\n", runbookUsage)
			return nil
		}
		return usagef("want one of: %s", runbookUsage)
	}
	sub := args[0]
	about := map[string]string{
		"list":   "Lists the runbooks: the ones pgdr ships (regional-evacuation, regional-failback) and the ones applied. Needs role read.",
		"show":   "Prints a runbook's YAML. Needs role read.",
		"apply":  "Validates a runbook (-f FILE, or - for stdin) and stores it in the coordinators' replicated state, replacing one of the same name. A bad runbook is refused naming the field; nothing is stored. Needs role admin.",
		"run":    "Runs a runbook on a cluster: the Raft leader checks every precondition against the cluster as it sees it and prints the plan (--dry-run stops there; nothing changes), then executes the steps one at a time, recording each in history (and on --incident's timeline). A failed step rolls back the completed ones in reverse. Without --dry-run, --yes is required. --wait follows the run until it ends and fails unless it is done. Needs role admin.",
		"runs":   "Lists the runbook runs kept, oldest first. Needs role read.",
		"status": "Prints one run with each step's status and reason. Needs role read.",
	}[sub]
	if about == "" {
		return usagef("unknown runbook subcommand %q: want list, show, apply, run, runs or status", sub)
	}
	f := newCmdFlags(e, "runbook "+sub, runbookUsage, about, cf)
	var file, cluster, incident *string
	var dry, yes, wait *bool
	params := map[string]string{}
	nargs := 0
	switch sub {
	case "show", "status":
		nargs = 1
	case "apply":
		file = f.String("f", "", "the runbook's YAML file (- for stdin)")
	case "run":
		nargs = 1
		cluster = f.String("cluster", "", "the cluster (may be left out when there is only one)")
		incident = f.String("incident", "", "the incident the run belongs to (its steps go on its timeline)")
		dry = f.Bool("dry-run", false, "check the preconditions and print the plan; change nothing")
		yes = f.Bool("yes", false, "confirm: run it (required without --dry-run)")
		wait = f.Bool("wait", false, "follow the run until it ends; exit 1 unless it is done")
		f.Func("param", "a parameter NAME=VALUE (repeatable)", func(s string) error {
			k, v, ok := strings.Cut(s, "=")
			if !ok || k == "" {
				return fmt.Errorf("want NAME=VALUE, got %q", s)
			}
			params[k] = v
			return nil
		})
	case "runs":
		cluster = f.String("cluster", "", "only this cluster")
	}
	pos, err := f.parse(args[1:], nargs)
	if err != nil {
		return err
	}
	if sub == "apply" && *file == "" {
		return usagef("runbook apply needs -f FILE")
	}
	if sub == "run" && !*dry && !*yes {
		return usagef("runbook run changes the cluster: check it with --dry-run, then pass --yes to run it")
	}
	var text []byte
	if sub == "apply" {
		if *file == "-" {
			text, err = io.ReadAll(io.LimitReader(os.Stdin, fsm.MaxRunbookYAML+1))
		} else {
			text, err = os.ReadFile(*file)
		}
		if err != nil {
			return fmt.Errorf("reading the runbook: %w", err)
		}
		// Checked here too, so that a bad file is refused without a round trip.
		if _, err := runbook.Parse(text); err != nil {
			return fmt.Errorf("%s: %w", *file, err)
		}
	}
	cl, err := cf.client()
	if err != nil {
		return err
	}
	switch sub {
	case "list", "show":
		name := ""
		if sub == "show" {
			name = pos[0]
		}
		var resp *pgdrv1.ListRunbooksResponse
		if _, err := cl.call(ctx, "ListRunbooks", func(ctx context.Context, a pgdrv1.AdminServiceClient) error {
			var err error
			resp, err = a.ListRunbooks(ctx, &pgdrv1.ListRunbooksRequest{Name: name})
			return err
		}); err != nil {
			return err
		}
		var out []RunbookJSON
		for _, d := range resp.GetRunbooks() {
			v := RunbookJSON{Name: d.GetName(), Description: d.GetDescription(), Builtin: d.GetBuiltin(), Updated: rfc3339(d.GetUpdated()), UpdatedBy: d.GetUpdatedBy()}
			if sub == "show" {
				v.YAML = d.GetYaml()
			}
			out = append(out, v)
		}
		if sub == "show" {
			if f.json() {
				return printJSON(e.stdout, out[0])
			}
			_, err := io.WriteString(e.stdout, out[0].YAML)
			return err
		}
		if f.json() {
			return printJSON(e.stdout, map[string]any{"runbooks": out})
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tSHIPPED\tUPDATED\tDESCRIPTION")
		for _, v := range out {
			fmt.Fprintf(tw, "%s\t%t\t%s\t%s\n", v.Name, v.Builtin, v.Updated, firstLine(v.Description))
		}
		return tw.Flush()
	case "apply":
		var resp *pgdrv1.ApplyRunbookResponse
		if _, err := cl.call(ctx, "ApplyRunbook", func(ctx context.Context, a pgdrv1.AdminServiceClient) error {
			var err error
			resp, err = a.ApplyRunbook(ctx, &pgdrv1.ApplyRunbookRequest{Yaml: string(text)})
			return err
		}); err != nil {
			return err
		}
		d := resp.GetRunbook()
		if f.json() {
			return printJSON(e.stdout, RunbookJSON{Name: d.GetName(), Description: d.GetDescription(), Updated: rfc3339(d.GetUpdated()), UpdatedBy: d.GetUpdatedBy()})
		}
		fmt.Fprintf(e.stdout, "runbook %s applied\n", d.GetName())
		return nil
	case "runs", "status":
		req := &pgdrv1.ListRunbookRunsRequest{}
		if sub == "runs" {
			req.Cluster = *cluster
		} else {
			req.Id = pos[0]
		}
		var resp *pgdrv1.ListRunbookRunsResponse
		if _, err := cl.call(ctx, "ListRunbookRuns", func(ctx context.Context, a pgdrv1.AdminServiceClient) error {
			var err error
			resp, err = a.ListRunbookRuns(ctx, req)
			return err
		}); err != nil {
			return err
		}
		var out []RunbookRunJSON
		for _, r := range resp.GetRuns() {
			out = append(out, runView(r))
		}
		if sub == "status" {
			if f.json() {
				return printJSON(e.stdout, out[0])
			}
			return writeRun(e.stdout, out[0])
		}
		if f.json() {
			if out == nil {
				out = []RunbookRunJSON{}
			}
			return printJSON(e.stdout, map[string]any{"runs": out})
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tCLUSTER\tRUNBOOK\tRESULT\tSTARTED\tENDED\tREASON")
		for _, v := range out {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.ID, v.Cluster, v.Runbook, v.Result, v.Started, v.Ended, firstLine(v.Reason))
		}
		return tw.Flush()
	}
	// run
	c, err := onlyCluster(ctx, cl, *cluster)
	if err != nil {
		return err
	}
	var resp *pgdrv1.RunRunbookResponse
	if _, err := cl.call(ctx, "RunRunbook", func(ctx context.Context, a pgdrv1.AdminServiceClient) error {
		var err error
		resp, err = a.RunRunbook(ctx, &pgdrv1.RunRunbookRequest{Cluster: c, Runbook: pos[0], Params: params, DryRun: *dry, Incident: *incident})
		return err
	}); err != nil {
		return err
	}
	if *dry {
		if f.json() {
			return printJSON(e.stdout, map[string]any{"runbook": pos[0], "cluster": c, "plan": resp.GetPlan()})
		}
		fmt.Fprintf(e.stdout, "dry run of %s on cluster %s (nothing changed):\n", pos[0], c)
		for _, l := range resp.GetPlan() {
			fmt.Fprintln(e.stdout, "  "+l)
		}
		return nil
	}
	v := runView(resp.GetRun())
	v.Plan = resp.GetPlan()
	if !*wait {
		if f.json() {
			return printJSON(e.stdout, v)
		}
		fmt.Fprintf(e.stdout, "run %s of %s started on cluster %s; follow it with 'pgdrctl runbook status %s'\n", v.ID, pos[0], c, v.ID)
		return nil
	}
	return followRun(ctx, e, cl, v.ID, f.json())
}

// followRun polls run id until it ends, printing each step as it moves.
func followRun(ctx context.Context, e env, cl *client, id string, asJSON bool) error {
	seen := map[string]string{}
	for {
		var resp *pgdrv1.ListRunbookRunsResponse
		_, err := cl.call(ctx, "ListRunbookRuns", func(ctx context.Context, a pgdrv1.AdminServiceClient) error {
			var err error
			resp, err = a.ListRunbookRuns(ctx, &pgdrv1.ListRunbookRunsRequest{Id: id})
			return err
		})
		if err == nil && len(resp.GetRuns()) == 1 {
			v := runView(resp.GetRuns()[0])
			if !asJSON {
				for _, s := range v.Steps {
					st := s.Status + "/" + s.Rollback
					if seen[s.ID] != st && s.Status != "pending" {
						seen[s.ID] = st
						fmt.Fprintf(e.stdout, "%s  %-22s %-11s %s\n", time.Now().UTC().Format("15:04:05"), s.ID, stepWord(s), s.Reason)
					}
				}
			}
			if v.Result != "running" {
				if asJSON {
					if err := printJSON(e.stdout, v); err != nil {
						return err
					}
				} else {
					fmt.Fprintf(e.stdout, "run %s ended %s: %s\n", v.ID, v.Result, v.Reason)
				}
				if v.Result != "done" {
					return fmt.Errorf("run %s ended %s", v.ID, v.Result)
				}
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-time.After(time.Second):
		}
	}
}

func stepWord(s RunbookStepJSON) string {
	if s.Rollback != "" {
		return "rollback " + s.Rollback
	}
	return s.Status
}

func writeRun(w io.Writer, v RunbookRunJSON) error {
	fmt.Fprintf(w, "run %s of %s on cluster %s: %s\n", v.ID, v.Runbook, v.Cluster, v.Result)
	fmt.Fprintf(w, "started %s by %s", v.Started, v.RequestedBy)
	if v.Ended != "" {
		fmt.Fprintf(w, ", ended %s", v.Ended)
	}
	fmt.Fprintln(w)
	if v.Incident != "" {
		fmt.Fprintf(w, "incident %s\n", v.Incident)
	}
	if v.Reason != "" {
		fmt.Fprintf(w, "reason: %s\n", v.Reason)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nSTEP\tSTATUS\tROLLBACK\tREASON")
	for _, s := range v.Steps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.ID, s.Status, s.Rollback, s.Reason)
	}
	return tw.Flush()
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
