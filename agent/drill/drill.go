package drill

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/agent/pgctl"
	"github.com/pgdr/pgdr/agent/restore"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/wal"
)

// Options say what a drill restores and checks.
type Options struct {
	// BackupID is a backup ID, "latest", or "" (restore's choice: the
	// newest backup ending before TargetTime, else the latest).
	BackupID string
	// Tier picks the newest backup of that policy tier (ending before
	// TargetTime when set). Exclusive with BackupID.
	Tier string
	// TargetTime is where recovery stops; nil replays to the end of the
	// archive ("latest").
	TargetTime *time.Time
	// Scratch is the directory the drill restores into: absent or empty,
	// not inside (nor holding) the production data directory, its WAL
	// directory or any of its tablespaces. "" makes a fresh one under
	// os.TempDir().
	Scratch string
	// Keep leaves the scratch copy (stopped) for debugging.
	Keep bool
	// Checks are SQL checks with expected results (LoadChecks).
	Checks []Check
	// SourceDSN, when set with no TargetTime, is the source cluster the
	// restored row counts are compared with (any database of it: the
	// drill connects to each database by name).
	SourceDSN string
	// Port for the scratch server; 0 picks a free one on 127.0.0.1.
	Port int
	// Parallel is the restore's file parallelism and pg_amcheck's --jobs
	// (0: 4).
	Parallel int
	// ReplayTimeout bounds the wait for recovery to reach the target and
	// promote (0: an hour).
	ReplayTimeout time.Duration
	// AgentPath and ConfigPath make up the restored copy's
	// restore_command (pgdr-agent wal-fetch --config ConfigPath).
	AgentPath, ConfigPath string
}

// Deps are what a drill works with, as a restore does: the agent's
// configuration (its postgres section names the production data
// directory the scratch path must stay out of, and the PostgreSQL
// binaries), its repositories and decryption keys.
type Deps = restore.Deps

// Result is a finished drill, passed or failed.
type Result struct {
	OK bool `json:"ok"`
	// Reason is why the drill failed: the first failure, with a count of
	// the others ("" when OK).
	Reason  string   `json:"reason,omitempty"`
	Backup  string   `json:"backup,omitempty"`
	Tier    string   `json:"tier,omitempty"`
	Chain   []string `json:"chain,omitempty"`
	Repo    string   `json:"repo,omitempty"`
	Target  string   `json:"target"` // "latest" or the target time (RFC 3339)
	Scratch string   `json:"scratch"`
	Kept    bool     `json:"kept"`
	Port    int      `json:"port,omitempty"`
	Files   int      `json:"files,omitempty"`
	Bytes   int64    `json:"bytes,omitempty"`
	// RecoveryLSN is where the restored server's WAL stood once promoted.
	RecoveryLSN string     `json:"recovery_lsn,omitempty"`
	Started     time.Time  `json:"started"`
	Timings     Timings    `json:"timings"`
	RPO         *RPO       `json:"rpo,omitempty"`
	Amcheck     *Amcheck   `json:"amcheck,omitempty"`
	Checks      []CheckRun `json:"checks,omitempty"`
	RowCounts   *RowCounts `json:"row_counts,omitempty"`
	Failures    []string   `json:"failures,omitempty"`
	Cleanup     string     `json:"cleanup,omitempty"` // what happened to the scratch copy
	manifestFor *backup.Manifest
	// startedServer: pg_ctl start was run in the scratch copy.
	startedServer bool
}

// Timings split the drill's time (RTO evidence), in seconds.
type Timings struct {
	// FetchWrite is restore.Restore: reading, verifying and writing the
	// backup's files.
	FetchWrite float64 `json:"fetch_write_seconds"`
	// Replay is from starting PostgreSQL until recovery reached the
	// target and the server was promoted.
	Replay float64 `json:"replay_seconds"`
	Checks float64 `json:"checks_seconds"`
	Total  float64 `json:"total_seconds"`
}

// RPO is the recovery point the drill reached.
type RPO struct {
	// NewestCommit is the time of the last transaction recovery replayed
	// (pg_last_xact_replay_timestamp(), which outlives the promotion); nil
	// when recovery replayed none after the backup.
	NewestCommit *time.Time `json:"newest_commit,omitempty"`
	// Against is what the age is measured against: the target time, or
	// the drill's start for a drill to the latest WAL.
	Against time.Time `json:"against"`
	// Seconds is Against minus NewestCommit (or minus the backup's stop
	// time when no transaction was replayed): how much of the source's
	// history up to Against the restore could not show, at most.
	Seconds float64 `json:"seconds"`
	Source  string  `json:"source"`
}

// Errors Run returns for a drill that cannot begin (errors.Is).
var (
	ErrScratch = errors.New("scratch directory refused")
	ErrOptions = errors.New("drill options refused")
)

// Run runs one drill. See the package documentation for what it does
// and when it returns an error rather than a failed Result.
func Run(ctx context.Context, d Deps, o Options) (*Result, error) {
	start := time.Now()
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	if o.ReplayTimeout <= 0 {
		o.ReplayTimeout = time.Hour
	}
	res := &Result{Started: start.UTC(), Target: "latest", Tier: o.Tier}
	if o.TargetTime != nil {
		res.Target = o.TargetTime.UTC().Format(time.RFC3339Nano)
	}
	pick, err := choose(ctx, d, o)
	if err != nil {
		return nil, err
	}
	if pick != nil {
		res.Backup, res.Tier, res.Repo = pick.m.ID, pick.m.Tier, pick.repo
		res.manifestFor = pick.m
	}
	uid, gid, err := serverUser(d.Cfg)
	if err != nil {
		return nil, err
	}
	acct := lookupAccount(uid, gid)
	sc, err := prepareScratch(d.Cfg, o.Scratch, acct)
	if err != nil {
		return nil, err
	}
	for _, f := range [][2]string{{"the agent's configuration", o.ConfigPath}, {"encryption.identity_file", d.Cfg.Encryption.IdentityFile}} {
		if err := checkReadable(f[0], f[1], acct); err != nil {
			sc.remove()
			return nil, err
		}
	}
	res.Scratch = sc.dir
	port := o.Port
	if port == 0 {
		if port, err = freePort(productionPorts(d.Cfg)); err != nil {
			sc.remove()
			return nil, err
		}
	}
	res.Port = port
	d.Log.Info("drill starting", "backup", dash(res.Backup, o.BackupID), "target", res.Target, "scratch", sc.dir, "port", port)

	// From here on the drill has begun: every outcome is a Result, and
	// the scratch copy goes whatever happens (ctx cancelled included).
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
		defer cancel()
		if ctx.Err() != nil {
			res.Failures = append([]string{fmt.Sprintf("drill cancelled: %v", context.Cause(ctx))}, res.Failures...)
		}
		res.Cleanup = sc.finish(cctx, d, o.Keep, res.startedServer && ctx.Err() != nil)
		if strings.HasPrefix(res.Cleanup, "failed") {
			res.fail("scratch clean-up: %s", res.Cleanup)
		}
		res.Timings.Total = time.Since(start).Seconds()
		res.Kept = o.Keep
		res.OK = len(res.Failures) == 0
		if !res.OK {
			res.Reason = res.Failures[0]
			if n := len(res.Failures) - 1; n > 0 {
				res.Reason += fmt.Sprintf(" (and %d more failure(s))", n)
			}
		}
		d.Log.Info("drill finished", "ok", res.OK, "reason", res.Reason, "backup", res.Backup, "seconds", fmt.Sprintf("%.1f", res.Timings.Total))
	}()
	res.drill(ctx, d, o, sc, pick)
	return res, nil
}

// drill restores, replays and checks; each failure is recorded in r.
func (r *Result) drill(ctx context.Context, d Deps, o Options, sc *scratch, pick *chosen) {
	id, repoName := o.BackupID, ""
	if pick != nil {
		id, repoName = pick.m.ID, pick.repo
	}
	target := restore.Target{Time: o.TargetTime}
	rr, err := restore.Restore(ctx, d, restore.Options{
		BackupID: id, Repo: repoName, PGData: sc.data(), Target: target, Action: "promote", Parallel: o.Parallel,
		NoArchive: true, TablespaceMapAll: sc.tablespaces(), AgentPath: o.AgentPath, ConfigPath: o.ConfigPath,
	})
	if err != nil {
		r.fail("restore: %v", err)
		return
	}
	r.Backup, r.Chain, r.Files, r.Bytes, r.Timings.FetchWrite = rr.Backup, rr.Chain, rr.Files, rr.Bytes, rr.Seconds
	if r.manifestFor == nil {
		r.manifestFor = loadManifest(ctx, d, rr.Backup)
		if r.manifestFor != nil && r.Tier == "" {
			r.Tier = r.manifestFor.Tier
		}
	}
	if err := sc.configure(r.Port); err != nil {
		r.fail("configuring the scratch copy: %v", err)
		return
	}
	// What the archive holds now: recovery to the latest WAL must get
	// at least that far (gap, below).
	var newest archived
	if o.TargetTime == nil && r.manifestFor != nil && rr.Timeline > 0 {
		newest = newestArchived(ctx, d, rr.Timeline, r.manifestFor.SegmentSize)
	}
	r.startedServer = true
	reached, err := restore.Start(ctx, sc.data(), restore.StartOptions{
		BinDir: d.Cfg.Postgres.BinDir, Port: r.Port, Socket: sc.dir, Action: "promote", Timeout: o.ReplayTimeout, LogFile: sc.logFile(),
		// A restored postgresql.conf naming a data_directory (the
		// production one) would have the postmaster run there, reading
		// that directory's postgresql.auto.conf instead of the scratch
		// settings: pinned where no configuration file can move it.
		Settings: []string{"data_directory=" + sc.data()},
	})
	if err != nil {
		r.fail("replaying WAL to the target: %v", err)
		return
	}
	r.Timings.Replay = reached.Seconds
	r.RecoveryLSN = reached.LSN
	srv := server{sock: sc.dir, port: r.Port, binDir: d.Cfg.Postgres.BinDir, pgdata: sc.data()}
	if newest.name != "" {
		if err := r.checkGap(ctx, srv, newest); err != nil {
			r.fail("%v", err)
		}
	}
	if err := r.measureRPO(ctx, srv, o); err != nil {
		r.fail("reading the recovery point: %v", err)
	}
	checks := time.Now()
	r.runChecks(ctx, srv, o)
	r.Timings.Checks = time.Since(checks).Seconds()
}

func (r *Result) fail(format string, args ...any) {
	r.Failures = append(r.Failures, fmt.Sprintf(format, args...))
}

// measureRPO reads the newest replayed commit and its age.
func (r *Result) measureRPO(ctx context.Context, s server, o Options) error {
	conn, err := s.connect(ctx, "postgres")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var last *time.Time
	if err := conn.QueryRow(ctx, "SELECT pg_last_xact_replay_timestamp()").Scan(&last); err != nil {
		return fmt.Errorf("pg_last_xact_replay_timestamp(): %w", err)
	}
	rpo, against := &RPO{Against: r.Started}, "the drill's start"
	if o.TargetTime != nil {
		rpo.Against, against = o.TargetTime.UTC(), "the target time"
	}
	switch {
	case last != nil:
		t := last.UTC()
		rpo.NewestCommit = &t
		rpo.Seconds = rpo.Against.Sub(t).Seconds()
		rpo.Source = "pg_last_xact_replay_timestamp() (the last transaction replayed) against " + against
	case r.manifestFor != nil:
		rpo.Seconds = rpo.Against.Sub(r.manifestFor.StopTime).Seconds()
		rpo.Source = "no transaction replayed after the backup: the backup's stop time against " + against
	default:
		rpo.Source = "no transaction replayed and no backup stop time known"
	}
	if rpo.Seconds < 0 {
		rpo.Seconds = 0 // clocks: the source's commit time may be a little ahead of ours
	}
	r.RPO = rpo
	return nil
}

// runChecks runs pg_amcheck, the SQL checks and the row counts.
func (r *Result) runChecks(ctx context.Context, s server, o Options) {
	r.Amcheck = runAmcheck(ctx, s, o.Parallel)
	if !r.Amcheck.OK {
		r.fail("pg_amcheck: %s", r.Amcheck.summary())
	}
	for _, c := range o.Checks {
		cr := runCheck(ctx, s, c)
		r.Checks = append(r.Checks, cr)
		if !cr.OK {
			if cr.Error != "" {
				r.fail("check %q: %s", c.Name, cr.Error)
			} else {
				r.fail("check %q: got %q, want %q", c.Name, cr.Got, cr.Want)
			}
		}
	}
	rc, err := countRows(ctx, s, o)
	if err != nil {
		r.fail("row counts: %v", err)
	}
	r.RowCounts = rc
	if rc != nil && len(rc.Mismatches) > 0 {
		m := rc.Mismatches[0]
		r.fail("row counts differ from the source in %d table(s), e.g. %s.%s: restored %d, source %s",
			rc.MismatchCount, m.Database, m.Table, m.Rows, sourceRows(m))
	}
}

// chosen is a backup the drill picked before starting.
type chosen struct {
	m    *backup.Manifest
	repo string
}

// choose checks the options and resolves the backup where the options
// name one (an ID, or a tier): an unknown one refuses the drill before
// anything is created. With neither (or "latest"), restore picks.
func choose(ctx context.Context, d Deps, o Options) (*chosen, error) {
	if d.Cfg == nil {
		return nil, fmt.Errorf("%w: no agent configuration", ErrOptions)
	}
	if o.Tier != "" && o.BackupID != "" {
		return nil, fmt.Errorf("%w: give a backup ID or a tier, not both", ErrOptions)
	}
	if o.AgentPath == "" || o.ConfigPath == "" {
		return nil, fmt.Errorf("%w: the agent's path and configuration path are needed for the restored copy's restore_command", ErrOptions)
	}
	if t := o.TargetTime; t != nil && t.After(time.Now()) {
		return nil, fmt.Errorf("%w: target time %s is in the future", ErrOptions, t.UTC().Format(time.RFC3339Nano))
	}
	if o.Port < 0 || o.Port > 65535 {
		return nil, fmt.Errorf("%w: port %d", ErrOptions, o.Port)
	}
	for _, p := range productionPorts(d.Cfg) {
		if o.Port == p {
			return nil, fmt.Errorf("%w: port %d is the production server's (postgres.dsn): a drill never takes it", ErrOptions, p)
		}
	}
	if o.SourceDSN != "" {
		if _, err := pgx.ParseConfig(o.SourceDSN); err != nil {
			return nil, fmt.Errorf("%w: --source-dsn: %v", ErrOptions, err)
		}
	}
	if len(d.Repos) == 0 {
		return nil, fmt.Errorf("%w: no repository configured", ErrOptions)
	}
	var pick *chosen
	switch {
	case o.BackupID != "" && o.BackupID != "latest":
		if !backup.ValidID(o.BackupID) {
			return nil, fmt.Errorf("%w: %q is not a backup ID (like 20261126T081700F) or latest", ErrOptions, o.BackupID)
		}
		var errs []error
		for _, r := range d.Repos {
			m, err := backup.LoadManifest(ctx, r, d.Cfg.Cluster, o.BackupID)
			if err == nil {
				pick = &chosen{m: m, repo: r.Name}
				break
			}
			if !errors.Is(err, backup.ErrNoBackup) {
				errs = append(errs, err)
			}
		}
		if pick == nil {
			if err := errors.Join(errs...); err != nil {
				return nil, fmt.Errorf("%w: backup %s: %w", ErrOptions, o.BackupID, err)
			}
			return nil, fmt.Errorf("%w: no repository holds backup %s of cluster %s", ErrOptions, o.BackupID, d.Cfg.Cluster)
		}
	case o.Tier != "":
		for _, r := range d.Repos {
			ms, err := backup.List(ctx, r, d.Cfg.Cluster)
			if err != nil {
				return nil, fmt.Errorf("%w: listing the backups in repository %s: %w", ErrOptions, r.Name, err)
			}
			for _, m := range ms {
				if m.Tier != o.Tier || (o.TargetTime != nil && m.StopTime.After(*o.TargetTime)) {
					continue
				}
				if pick == nil || m.StopTime.After(pick.m.StopTime) {
					pick = &chosen{m: m, repo: r.Name}
				}
			}
		}
		if pick == nil {
			if o.TargetTime != nil {
				return nil, fmt.Errorf("%w: no backup of tier %q of cluster %s ends before the target time %s", ErrOptions, o.Tier, d.Cfg.Cluster, o.TargetTime.UTC().Format(time.RFC3339Nano))
			}
			return nil, fmt.Errorf("%w: no backup of tier %q of cluster %s in any repository", ErrOptions, o.Tier, d.Cfg.Cluster)
		}
	}
	if pick != nil && o.TargetTime != nil && o.TargetTime.Before(pick.m.StopTime) {
		return nil, fmt.Errorf("%w: target time %s is before backup %s ends (%s): recovery cannot stop there",
			ErrOptions, o.TargetTime.UTC().Format(time.RFC3339Nano), pick.m.ID, pick.m.StopTime.UTC().Format(time.RFC3339Nano))
	}
	return pick, nil
}

// loadManifest finds a restored backup's manifest (for its tier and stop
// time); nil when no repository gives it.
func loadManifest(ctx context.Context, d Deps, id string) *backup.Manifest {
	for _, r := range d.Repos {
		if m, err := backup.LoadManifest(ctx, r, d.Cfg.Cluster, id); err == nil {
			return m
		}
	}
	return nil
}

// freePort is a TCP port free on 127.0.0.1 just now, none of avoid (the
// production server's, which a stopped server leaves free).
func freePort(avoid []int) (int, error) {
	for i := 0; i < 10; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("finding a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !slices.Contains(avoid, port) {
			return port, nil
		}
	}
	return 0, errors.New("finding a free port: only the production server's came up")
}

// productionPorts are the ports the agent's configuration gives the
// production server (postgres.dsn, node.advertise_dsn).
func productionPorts(cfg *config.Config) []int {
	var out []int
	for _, dsn := range []string{cfg.Postgres.DSN, cfg.Node.AdvertiseDSN} {
		if c, err := pgx.ParseConfig(dsn); err == nil && dsn != "" {
			out = append(out, int(c.Port))
		}
	}
	return out
}

// server is the scratch copy's running PostgreSQL.
type server struct {
	sock   string
	port   int
	binDir string
	pgdata string
}

func (s server) connect(ctx context.Context, db string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=postgres sslmode=disable connect_timeout=10", s.sock, s.port))
	if err != nil {
		return nil, err
	}
	cfg.Database = db
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to the scratch server's database %q: %w", db, err)
	}
	return conn, nil
}

// stopServer stops the scratch server (fast, then immediate). interrupted
// says pg_ctl start may have been killed before the postmaster it forked
// wrote its pid file: then the pid file is waited for a few seconds.
func stopServer(ctx context.Context, binDir, pgdata string, interrupted bool, log *slog.Logger) error {
	pid := filepath.Join(pgdata, pgctl.PIDFile)
	for i := 0; interrupted && i < 100; i++ {
		if _, err := os.Stat(pid); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	if _, err := os.Stat(pid); err != nil {
		return nil
	}
	return pgctl.New(pgctl.Config{BinDir: binDir, PGData: pgdata, Log: log, StopTimeout: time.Minute}).Stop(ctx)
}

func dash(s, alt string) string {
	if s != "" {
		return s
	}
	if alt != "" {
		return alt
	}
	return "-"
}

// archived is the newest WAL segment of a timeline in the archive.
type archived struct {
	name    string // "" when none was found
	segNo   uint64
	segSize uint64
	tli     uint32
}

// newestArchived finds the newest segment of timeline tli in any of the
// repositories (wal-fetch reads from each); one that cannot be listed is
// skipped.
func newestArchived(ctx context.Context, d Deps, tli uint32, segSize uint64) archived {
	a := archived{segSize: segSize, tli: tli}
	if segSize == 0 {
		return a
	}
	for _, r := range d.Repos {
		prefix := repo.WALPrefix(d.Cfg.Cluster) + fmt.Sprintf("%08X/", tli)
		err := r.Store.List(ctx, prefix, func(oi storage.ObjectInfo) error {
			base := oi.Key[strings.LastIndex(oi.Key, "/")+1:]
			n, err := wal.ParseName(base)
			if err != nil || n.Kind != wal.KindSegment || n.Timeline != tli {
				return nil
			}
			if no := n.SegNo(segSize); a.name == "" || no > a.segNo {
				a.name, a.segNo = base, no
			}
			return nil
		})
		if err != nil {
			d.Log.Warn("drill: listing the archive for the gap check", "repo", r.Name, "err", err)
		}
	}
	return a
}

// checkGap fails a drill to the latest WAL whose recovery ended before the
// newest segment the archive held when replay began: PostgreSQL ends
// recovery at the first segment restore_command cannot give and promotes
// there as if it were the end of the archive, so a missing or unreadable
// segment would otherwise pass the drill with everything after it lost.
func (r *Result) checkGap(ctx context.Context, s server, newest archived) error {
	conn, err := s.connect(ctx, "postgres")
	if err != nil {
		return fmt.Errorf("reading where recovery ended: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var text string
	if err := conn.QueryRow(ctx, "SELECT coalesce(pg_last_wal_replay_lsn()::text, '')").Scan(&text); err != nil {
		return fmt.Errorf("reading where recovery ended: pg_last_wal_replay_lsn(): %w", err)
	}
	end, err := wal.ParseLSN(text)
	if err != nil {
		return fmt.Errorf("reading where recovery ended: pg_last_wal_replay_lsn() %q: %w", text, err)
	}
	// The first segment recovery did not read whole: the one after the
	// last record's end (that one itself when the record ends on a
	// segment boundary).
	next := (uint64(end) + newest.segSize - 1) / newest.segSize
	if next > newest.segNo {
		return nil
	}
	return fmt.Errorf("recovery ended at %s, but the archive held WAL up to segment %s when replay began: segment %s could not be replayed (missing, damaged or unreadable), "+
		"so a restore to the latest WAL loses everything after %s", end, newest.name, wal.SegmentName(newest.tli, next, newest.segSize), end)
}
