package s3store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/storage/s3store"
	"github.com/pgdr/pgdr/pkg/storage/storagetest"
	"github.com/pgdr/pgdr/pkg/testutil/s3server"
)

// options returns Options for bucket/prefix on srv (or on endpoint, when set,
// e.g. a proxy in front of srv), with the smallest part size S3 allows so the
// suite's large objects take several parts.
func options(srv *s3server.Server, endpoint, bucket, prefix string) s3store.Options {
	if endpoint == "" {
		endpoint = srv.Endpoint
	}
	return s3store.Options{
		Bucket:          bucket,
		Prefix:          prefix,
		Endpoint:        endpoint,
		Region:          srv.Region,
		PathStyle:       true,
		AccessKeyID:     srv.AccessKey,
		SecretAccessKey: srv.SecretKey,
		PartSize:        5 << 20,
		Concurrency:     3,
		MaxAttempts:     3,
	}
}

func newStore(t *testing.T, opts s3store.Options) *s3store.Store {
	t.Helper()
	s, err := s3store.New(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	srv := s3server.Start(t)
	const bucket = "conformance"
	srv.CreateBucket(t, bucket)
	var n atomic.Int64
	storagetest.Run(t, func(t *testing.T) storage.ObjectStore {
		// A nested prefix per subtest keeps the parallel subtests apart
		// and checks that the prefix is added and stripped consistently.
		prefix := fmt.Sprintf("pgdr/run-%d", n.Add(1))
		s := newStore(t, options(srv, "", bucket, prefix))
		if got, want := s.String(), "s3://"+bucket+"/"+prefix; got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
		// Failed and cancelled puts must abort their multipart uploads,
		// not leave invisible (but billed) parts behind.
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := srv.Client().ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{
				Bucket: aws.String(bucket), Prefix: aws.String(prefix + "/"),
			})
			if err != nil {
				t.Errorf("ListMultipartUploads: %v", err)
				return
			}
			for _, u := range out.Uploads {
				t.Errorf("multipart upload left behind: %s (%s)", aws.ToString(u.Key), aws.ToString(u.UploadId))
			}
		})
		return s
	})
}

// TestNoPrefix uses the bucket root: keys come back unchanged and
// String() has no trailing prefix.
func TestNoPrefix(t *testing.T) {
	srv := s3server.Start(t)
	srv.CreateBucket(t, "root")
	s := newStore(t, options(srv, "", "root", "/"))
	if got := s.String(); got != "s3://root" {
		t.Errorf("String() = %q", got)
	}
	ctx := t.Context()
	for _, k := range []string{"x/y", "x0"} {
		if err := s.Put(ctx, k, strings.NewReader("v"), 1); err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	if err := s.List(ctx, "", func(oi storage.ObjectInfo) error { keys = append(keys, oi.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(keys, ",") != "x/y,x0" {
		t.Fatalf("List = %q", keys)
	}
}

// clearAWSEnv leaves the SDK's default credential chain with nothing to
// find. IMDS is disabled explicitly: the chain would otherwise try the EC2
// metadata address, which is not on this machine.
func clearAWSEnv(t *testing.T) {
	dir := t.TempDir()
	for _, k := range []string{
		"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY", "AWS_SECRET_KEY",
		"AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
		"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
	} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "no-credentials"))
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "no-config"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

func TestMissingCredentials(t *testing.T) {
	clearAWSEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	_, err := s3store.New(ctx, s3store.Options{
		Bucket: "backups", Prefix: "prod/db1", Endpoint: "http://127.0.0.1:9", PathStyle: true,
	})
	if err == nil {
		t.Fatal("New without any credentials succeeded")
	}
	for _, want := range []string{"no S3 credentials for s3://backups/prod/db1", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "s3.access_key_id_file"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}

	// A key id without its secret is a configuration mistake, not a reason
	// to fall back to some other identity from the environment.
	_, err = s3store.New(ctx, s3store.Options{Bucket: "backups", AccessKeyID: "AKIDONLY"})
	if err == nil || !strings.Contains(err.Error(), "secret access key") {
		t.Errorf("New with only an access key id: %v", err)
	}
}

// TestCredentialsFromEnv checks the default chain is used when Options
// carry no keys.
func TestCredentialsFromEnv(t *testing.T) {
	srv := s3server.Start(t)
	srv.CreateBucket(t, "env")
	clearAWSEnv(t)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	opts := options(srv, "", "env", "p")
	opts.AccessKeyID, opts.SecretAccessKey = "", ""
	s := newStore(t, opts)
	if err := s.Put(t.Context(), "k", strings.NewReader("v"), 1); err != nil {
		t.Fatal(err)
	}
}

func TestSecretsNotShown(t *testing.T) {
	srv := s3server.Start(t)
	srv.CreateBucket(t, "sec")
	s := newStore(t, options(srv, "", "sec", "p"))
	_, err := s.Stat(t.Context(), "missing")
	for _, text := range []string{s.String(), fmt.Sprint(err), fmt.Sprintf("%+v", s)} {
		if strings.Contains(text, srv.SecretKey) {
			t.Errorf("secret key shown in %q", text)
		}
	}
	// A wrong secret must fail with the server's answer, still without it.
	opts := options(srv, "", "sec", "p")
	opts.SecretAccessKey = "wrong-" + srv.SecretKey[:8]
	bad := newStore(t, opts)
	err = bad.Put(t.Context(), "k", strings.NewReader("v"), 1)
	if err == nil || strings.Contains(err.Error(), opts.SecretAccessKey) {
		t.Errorf("Put with a wrong secret: %v", err)
	}
}

// TestOutage stops the server under a store: requests fail within a bounded
// time instead of hanging, and work again once the server is back.
func TestOutage(t *testing.T) {
	srv := s3server.Start(t)
	srv.CreateBucket(t, "outage")
	opts := options(srv, "", "outage", "p")
	opts.MaxAttempts = 2
	s := newStore(t, opts)
	ctx := t.Context()
	before := bytes.Repeat([]byte("b"), 1000)
	if err := s.Put(ctx, "before", bytes.NewReader(before), int64(len(before))); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	big := bytes.Repeat([]byte("x"), 12<<20) // multipart
	for _, b := range [][]byte{[]byte("during"), big} {
		start := time.Now()
		err := s.Put(ctx, "during", bytes.NewReader(b), int64(len(b)))
		if err == nil {
			t.Fatalf("Put of %d bytes succeeded with the server stopped", len(b))
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Errorf("Put took %v to fail with the server stopped", d)
		}
		t.Logf("Put of %d bytes with the server stopped: %v", len(b), err)
	}
	if _, err := s.Stat(ctx, "before"); err == nil || errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Stat with the server stopped = %v; want a failure that is not ErrNotFound", err)
	}

	srv.Restart(t)
	if err := s.Put(ctx, "after", bytes.NewReader(big), int64(len(big))); err != nil {
		t.Fatalf("Put after restart: %v", err)
	}
	rc, err := s.Get(ctx, "before")
	if err != nil {
		t.Fatalf("Get after restart: %v", err)
	}
	defer rc.Close()
	if got, _ := io.ReadAll(rc); !bytes.Equal(got, before) {
		t.Fatalf("object written before the outage changed: %d bytes", len(got))
	}
}

// faultProxy forwards to the real server but answers the first n requests
// itself with an S3 error, the way an overloaded S3 does.
type faultProxy struct {
	n, status int
	code      string

	mu       sync.Mutex
	requests int
}

func (f *faultProxy) handler(target *url.URL) http.Handler {
	rp := httputil.NewSingleHostReverseProxy(target) // keeps the signed Host header
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests++
		fail := f.requests <= f.n
		f.mu.Unlock()
		if !fail {
			rp.ServeHTTP(w, r)
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(f.status)
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>injected</Message></Error>`, f.code)
	})
}

func (f *faultProxy) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

// TestRetries checks that throttling and server errors are retried with
// the configured number of attempts.
func TestRetries(t *testing.T) {
	srv := s3server.Start(t)
	srv.CreateBucket(t, "retry")
	target, err := url.Parse(srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name        string
		failures    int
		status      int
		code        string
		maxAttempts int
		wantErr     bool
	}{
		{"SlowDown", 2, http.StatusServiceUnavailable, "SlowDown", 3, false},
		{"TooManyRequests", 1, http.StatusTooManyRequests, "TooManyRequests", 2, false},
		{"InternalError", 2, http.StatusInternalServerError, "InternalError", 3, false},
		{"MaxAttemptsApplies", 3, http.StatusServiceUnavailable, "SlowDown", 2, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			fp := &faultProxy{n: c.failures, status: c.status, code: c.code}
			proxy := httptest.NewServer(fp.handler(target))
			defer proxy.Close()
			opts := options(srv, proxy.URL, "retry", c.name)
			opts.MaxAttempts = c.maxAttempts
			s := newStore(t, opts)
			err := s.Put(t.Context(), "k", strings.NewReader("value"), 5)
			if c.wantErr {
				if err == nil {
					t.Fatal("Put succeeded although every allowed attempt failed")
				}
				if got := fp.count(); got != c.maxAttempts {
					t.Fatalf("%d requests reached the server, want exactly MaxAttempts=%d", got, c.maxAttempts)
				}
				return
			}
			if err != nil {
				t.Fatalf("Put through %d injected %d %s: %v", c.failures, c.status, c.code, err)
			}
			// failures + the successful PutObject + the verifying HeadObject.
			if got, want := fp.count(), c.failures+2; got != want {
				t.Errorf("%d requests, want %d", got, want)
			}
		})
	}
}

// TestDeleteBatch: one request deletes many keys (under the prefix), a
// missing key is not an error, others are left alone, and a batch over the
// limit or with an invalid key is refused before any request.
func TestDeleteBatch(t *testing.T) {
	srv := s3server.Start(t)
	srv.CreateBucket(t, "batch")
	s := newStore(t, options(srv, "", "batch", "pgdr"))
	ctx := t.Context()
	var all []string
	for i := range 30 {
		k := fmt.Sprintf("wal/00000001/k%02d", i)
		if err := s.Put(ctx, k, strings.NewReader("v"), 1); err != nil {
			t.Fatal(err)
		}
		all = append(all, k)
	}
	if err := s.DeleteBatch(ctx, append(all[:20:20], "wal/00000001/missing")); err != nil {
		t.Fatal(err)
	}
	var left []string
	if err := s.List(ctx, "", func(oi storage.ObjectInfo) error { left = append(left, oi.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(left, all[20:]) {
		t.Fatalf("left after the batch: %v, want %v", left, all[20:])
	}
	if err := s.DeleteBatch(ctx, make([]string, storage.MaxBatchDelete+1)); err == nil {
		t.Fatal("a batch over the limit was accepted")
	}
	if err := s.DeleteBatch(ctx, []string{all[20], "../x"}); !errors.Is(err, storage.ErrInvalidKey) {
		t.Fatalf("a batch with an invalid key: %v", err)
	}
	if _, err := s.Stat(ctx, all[20]); err != nil {
		t.Fatalf("a refused batch deleted %s: %v", all[20], err)
	}
}

// TestListRange: keys after after (excluded) and up to upTo (included),
// under the store's prefix, across pages (the server is asked for pages of
// 1,000 keys; 1,200 keys make two).
func TestListRange(t *testing.T) {
	srv := s3server.Start(t)
	srv.CreateBucket(t, "ranges")
	s := newStore(t, options(srv, "", "ranges", "pgdr"))
	ctx := t.Context()
	var all []string
	for i := range 1200 {
		all = append(all, fmt.Sprintf("wal/00000001/k%04d", i))
	}
	all = append(all, "wal/00000002/k0000", "walx")
	var wg sync.WaitGroup
	errs := make(chan error, len(all))
	sem := make(chan struct{}, 16)
	for _, k := range all {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs <- s.Put(ctx, k, strings.NewReader("v"), 1)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	list := func(prefix, after, upTo string) []string {
		var got []string
		if err := s.ListRange(ctx, prefix, after, upTo, func(oi storage.ObjectInfo) error { got = append(got, oi.Key); return nil }); err != nil {
			t.Fatal(err)
		}
		return got
	}
	for _, tc := range []struct {
		prefix, after, upTo string
		want                []string
	}{
		{"wal/", "", "", all[:1201]},
		{"wal/00000001/", "wal/00000001/k0010", "wal/00000001/k1100", all[11:1101]},
		{"wal/00000001/", "wal/00000001/k0010", "wal/00000001/k1100x", all[11:1101]},
		{"wal/", "wal/00000001/k1199", "", all[1200:1201]},
		{"wal/", "wal/00000001/", "wal/00000001/k0001", all[:2]},
		{"wal/", "wal/00000002/", "wal/00000001/k0001", nil},
		{"", "wal/00000002/k0000", "", all[1201:]},
	} {
		if got := list(tc.prefix, tc.after, tc.upTo); !slices.Equal(got, tc.want) {
			t.Errorf("ListRange(%q, %q, %q): %d keys, want %d", tc.prefix, tc.after, tc.upTo, len(got), len(tc.want))
		}
	}
}
