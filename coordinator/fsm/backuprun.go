package fsm

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/policy"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Bounds of the backup run records, which sit in every snapshot.
const (
	// MaxBackupRuns is how many runs a cluster keeps; the oldest go first,
	// but never one in flight, the newest run of a tier of the cluster's
	// policy (the scheduler counts the tier's slots from it) or the newest
	// successful full (what a diff or incr is based on).
	MaxBackupRuns = 200
	// MaxBackupRunText bounds a run's reason and error (cut, not refused:
	// a long agent error still ends its run).
	MaxBackupRunText = 2048
	maxBackupRunID   = 64
)

// Backup run results and steps (coordinator/schedule names the same).
const (
	RunOK         = "ok"
	RunFailed     = "failed"
	RunCancelled  = "cancelled"
	RunTimeout    = "timeout"
	RunSkipped    = "skipped"
	RunNotStarted = "not_started"
	StepSent      = "sent"
	StepAccepted  = "accepted"
	// StepCancel: the leader sent a cancel order; the run cleans up, in
	// flight, with the result to record when it ends.
	StepCancel = "cancel"
)

// applyRecordBackupRun records one phase of a backup run: a new run
// (intent, or a skipped slot), a step, or its result. An intent is
// refused while another run of the cluster is in flight, so that two
// backups of a cluster never run at once whatever two leaders decided; a
// result is refused for a run that already has one (a late agent answer
// after the leader recorded a timeout). Times are the command's.
func applyRecordBackupRun(st *pgdrv1.State, c *pgdrv1.Command, p *pgdrv1.RecordBackupRun, index uint64) error {
	cl, err := findCluster(st, p.GetCluster())
	if err != nil {
		return fmt.Errorf("record backup run: %w", err)
	}
	switch ph := p.GetPhase().(type) {
	case *pgdrv1.RecordBackupRun_Intent:
		run, err := checkIntent(cl, ph.Intent)
		if err != nil {
			return fmt.Errorf("record backup run in cluster %q: %w", cl.GetName(), err)
		}
		run.StartedAt, run.RequestedBy = cmdTime(c), clip(c.GetActor(), MaxBackupRunText)
		if run.GetResult() == RunSkipped {
			run.FinishedAt = cmdTime(c)
		}
		cl.BackupRuns = append(cl.BackupRuns, run)
		compactBackupRuns(cl)
		return nil
	case *pgdrv1.RecordBackupRun_Step:
		run, err := runInFlight(cl, ph.Step.GetId())
		if err != nil {
			return err
		}
		switch ph.Step.GetStep() {
		case StepSent:
			if run.SentAt == nil {
				run.SentAt = cmdTime(c)
			}
		case StepAccepted:
			if run.AcceptedAt == nil {
				run.AcceptedAt = cmdTime(c)
			}
		case StepCancel:
			switch ph.Step.GetResult() {
			case RunTimeout, RunCancelled:
			default:
				return fmt.Errorf("backup run %s: cancel result %q: want timeout or cancelled", run.GetId(), clip(ph.Step.GetResult(), 64))
			}
			if run.CancelAt == nil {
				run.CancelAt, run.CancelResult, run.CancelNote = cmdTime(c), ph.Step.GetResult(), clip(ph.Step.GetNote(), MaxBackupRunText)
			}
		default:
			return fmt.Errorf("backup run %s: unknown step %q (want sent, accepted or cancel)", run.GetId(), clip(ph.Step.GetStep(), 64))
		}
		return nil
	case *pgdrv1.RecordBackupRun_Result:
		r := ph.Result
		switch r.GetResult() {
		case RunOK, RunFailed, RunCancelled, RunTimeout, RunNotStarted:
		default:
			return fmt.Errorf("backup run %s: result %q: want ok, failed, cancelled, timeout or not_started", clip(r.GetId(), 64), clip(r.GetResult(), 64))
		}
		switch r.GetType() {
		case "", policy.TypeFull, policy.TypeDiff, policy.TypeIncr:
		default:
			return fmt.Errorf("backup run %s: type %q: want full, diff or incr", clip(r.GetId(), 64), clip(r.GetType(), 64))
		}
		run, err := runInFlight(cl, r.GetId())
		if err != nil {
			return err
		}
		if r.GetType() != "" {
			run.Type = r.GetType() // what the agent took (a full when an incr had no parent)
		}
		if e := r.GetExpiry(); e != nil {
			run.Expiry = &pgdrv1.BackupExpiry{BackupsDeleted: e.GetBackupsDeleted(), WalDeleted: e.GetWalDeleted(),
				ObjectsDeleted: e.GetObjectsDeleted(), Error: clip(e.GetError(), MaxBackupRunText)}
		}
		run.Result, run.Error = r.GetResult(), clip(r.GetError(), MaxBackupRunText)
		run.SizeBytes, run.StoredBytes, run.BackupId = r.GetSizeBytes(), r.GetStoredBytes(), clip(r.GetBackupId(), 256)
		run.FinishedAt = cmdTime(c)
		countBackupRun(st, cl, run)
		observeRun(st, c, index, cl.GetName(), "backup of tier "+run.GetTier(), "backup:"+cl.GetName()+":"+run.GetTier(), run.GetResult(), run.GetError())
		return nil
	}
	return fmt.Errorf("record backup run in cluster %q: no phase", cl.GetName())
}

// checkIntent validates a new run and returns the copy to store.
func checkIntent(cl *pgdrv1.Cluster, in *pgdrv1.BackupRun) (*pgdrv1.BackupRun, error) {
	id := in.GetId()
	if !validRunID(id) {
		return nil, fmt.Errorf("run id %q: want 1 to %d letters, digits or '-'", clip(id, 80), maxBackupRunID)
	}
	for _, r := range cl.GetBackupRuns() {
		if r.GetId() == id {
			return nil, fmt.Errorf("run id %s is already recorded", id)
		}
		if r.GetResult() == "" {
			return nil, fmt.Errorf("run %s of tier %s on %s is in flight: never two backups of a cluster at once",
				r.GetId(), r.GetTier(), r.GetNode())
		}
	}
	if !ValidName(in.GetTier()) {
		return nil, fmt.Errorf("tier %q is not a valid name", clip(in.GetTier(), 80))
	}
	switch in.GetType() {
	case policy.TypeFull, policy.TypeDiff, policy.TypeIncr:
	default:
		return nil, fmt.Errorf("type %q: want full, diff or incr", clip(in.GetType(), 80))
	}
	switch in.GetResult() {
	case "":
		if _, ok := cl.GetMembers()[in.GetNode()]; !ok {
			return nil, fmt.Errorf("node %q is not a member", clip(in.GetNode(), 80))
		}
	case RunSkipped:
		if in.GetNode() != "" {
			return nil, fmt.Errorf("a skipped slot names no node (got %q)", clip(in.GetNode(), 80))
		}
	default:
		return nil, fmt.Errorf("an intent has no result, or %q (got %q)", RunSkipped, clip(in.GetResult(), 80))
	}
	if t := in.GetTimeoutMs(); t <= 0 || t > policy.MaxTimeout.Milliseconds() {
		return nil, fmt.Errorf("timeout_ms %d is out of range", t)
	}
	if len(in.GetRepositories()) > policy.MaxRepos {
		return nil, fmt.Errorf("%d repositories, at most %d", len(in.GetRepositories()), policy.MaxRepos)
	}
	for _, r := range in.GetRepositories() {
		if !ValidName(r) {
			return nil, fmt.Errorf("repository %q is not a valid name", clip(r, 80))
		}
	}
	return &pgdrv1.BackupRun{
		Id: id, Tier: in.GetTier(), Type: in.GetType(), Node: in.GetNode(), Slot: copyTime(in.GetSlot()),
		Missed: in.GetMissed(), TimeoutMs: in.GetTimeoutMs(), Repositories: slices.Clone(in.GetRepositories()),
		Reason: clip(in.GetReason(), MaxBackupRunText), Result: in.GetResult(), Error: clip(in.GetError(), MaxBackupRunText),
	}, nil
}

// runInFlight is the cluster's run id, which must have no result yet.
func runInFlight(cl *pgdrv1.Cluster, id string) (*pgdrv1.BackupRun, error) {
	return inFlight(cl.GetBackupRuns(), "backup run", id, cl.GetName())
}

// compactBackupRuns drops the oldest runs beyond MaxBackupRuns, keeping
// the ones the scheduler needs (see MaxBackupRuns). It depends on nothing
// but the state, so every coordinator drops the same runs.
func compactBackupRuns(cl *pgdrv1.Cluster) {
	runs := cl.BackupRuns
	if len(runs) <= MaxBackupRuns {
		return
	}
	keep := make([]bool, len(runs))
	p, _ := policy.Effective(cl)
	newest := map[string]int{}
	full := -1
	for i, r := range runs {
		if r.GetResult() == "" {
			keep[i] = true
		}
		if _, ok := p.TierByName(r.GetTier()); ok && r.GetResult() != "" && r.GetResult() != RunNotStarted {
			newest[r.GetTier()] = i // the scheduler counts the tier's slots from it (one in flight is kept anyway)
		}
		if r.GetType() == policy.TypeFull && r.GetResult() == RunOK {
			full = i
		}
	}
	for _, i := range newest {
		keep[i] = true
	}
	if full >= 0 {
		keep[full] = true
	}
	cl.BackupRuns = dropOldest(runs, keep, MaxBackupRuns)
}

func validRunID(s string) bool {
	if s == "" || len(s) > maxBackupRunID {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-') {
			return false
		}
	}
	return true
}

// clip cuts s to at most n bytes of valid UTF-8, marking the cut; the same
// on every coordinator.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = " …[cut]"
	return strings.ToValidUTF8(s[:max(0, n-len(mark))], "") + mark
}

func copyTime(t *timestamppb.Timestamp) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return &timestamppb.Timestamp{Seconds: t.GetSeconds(), Nanos: t.GetNanos()}
}
