package ctl

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/pgdr/pgdr/coordinator/incident"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// IncidentJSON is one incident in `pgdrctl incidents --json` and
// `incident show --json`. Times are RFC 3339 in UTC ("" = not yet).
type IncidentJSON struct {
	ID               string              `json:"id"`
	Title            string              `json:"title"`
	Cluster          string              `json:"cluster"`
	Category         string              `json:"category"`
	Severity         string              `json:"severity"`
	Priority         string              `json:"priority"`
	Status           string              `json:"status"`
	DedupKey         string              `json:"dedup_key"`
	ConditionCleared bool                `json:"condition_cleared"`
	Occurrences      uint64              `json:"occurrences"`
	EscalationLevel  int32               `json:"escalation_level"`
	NotifiedLevels   uint32              `json:"notified_levels"`
	Opened           string              `json:"opened"`
	LastSeen         string              `json:"last_seen"`
	ClearedAt        string              `json:"cleared_at"`
	Acked            string              `json:"acknowledged"`
	Resolved         string              `json:"resolved"`
	Timeline         []IncidentEntryJSON `json:"timeline"`
	TimelineDropped  uint64              `json:"timeline_dropped"`
	Notes            []IncidentNoteJSON  `json:"notes"`
}

// IncidentEntryJSON is one timeline entry.
type IncidentEntryJSON struct {
	Time    string `json:"time"`
	Actor   string `json:"actor"`
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

// IncidentNoteJSON is one note.
type IncidentNoteJSON struct {
	Time  string `json:"time"`
	Actor string `json:"actor"`
	Text  string `json:"text"`
}

// IncidentsJSON is `pgdrctl incidents --json`. DetailsOmitted: the
// timelines and notes were left out (too many to list with them; `incident
// show ID --json` has them).
type IncidentsJSON struct {
	Incidents      []IncidentJSON `json:"incidents"`
	DetailsOmitted bool           `json:"details_omitted"`
}

func incidentView(in *pgdrv1.Incident) IncidentJSON {
	v := IncidentJSON{ID: in.GetId(), Title: in.GetTitle(), Cluster: in.GetCluster(), Category: in.GetCategory(), Severity: in.GetSeverity(),
		Priority: string(incident.PriorityOf(incident.Severity(in.GetSeverity()))), Status: in.GetStatus(), DedupKey: in.GetDedupKey(),
		ConditionCleared: in.GetConditionCleared(), Occurrences: in.GetOccurrences(), EscalationLevel: in.GetEscalationLevel(),
		NotifiedLevels: in.GetNotifiedLevels(), Opened: rfc3339(in.GetOpened()), LastSeen: rfc3339(in.GetLastSeen()),
		ClearedAt: rfc3339(in.GetClearedAt()), Acked: rfc3339(in.GetAcked()), Resolved: rfc3339(in.GetResolved()),
		TimelineDropped: in.GetTimelineDropped(), Timeline: []IncidentEntryJSON{}, Notes: []IncidentNoteJSON{}}
	for _, e := range in.GetTimeline() {
		v.Timeline = append(v.Timeline, IncidentEntryJSON{Time: rfc3339(e.GetTime()), Actor: e.GetActor(), Kind: e.GetKind(), Message: e.GetMessage()})
	}
	for _, n := range in.GetNotes() {
		v.Notes = append(v.Notes, IncidentNoteJSON{Time: rfc3339(n.GetTime()), Actor: n.GetActor(), Text: n.GetText()})
	}
	return v
}

func cmdIncidents(ctx context.Context, e env, cf *connFlags, args []string) error {
	f := newCmdFlags(e, "incidents", "incidents [--cluster C] [--all] [--json]", `Lists the incidents the coordinators keep, oldest first: id, priority
(P1 critical .. P4 low), status (open, acknowledged, resolved), whether the
condition cleared, cluster, category, occurrences, escalation level and title.
Resolved incidents are listed with --all (they are kept for a while, then
compacted). 'pgdrctl incident show ID' prints one with its timeline and notes.
Needs role read.`, cf)
	cluster := f.String("cluster", "", "only this cluster")
	all := f.Bool("all", false, "also the resolved incidents")
	if _, err := f.parse(args, 0); err != nil {
		return err
	}
	cl, err := cf.client()
	if err != nil {
		return err
	}
	var resp *pgdrv1.ListIncidentsResponse
	if _, err := cl.call(ctx, "ListIncidents", func(ctx context.Context, c pgdrv1.AdminServiceClient) error {
		var err error
		resp, err = c.ListIncidents(ctx, &pgdrv1.ListIncidentsRequest{Cluster: *cluster, All: *all})
		return err
	}); err != nil {
		return err
	}
	v := IncidentsJSON{Incidents: []IncidentJSON{}, DetailsOmitted: resp.GetDetailsOmitted()}
	for _, in := range resp.GetIncidents() {
		v.Incidents = append(v.Incidents, incidentView(in))
	}
	if f.json() {
		return printJSON(e.stdout, v)
	}
	return writeIncidents(e.stdout, v.Incidents)
}

func writeIncidents(w io.Writer, ins []IncidentJSON) error {
	if len(ins) == 0 {
		_, err := fmt.Fprintln(w, "no incidents")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPRI\tSTATUS\tCLEARED\tCLUSTER\tCATEGORY\tSEEN\tLEVEL\tOPENED\tTITLE")
	for _, in := range ins {
		cleared := "no"
		if in.ConditionCleared {
			cleared = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", in.ID, in.Priority, in.Status, cleared, in.Cluster, in.Category,
			in.Occurrences, in.EscalationLevel, in.Opened, in.Title)
	}
	return tw.Flush()
}

func writeIncident(w io.Writer, in IncidentJSON) error {
	fmt.Fprintf(w, "%s  %s (%s %s)  %s\n", in.ID, in.Title, in.Priority, in.Severity, strings.ToUpper(in.Status))
	fmt.Fprintf(w, "cluster %s, category %s, dedup key %s\n", in.Cluster, in.Category, in.DedupKey)
	fmt.Fprintf(w, "opened %s, last seen %s, %d occurrence(s)", in.Opened, in.LastSeen, in.Occurrences)
	if in.ConditionCleared {
		fmt.Fprintf(w, ", condition cleared %s", in.ClearedAt)
	}
	fmt.Fprintf(w, "\nescalation level %d (%d level(s) notified)\n", in.EscalationLevel, in.NotifiedLevels)
	if in.Acked != "" {
		fmt.Fprintf(w, "acknowledged %s\n", in.Acked)
	}
	if in.Resolved != "" {
		fmt.Fprintf(w, "resolved %s\n", in.Resolved)
	}
	fmt.Fprintln(w, "\nTimeline:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i, e := range in.Timeline {
		if i == 1 && in.TimelineDropped > 0 {
			fmt.Fprintf(tw, "  …\t\t%d entries dropped\t\n", in.TimelineDropped)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", e.Time, e.Kind, e.Actor, e.Message)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(in.Notes) > 0 {
		fmt.Fprintln(w, "\nNotes:")
		for _, n := range in.Notes {
			fmt.Fprintf(w, "  %s %s: %s\n", n.Time, n.Actor, n.Text)
		}
	}
	return nil
}

const incidentUsage = "incident open --title T [--severity S] [--note N] [--cluster C] | incident show ID | incident ack ID [--note N] | incident resolve ID --note N | incident note ID --note N"

func cmdIncident(ctx context.Context, e env, cf *connFlags, args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "--help" || args[0] == "-h" || args[0] == "-help") {
			fmt.Fprintf(e.stdout, "Usage: pgdrctl %s\n\nRun 'pgdrctl incident SUBCOMMAND --help' for its flags; 'pgdrctl incidents' lists them.\n", incidentUsage)
			return nil
		}
		return usagef("want one of: %s", incidentUsage)
	}
	sub := args[0]
	about := map[string]string{
		"open":    "Opens an incident by hand (category manual) in a cluster, notified like the others. Needs role admin.",
		"show":    "Prints one incident with its timeline (escalations and notification deliveries included) and notes. Needs role read.",
		"ack":     "Acknowledges an open incident: escalation stops and the notified channels are told. Needs role admin.",
		"resolve": "Resolves an incident with a note saying why it is over; the notified channels are told. Needs role admin.",
		"note":    "Adds a note to an incident. Needs role admin.",
	}[sub]
	if about == "" {
		return usagef("unknown incident subcommand %q: want open, show, ack, resolve or note", sub)
	}
	f := newCmdFlags(e, "incident "+sub, incidentUsage, about, cf)
	var title, severity, cluster *string
	note := f.String("note", "", "the note (required by resolve and note)")
	if sub == "open" {
		title = f.String("title", "", "one line saying what is wrong (required)")
		severity = f.String("severity", "high", "critical, high, medium or low")
		cluster = f.String("cluster", "", "the cluster (may be left out when there is only one)")
	}
	nargs := 1
	if sub == "open" {
		nargs = 0
	}
	pos, err := f.parse(args[1:], nargs)
	if err != nil {
		return err
	}
	cl, err := cf.client()
	if err != nil {
		return err
	}
	var in *pgdrv1.Incident
	switch sub {
	case "open":
		if *title == "" {
			return usagef("--title is required")
		}
		c, err := onlyCluster(ctx, cl, *cluster)
		if err != nil {
			return err
		}
		_, err = cl.call(ctx, "OpenIncident", func(ctx context.Context, a pgdrv1.AdminServiceClient) error {
			r, err := a.OpenIncident(ctx, &pgdrv1.OpenIncidentRequest{Cluster: c, Title: *title, Severity: *severity, Note: *note})
			in = r.GetIncident()
			return err
		})
		if err != nil {
			return err
		}
	case "show":
		_, err = cl.call(ctx, "ListIncidents", func(ctx context.Context, a pgdrv1.AdminServiceClient) error {
			r, err := a.ListIncidents(ctx, &pgdrv1.ListIncidentsRequest{Id: pos[0]})
			if len(r.GetIncidents()) == 1 {
				in = r.GetIncidents()[0]
			}
			return err
		})
		if err != nil {
			return err
		}
	default:
		if (sub == "resolve" || sub == "note") && *note == "" {
			return usagef("--note is required by 'incident %s'", sub)
		}
		_, err = cl.call(ctx, "UpdateIncident", func(ctx context.Context, a pgdrv1.AdminServiceClient) error {
			r, err := a.UpdateIncident(ctx, &pgdrv1.UpdateIncidentRequest{Id: pos[0], Action: sub, Note: *note})
			in = r.GetIncident()
			return err
		})
		if err != nil {
			return err
		}
	}
	if in == nil {
		return fmt.Errorf("the coordinator answered without the incident")
	}
	if f.json() {
		return printJSON(e.stdout, incidentView(in))
	}
	return writeIncident(e.stdout, incidentView(in))
}
