package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/agent/expire"
	"github.com/pgdr/pgdr/agent/restore"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/keys"
	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/tiername"
	"github.com/pgdr/pgdr/pkg/wal"
)

// listTime is how backup-list prints times: UTC, and saying so.
const listTime = "2006-01-02 15:04:05Z07:00"

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func cmdBackup(ctx context.Context, e env, args []string) int {
	f := newFlags(e, "backup", "backup --config FILE [--type full|diff|incr] [--from-standby [--primary-dsn DSN]] [--label L] [--parallel N] [--part-size MiB] [--max-rate MB/s] [--checksum blake3|sha256] [--tier NAME] [--allow-corrupt] [--wal-timeout D] [--allow-other-user] [--progress] [--json]",
		`Takes a base backup of the running cluster (non-exclusive pg_backup_start/stop),
reading files in parallel, verifying page checksums, compressing and
encrypting each file to every repository. diff stores the pages changed since
the last full backup, incr those changed since the last backup of any type
(see docs/backup.md). The manifest is written last, after the WAL the backup
needs is archived (at most --wal-timeout): until then the backup does not exist.

A diff or incr builds on a backup that every repository holds, with its
whole chain, and that ends at or before this backup's start LSN (a standby
behind the last backup cannot build on it; see --primary-dsn); with none, a full backup is
taken and the reason logged and recorded (type_reason). The backup ID is
reserved in every repository first, so concurrent backups get distinct IDs.
Runs as the data directory's owner only (files it creates in a file
repository must stay readable by archive_command), unless --allow-other-user.`, true).withJSON()
	typ := f.String("type", backup.TypeFull, "full, diff or incr")
	standby := f.Bool("from-standby", false, "the server is a streaming standby (pg_backup_start on a standby)")
	label := f.String("label", "", "backup label (default: pgdr <id>)")
	parallel := f.Int("parallel", runtime.NumCPU(), "files read, compressed and uploaded at once")
	allowCorrupt := f.Bool("allow-corrupt", false, "record the backup even when page checksums fail (the pages are listed in the manifest)")
	primary := f.String("primary-dsn", "", "standby backups: the primary, where pg_switch_wal() closes the last segment the backup needs, a CHECKPOINT (when the standby's last restartpoint is before the parent's end) lets a diff or incr start after its parent, and pg_stat_archiver is read")
	walTimeout := f.Duration("wal-timeout", backup.DefaultWALTimeout, "how long to wait, after pg_backup_stop, for the WAL the backup needs to be in every repository; then fail naming the missing segment and pg_stat_archiver's last failure")
	otherUser := f.Bool("allow-other-user", false, "run although the current user does not own the data directory (what it creates in file repositories may then be unreadable to archive_command)")
	progress := f.Bool("progress", isTerminal(e.stderr), "print progress (default: when stderr is a terminal)")
	partMB := f.Int("part-size", backup.PartSize>>20, "files larger than this many MiB are stored as parts read, compressed and restored in parallel")
	checksum := f.String("checksum", string(backup.DefaultChecksum()), "hash of the backup's data objects, in each object and in the manifest: blake3 (the default on amd64, twice as fast there), or sha256 (FIPS-approved; the default elsewhere, and the only one pgdr before object format 2 reads). The manifest and WAL always use sha256")
	tierName := f.String("tier", "", "record the backup as taken for this policy tier (lower-case letters, digits, - and _): expire --keep-tier NAME=... rules it")
	maxRate := f.Float64("max-rate", 0, "limit reading the data directory to this many MB/s (0 = no limit), to spare the server's disks")
	if _, code, ok := f.parse(args, 0); !ok {
		return code
	}
	if *partMB < 1 {
		fmt.Fprintln(e.stderr, "pgdr-agent backup: --part-size must be at least 1 (MiB)")
		return ExitUsage
	}
	if *checksum != string(objstream.ChecksumBLAKE3) && *checksum != string(objstream.ChecksumSHA256) {
		fmt.Fprintf(e.stderr, "pgdr-agent backup: --checksum %q: want blake3 or sha256\n", *checksum)
		return ExitUsage
	}
	if *tierName != "" && !tiername.Valid(*tierName) {
		fmt.Fprintf(e.stderr, "pgdr-agent backup: --tier %q: want %s\n", *tierName, tiername.Rule)
		return ExitUsage
	}
	if *maxRate < 0 {
		fmt.Fprintln(e.stderr, "pgdr-agent backup: --max-rate must not be negative")
		return ExitUsage
	}
	cfg, log, code := f.config(e)
	if cfg == nil {
		return code
	}
	if !*otherUser {
		if err := checkDataOwner(cfg.Postgres.PGData); err != nil {
			log.Error("backup refused", "err", err)
			return ExitFailure
		}
	}
	repos, err := repo.OpenAll(ctx, cfg)
	if err != nil {
		log.Error("backup", "err", err)
		return ExitFailure
	}
	rs, err := keys.Recipients(cfg)
	if err != nil {
		log.Error("backup", "err", err)
		return ExitFailure
	}
	o := backup.Options{Type: *typ, FromStandby: *standby, Label: *label, Parallel: *parallel,
		AllowCorrupt: *allowCorrupt, PrimaryDSN: *primary, WALTimeout: *walTimeout, MaxRate: int64(*maxRate * 1e6), PartSize: int64(*partMB) << 20,
		Checksum: objstream.Checksum(*checksum), Tier: *tierName}
	o.Progress = progressTo(e, *progress)
	m, err := backup.Take(ctx, backup.Deps{Cfg: cfg, Repos: repos, Recipients: rs, Log: log}, o)
	if err != nil {
		log.Error("backup failed", "err", err)
		return ExitFailure
	}
	if *f.jsonOut {
		printJSON(e.stdout, summary(m, ""))
	} else {
		fmt.Fprintf(e.stdout, "backup %s (%s) complete: %s of database, %s stored, %.1fs, WAL %s..%s\n",
			m.ID, m.Type, humanBytes(m.DatabaseBytes), humanBytes(m.StoredBytes), m.DurationSeconds, m.WALStart, m.WALStop)
		if m.TypeReason != "" {
			fmt.Fprintf(e.stdout, "full instead of %s: %s\n", *typ, m.TypeReason)
		}
	}
	return 0
}

type backupSummary struct {
	ID            string    `json:"id"`
	Type          string    `json:"type"`
	Parent        string    `json:"parent,omitempty"`
	Label         string    `json:"label"`
	Repo          string    `json:"repo,omitempty"`
	StartTime     time.Time `json:"start_time"`
	StopTime      time.Time `json:"stop_time"`
	StartLSN      wal.LSN   `json:"start_lsn"`
	StopLSN       wal.LSN   `json:"stop_lsn"`
	Timeline      uint32    `json:"timeline"`
	DatabaseBytes int64     `json:"database_bytes"`
	StoredBytes   int64     `json:"stored_bytes"`
	Duration      float64   `json:"duration_seconds"`
	FromStandby   bool      `json:"from_standby"`
	Files         int       `json:"files"`
	CorruptPages  int       `json:"corrupt_pages"`
	TypeReason    string    `json:"type_reason,omitempty"`
	Tier          string    `json:"tier,omitempty"`
	Pinned        bool      `json:"pinned"`
	PinNote       string    `json:"pin_note,omitempty"`
}

func summary(m *backup.Manifest, repoName string) backupSummary {
	return backupSummary{ID: m.ID, Type: m.Type, Parent: m.Parent, Label: m.Label, Repo: repoName,
		StartTime: m.StartTime, StopTime: m.StopTime, StartLSN: m.StartLSN, StopLSN: m.StopLSN, Timeline: m.Timeline,
		DatabaseBytes: m.DatabaseBytes, StoredBytes: m.StoredBytes, Duration: m.DurationSeconds,
		FromStandby: m.FromStandby, Files: len(m.Files), CorruptPages: len(m.CorruptPages), TypeReason: m.TypeReason, Tier: m.Tier}
}

func cmdBackupList(ctx context.Context, e env, args []string) int {
	f := newFlags(e, "backup-list", "backup-list --config FILE [--json]", "Lists the complete backups in every repository, oldest first, with their tier and pin (backup-pin).", true).withJSON()
	if _, code, ok := f.parse(args, 0); !ok {
		return code
	}
	cfg, log, code := f.config(e)
	if cfg == nil {
		return code
	}
	repos, err := repo.OpenAll(ctx, cfg)
	if err != nil {
		log.Error("backup-list", "err", err)
		return ExitFailure
	}
	// Pins are written to every repository: the sync ones hold them all.
	pins, err := expire.LoadPins(ctx, repo.Sync(repos), cfg.Cluster)
	if err != nil {
		log.Error("backup-list", "err", err)
		return ExitFailure
	}
	var all []backupSummary
	damaged := []map[string]string{}
	for _, r := range repos {
		ms, bad, err := backup.ListAll(ctx, r, cfg.Cluster)
		if err != nil && r.Async {
			// The other region's copy being down does not hide the backups.
			log.Warn("backup-list: skipping the async repository, which cannot be listed now", "repo", r.Name, "err", err)
			continue
		}
		if err != nil {
			log.Error("backup-list", "err", err)
			return ExitFailure
		}
		for _, m := range ms {
			s := summary(m, r.Name)
			if p, ok := pins[m.ID]; ok {
				s.Pinned, s.PinNote = true, p.Note
			}
			all = append(all, s)
		}
		for _, d := range bad {
			damaged = append(damaged, map[string]string{"id": d.ID, "repo": r.Name, "error": d.Error})
		}
	}
	if *f.jsonOut {
		if all == nil {
			all = []backupSummary{}
		}
		printJSON(e.stdout, map[string]any{"cluster": cfg.Cluster, "backups": all, "damaged": damaged})
		return 0
	}
	defer func() {
		for _, d := range damaged {
			fmt.Fprintf(e.stdout, "DAMAGED %s in %s: %s\n", d["id"], d["repo"], d["error"])
		}
	}()
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTYPE\tPARENT\tTIER\tREPO\tSTART\tSTOP\tSTART LSN\tSTOP LSN\tTL\tDATABASE\tSTORED\tDURATION\tPIN")
	for _, s := range all {
		pin := "-"
		if s.Pinned {
			pin = "pinned: " + s.PinNote
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%.1fs\t%s\n", s.ID, s.Type, dash(s.Parent), dash(s.Tier), s.Repo,
			s.StartTime.UTC().Format(listTime), s.StopTime.UTC().Format(listTime), s.StartLSN, s.StopLSN, s.Timeline,
			humanBytes(s.DatabaseBytes), humanBytes(s.StoredBytes), s.Duration, pin)
	}
	tw.Flush()
	if len(all) == 0 {
		fmt.Fprintln(e.stdout, "(no backups)")
	}
	return 0
}

func cmdBackupVerify(ctx context.Context, e env, args []string) int {
	f := newFlags(e, "backup-verify", "backup-verify --config FILE [--json] [--parallel N] [--progress] ID|latest",
		`Re-reads, decrypts and verifies every object of the backup and of the backups it
builds on (and the CRC of each stored global/pg_control), and checks that the WAL
it needs to reach consistency is archived, in every configured repository: a
repository that does not hold the backup fails.
latest is the newest backup of the first repository that has one, and the same
backup is verified everywhere. Exit 0 only if all is well.`, true).withJSON()
	parallel := f.Int("parallel", runtime.NumCPU(), "objects verified at once")
	showProgress := f.Bool("progress", isTerminal(e.stderr), "print progress on stderr (default: when stderr is a terminal)")
	pos, code, ok := f.parse(args, 1)
	if !ok {
		return code
	}
	cfg, log, code := f.config(e)
	if cfg == nil {
		return code
	}
	repos, err := repo.OpenAll(ctx, cfg)
	if err != nil {
		log.Error("backup-verify", "err", err)
		return ExitFailure
	}
	ids, err := keys.Identities(cfg)
	if err != nil {
		log.Error("backup-verify", "err", err)
		return ExitFailure
	}
	id := pos[0]
	if id == "latest" {
		for _, r := range repos {
			got, err := backup.Resolve(ctx, r, cfg.Cluster, id)
			if errors.Is(err, backup.ErrNoBackup) {
				continue
			}
			if err != nil {
				log.Error("backup-verify", "repo", r.Name, "err", err)
				return ExitFailure
			}
			id = got
			break
		}
		if id == "latest" {
			log.Error("backup-verify: no repository holds a backup of cluster " + cfg.Cluster)
			return ExitFailure
		}
	}
	allOK := true
	var reports []*backup.VerifyReport
	for _, r := range repos {
		rep, err := backup.Verify(ctx, r, cfg.Cluster, id, ids, *parallel, progressTo(e, *showProgress))
		if errors.Is(err, backup.ErrNoBackup) {
			rep = &backup.VerifyReport{Repo: r.Name, Backup: id, Failed: []backup.FailedObject{}, MissingWAL: []string{}, Absent: err.Error()}
		} else if err != nil {
			log.Error("backup-verify", "repo", r.Name, "err", err)
			return ExitFailure
		}
		reports = append(reports, rep)
		allOK = allOK && rep.OK()
	}
	if *f.jsonOut {
		printJSON(e.stdout, map[string]any{"ok": allOK, "reports": reports})
	} else {
		for _, rep := range reports {
			if rep.Absent != "" {
				fmt.Fprintf(e.stdout, "repository %s: backup %s: ABSENT: %s\n", rep.Repo, rep.Backup, rep.Absent)
				continue
			}
			fmt.Fprintf(e.stdout, "repository %s: backup %s (chain %v): verified %d of %d objects, %s of data (%s stored); WAL %d segments needed, %d missing\n",
				rep.Repo, rep.Backup, rep.Chain, rep.Verified, rep.Objects, humanBytes(rep.Bytes), humanBytes(rep.StoredBytes), len(rep.WALNeeded), len(rep.MissingWAL))
			for _, fo := range rep.Failed {
				fmt.Fprintf(e.stdout, "  FAILED %s: %s\n", fo.Key, fo.Error)
			}
			for _, s := range rep.MissingWAL {
				fmt.Fprintf(e.stdout, "  MISSING WAL %s\n", s)
			}
		}
		if allOK {
			fmt.Fprintln(e.stdout, "OK")
		} else {
			fmt.Fprintln(e.stdout, "FAILED: see above")
		}
	}
	if !allOK {
		return ExitFailure
	}
	return 0
}

func cmdRestore(ctx context.Context, e env, args []string) int {
	f := newFlags(e, "restore", "restore --config FILE [--backup ID|latest] --pgdata DIR [target] [--target-action A] [--target-timeline N|current|latest] [--archive-config FILE] [--replaces-source] [--no-archive] [--tablespace-map OID_OR_NAME=DIR ...] [--tablespace-map-all DIR] [--waldir DIR] [--repo NAME] [--include-partial[=false]] [--parallel N] [--force] [--start [--port N] [--socket-dir DIR] [--log-file FILE] [--wait-timeout D]] [--progress] [--json]",
		`Restores a backup (and the chain it builds on) into an empty directory and
configures recovery: recovery.signal, restore_command = pgdr-agent wal-fetch and
the target. Without --backup, a time or LSN target picks the newest backup that
ends before it, and a name target the newest backup from which recovery reaches
the restore point (found in the archived WAL) once consistent; otherwise the
latest backup is used. Every check (backup, chain,
target against the backup and the archive, identity, empty target directory)
runs before anything is written. --start starts PostgreSQL and waits until
recovery reaches the target, then reports the LSN and time reached; the
server's log goes to <pgdata>/pgdr/restore.log (left out of backups) or
--log-file.

Timeline: recovery follows the archive's history from the backup on: through
a failover (the old timeline ends where the new one begins) to the newest
timeline. Where the archive forks (two timelines branch off one, or a
timeline goes on after another branched off it: a restored copy or a second
primary archived into the repository), the restore refuses and names the
branches: choose with --target-timeline N, current (the backup's) or latest.
A backup taken on a timeline after another branched off it (an old primary
not yet fenced) is refused, and skipped without --backup; so is a restore
when a timeline above the one followed has archived WAL but no history file.

Stream partial: a restore to the latest point (no target) lets recovery use
the WAL receiver's partial copy of the segment after the archive's end
(restore_command runs wal-fetch --include-partial), when it is on the
archive's newest timeline (the highest with a history file, 1 when none):
the WAL committed after the last archived segment, up to the receiver's last
upload. The restore verifies it first and reports its bytes, LSN range and
timeline; with --start, what recovery got. --include-partial=false ends
recovery at the archive; --include-partial with a target is refused.

Archiving: the restored cluster does not archive (archive_mode = off): a
copy archiving with the source's archive_command would put its timeline into
the source's archive. --archive-config FILE archives with pgdr-agent wal-push
--config FILE instead, refused when FILE names the source's own archive (same
cluster name and repository); --replaces-source allows that, and alone keeps
the archive settings restored with the files, for a restore that replaces the
source cluster.

Tablespaces are restored where they were unless relocated (needed on the
host of the running source, or on one with another layout):
--tablespace-map OID_OR_NAME=DIR (repeatable) puts one tablespace, named by
its OID or its name, at DIR; --tablespace-map-all DIR puts every other one at
DIR/<name> (DIR/<OID> when the backup has no name for it). New locations
must be absolute, outside the data directory and distinct. Every tablespace
location must be empty or absent; --force empties a new location as it does
the data directory, but an original location only if the data directory
being replaced links to it (pg_tblspc): on the source's own host that is
the live tablespace, which --force never touches. The pg_tblspc links and
the tablespace_map written for recovery name the new locations; the output
lists where each tablespace went. A tablespace created while the backup ran
cannot be relocated.

pg_wal is made inside the data directory, whatever the source's layout
(initdb -X), unless --waldir DIR makes it a link to DIR (absolute, outside the
data directory and the tablespaces, empty or absent; --force empties it only
if the data directory being replaced links its pg_wal there).`, true).withJSON()
	id := f.String("backup", "", "backup ID or latest (default: see above)")
	pgdata := f.String("pgdata", "", "directory to restore into (must be empty or absent)")
	tTime := f.String("target-time", "", "recover up to this time, with its zone: RFC 3339 (2026-11-26T08:17:00Z) or PostgreSQL's form ('2026-11-26 08:17:00+00', '… UTC', '… Europe/Paris')")
	tLSN := f.String("target-lsn", "", "recover up to this LSN (X/Y)")
	tXID := f.String("target-xid", "", "recover up to this transaction ID")
	tName := f.String("target-name", "", "recover up to this named restore point (pg_create_restore_point)")
	tImm := f.Bool("target-immediate", false, "stop as soon as the backup is consistent")
	action := f.String("target-action", "pause", "at the target: promote, pause or shutdown")
	parallel := f.Int("parallel", runtime.NumCPU(), "files written at once")
	showProgress := f.Bool("progress", isTerminal(e.stderr), "print progress on stderr (default: when stderr is a terminal)")
	force := f.Bool("force", false, "restore into a non-empty directory, deleting its contents")
	repoName := f.String("repo", "", "read from this repository (default: the first holding the backup)")
	noArchive := f.Bool("no-archive", false, "set archive_mode = off in the restored cluster (the default; see above)")
	archiveCfg := f.String("archive-config", "", "archive from the restored cluster with pgdr-agent wal-push --config `FILE` (not into the source's archive unless --replaces-source)")
	replaces := f.Bool("replaces-source", false, "the restored cluster replaces the source: it may archive into the source's repositories (alone: archive settings as restored)")
	timeline := f.String("target-timeline", "", "timeline recovery follows: a number, current (the backup's) or latest (default: the archive's history, refused where it forks)")
	logFile := f.String("log-file", "", "with --start: the server's log file (default: <pgdata>/pgdr/restore.log)")
	start := f.Bool("start", false, "start PostgreSQL and wait until the target is reached")
	port := f.Int("port", 0, "with --start: port for the restored server (default: as configured)")
	socket := f.String("socket-dir", "", "with --start: unix socket directory (default: as configured)")
	waitTimeout := f.Duration("wait-timeout", time.Hour, "with --start: how long to wait for the target")
	spcMap := tablespaceMapFlag{}
	f.Var(spcMap, "tablespace-map", "`OID_OR_NAME=DIR` restores the tablespace with that OID or name at DIR, an absolute path (repeatable)")
	spcMapAll := f.String("tablespace-map-all", "", "restore every tablespace not named by --tablespace-map at `DIR`/<name> (or DIR/<OID>)")
	walDir := f.String("waldir", "", "make pg_wal a link to `DIR` (absolute, empty or absent), as initdb -X does")
	includePartial := f.Bool("include-partial", false, "recovery may use the WAL receiver's partial copy of the segment after the archive's end, on the newest timeline (default: on for a restore to the latest point; refused with a target)")
	if _, code, ok := f.parse(args, 0); !ok {
		return code
	}
	partial := restore.PartialDefault
	f.Visit(func(fl *flag.Flag) {
		if fl.Name == "include-partial" {
			partial = restore.PartialOff
			if *includePartial {
				partial = restore.PartialOn
			}
		}
	})
	cfg, log, code := f.config(e)
	if cfg == nil {
		return code
	}
	fail := func(err error) int {
		if *f.jsonOut {
			printJSON(e.stdout, map[string]any{"ok": false, "error": err.Error()})
		}
		log.Error("restore failed", "err", err)
		return ExitFailure
	}
	if *pgdata == "" {
		fmt.Fprintln(e.stderr, "pgdr-agent restore: --pgdata DIR is required")
		return ExitUsage
	}
	var target restore.Target
	if *tTime != "" {
		t, err := restore.ParseTargetTime(*tTime)
		if err != nil {
			return fail(err)
		}
		target.Time = &t
	}
	if *tLSN != "" {
		l, err := wal.ParseLSN(*tLSN)
		if err != nil {
			return fail(fmt.Errorf("--target-lsn: %w", err))
		}
		target.LSN = &l
	}
	target.XID, target.Name, target.Immediate = *tXID, *tName, *tImm
	if absPG, err := filepath.Abs(*pgdata); err == nil {
		if err := checkRestoreUser(cfg, absPG, *start); err != nil {
			return fail(err)
		}
	}
	deps, self, cfgPath, err := restoreDeps(ctx, cfg, log)
	if err != nil {
		return fail(err)
	}
	res, err := restore.Restore(ctx, deps, restore.Options{
		BackupID: *id, PGData: *pgdata, Target: target, Action: *action, Parallel: *parallel, Force: *force,
		Repo: *repoName, NoArchive: *noArchive, ArchiveConfig: *archiveCfg, ReplacesSource: *replaces, TargetTimeline: *timeline,
		AgentPath: self, ConfigPath: cfgPath, Partial: partial,
		TablespaceMap: spcMap, TablespaceMapAll: *spcMapAll, WALDir: *walDir, Progress: progressTo(e, *showProgress),
	})
	if err != nil {
		return fail(err)
	}
	out := map[string]any{"ok": true, "restore": res}
	if !*f.jsonOut {
		fmt.Fprintf(e.stdout, "restored backup %s (chain %v) into %s: %d files, %s, %d objects read, %.1fs\n",
			res.Backup, res.Chain, res.PGData, res.Files, humanBytes(res.Bytes), res.ObjectsRead, res.Seconds)
		for _, ts := range res.Tablespaces {
			fmt.Fprintf(e.stdout, "tablespace %s (%s) at %s\n", ts.OID, dash(ts.Name), ts.Location)
		}
		if res.Timeline != 0 {
			fmt.Fprintf(e.stdout, "recovery follows timeline %d\n", res.Timeline)
		}
		if rp := res.RestorePoint; rp != nil {
			fmt.Fprintf(e.stdout, "recovery target: restore point %q at %s (ends %s, timeline %d), created %s\n",
				rp.Name, rp.LSN, rp.EndLSN, rp.Timeline, rp.Time.Format(time.RFC3339Nano))
		}
		switch {
		case res.Partial != nil:
			p := res.Partial
			fmt.Fprintf(e.stdout, "stream partial: segment %s of timeline %d holds %d bytes of WAL past the archive's end, %s to %s (repository %s): recovery replays it, then ends\n",
				p.Segment, p.Timeline, p.Bytes, p.FromLSN, p.ToLSN, p.Repo)
		case res.IncludePartial:
			fmt.Fprintf(e.stdout, "stream partial: none (%s)\n", res.PartialNote)
		}
	}
	if *start {
		reached, err := restore.Start(ctx, res.PGData, restore.StartOptions{BinDir: cfg.Postgres.BinDir, Port: *port, Socket: *socket, Action: *action, Timeout: *waitTimeout, LogFile: *logFile})
		if err != nil {
			return fail(err)
		}
		out["reached"] = reached
		if !*f.jsonOut {
			fmt.Fprintf(e.stdout, "recovery %s at LSN %s, last replayed commit %s (%.1fs)\n", reached.State, dash(reached.LSN), dash(reached.LastXact), reached.Seconds)
			if p := reached.Partial; p != nil {
				fmt.Fprintf(e.stdout, "recovery used the stream partial of segment %s (timeline %d): %d bytes of WAL, %s to %s\n", p.Segment, p.Timeline, p.Bytes, p.FromLSN, p.ToLSN)
			}
		}
	}
	if *f.jsonOut {
		printJSON(e.stdout, out)
	}
	return 0
}

// checkDataOwner refuses a user other than the data directory's owner:
// a file repository's objects and directories are created private to the
// user who writes them (0600, 0700), so a backup run as root into a fresh
// repository left <cluster>/ unreadable to archive_command (run as the
// owner), and archiving failed until someone fixed the permissions.
func checkDataOwner(pgdata string) error {
	uid, _, err := restore.Owner(pgdata)
	if err != nil {
		return fmt.Errorf("postgres.pgdata: %w", err)
	}
	if euid := uint32(os.Geteuid()); euid != uid {
		return fmt.Errorf("running as %s, but the data directory %s belongs to %s: what this command creates in a file repository would be readable by %s only and archive_command (run as %s) could fail on it; run it as %s (e.g. sudo -u %s), or pass --allow-other-user",
			userName(euid), pgdata, userName(uid), userName(euid), userName(uid), userName(uid), userName(uid))
	}
	return nil
}

// userName is the login name of uid, or the number.
func userName(uid uint32) string {
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		return u.Username
	}
	return "uid " + strconv.FormatUint(uint64(uid), 10)
}

// progressTo is where --progress lines go: stderr, or nowhere.
func progressTo(e env, on bool) io.Writer {
	if on {
		return e.stderr
	}
	return nil
}

// restoreDeps are what a restore (or a drill) reads with, and the
// restored copy's restore_command: this program and the configuration's
// absolute path.
func restoreDeps(ctx context.Context, cfg *config.Config, log *slog.Logger) (d restore.Deps, self, cfgPath string, err error) {
	repos, err := repo.OpenAll(ctx, cfg)
	if err != nil {
		return d, "", "", err
	}
	ids, err := keys.Identities(cfg)
	if err != nil {
		return d, "", "", err
	}
	if self, err = os.Executable(); err != nil {
		return d, "", "", err
	}
	if cfgPath, err = filepath.Abs(cfg.Path); err != nil {
		return d, "", "", err
	}
	return restore.Deps{Cfg: cfg, Repos: repos, Identities: ids, Log: log}, self, cfgPath, nil
}
