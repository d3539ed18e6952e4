package compliance

import (
	"strings"
	"time"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// History kinds of a breach's start and end, recorded by the leader (and
// sent through the webhooks like every history event).
const (
	KindBreached = "target-breached"
	KindRestored = "target-restored"
)

// Details of the events this package reads or writes.
const (
	DetailTarget     = "target"
	DetailSubject    = "subject"
	DetailDetectedAt = "detected_at" // intent: the primary first seen down
	DetailWritableAt = "writable_at" // result: the new primary confirmed promoted
	DetailDurationMS = "duration_ms" // result: writable_at - detected_at (or the request)
	DetailOldPrimary = "old_primary"
)

// Recovery is one failover or switchover read from history.
type Recovery struct {
	Kind       string // failover, manual-failover or switchover
	Node       string
	OldPrimary string
	Epoch      uint64
	Started    time.Time
	Writable   time.Time
	// Measured: Started and Writable are both known (Duration valid).
	Measured bool
	Duration time.Duration
	OK       bool
	Result   string
}

// family is the recovery kind of a history kind and its role in it
// ("intent", "step", "result"), or "" for other events.
func family(kind string) (fam, role string) {
	for _, f := range []string{"manual-failover", "failover", "switchover"} {
		if rest, ok := strings.CutPrefix(kind, f+"-"); ok {
			switch rest {
			case "intent", "step", "result":
				return f, rest
			}
		}
	}
	return "", ""
}

// Relevant reports whether events of kind are read by this package
// (Recoveries, OpenFromHistory): a caller may copy only those.
func Relevant(kind string) bool {
	fam, _ := family(kind)
	return fam != "" || kind == KindBreached || kind == KindRestored
}

// ParseTime reads a detail written by FormatTime.
func ParseTime(s string) (time.Time, bool) {
	t, err := time.Parse(time.RFC3339Nano, s)
	return t, err == nil && s != ""
}

// FormatTime is how times are written into event details.
func FormatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// Recoveries reads the failovers and switchovers of events (oldest first,
// one cluster's) that have a result, oldest first. A recovery starts at
// its intent's detected_at detail (a failover: when the leader first saw
// the primary down) or else the intent's time (a switchover: the
// request); it is writable at its result's writable_at detail or else,
// for records made before that detail existed, the time of its step that
// confirmed the promotion, or else the result's time (an upper bound).
func Recoveries(events []*pgdrv1.HistoryEvent) []Recovery {
	var out []Recovery
	open := map[string]*Recovery{}
	promotedAt := map[string]time.Time{}
	for _, ev := range events {
		fam, role := family(ev.GetKind())
		if fam == "" || ev.GetTime() == nil {
			continue
		}
		at := ev.GetTime().AsTime()
		switch role {
		case "intent":
			r := &Recovery{Kind: fam, Node: ev.GetNode(), OldPrimary: ev.GetDetails()[DetailOldPrimary], Started: at}
			if t, ok := ParseTime(ev.GetDetails()[DetailDetectedAt]); ok && t.Before(at) {
				r.Started = t
			}
			open[fam] = r
			delete(promotedAt, fam)
		case "step":
			if r := open[fam]; r != nil && ev.GetNode() == r.Node && strings.Contains(ev.GetMessage(), "promoted") {
				if _, ok := promotedAt[fam]; !ok {
					promotedAt[fam] = at
				}
			}
		case "result":
			r := open[fam]
			if r == nil { // its intent left the bounded history
				continue
			}
			delete(open, fam)
			r.Epoch, r.Result = ev.GetEpoch(), ev.GetMessage()
			r.OK = strings.HasPrefix(ev.GetMessage(), "done")
			if r.OK {
				r.Writable = at
				if t, ok := promotedAt[fam]; ok {
					r.Writable = t
				}
				if t, ok := ParseTime(ev.GetDetails()[DetailWritableAt]); ok {
					r.Writable = t
				}
				if !r.Writable.Before(r.Started) {
					r.Measured, r.Duration = true, r.Writable.Sub(r.Started)
				}
			}
			out = append(out, *r)
		}
	}
	return out
}

// LastRecovery is the newest measured successful recovery of rs as a
// Duration (Recorded false when there is none).
func LastRecovery(rs []Recovery) Duration {
	for i := len(rs) - 1; i >= 0; i-- {
		if r := rs[i]; r.OK && r.Measured {
			src := SourceFailover
			if r.Kind == SourceSwitchover {
				src = SourceSwitchover
			}
			return Duration{Recorded: true, Source: src, Seconds: r.Duration.Seconds(), At: r.Writable}
		}
	}
	return Duration{}
}

// OpenFromHistory rebuilds the open breaches from the breach events of
// events (oldest first): a new leader starts from what the previous one
// announced, so that it neither announces them again nor misses their
// end. Bounded by MaxOpen.
func OpenFromHistory(events []*pgdrv1.HistoryEvent) map[string]OpenBreach {
	out := map[string]OpenBreach{}
	for _, ev := range events {
		d := ev.GetDetails()
		b := Breach{Target: d[DetailTarget], Subject: d[DetailSubject], Message: ev.GetMessage()}
		if b.Target == "" {
			continue
		}
		switch ev.GetKind() {
		case KindBreached:
			if len(out) < MaxOpen || out[b.Key()].Target != "" {
				out[b.Key()] = OpenBreach{Breach: b, Since: ev.GetTime().AsTime()}
			}
		case KindRestored:
			delete(out, b.Key())
		}
	}
	return out
}
