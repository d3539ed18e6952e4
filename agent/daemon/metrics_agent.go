package daemon

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/agent/backuprun"
	"github.com/pgdr/pgdr/agent/drill"
	"github.com/pgdr/pgdr/agent/drillrun"
	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/agent/repostat"
	"github.com/pgdr/pgdr/pkg/repo"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// workMetrics are the series recorded where the work happens: WAL pushes
// and fetches per repository, lease renewals, the backups, restores and
// drills this daemon runs.
type workMetrics struct {
	walPush, walFetch         *prometheus.HistogramVec
	walPushFail, walFetchFail *prometheus.CounterVec
	renewalFailures           prometheus.Counter
	backupDuration            *prometheus.HistogramVec
	backupBytes, backups      *prometheus.CounterVec
	restoreDuration           *prometheus.HistogramVec
	restoreBytes, drills      *prometheus.CounterVec
}

// walBuckets: a WAL file's push or fetch, from a few milliseconds (a
// local file repository) to a slow object store.
var walBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// longBuckets: backups and restores, seconds to hours.
var longBuckets = []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800}

func newWorkMetrics(reg prometheus.Registerer) *workMetrics {
	w := &workMetrics{
		walPush: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "pgdr_agent_wal_push_duration_seconds", Help: "Time to compress, encrypt and store one WAL file in one repository.", Buckets: walBuckets,
		}, []string{"repository"}),
		walPushFail: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgdr_agent_wal_push_failures_total", Help: "WAL files whose push to the repository failed.",
		}, []string{"repository"}),
		walFetch: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "pgdr_agent_wal_fetch_duration_seconds", Help: "Time to fetch, check and decompress one WAL file from one repository.", Buckets: walBuckets,
		}, []string{"repository"}),
		walFetchFail: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgdr_agent_wal_fetch_failures_total", Help: "WAL fetches from the repository that failed (a file the repository does not hold is not a failure).",
		}, []string{"repository"}),
		renewalFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgdr_agent_lease_renewal_failures_total", Help: "Primary lease renewals that failed or were refused.",
		}),
		backupDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "pgdr_agent_backup_duration_seconds", Help: "Duration of the backups this daemon took (scheduler orders, pgdrctl backup run).", Buckets: longBuckets,
		}, []string{"type"}),
		backupBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgdr_agent_backup_bytes_total", Help: "Bytes stored by the backups this daemon took (after compression).",
		}, []string{"type"}),
		backups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgdr_agent_backups_total", Help: "Backups this daemon ran, by result (ok, failed, cancelled).",
		}, []string{"type", "result"}),
		restoreDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "pgdr_agent_restore_duration_seconds", Help: "Duration of the restores this daemon ran (drill, reclone).", Buckets: longBuckets,
		}, []string{"kind"}),
		restoreBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgdr_agent_restore_bytes_total", Help: "Bytes the restores this daemon ran wrote (drills).",
		}, []string{"kind"}),
		drills: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgdr_agent_drills_total", Help: "Restore drills this daemon ran, by result (ok, failed, cancelled).",
		}, []string{"result"}),
	}
	// The counters of outcomes exist from the start (at 0), so that an
	// increase over them is defined before the first failure.
	for _, res := range []string{"ok", "failed", "cancelled"} {
		for _, typ := range []string{"full", "diff", "incr"} {
			w.backups.WithLabelValues(typ, res)
		}
		w.drills.WithLabelValues(res)
	}
	reg.MustRegister(w.walPush, w.walPushFail, w.walFetch, w.walFetchFail, w.renewalFailures,
		w.backupDuration, w.backupBytes, w.backups, w.restoreDuration, w.restoreBytes, w.drills)
	return w
}

// registerRepos makes every repository's WAL series present from the
// start (0 failures), so a rate over them is defined before the first
// failure.
func (w *workMetrics) registerRepos(repos []repo.Repo) {
	for _, r := range repos {
		w.walPushFail.WithLabelValues(r.Name)
		w.walFetchFail.WithLabelValues(r.Name)
	}
}

// ObservePush implements walship.Observer.
func (w *workMetrics) ObservePush(repository string, took time.Duration, err error) {
	if err != nil {
		w.walPushFail.WithLabelValues(repository).Inc()
		return
	}
	w.walPush.WithLabelValues(repository).Observe(took.Seconds())
}

// ObserveFetch implements walship.Observer.
func (w *workMetrics) ObserveFetch(repository string, took time.Duration, err error) {
	if err != nil {
		w.walFetchFail.WithLabelValues(repository).Inc()
		return
	}
	w.walFetch.WithLabelValues(repository).Observe(took.Seconds())
}

// result is a run's result label: ok, cancelled (its context ended) or
// failed.
func result(ctx context.Context, err error) string {
	switch {
	case err == nil:
		return "ok"
	case ctx.Err() != nil || errors.Is(err, context.Canceled):
		return "cancelled"
	}
	return "failed"
}

// backupType bounds the type label to the backup types.
func backupType(t string) string {
	switch t {
	case "diff", "incr":
		return t
	}
	return "full"
}

// taker records the backups take carries out.
func (w *workMetrics) taker(take backuprun.TakeFunc) backuprun.TakeFunc {
	return func(ctx context.Context, repos []repo.Repo, o backup.Options) (*backup.Manifest, error) {
		start := time.Now()
		m, err := take(ctx, repos, o)
		typ := backupType(o.Type)
		if m != nil {
			typ = backupType(m.Type) // a diff or incr without a parent is taken full
		}
		w.backups.WithLabelValues(typ, result(ctx, err)).Inc()
		if err == nil {
			w.backupDuration.WithLabelValues(typ).Observe(time.Since(start).Seconds())
			if m != nil && m.StoredBytes > 0 {
				w.backupBytes.WithLabelValues(typ).Add(float64(m.StoredBytes))
			}
		}
		return m, err
	}
}

// driller records the drills run carries out.
func (w *workMetrics) driller(run drillrun.RunFunc) drillrun.RunFunc {
	return func(ctx context.Context, o drill.Options, after time.Duration) (*drill.Result, error) {
		start := time.Now()
		res, err := run(ctx, o, after)
		switch {
		case err != nil:
			w.drills.WithLabelValues(result(ctx, err)).Inc()
		case res.OK:
			w.drills.WithLabelValues("ok").Inc()
		default:
			w.drills.WithLabelValues("failed").Inc()
		}
		if res != nil {
			took := res.Timings.Total
			if took <= 0 {
				took = time.Since(start).Seconds()
			}
			w.restoreDuration.WithLabelValues("drill").Observe(took)
			if res.Bytes > 0 {
				w.restoreBytes.WithLabelValues("drill").Add(float64(res.Bytes))
			}
		}
		return res, err
	}
}

// recloner records the re-clones reclone carries out (their duration; the
// bytes are pg_basebackup's or the restore's and not counted here).
func (w *workMetrics) recloner(reclone func(ctx context.Context, epoch uint64, primary, dsn string, why error) (string, error)) func(ctx context.Context, epoch uint64, primary, dsn string, why error) (string, error) {
	return func(ctx context.Context, epoch uint64, primary, dsn string, why error) (string, error) {
		start := time.Now()
		out, err := reclone(ctx, epoch, primary, dsn, why)
		if err == nil {
			w.restoreDuration.WithLabelValues("reclone").Observe(time.Since(start).Seconds())
		}
		return out, err
	}
}

// stateCollector serves, at scrape time, what the latest round of checks,
// the archiver's state and the lease say: the role, the archive figures
// and the lease's time left.
type stateCollector struct {
	latest   func() *pgdrv1.HealthReport
	archiver func() health.Archiver // nil: not served
	// lease returns the lease's deadline and whether it is granted and
	// not fenced (nil: no lease, as without coordinators).
	lease func() (deadline time.Time, held bool)
	now   func() time.Time
}

var (
	descRole         = prometheus.NewDesc("pgdr_agent_role", "1 for the node's current role (primary, replica, stopped, unknown), 0 for the others.", []string{"role"}, nil)
	descLastArchived = prometheus.NewDesc("pgdr_agent_last_archived_timestamp_seconds", "pg_stat_archiver.last_archived_time (0 when nothing was archived since the server started).", nil, nil)
	descReady        = prometheus.NewDesc("pgdr_agent_wal_ready_segments", "WAL segments waiting to be archived (.ready files).", nil, nil)
	descReadyOldest  = prometheus.NewDesc("pgdr_agent_wal_ready_oldest_seconds", "Age of the oldest segment waiting to be archived (0 when none waits).", nil, nil)
	descRPOSeconds   = prometheus.NewDesc("pgdr_agent_archive_rpo_seconds", "Primary only: age of the oldest WAL not yet in the repository.", []string{"repository"}, nil)
	descRPOBytes     = prometheus.NewDesc("pgdr_agent_archive_rpo_bytes", "Primary only: WAL bytes not yet in the repository.", []string{"repository"}, nil)
	descSlotRetained = prometheus.NewDesc("pgdr_agent_replication_slot_retained_bytes", "WAL the replication slot keeps on this server (restart_lsn to the current or replayed LSN).", []string{"slot", "type"}, nil)
	descSlotActive   = prometheus.NewDesc("pgdr_agent_replication_slot_active", "1 while a connection uses the replication slot, 0 when none does.", []string{"slot", "type"}, nil)
	descLeaseLeft    = prometheus.NewDesc("pgdr_agent_lease_remaining_seconds", "Primary only: time left on the primary lease (0 when expired or not the primary).", nil, nil)
)

// roles are pgdr_agent_role's label values.
var roles = []string{health.RolePrimary, health.RoleReplica, health.RoleStopped, health.RoleUnknown}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRole, descLastArchived, descReady, descReadyOldest, descRPOSeconds, descRPOBytes, descSlotRetained, descSlotActive, descLeaseLeft} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	now := c.now()
	r := c.latest()
	role := agentRole(r)
	for _, ro := range roles {
		v := 0.0
		if ro == role {
			v = 1
		}
		gauge(descRole, v, ro)
	}
	if c.archiver != nil {
		if a := c.archiver(); a.Known {
			last := 0.0
			if !a.LastArchived.IsZero() {
				last = float64(a.LastArchived.UnixNano()) / 1e9
			}
			gauge(descLastArchived, last)
			gauge(descReady, float64(a.Ready))
			oldest := 0.0
			if !a.OldestReady.IsZero() {
				oldest = max(0, now.Sub(a.OldestReady).Seconds())
			}
			gauge(descReadyOldest, oldest)
		}
	}
	if role == health.RolePrimary {
		for _, a := range r.GetArchiveRpo() {
			gauge(descRPOSeconds, a.GetSeconds(), a.GetRepository())
			gauge(descRPOBytes, float64(a.GetBytes()), a.GetRepository())
		}
	}
	for _, sl := range r.GetReplicationSlots() {
		active := 0.0
		if sl.GetActive() {
			active = 1
		}
		gauge(descSlotRetained, float64(sl.GetRetainedBytes()), sl.GetName(), sl.GetType())
		gauge(descSlotActive, active, sl.GetName(), sl.GetType())
	}
	left := 0.0
	if c.lease != nil && role == health.RolePrimary {
		if deadline, held := c.lease(); held {
			left = max(0, deadline.Sub(now).Seconds())
		}
	}
	gauge(descLeaseLeft, left)
}

// agentRole is the node's role for pgdr_agent_role: health.Role, with a
// fenced node counted by what its server is (pgdr_agent_fenced says it
// is fenced).
func agentRole(r *pgdrv1.HealthReport) string {
	switch {
	case r == nil:
		return health.RoleUnknown
	case r.Connectable && r.RecoveryUnknown:
		return health.RoleUnknown
	case r.Connectable && r.InRecovery:
		return health.RoleReplica
	case r.Connectable:
		return health.RolePrimary
	case !r.PostmasterAlive:
		return health.RoleStopped
	}
	return health.RoleUnknown
}

// repoCollector serves what the repository reader (agent/repostat) last
// learned; the WAL the repository lacks is judged against the latest
// report's insert position on a primary.
type repoCollector struct {
	snapshots func() []repostat.Snapshot
	latest    func() *pgdrv1.HealthReport
}

var (
	descRepoLastBackup = prometheus.NewDesc("pgdr_repo_last_backup_timestamp_seconds", "End time of the newest complete backup of the tier and type in the repository (tier manual: taken outside the policy).", []string{"repository", "tier", "type"}, nil)
	descRepoBackups    = prometheus.NewDesc("pgdr_repo_backups", "Complete backups of the tier the repository holds.", []string{"repository", "tier"}, nil)
	descRepoLastWAL    = prometheus.NewDesc("pgdr_repo_last_wal_timestamp_seconds", "Time the newest WAL segment of the newest timeline was stored in the repository.", []string{"repository"}, nil)
	descRepoWALBehind  = prometheus.NewDesc("pgdr_repo_wal_behind_bytes", "Primary only: the server's insert position minus the end of the newest WAL segment the repository holds.", []string{"repository"}, nil)
	descRepoRead       = prometheus.NewDesc("pgdr_repo_read_timestamp_seconds", "When the repository was last read successfully (stale: the pgdr_repo_* figures are stale).", []string{"repository"}, nil)
	descRepoReadFail   = prometheus.NewDesc("pgdr_repo_read_failures_total", "Repository reads that failed.", []string{"repository"}, nil)
)

func (c *repoCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRepoLastBackup, descRepoBackups, descRepoLastWAL, descRepoWALBehind, descRepoRead, descRepoReadFail} {
		ch <- d
	}
}

func (c *repoCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	unix := func(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
	r := c.latest()
	primary := agentRole(r) == health.RolePrimary && r.GetCurrentLsn() > 0
	for _, s := range c.snapshots() {
		ch <- prometheus.MustNewConstMetric(descRepoReadFail, prometheus.CounterValue, float64(s.Failures), s.Repository)
		if s.Read.IsZero() {
			continue // never read: no figures rather than zeros
		}
		gauge(descRepoRead, unix(s.Read), s.Repository)
		for _, t := range s.Tiers {
			gauge(descRepoBackups, float64(t.Backups), s.Repository, t.Name)
			for typ, at := range t.Last {
				gauge(descRepoLastBackup, unix(at), s.Repository, t.Name, typ)
			}
		}
		if !s.WALKnown {
			continue
		}
		gauge(descRepoLastWAL, unix(s.WALStored), s.Repository)
		if primary {
			behind := 0.0
			if lsn := r.GetCurrentLsn(); lsn > s.WALEnd {
				behind = float64(lsn - s.WALEnd)
			}
			gauge(descRepoWALBehind, behind, s.Repository)
		}
	}
}
