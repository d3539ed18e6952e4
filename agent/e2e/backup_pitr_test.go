package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/testutil"
)

// archivePast closes the current WAL segment and waits until it is
// archived, once the clock is in a later whole second than target (an
// RFC 3339 time). S3 reports object times in whole seconds and restore
// checks a time target against the newest segment's archive time, so
// without this a target in the same second as the last archiving is
// refused as "beyond the archive": see
// TestRestoreTimeTargetInLastArchivedSecond, which exercises exactly that.
func (l *lab) archivePast(t *testing.T, target string) {
	t.Helper()
	tt, err := time.Parse(time.RFC3339Nano, target)
	if err != nil {
		t.Fatal(err)
	}
	next := tt.Truncate(time.Second).Add(time.Second)
	testutil.WaitFor(t, 10*time.Second, "the clock to pass "+next.Format(time.RFC3339), func() (bool, error) {
		return !time.Now().Before(next), nil
	})
	last := l.switchWAL(t)
	l.waitArchived(t, last, 2*time.Minute)
}

// TestPITRS3Repo is TestPITRFileRepo against the S3 repository alone: the
// backup and the WAL go to both repositories, and everything is restored
// (files and, through restore_command, WAL) from a configuration that names
// only the S3 one. A time between two batches, an LSN and a named restore
// point each give exactly the rows committed up to them.
func TestPITRS3Repo(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{s3: true})
	s3cfg := l.writeConfig(t, "s3-only.yaml", []string{"s3"}, l.identity, 0)
	l.pg.Exec(t, "CREATE TABLE batches(batch int, n int)")
	insertBatch(t, l, 1)
	id := l.backup(t, l.cfg)
	if b := findBackup(t, listBackups(t, s3cfg, ""), id); b.Repo != "dr" || b.Type != "full" {
		t.Fatalf("backup %s in the S3-only listing: %+v", id, b)
	}
	var times []string
	for b := 2; b <= 4; b++ {
		times = append(times, insertBatch(t, l, b))
	}
	l.pg.Exec(t, "SELECT pg_create_restore_point('s3_after_batch_4')")
	insertBatch(t, l, 5)
	lsn := l.pg.QueryString(t, "SELECT pg_current_wal_lsn()::text")
	insertBatch(t, l, 6)
	l.archivePast(t, times[1])

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"time between batches 3 and 4", []string{"--target-time", times[1]}, "1,2,3"},
		{"named restore point after batch 4", []string{"--target-name", "s3_after_batch_4"}, "1,2,3,4"},
		{"LSN after batch 5", []string{"--target-lsn", lsn}, "1,2,3,4,5"},
	} {
		c, out := l.restoreJSON(t, s3cfg, append(tc.args, "--target-action", "promote")...)
		if out.Restore.Backup != id || out.Reached.State != "promoted" {
			t.Fatalf("%s: restored %s, reached %+v; want backup %s promoted", tc.name, out.Restore.Backup, out.Reached, id)
		}
		if got := batchesIn(t, c); got != tc.want {
			t.Fatalf("%s: batches %s, want %s", tc.name, got, tc.want)
		}
		c.Stop(t, "fast")
	}

	// backup-verify latest checks the same backup in both repositories;
	// a newer backup taken to the file repository alone is then latest,
	// and the S3 repository, which lacks it, fails the verification.
	verifyRepos := func() (int, map[string]backup.VerifyReport) {
		r := runAgent(t, nil, "backup-verify", "--config", l.cfg, "--json", "latest")
		var out struct {
			OK      bool                  `json:"ok"`
			Reports []backup.VerifyReport `json:"reports"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || out.OK != (r.code == 0) {
			t.Fatalf("backup-verify --json latest: exit %d, %v\n%s\n%s", r.code, err, r.stdout, r.stderr)
		}
		byRepo := map[string]backup.VerifyReport{}
		for _, rep := range out.Reports {
			byRepo[rep.Repo] = rep
		}
		return r.code, byRepo
	}
	code, reps := verifyRepos()
	if code != 0 || reps["local"].Backup != id || reps["dr"].Backup != id || reps["dr"].Verified == 0 || reps["dr"].Verified != reps["dr"].Objects {
		t.Fatalf("backup-verify latest: exit %d, reports %+v; want %s verified in both repositories", code, reps, id)
	}
	fileCfg := l.writeConfig(t, "file-only.yaml", []string{"file"}, l.identity, 0)
	newer := l.backup(t, fileCfg)
	code, reps = verifyRepos()
	if code != 1 || reps["local"].Backup != newer || len(reps["local"].Failed)+len(reps["local"].MissingWAL) != 0 || reps["local"].Verified == 0 || reps["dr"].Backup != newer || !strings.Contains(reps["dr"].Absent, newer) {
		t.Fatalf("backup-verify latest after a file-only backup %s: exit %d, reports %+v; want it verified in local and absent from dr", newer, code, reps)
	}
}

// TestRestorePicksBackupBeforeTime: without --backup, a time or LSN target
// restores the newest backup that ends before it (from S3), and recovery
// from that backup reaches exactly the target.
func TestRestorePicksBackupBeforeTime(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{s3: true})
	s3cfg := l.writeConfig(t, "s3-only.yaml", []string{"s3"}, l.identity, 0)
	l.pg.Exec(t, "CREATE TABLE batches(batch int, n int)")
	insertBatch(t, l, 1)
	first := l.backup(t, l.cfg)
	t2 := insertBatch(t, l, 2)
	lsn2 := l.pg.QueryString(t, "SELECT pg_current_wal_lsn()::text")
	insertBatch(t, l, 3)
	second := l.backup(t, l.cfg)
	if first == second {
		t.Fatalf("two backups got the same ID %s", first)
	}
	t4 := insertBatch(t, l, 4)
	insertBatch(t, l, 5)
	l.archivePast(t, t4)
	bs := listBackups(t, s3cfg, "dr")
	if len(bs) != 2 || bs[0].ID != first || bs[1].ID != second || bs[0].Type != "full" || bs[1].Type != "full" {
		t.Fatalf("backup-list (S3): %+v, want full %s then full %s", bs, first, second)
	}

	// Between the two backups: the first one.
	c, out := l.restoreJSON(t, s3cfg, "--target-time", t2, "--target-action", "promote")
	if out.Restore.Backup != first {
		t.Fatalf("target %s (between the backups) restored %s, want the first backup %s", t2, out.Restore.Backup, first)
	}
	if got := batchesIn(t, c); got != "1,2" {
		t.Fatalf("target %s from %s: batches %s, want 1,2", t2, first, got)
	}
	c.Stop(t, "fast")

	// An LSN target between the backups also picks the first one.
	c, out = l.restoreJSON(t, s3cfg, "--target-lsn", lsn2, "--target-action", "promote")
	if out.Restore.Backup != first {
		t.Fatalf("target LSN %s (between the backups) restored %s, want the first backup %s", lsn2, out.Restore.Backup, first)
	}
	if got := batchesIn(t, c); got != "1,2" {
		t.Fatalf("target LSN %s from %s: batches %s, want 1,2", lsn2, first, got)
	}
	c.Stop(t, "fast")

	// After both: the second one.
	c, out = l.restoreJSON(t, s3cfg, "--target-time", t4, "--target-action", "promote")
	if out.Restore.Backup != second {
		t.Fatalf("target %s (after both backups) restored %s, want the second backup %s", t4, out.Restore.Backup, second)
	}
	if got := batchesIn(t, c); got != "1,2,3,4" {
		t.Fatalf("target %s from %s: batches %s, want 1,2,3,4", t4, second, got)
	}
	c.Stop(t, "fast")
}

// TestRestoreTimeTargetInLastArchivedSecond: a time target after the last
// commit but in the same second as the archiving of the newest segment is
// inside what the archive covers. S3 reports LastModified in whole seconds,
// so comparing the target with it as if it were exact refuses the target.
func TestRestoreTimeTargetInLastArchivedSecond(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{s3: true})
	s3cfg := l.writeConfig(t, "s3-only.yaml", []string{"s3"}, l.identity, 0)
	l.pg.Exec(t, "CREATE TABLE batches(batch int, n int)")
	insertBatch(t, l, 1)
	l.backup(t, l.cfg)
	cli := l.s3.Client()
	for attempt := 1; ; attempt++ {
		// Commit at the start of a second, so that the segment holding
		// the commit is archived within the same second.
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
		target := insertBatch(t, l, 2)
		seg := l.switchWAL(t)
		l.waitArchived(t, seg, 2*time.Minute)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := cli.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(l.bucket), Prefix: aws.String("archive/main/wal/00000001/" + seg)})
		cancel()
		if err != nil || len(out.Contents) != 1 {
			t.Fatalf("listing %s in S3: %v (%d objects)", seg, err, len(out.Contents))
		}
		archived := aws.ToTime(out.Contents[0].LastModified)
		tt, _ := time.Parse(time.RFC3339Nano, target)
		if !tt.After(archived) {
			// Archived in a later second: not the case under test.
			if attempt == 5 {
				t.Fatalf("5 attempts to archive within the second of the commit failed (last: commit %s, archived %s)", target, archived)
			}
			l.pg.Exec(t, "DELETE FROM batches WHERE batch = 2")
			continue
		}
		t.Logf("target %s, newest segment %s archived at %s (as S3 reports it)", target, seg, archived.Format(time.RFC3339Nano))
		c, res := l.restoreJSON(t, s3cfg, "--target-time", target, "--target-action", "promote")
		if got := batchesIn(t, c); got != "1,2" {
			t.Fatalf("target %s from %s: batches %s, want 1,2", target, res.Restore.Backup, got)
		}
		return
	}
}
