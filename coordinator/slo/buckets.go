package slo

import (
	"time"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Window is how far back the availability is kept and measured.
const Window = 28 * 24 * time.Hour

// Buckets is how many hourly buckets a cluster keeps (672 for 28 days).
const Buckets = int(Window / time.Hour)

const hourSeconds = int64(time.Hour / time.Second)

// DefaultTarget is the write-availability target of a cluster that sets
// none (the original design's 99.99%).
const DefaultTarget = 0.9999

// Batch is one cluster's judged seconds in one batch: good and bad
// seconds judged from First (Unix seconds) on, all within one hour.
type Batch struct {
	Good, Bad uint32
	First     int64
	// RunSince (0: not known): heartbeats were committed without a whole
	// second missing from this second up to First, as the writer itself
	// saw them (HealthReport.heartbeat_run_ms).
	RunSince int64
}

// Apply adds one batch, covering [from, to) in Unix seconds, to ws (nil:
// a cluster judged for the first time) and returns it. Seconds between
// the recorded through_unix and the batch's first judged second were
// judged by no leader: those from RunSince on are good (the writer saw
// its heartbeats committed without a whole second missing), the others
// bad and unobserved (at most the window's worth); a batch overlapping
// the recorded seconds counts at most the seconds after them. The buckets are then trimmed to the window ending at
// the newest hour. A batch wholly before through_unix (a deposed
// leader's batch committed late) changes nothing.
func Apply(ws *pgdrv1.WriteSeconds, from, to int64, b Batch) *pgdrv1.WriteSeconds {
	if ws == nil {
		ws = &pgdrv1.WriteSeconds{}
	}
	if to <= from || to <= ws.GetThroughUnix() {
		return ws
	}
	first := max(b.First, from)
	if t := ws.GetThroughUnix(); t > 0 && first > t {
		gapFrom := max(t, first-int64(Window/time.Second))
		goodFrom := first
		if b.RunSince > 0 {
			goodFrom = min(max(b.RunSince, gapFrom), first)
		}
		for s := gapFrom; s < first; {
			end := min((s/hourSeconds+1)*hourSeconds, first)
			if s < goodFrom {
				end = min(end, goodFrom)
				n := uint32(end - s)
				add(ws, s/hourSeconds, 0, n, n)
			} else {
				add(ws, s/hourSeconds, uint32(end-s), 0, 0)
			}
			s = end
		}
	}
	good, bad := b.Good, b.Bad
	if t := ws.GetThroughUnix(); first < t {
		// The batch overlaps the recorded seconds (the previous leader's
		// last batch ended early, at a stalled tick, and this leader,
		// its clock behind, judged from before that end): only the
		// seconds after through_unix are new. Which of the batch's seconds fell there is not known; the
		// bad ones are kept first, so availability is never overstated.
		n := uint32(to - t)
		bad = min(bad, n)
		good = min(good, n-bad)
	}
	add(ws, from/hourSeconds, good, bad, 0)
	ws.ThroughUnix = to
	trim(ws, (to-1)/hourSeconds)
	return ws
}

// add counts seconds into the bucket of hour (created, with empty ones
// between, as needed; an hour before the oldest bucket is dropped).
func add(ws *pgdrv1.WriteSeconds, hour int64, good, bad, unobserved uint32) {
	ws.GoodTotal += uint64(good)
	ws.BadTotal += uint64(bad)
	ws.UnobservedTotal += uint64(unobserved)
	if len(ws.Good) == 0 {
		ws.FirstHour = hour
	}
	if hour < ws.FirstHour {
		return
	}
	i := int(hour - ws.FirstHour)
	if i >= len(ws.Good)+Buckets {
		// Far ahead of every bucket: start over at hour.
		ws.Good, ws.Bad, ws.Unobserved, ws.FirstHour, i = nil, nil, nil, hour, 0
	}
	for len(ws.Good) <= i {
		ws.Good = append(ws.Good, 0)
		ws.Bad = append(ws.Bad, 0)
		ws.Unobserved = append(ws.Unobserved, 0)
	}
	ws.Good[i] += good
	ws.Bad[i] += bad
	ws.Unobserved[i] += unobserved
}

// trim drops the buckets older than the window ending with hour newest.
func trim(ws *pgdrv1.WriteSeconds, newest int64) {
	oldest := newest - int64(Buckets) + 1
	if drop := oldest - ws.FirstHour; drop > 0 {
		d := min(int(drop), len(ws.Good))
		ws.Good, ws.Bad, ws.Unobserved = ws.Good[d:], ws.Bad[d:], ws.Unobserved[d:]
		ws.FirstHour = oldest
		if len(ws.Good) == 0 {
			ws.Good, ws.Bad, ws.Unobserved = nil, nil, nil
		}
	}
}

// Sums are the judged seconds within the window.
type Sums struct {
	Good, Bad, Unobserved uint64
}

// Sum adds up the buckets of the window ending with the hour of now.
func Sum(ws *pgdrv1.WriteSeconds, now time.Time) Sums {
	var s Sums
	oldest := now.Unix()/hourSeconds - int64(Buckets) + 1
	for i := range ws.GetGood() {
		if ws.GetFirstHour()+int64(i) < oldest {
			continue
		}
		s.Good += uint64(ws.Good[i])
		s.Bad += uint64(ws.Bad[i])
		if i < len(ws.GetUnobserved()) {
			s.Unobserved += uint64(ws.Unobserved[i])
		}
	}
	return s
}

// Budget is the availability over the window and the error budget left
// against target. ratio = good / (good + bad) (1 with nothing judged).
// The budget is time over the whole window, as the SLO is stated:
// (1 - target) * 28 days may be bad (242 s at 99.99%), and remaining =
// 1 - bad / that: 1 untouched, 0 spent, negative once overspent. A young
// cluster is not held to a budget scaled down to the hours it has been
// judged; the burn-rate alerts watch how fast it is spent.
func Budget(s Sums, target float64) (ratio, remaining float64) {
	ratio = 1
	if total := float64(s.Good + s.Bad); total > 0 {
		ratio = float64(s.Good) / total
	}
	allowed := (1 - target) * Window.Seconds()
	if allowed <= 0 {
		if s.Bad == 0 {
			return ratio, 1
		}
		return ratio, -float64(s.Bad)
	}
	return ratio, 1 - float64(s.Bad)/allowed
}
