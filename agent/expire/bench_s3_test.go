package expire

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage/s3store"
	"github.com/pgdr/pgdr/pkg/testutil/s3server"
	"github.com/pgdr/pgdr/pkg/wal"
)

// TestExpireS3Scale measures expire on versitygw with many WAL objects
// and backups (PGDR_EXPIRE_SCALE_WAL segments, 200 backups). It runs only
// when PGDR_EXPIRE_SCALE_WAL is set: filling the bucket takes minutes.
func TestExpireS3Scale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("PGDR_EXPIRE_SCALE_WAL"))
	if n <= 0 {
		t.Skip("set PGDR_EXPIRE_SCALE_WAL=N to run")
	}
	srv := s3server.Start(t)
	srv.CreateBucket(t, "scale")
	ctx := context.Background()
	st, err := s3store.New(ctx, s3store.Options{Bucket: "scale", Endpoint: srv.Endpoint, Region: srv.Region, PathStyle: true,
		AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	r := repo.Repo{Name: "dr", Store: st}
	fill := time.Now()
	work := make(chan string)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range work {
				if err := st.Put(ctx, k, strings.NewReader(k), int64(len(k))); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	for s := range uint64(n) {
		work <- repo.WALKey(cluster, wal.SegmentName(1, s, seg))
	}
	close(work)
	wg.Wait()
	per := uint64(n) / 200
	for i := range 200 {
		id := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i)*time.Hour).Format("20060102T150405") + "F"
		start := time.Now().Add(-time.Duration(200-i) * time.Hour)
		m := &backup.Manifest{Format: backup.ManifestFormat, ID: id, Type: TypeFull, Cluster: cluster, StartTime: start, StopTime: start.Add(time.Minute),
			StartLSN: wal.LSN(uint64(i)*per*seg + 40), StopLSN: wal.LSN(uint64(i)*per*seg + 100), Timeline: 1, SegmentSize: seg}
		for f := range 3 {
			k := fmt.Sprintf("%s%s/pgdata/base/1/%d", backup.Prefix(cluster), id, f)
			if err := st.Put(ctx, k, strings.NewReader(k), int64(len(k))); err != nil {
				t.Fatal(err)
			}
		}
		if err := backup.SaveManifest(ctx, r, m, nil); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("filled %d WAL objects and 200 backups in %s", n, time.Since(fill).Round(time.Second))
	d := Deps{Cluster: cluster, Repos: []repo.Repo{r}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	o := Options{TrustUnsigned: true, Spec: Spec{Types: map[string]Rule{TypeFull: {Count: 20}}}, DryRun: true}
	t0 := time.Now()
	res, err := Run(ctx, d, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dry run: %s, would delete %d backups and %d WAL files", time.Since(t0).Round(time.Millisecond), len(res[0].Plan.Delete), len(res[0].Plan.WALDeleteNames))
	o.DryRun = false
	t0 = time.Now()
	res, err = Run(ctx, d, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("real run: %s, deleted %d backups, %d WAL files, %d objects", time.Since(t0).Round(time.Millisecond), len(res[0].Deleted), res[0].WALDeleted, res[0].Objects)
}
