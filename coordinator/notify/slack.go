package notify

import (
	"context"
	"fmt"
	"net/http"
	"time"
	"unicode/utf8"
)

// Slack posts to a Slack-compatible incoming webhook: a "text" fallback
// and Block Kit "blocks" (header, section with fields, context).
type Slack struct {
	name string
	url  string // secret: the URL is the credential
}

func (s *Slack) Name() string      { return s.name }
func (s *Slack) Type() string      { return TypeSlack }
func (s *Slack) secrets() []string { return []string{s.url} }
func (s *Slack) String() string    { return "slack " + s.name }

// Block Kit limits (https://api.slack.com/reference/block-kit/blocks).
const (
	slackHeaderMax  = 150
	slackSectionMax = 3000
	slackFieldMax   = 2000
)

type slackText struct {
	Type string `json:"type"` // plain_text or mrkdwn
	Text string `json:"text"`
}

type slackBlock struct {
	Type     string      `json:"type"` // header, section, context
	Text     *slackText  `json:"text,omitempty"`
	Fields   []slackText `json:"fields,omitempty"`
	Elements []slackText `json:"elements,omitempty"`
}

type slackMessage struct {
	Text   string       `json:"text"`
	Blocks []slackBlock `json:"blocks"`
}

var slackIcon = map[Status]string{
	StatusTriggered:    ":rotating_light:",
	StatusAcknowledged: ":eyes:",
	StatusResolved:     ":white_check_mark:",
}

// slackEscape escapes the three characters Slack's mrkdwn gives meaning to.
func slackEscape(s string) string {
	out := make([]rune, 0, len(s))
	for _, r := range s {
		switch r {
		case '&':
			out = append(out, []rune("&amp;")...)
		case '<':
			out = append(out, []rune("&lt;")...)
		case '>':
			out = append(out, []rune("&gt;")...)
		default:
			out = append(out, r)
		}
	}
	return string(out)
}

func slackPayload(ev Event) slackMessage {
	head := fmt.Sprintf("[%s] %s", ev.Status, ev.Title)
	text := fmt.Sprintf("%s %s: %s (%s, %s) %s", slackIcon[ev.Status], slackEscape(ev.Cluster), slackEscape(head), ev.Severity, slackEscape(ev.IncidentID), ev.Link)
	body := slackEscape(ev.Timeline)
	if body == "" {
		body = slackEscape(ev.Title)
	}
	if ev.Link != "" {
		// Cut the timeline, never the link.
		link := "\n<" + ev.Link + "|Open incident " + slackEscape(ev.IncidentID) + ">"
		body = truncate(body, max(slackSectionMax-utf8.RuneCountInString(link), 1)) + link
	}
	fields := []slackText{
		{Type: "mrkdwn", Text: "*Cluster*\n" + slackEscape(ev.Cluster)},
		{Type: "mrkdwn", Text: "*Severity*\n" + string(ev.Severity)},
		{Type: "mrkdwn", Text: "*Status*\n" + string(ev.Status)},
		{Type: "mrkdwn", Text: "*Category*\n" + slackEscape(ev.Category)},
		{Type: "mrkdwn", Text: "*Incident*\n" + slackEscape(ev.IncidentID)},
	}
	for i := range fields {
		fields[i].Text = truncate(fields[i].Text, slackFieldMax)
	}
	return slackMessage{
		Text: truncate(text, slackSectionMax),
		Blocks: []slackBlock{
			{Type: "header", Text: &slackText{Type: "plain_text", Text: truncate(slackIcon[ev.Status]+" "+head, slackHeaderMax)}},
			{Type: "section", Text: &slackText{Type: "mrkdwn", Text: truncate(body, slackSectionMax)}, Fields: fields},
			{Type: "context", Elements: []slackText{{Type: "mrkdwn", Text: truncate(fmt.Sprintf("pgdr %s · opened %s · %s", slackEscape(ev.Source), ev.OpenedAt.UTC().Format(time.RFC3339), ev.when().UTC().Format(time.RFC3339)), slackFieldMax)}}},
		},
	}
}

// Request renders ev as a Slack message.
func (s *Slack) Request(ctx context.Context, ev Event) (*http.Request, error) {
	req, _, err := jsonRequest(ctx, s.url, slackPayload(ev))
	return req, err
}
