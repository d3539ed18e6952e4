package divergence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/agent/pgctl"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/divergencesum"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// DefaultTimeout bounds Make: the rejoin waits for the report no longer
// (reading and storing a few GB of WAL fits; a report that does not is
// unknown, and the node's WAL is still in the data directory moved aside
// by a re-clone, or gone with a rewind).
const DefaultTimeout = divergencesum.ReportTimeout

// Input is what Make needs.
type Input struct {
	Cfg *config.Config
	// PG runs pg_controldata on the (stopped) data directory.
	PG  *pgctl.Controller
	Log *slog.Logger
	// Epoch is the rejoin order's, NewPrimary and DSN the node it rejoins.
	Epoch      uint64
	NewPrimary string
	DSN        string
	// Now is the clock (nil: time.Now); Timeout bounds Make (0:
	// DefaultTimeout); Resolver names relations (nil: DSNResolver(DSN)).
	Now      func() time.Time
	Timeout  time.Duration
	Resolver Resolver
}

// Make makes the divergence report of this node before a rejoin changes
// its data directory, stores it and returns it. It never fails: what it
// could not read makes the report unknown (Error says why), a failure to
// name relations or to store it is recorded in the report. It returns
// nil only when the node is on the new primary's timeline already (a
// rejoin tried again after pg_rewind rewound it): it diverged from
// nothing; or when it was a replica (pg_controldata: in recovery) whose
// WAL ends at or before the fork. A replica with WAL past the fork gets
// StatusReplica (or StatusReplicaUnknown): what it received, committed
// by the old primary, not by it.
func Make(ctx context.Context, in Input) *Report {
	now := time.Now
	if in.Now != nil {
		now = in.Now
	}
	log := in.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := in.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	created := now().UTC()
	r := &Report{ID: NewID(in.Cfg.Node.Name, created), Cluster: in.Cfg.Cluster, Node: in.Cfg.Node.Name, Created: created,
		Epoch: in.Epoch, NewPrimary: in.NewPrimary, Status: StatusUnknown, Transactions: []Transaction{}}
	pgdata := in.Cfg.Postgres.PGData
	pgwal := filepath.Join(pgdata, "pg_wal")
	if err := read(ctx, in, r, pgdata, pgwal); errors.Is(err, ErrSameTimeline) {
		log.Info("divergence report: none, this node is on the new primary's timeline", "timeline", r.Timeline)
		return nil
	} else if errors.Is(err, errReplicaBehind) {
		log.Info("divergence report: none, this node was a replica and its WAL ends at or before the fork", "fork", r.Fork, "err", err)
		return nil
	} else if err != nil {
		r.Error = err.Error()
		r.Segments = nil
		if r.Replica {
			r.Status = StatusReplicaUnknown
		}
		log.Warn("divergence report: this node's WAL past the fork point cannot be read; reported as unknown", "id", r.ID, "replica", r.Replica, "err", err)
	}
	if prev := reuse(ctx, in.Cfg, log, r); prev != nil {
		return prev
	}
	if err := Store(ctx, in.Cfg, log, r, pgwal); err != nil {
		r.StoreError = err.Error()
		log.Warn("divergence report: not stored in the repositories", "id", r.ID, "err", err)
	} else if r.StoreError == "" {
		remember(in.Cfg, log, r)
	}
	log.Info("divergence report", "id", r.ID, "status", r.Status, "fork", r.Fork, "end", r.End, "bytes", r.Bytes,
		"committed", r.Committed, "aborted", r.Aborted, "in_progress", r.InProgress, "stored", r.Stored)
	return r
}

// MaxNameTimeout bounds the relation name lookup.
const MaxNameTimeout = 30 * time.Second

// nameTimeout is the time the name lookup gets: a quarter of ctx's time
// left, at most MaxNameTimeout.
func nameTimeout(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return min(MaxNameTimeout, time.Until(dl)/4)
	}
	return MaxNameTimeout
}

// errReplicaBehind: the node was a replica whose WAL ends at or before
// the fork: it has nothing past it, no report.
var errReplicaBehind = errors.New("a replica behind the fork")

// read fills r from the data directory and the new primary.
func read(ctx context.Context, in Input, r *Report, pgdata, pgwal string) error {
	out, err := in.PG.Run(ctx, "pg_controldata", "-D", pgdata)
	if err != nil {
		return fmt.Errorf("this node's control data: %w", err)
	}
	tli, segSize, err := controlData(out)
	if err != nil {
		return err
	}
	r.Timeline, r.Replica = tli, wasReplica(out)
	conn, err := pgctl.Connect(ctx, in.DSN, "the new primary's DSN")
	if err != nil {
		return fmt.Errorf("connecting to the new primary %s for its timeline history: %w", in.NewPrimary, err)
	}
	newTLI, fork, err := Fork(ctx, conn, tli)
	conn.Close(context.WithoutCancel(ctx))
	r.NewTimeline = newTLI
	if err != nil {
		return err
	}
	r.Fork = fork.String()
	rng, err := Read(ctx, pgwal, tli, segSize, fork)
	if r.Replica {
		// A replica behind the fork (down during the failover) has
		// nothing past it: no report. One whose WAL cannot be read is
		// behind when its control data shows nothing past the fork.
		switch {
		case err == nil && rng.End <= fork:
			return fmt.Errorf("%w: its WAL ends at %s", errReplicaBehind, rng.End)
		case errors.Is(err, ErrNotReadable) && !pastFork(out, fork):
			return fmt.Errorf("%w: %w", errReplicaBehind, err)
		}
	}
	if err != nil {
		return err
	}
	res := in.Resolver
	if res == nil {
		res = DSNResolver(in.DSN)
	}
	// The names get their own, shorter time: a slow lookup must leave
	// the store its time.
	nctx, cancel := context.WithTimeout(ctx, nameTimeout(ctx))
	err = resolve(nctx, &rng, res)
	cancel()
	if err != nil {
		r.NameError = err.Error()
	}
	r.Status, r.End, r.EndReason, r.Bytes = StatusKnown, rng.End.String(), rng.EndReason, uint64(rng.End-rng.Fork)
	if r.Replica {
		r.Status = StatusReplica
	}
	r.Committed, r.Aborted, r.InProgress, r.Omitted = rng.Committed, rng.Aborted, rng.InProgress, rng.Omitted
	r.Transactions, r.Segments = rng.Transactions, rng.Segments
	if r.Transactions == nil {
		r.Transactions = []Transaction{}
	}
	return nil
}

// MaxSummaryTransactions bounds the transactions a summary lists (the
// coordinators keep summaries in their replicated history; the full list
// is in the repositories).
const MaxSummaryTransactions = 100

// Summary is r as the rejoin order returns it to the coordinator: the
// counts and the first MaxSummaryTransactions transactions, bounded by
// divergencesum.Bounded (texts clipped, transactions dropped to fit).
func Summary(r *Report) *pgdrv1.DivergenceSummary {
	if r == nil {
		return nil
	}
	s := &pgdrv1.DivergenceSummary{
		Id: r.ID, Status: r.Status, Error: r.Error, Timeline: r.Timeline, NewTimeline: r.NewTimeline,
		ForkLsn: r.Fork, EndLsn: r.End, Bytes: r.Bytes, Committed: uint64(r.Committed), Aborted: uint64(r.Aborted),
		InProgress: uint64(r.InProgress), Stored: r.Stored, StoreError: r.StoreError, NameError: r.NameError,
		Created: timestamppb.New(r.Created),
	}
	size := 0
	for _, tx := range r.Transactions[:min(len(r.Transactions), MaxSummaryTransactions)] {
		t := &pgdrv1.DivergentTransaction{Xid: tx.XID, CommitLsn: tx.LSN, CommitTime: timestamppb.New(tx.CommitTime)}
		for _, rel := range tx.Relations {
			t.Relations = append(t.Relations, &pgdrv1.DivergentRelation{
				Tablespace: rel.Tablespace, Database: rel.Database, Relfilenode: rel.RelFileNode, Oid: rel.OID,
				Name: rel.Name, DatabaseName: rel.DatabaseName, Inserts: rel.Inserts, Updates: rel.Updates, Deletes: rel.Deletes,
			})
		}
		if size += proto.Size(t); size > 2*divergencesum.MaxBytes {
			break // Bounded would drop it anyway
		}
		s.Transactions = append(s.Transactions, t)
	}
	b, _, err := divergencesum.Bounded(s)
	if err != nil { // not even the counts fit: the texts are clipped, so never
		return &pgdrv1.DivergenceSummary{Id: divergencesum.Clip(r.ID, 200), Status: StatusUnknown, Created: s.Created,
			Error: "the divergence summary does not fit: " + divergencesum.Clip(err.Error(), divergencesum.MaxText)}
	}
	return b
}

// Guarded runs report (Make then Summary, as a rejoin does) and turns a
// panic in it into an unknown summary saying so: a bug in the report must
// never take the agent down in the middle of a rejoin.
func Guarded(log *slog.Logger, node string, now func() time.Time, report func() *pgdrv1.DivergenceSummary) (s *pgdrv1.DivergenceSummary) {
	if now == nil {
		now = time.Now
	}
	defer func() {
		if p := recover(); p != nil {
			created := now().UTC()
			s = &pgdrv1.DivergenceSummary{Id: NewID(node, created), Status: StatusUnknown,
				Error: fmt.Sprintf("the divergence report failed: panic: %v", p), Created: timestamppb.New(created)}
			if log != nil {
				log.Error("divergence report: panicked; reported as unknown", "id", s.Id, "panic", p, "stack", string(debug.Stack()))
			}
		}
	}()
	return report()
}

// lastFile, in the agent's state directory, says which report this node
// stored last and of what range: a rejoin tried again finds the same
// range and reuses that report instead of storing it again under a new
// id.
const lastFile = "divergence-last.json"

// lastReport is what lastFile holds.
type lastReport struct {
	ID          string `json:"id"`
	Status      string `json:"status"`
	Timeline    uint32 `json:"timeline"`
	NewTimeline uint32 `json:"new_timeline"`
	Fork        string `json:"fork_lsn"`
	End         string `json:"end_lsn"`
}

func lastOf(r *Report) lastReport {
	return lastReport{ID: r.ID, Status: r.Status, Timeline: r.Timeline, NewTimeline: r.NewTimeline, Fork: r.Fork, End: r.End}
}

// reuse returns the report this node stored last when it covers the same
// range as r (read, not unknown), read back from the repositories; nil
// otherwise (no state directory, another range, not readable back).
func reuse(ctx context.Context, cfg *config.Config, log *slog.Logger, r *Report) *Report {
	if cfg.Agent.StateDir == "" || r.Error != "" || (r.Status != StatusKnown && r.Status != StatusReplica) {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(cfg.Agent.StateDir, lastFile))
	if err != nil {
		return nil
	}
	var last lastReport
	if json.Unmarshal(b, &last) != nil || CheckID(last.ID) != nil {
		return nil
	}
	want := lastOf(r)
	want.ID = last.ID
	if last != want {
		return nil
	}
	prev, err := Load(ctx, cfg, last.ID)
	if err != nil || prev.Node != r.Node || prev.Cluster != r.Cluster {
		log.Info("divergence report: the last one of the same range cannot be reused; storing a new one", "last", last.ID, "err", err)
		return nil
	}
	prev.Stored, prev.StoreError = true, ""
	log.Info("divergence report: the same range as the one stored last (a rejoin tried again): reused", "id", prev.ID, "fork", prev.Fork, "end", prev.End)
	return prev
}

// remember records r as the report this node stored last (best effort:
// without it a retry stores a new report).
func remember(cfg *config.Config, log *slog.Logger, r *Report) {
	if cfg.Agent.StateDir == "" {
		return
	}
	b, err := json.Marshal(lastOf(r))
	if err == nil {
		err = writeFileAtomic(filepath.Join(cfg.Agent.StateDir, lastFile), b)
	}
	if err != nil {
		log.Warn("divergence report: not remembered in the state directory (a retry stores a new one)", "id", r.ID, "err", err)
	}
}

// writeFileAtomic writes b to path through a temporary file and a rename.
func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
