package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// GameDayJSON is one game day in `pgdrctl gamedays --json` and the report.
type GameDayJSON struct {
	ID          string           `json:"id"`
	Name        string           `json:"name"`
	Slot        string           `json:"slot"`
	Started     string           `json:"started"`
	Deadline    string           `json:"deadline"`
	Ended       string           `json:"ended"`
	Result      string           `json:"result"` // "running" while in flight
	Message     string           `json:"message"`
	Runbooks    []string         `json:"runbooks"`
	Runs        []string         `json:"runs"`
	Measures    []GameDayMeasure `json:"measures"`
	RTOSeconds  float64          `json:"rto_seconds"`
	RTOMeasured bool             `json:"rto_measured"`
	RequestedBy string           `json:"requested_by"`
}

// GameDayMeasure is the probe's measure of one runbook run.
type GameDayMeasure struct {
	Run                string  `json:"run"`
	Runbook            string  `json:"runbook"`
	LongestGapSeconds  float64 `json:"longest_gap_seconds"`
	UnavailableSeconds float64 `json:"unavailable_seconds"`
	Gaps               uint32  `json:"gaps"`
	WritesOK           uint64  `json:"writes_ok"`
	WritesFailed       uint64  `json:"writes_failed"`
	Measured           bool    `json:"measured"`
	Note               string  `json:"note"`
}

// ClusterGameDaysJSON is one cluster's game days.
type ClusterGameDaysJSON struct {
	Cluster  string        `json:"cluster"`
	GameDays []GameDayJSON `json:"game_days"`
}

func gameDayView(g *pgdrv1.GameDayRun) GameDayJSON {
	v := GameDayJSON{ID: g.GetId(), Name: g.GetName(), Slot: rfc3339(g.GetSlot()), Started: rfc3339(g.GetStarted()), Deadline: rfc3339(g.GetDeadline()),
		Ended: rfc3339(g.GetEnded()), Result: g.GetResult(), Message: g.GetMessage(), Runs: append([]string{}, g.GetRuns()...),
		Measures: []GameDayMeasure{}, RTOSeconds: float64(g.GetRtoMs()) / 1000, RTOMeasured: g.GetRtoMs() >= 0, RequestedBy: g.GetRequestedBy(), Runbooks: []string{}}
	if v.Result == "" {
		v.Result = "running"
	}
	if !v.RTOMeasured {
		v.RTOSeconds = 0
	}
	for _, rb := range g.GetRunbooks() {
		v.Runbooks = append(v.Runbooks, rb.GetName())
	}
	for _, m := range g.GetMeasures() {
		v.Measures = append(v.Measures, GameDayMeasure{Run: m.GetRunId(), Runbook: m.GetRunbook(), LongestGapSeconds: float64(m.GetLongestGapMs()) / 1000,
			UnavailableSeconds: float64(m.GetUnavailableMs()) / 1000, Gaps: m.GetGaps(), WritesOK: m.GetWritesOk(), WritesFailed: m.GetWritesFailed(),
			Measured: m.GetMeasured(), Note: m.GetNote()})
	}
	return v
}

// rtoText is a game day's measured RTO for the text outputs.
func (v GameDayJSON) rtoText() string {
	if !v.RTOMeasured {
		return "not measured"
	}
	return seconds(v.RTOSeconds)
}

func (v GameDayJSON) measuresText() string {
	var parts []string
	for _, m := range v.Measures {
		s := fmt.Sprintf("%s %s", m.Runbook, seconds(m.LongestGapSeconds))
		if !m.Measured {
			s += " (partial)"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

const gameDayUsage = "gameday run NAME [--cluster C] [--wait] [--json]"

func listGameDays(ctx context.Context, cl *client, cluster string) (*pgdrv1.ListGameDaysResponse, error) {
	var resp *pgdrv1.ListGameDaysResponse
	_, err := cl.call(ctx, "ListGameDays", func(ctx context.Context, a pgdrv1.AdminServiceClient) error {
		var err error
		resp, err = a.ListGameDays(ctx, &pgdrv1.ListGameDaysRequest{Cluster: cluster})
		return err
	})
	return resp, err
}

func cmdGameDays(ctx context.Context, e env, cf *connFlags, args []string) error {
	f := newCmdFlags(e, "gamedays", "gamedays [--cluster C] [--json]", `Lists the game days (DR test plans of the policy, docs/gamedays.md) the
Raft leader recorded, oldest first: result (running, ok, failed, timeout),
the runbook runs, and the write unavailability the probe measured during
each (its longest gap is the measured RTO). Needs role read.`, cf)
	cluster := f.String("cluster", "", "only this cluster")
	if _, err := f.parse(args, 0); err != nil {
		return err
	}
	cl, err := cf.client()
	if err != nil {
		return err
	}
	resp, err := listGameDays(ctx, cl, *cluster)
	if err != nil {
		return err
	}
	out := []ClusterGameDaysJSON{}
	for _, c := range resp.GetClusters() {
		cv := ClusterGameDaysJSON{Cluster: c.GetCluster(), GameDays: []GameDayJSON{}}
		for _, r := range c.GetRuns() {
			cv.GameDays = append(cv.GameDays, gameDayView(r))
		}
		out = append(out, cv)
	}
	if f.json() {
		return printJSON(e.stdout, map[string]any{"clusters": out})
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tID\tNAME\tRESULT\tSTARTED\tENDED\tRUNS\tRTO\tWRITE UNAVAILABILITY\tMESSAGE")
	for _, c := range out {
		for _, v := range c.GameDays {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Cluster, v.ID, v.Name, v.Result, v.Started, dash(v.Ended),
				dash(strings.Join(v.Runs, ",")), v.rtoText(), dash(v.measuresText()), firstLine(v.Message))
		}
	}
	return tw.Flush()
}

func cmdGameDay(ctx context.Context, e env, cf *connFlags, args []string) error {
	if len(args) == 0 || args[0] != "run" {
		if len(args) > 0 && (args[0] == "--help" || args[0] == "-h" || args[0] == "-help") {
			fmt.Fprintf(e.stdout, "Usage: pgdrctl %s\n\nRun 'pgdrctl gameday run --help' for its flags. docs/gamedays.md describes game days.\n", gameDayUsage)
			return nil
		}
		return usagef("want: %s", gameDayUsage)
	}
	f := newCmdFlags(e, "gameday run", gameDayUsage, `Starts one of the cluster's policy's game days now (it takes no scheduled
slot): the Raft leader runs its runbooks in order within its window while its
probe writes through the cluster's endpoint. --wait follows it until it ends
and fails unless it ended ok. Needs role admin.`, cf)
	cluster := f.String("cluster", "", "the cluster (may be left out when there is only one)")
	wait := f.Bool("wait", false, "follow the game day until it ends; exit 1 unless it ended ok")
	pos, err := f.parse(args[1:], 1)
	if err != nil {
		return err
	}
	cl, err := cf.client()
	if err != nil {
		return err
	}
	c, err := onlyCluster(ctx, cl, *cluster)
	if err != nil {
		return err
	}
	var resp *pgdrv1.RunGameDayResponse
	if _, err := cl.call(ctx, "RunGameDay", func(ctx context.Context, a pgdrv1.AdminServiceClient) error {
		var err error
		resp, err = a.RunGameDay(ctx, &pgdrv1.RunGameDayRequest{Cluster: c, Name: pos[0]})
		return err
	}); err != nil {
		return err
	}
	v := gameDayView(resp.GetRun())
	if !*wait {
		if f.json() {
			return printJSON(e.stdout, v)
		}
		fmt.Fprintf(e.stdout, "game day %s (%s) started on cluster %s; follow it with 'pgdrctl gamedays'\n", pos[0], v.ID, c)
		return nil
	}
	return followGameDay(ctx, e, cl, c, v.ID, f.json())
}

// followGameDay polls game day id until it ends.
func followGameDay(ctx context.Context, e env, cl *client, cluster, id string, asJSON bool) error {
	runs := 0
	for {
		resp, err := listGameDays(ctx, cl, cluster)
		if err == nil {
			for _, c := range resp.GetClusters() {
				for _, r := range c.GetRuns() {
					if r.GetId() != id {
						continue
					}
					v := gameDayView(r)
					for ; !asJSON && runs < len(v.Runs); runs++ {
						fmt.Fprintf(e.stdout, "%s  runbook %s started as run %s\n", time.Now().UTC().Format("15:04:05"), v.Runbooks[runs], v.Runs[runs])
					}
					if v.Result == "running" {
						continue
					}
					if asJSON {
						if err := printJSON(e.stdout, v); err != nil {
							return err
						}
					} else {
						fmt.Fprintf(e.stdout, "game day %s ended %s: %s; measured RTO %s (%s)\n", v.ID, v.Result, v.Message, v.rtoText(), dash(v.measuresText()))
					}
					if v.Result != "ok" {
						return fmt.Errorf("game day %s ended %s", v.ID, v.Result)
					}
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-time.After(time.Second):
		}
	}
}

// writeGameDaysMarkdown is the report's game day section.
func writeGameDaysMarkdown(w io.Writer, gds []GameDayJSON) {
	io.WriteString(w, "\n### Game days\n\n")
	if len(gds) == 0 {
		io.WriteString(w, "None in the period.\n")
		return
	}
	io.WriteString(w, "| Game day | Started | Result | Runbook runs | Write unavailability per run | Measured RTO |\n|---|---|---|---|---|---|\n")
	for _, g := range gds {
		fmt.Fprintf(w, "| %s (%s) | %s | %s | %s | %s | %s |\n", g.Name, g.ID, g.Started, g.Result, dash(strings.Join(g.Runs, ", ")),
			dash(g.measuresText()), g.rtoText())
	}
}
