package fsm

import (
	"fmt"
	"time"

	"github.com/pgdr/pgdr/coordinator/policy"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Bounds of the drill run records, which sit in every snapshot.
const (
	// MaxDrillRuns is how many drills a cluster keeps; the oldest go
	// first, but never the one in flight, the newest ok one (the last
	// success the metrics and the report show) or the newest failed one.
	MaxDrillRuns = 100
	// The SQL checks an intent carries are bounded as a policy's
	// (policy.CheckDrillChecks).
)

// applyRecordDrillRun records one phase of a restore drill: a new run
// (refused while another drill of the cluster is in flight: never two
// drills of a cluster at once), a step, or its result (refused for a run
// that already has one). Times are the command's.
func applyRecordDrillRun(st *pgdrv1.State, c *pgdrv1.Command, p *pgdrv1.RecordDrillRun, index uint64) error {
	cl, err := findCluster(st, p.GetCluster())
	if err != nil {
		return fmt.Errorf("record drill run: %w", err)
	}
	switch ph := p.GetPhase().(type) {
	case *pgdrv1.RecordDrillRun_Intent:
		run, err := checkDrillIntent(cl, ph.Intent)
		if err != nil {
			return fmt.Errorf("record drill run in cluster %q: %w", cl.GetName(), err)
		}
		run.StartedAt, run.RequestedBy = cmdTime(c), clip(c.GetActor(), MaxBackupRunText)
		cl.DrillRuns = append(cl.DrillRuns, run)
		compactDrillRuns(cl)
		return nil
	case *pgdrv1.RecordDrillRun_Step:
		run, err := drillInFlight(cl, ph.Step.GetId())
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
		default:
			return fmt.Errorf("drill run %s: unknown step %q (want sent or accepted)", run.GetId(), clip(ph.Step.GetStep(), 64))
		}
		return nil
	case *pgdrv1.RecordDrillRun_Result:
		r := ph.Result
		switch r.GetResult() {
		case RunOK, RunFailed, RunCancelled, RunTimeout, RunNotStarted:
		default:
			return fmt.Errorf("drill run %s: result %q: want ok, failed, cancelled, timeout or not_started", clip(r.GetId(), 64), clip(r.GetResult(), 64))
		}
		run, err := drillInFlight(cl, r.GetId())
		if err != nil {
			return err
		}
		run.Result, run.Error, run.FinishedAt = r.GetResult(), clip(r.GetError(), MaxBackupRunText), cmdTime(c)
		if rep := r.GetReport(); rep != nil {
			run.Report = boundedDrillReport(rep)
		}
		observeRun(st, c, index, cl.GetName(), "restore drill", "drill:"+cl.GetName(), run.GetResult(), run.GetError())
		return nil
	}
	return fmt.Errorf("record drill run in cluster %q: no phase", cl.GetName())
}

// boundedDrillReport is the copy of rep to store, its texts clipped.
func boundedDrillReport(rep *pgdrv1.DrillReport) *pgdrv1.DrillReport {
	out := &pgdrv1.DrillReport{RunId: clip(rep.GetRunId(), maxBackupRunID), Ok: rep.GetOk(),
		Reason: clip(rep.GetReason(), MaxBackupRunText), Backup: clip(rep.GetBackup(), 256), Target: clip(rep.GetTarget(), 64),
		RpoSeconds: rep.GetRpoSeconds(), AmcheckOk: rep.GetAmcheckOk(), AmcheckRun: rep.GetAmcheckRun(),
		ChecksPassed: rep.GetChecksPassed(), ChecksFailed: rep.GetChecksFailed(), NotStarted: rep.GetNotStarted(),
		RecoveryLsn: clip(rep.GetRecoveryLsn(), 64), Bytes: rep.GetBytes()}
	if t := rep.GetTimings(); t != nil {
		out.Timings = &pgdrv1.DrillTimings{FetchWrite: t.GetFetchWrite(), Replay: t.GetReplay(), Checks: t.GetChecks(), Total: t.GetTotal()}
	}
	return out
}

// checkDrillIntent validates a new drill and returns the copy to store.
func checkDrillIntent(cl *pgdrv1.Cluster, in *pgdrv1.DrillRun) (*pgdrv1.DrillRun, error) {
	id := in.GetId()
	if !validRunID(id) {
		return nil, fmt.Errorf("drill id %q: want 1 to %d letters, digits or '-'", clip(id, 80), maxBackupRunID)
	}
	for _, r := range cl.GetDrillRuns() {
		if r.GetId() == id {
			return nil, fmt.Errorf("drill id %s is already recorded", id)
		}
		if r.GetResult() == "" {
			return nil, fmt.Errorf("drill %s on %s is in flight: never two drills of a cluster at once", r.GetId(), r.GetNode())
		}
	}
	if _, ok := cl.GetMembers()[in.GetNode()]; !ok {
		return nil, fmt.Errorf("node %q is not a member", clip(in.GetNode(), 80))
	}
	if in.GetTier() != "" && !ValidName(in.GetTier()) {
		return nil, fmt.Errorf("tier %q is not a valid name", clip(in.GetTier(), 80))
	}
	if in.GetTier() != "" && in.GetBackupId() != "" {
		return nil, fmt.Errorf("tier %s and backup %s: name one, not both", in.GetTier(), clip(in.GetBackupId(), 80))
	}
	if a := in.GetTargetAfterBackupMs(); a < 0 || a > policy.MaxTargetAfterBackup.Milliseconds() || a > 0 && in.GetTargetTime() != nil {
		return nil, fmt.Errorf("target_after_backup_ms %d: out of range, or given with a target time", a)
	}
	if len(in.GetScratch()) > 1024 {
		return nil, fmt.Errorf("scratch of %d bytes, at most 1024", len(in.GetScratch()))
	}
	if len(in.GetBackupId()) > 256 {
		return nil, fmt.Errorf("backup id of %d bytes, at most 256", len(in.GetBackupId()))
	}
	if t := in.GetTimeoutMs(); t <= 0 || t > maxDrillTimeout.Milliseconds() {
		return nil, fmt.Errorf("timeout_ms %d is out of range", t)
	}
	if err := policy.CheckDrillChecks(policy.DrillChecksFromProto(in.GetChecks())); err != nil {
		return nil, err
	}
	out := &pgdrv1.DrillRun{Id: id, Node: in.GetNode(), Tier: in.GetTier(), BackupId: in.GetBackupId(),
		TargetTime: copyTime(in.GetTargetTime()), TimeoutMs: in.GetTimeoutMs(), Reason: clip(in.GetReason(), MaxBackupRunText),
		Slot: copyTime(in.GetSlot()), Scratch: in.GetScratch(), TargetAfterBackupMs: in.GetTargetAfterBackupMs()}
	for _, ch := range in.GetChecks() {
		out.Checks = append(out.Checks, &pgdrv1.DrillCheck{Name: ch.GetName(), Database: ch.GetDatabase(), Sql: ch.GetSql(), Expect: ch.GetExpect()})
	}
	return out, nil
}

// maxDrillTimeout bounds a drill's timeout (a day).
const maxDrillTimeout = 24 * time.Hour

// drillInFlight is the cluster's drill id, which must have no result yet.
func drillInFlight(cl *pgdrv1.Cluster, id string) (*pgdrv1.DrillRun, error) {
	return inFlight(cl.GetDrillRuns(), "drill run", id, cl.GetName())
}

// runRecord is what inFlight needs of a backup or drill run.
type runRecord interface {
	GetId() string
	GetResult() string
}

// inFlight is the run id of runs (what names kind), which must have no
// result yet.
func inFlight[T runRecord](runs []T, kind, id, cluster string) (T, error) {
	var none T
	for _, r := range runs {
		if r.GetId() != id {
			continue
		}
		if r.GetResult() != "" {
			return none, fmt.Errorf("%s %s already ended: %s", kind, id, r.GetResult())
		}
		return r, nil
	}
	return none, fmt.Errorf("%s %q is not recorded in cluster %q", kind, clip(id, 80), cluster)
}

// compactDrillRuns drops the oldest drills beyond MaxDrillRuns, keeping
// the one in flight and the newest ok and failed ones. It depends on
// nothing but the state, so every coordinator drops the same runs.
func compactDrillRuns(cl *pgdrv1.Cluster) {
	runs := cl.DrillRuns
	if len(runs) <= MaxDrillRuns {
		return
	}
	keep := make([]bool, len(runs))
	newest := map[string]int{}
	for i, r := range runs {
		if r.GetResult() == "" {
			keep[i] = true
		}
		newest[r.GetResult()] = i
	}
	for _, res := range []string{RunOK, RunFailed} {
		if i, ok := newest[res]; ok {
			keep[i] = true
		}
	}
	cl.DrillRuns = dropOldest(runs, keep, MaxDrillRuns)
}

// dropOldest drops the oldest of runs not marked keep until at most
// limit are left (fewer kept ones permitting), in place.
func dropOldest[T any](runs []T, keep []bool, limit int) []T {
	drop := len(runs) - limit
	out := runs[:0]
	for i, r := range runs {
		if drop > 0 && !keep[i] {
			drop--
			continue
		}
		out = append(out, r)
	}
	clear(runs[len(out):])
	return out
}
