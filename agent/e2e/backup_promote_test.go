package e2e

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// TestStandbyBackupRefusedAcrossPromotion: a backup running on a standby
// (slowed with --max-rate so it is still copying) when the standby is
// promoted does not finish: it exits non-zero saying why, and no backup is
// recorded.
func TestStandbyBackupRefusedAcrossPromotion(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{})
	l.pg.PGBench(t, "-i", "-q", "-s", "3", "postgres") // ~45 MB: ~9 s at 5 MB/s
	sb := l.newStandby(t, nil)
	sbcfg := l.writeNodeConfig(t, "standby.yaml", sb, []string{"file"})

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, agentPath(t), "backup", "--config", sbcfg, "--from-standby", "--max-rate", "5", "--wal-timeout", "1m")
	if cred := pgtest.Credential(t); cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var stderr testutil.SyncBuffer
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	testutil.WaitFor(t, 60*time.Second, "the standby backup to start", func() (bool, error) {
		return strings.Contains(stderr.String(), "backup started"), nil
	})
	select {
	case err := <-done:
		t.Fatalf("the backup ended before the promotion (raise the data size or lower --max-rate): %v\n%s", err, stderr.String())
	default:
	}
	sb.Run(t, "pg_ctl", "-D", sb.PGData, "-w", "promote")

	var err error
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("the backup did not end after the promotion:\n%s", stderr.String())
	}
	if err == nil {
		t.Fatalf("a standby backup spanning a promotion succeeded:\n%s", stderr.String())
	}
	if msg := stderr.String(); !strings.Contains(msg, "promoted") {
		t.Fatalf("the failure does not say the standby was promoted:\n%s", msg)
	}
	if bs := listBackups(t, l.cfg, ""); len(bs) != 0 {
		t.Fatalf("a backup spanning a promotion was recorded: %+v", bs)
	}
	if objs := l.storedObjectsAll(t); len(objs) != 0 {
		t.Fatalf("the failed backup left %d objects behind, e.g. %s", len(objs), objs[0])
	}
}

// storedObjectsAll lists every file under the file repository's backup
// directory (any backup, manifests included).
func (l *lab) storedObjectsAll(t *testing.T) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(filepath.Join(l.repoDir, "main", "backup"), func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
