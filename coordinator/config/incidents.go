package config

import (
	"fmt"
	"time"

	"github.com/pgdr/pgdr/coordinator/incident"
	"github.com/pgdr/pgdr/coordinator/notify"
)

// Defaults of the incidents section.
const (
	DefaultAlertmanagerResend = time.Minute
	DefaultQuorumLostAfter    = 15 * time.Second
	DefaultIncidentInterval   = time.Second
)

// Incidents configures how the Raft leader escalates and notifies the
// incidents kept in the replicated state (coordinator/server/incidents.go).
// Every coordinator should carry the same section: whichever leads
// notifies. Channels' secrets come from files (notify.ChannelConfig).
type Incidents struct {
	Channels []notify.ChannelConfig `yaml:"channels"`
	// Escalation lists the levels: level 0 is notified when an incident
	// opens; an incident nobody acknowledged within a level's timeout is
	// escalated to the next. Left out with channels configured: one level
	// with every channel.
	Escalation []EscalationLevel `yaml:"escalation"`
	// AutoResolve resolves incidents of the listed categories whose
	// condition has stayed cleared for Hold (none by default).
	AutoResolve AutoResolve `yaml:"auto_resolve"`
	// AlertmanagerResend: how often an open incident is pushed again to
	// Alertmanager channels (alerts expire unless re-sent; default 1m).
	AlertmanagerResend Duration `yaml:"alertmanager_resend"`
	// QuorumLostAfter: a new leader that saw no leader for longer than
	// this records a quorum_lost incident with the duration (default 15s,
	// above an election's usual length).
	QuorumLostAfter Duration `yaml:"quorum_lost_after"`
	// Interval: how often the leader escalates and notifies (default 1s).
	Interval Duration `yaml:"interval"`
	// Link: the status page URL put in notifications (optional).
	Link string `yaml:"link"`
}

// EscalationLevel is one level of the escalation policy.
type EscalationLevel struct {
	Name     string   `yaml:"name"`
	Channels []string `yaml:"channels"`
	Timeout  Duration `yaml:"timeout"`
}

// AutoResolve is the auto-resolve policy.
type AutoResolve struct {
	Categories []string `yaml:"categories"`
	Hold       Duration `yaml:"hold"`
}

func (in *Incidents) defaults() {
	if in.AlertmanagerResend.Duration == 0 {
		in.AlertmanagerResend.Duration = DefaultAlertmanagerResend
	}
	if in.QuorumLostAfter.Duration == 0 {
		in.QuorumLostAfter.Duration = DefaultQuorumLostAfter
	}
	if in.Interval.Duration == 0 {
		in.Interval.Duration = DefaultIncidentInterval
	}
	if len(in.Escalation) == 0 && len(in.Channels) > 0 {
		l := EscalationLevel{Name: "default"}
		for _, c := range in.Channels {
			l.Channels = append(l.Channels, c.Name)
		}
		in.Escalation = []EscalationLevel{l}
	}
}

// WithDefaults returns a copy with the defaults applied (for a Config
// built without Parse).
func (in Incidents) WithDefaults() Incidents {
	in.defaults()
	return in
}

// Policy is the escalation policy the levels describe.
func (in *Incidents) Policy() incident.EscalationPolicy {
	var p incident.EscalationPolicy
	for _, l := range in.Escalation {
		p.Levels = append(p.Levels, incident.Level{Name: l.Name, Channels: append([]string(nil), l.Channels...), Timeout: l.Timeout.Duration})
	}
	return p
}

// AutoResolvePolicy is the auto-resolve policy.
func (in *Incidents) AutoResolvePolicy() incident.AutoResolvePolicy {
	p := incident.AutoResolvePolicy{Hold: in.AutoResolve.Hold.Duration}
	for _, c := range in.AutoResolve.Categories {
		p.Categories = append(p.Categories, incident.Category(c))
	}
	return p
}

func (in *Incidents) validate() error {
	if err := notify.Validate(notify.Config{Channels: in.Channels}); err != nil {
		return &FieldError{"incidents", err.Error()}
	}
	if len(in.Channels) > incident.MaxDeliveries {
		return &FieldError{"incidents.channels", fmt.Sprintf("%d channels, at most %d (the deliveries of one notification are recorded together)", len(in.Channels), incident.MaxDeliveries)}
	}
	names := map[string]bool{}
	for _, c := range in.Channels {
		names[c.Name] = true
	}
	seen := map[string]bool{}
	for i, l := range in.Escalation {
		f := fmt.Sprintf("incidents.escalation[%d]", i)
		if !nameRE.MatchString(l.Name) {
			return &FieldError{f + ".name", fmt.Sprintf("%q: want letters, digits, '.', '_' or '-'", l.Name)}
		}
		if seen[l.Name] {
			return &FieldError{f + ".name", fmt.Sprintf("%q is used twice", l.Name)}
		}
		seen[l.Name] = true
		if len(l.Channels) == 0 {
			return &FieldError{f + ".channels", "empty: the level would notify nobody"}
		}
		for j, c := range l.Channels {
			if !names[c] {
				return &FieldError{fmt.Sprintf("%s.channels[%d]", f, j), fmt.Sprintf("%q is not a channel of incidents.channels", c)}
			}
		}
		if i < len(in.Escalation)-1 && (l.Timeout.Duration < time.Second || l.Timeout.Duration > 7*24*time.Hour) {
			return &FieldError{f + ".timeout", fmt.Sprintf("%s is out of range 1s..168h (every level but the last needs one)", l.Timeout.Duration)}
		}
	}
	for i, c := range in.AutoResolve.Categories {
		if !incident.Category(c).Valid() {
			return &FieldError{fmt.Sprintf("incidents.auto_resolve.categories[%d]", i), fmt.Sprintf("%q is not an incident category", c)}
		}
	}
	if in.AutoResolve.Hold.Duration < 0 {
		return &FieldError{"incidents.auto_resolve.hold", "negative"}
	}
	for _, d := range []struct {
		f         string
		v, lo, hi time.Duration
	}{
		{"incidents.alertmanager_resend", in.AlertmanagerResend.Duration, time.Second, time.Hour},
		{"incidents.quorum_lost_after", in.QuorumLostAfter.Duration, time.Second, time.Hour},
		{"incidents.interval", in.Interval.Duration, 50 * time.Millisecond, time.Minute},
	} {
		if d.v < d.lo || d.v > d.hi {
			return &FieldError{d.f, fmt.Sprintf("%s is out of range %s..%s", d.v, d.lo, d.hi)}
		}
	}
	return nil
}
