package repostat

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage/s3store"
	"github.com/pgdr/pgdr/pkg/testutil/s3server"
	"github.com/pgdr/pgdr/pkg/wal"
)

// TestS3RoundListsNoBackupData: on S3 a round finds the backups without
// listing their data objects. Each ListObjectsV2 answers up to 1000 keys:
// "skipping from one backup's keys to the next" fetched a page of every
// backup's data keys each round (every minute, on every node), some 250
// KiB of XML per backup to fetch and parse.
func TestS3RoundListsNoBackupData(t *testing.T) {
	if testing.Short() {
		t.Skip("starts versitygw")
	}
	srv := s3server.Start(t)
	srv.CreateBucket(t, "repostat")
	target, err := url.Parse(srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	var listedKeys atomic.Int64
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.URL.Query().Get("list-type") != "2" {
			return nil
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		listedKeys.Add(int64(bytes.Count(b, []byte("<Key>"))))
		resp.Body = io.NopCloser(bytes.NewReader(b))
		return nil
	}
	front := httptest.NewServer(proxy)
	defer front.Close()
	st, err := s3store.New(t.Context(), s3store.Options{Bucket: "repostat", Prefix: "p", Endpoint: front.URL, Region: srv.Region, PathStyle: true,
		AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey, MaxAttempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	r := repo.Repo{Name: "s3", Store: st}
	ctx := context.Background()
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	const backups, dataKeys = 3, 150
	for i := range backups {
		start := base.Add(time.Duration(i) * time.Hour)
		m := &backup.Manifest{Format: backup.ManifestFormat, ID: start.Format("20060102T150405") + "F", Type: "full", Tier: "daily", Cluster: cluster,
			StartTime: start, StopTime: start.Add(time.Minute), SegmentSize: wal.DefaultSegmentSize, Timeline: 1}
		if err := backup.SaveManifest(ctx, r, m, nil); err != nil {
			t.Fatal(err)
		}
		for k := range dataKeys {
			put(t, st, fmt.Sprintf("%s%s/pgdata/base/1/%d", backup.Prefix(cluster), m.ID, k))
		}
	}
	rd := New(cluster, []repo.Repo{r}, nil)
	rd.ReadOnce(ctx)
	if tiers := rd.Snapshots()[0].Tiers; len(tiers) != 1 || tiers[0].Backups != backups {
		t.Fatalf("tiers %+v", tiers)
	}
	listedKeys.Store(0)
	rd.ReadOnce(ctx)
	if n := listedKeys.Load(); n > 2*backups {
		t.Errorf("a round listed %d keys for %d backups of %d data objects each", n, backups, dataKeys)
	}
	if tiers := rd.Snapshots()[0].Tiers; len(tiers) != 1 || tiers[0].Backups != backups {
		t.Fatalf("second round: tiers %+v", tiers)
	}
}
