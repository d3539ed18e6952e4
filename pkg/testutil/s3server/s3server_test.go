package s3server_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pgdr/pgdr/pkg/testutil/s3server"
)

func TestStartStopRestart(t *testing.T) {
	srv := s3server.Start(t)
	if !strings.HasPrefix(srv.Endpoint, "http://127.0.0.1:") {
		t.Fatalf("Endpoint = %q", srv.Endpoint)
	}
	srv.CreateBucket(t, "bkt")
	if fi, err := os.Stat(filepath.Join(srv.Dir, "bkt")); err != nil || !fi.IsDir() {
		t.Fatalf("bucket directory: %v", err)
	}
	cl := srv.Client()
	if _, err := cl.PutObject(t.Context(), &s3.PutObjectInput{
		Bucket: aws.String("bkt"), Key: aws.String("k"), Body: strings.NewReader("v"),
	}); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	srv.Stop() // idempotent
	if _, err := cl.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String("bkt"), Key: aws.String("k")}); err == nil {
		t.Fatal("HeadObject succeeded on a stopped server")
	}

	endpoint := srv.Endpoint
	srv.Restart(t)
	if srv.Endpoint != endpoint {
		t.Fatalf("Restart moved the server from %s to %s", endpoint, srv.Endpoint)
	}
	out, err := cl.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String("bkt"), Key: aws.String("k")})
	if err != nil {
		t.Fatalf("object lost across restart: %v", err)
	}
	if aws.ToInt64(out.ContentLength) != 1 {
		t.Fatalf("size after restart = %d", aws.ToInt64(out.ContentLength))
	}
	srv.Restart(t) // restart while running
}

func TestTwoServers(t *testing.T) {
	a, b := s3server.Start(t), s3server.Start(t)
	if a.Endpoint == b.Endpoint || a.Dir == b.Dir || a.SecretKey == b.SecretKey {
		t.Fatalf("servers share endpoint, directory or secret: %s %s", a.Endpoint, b.Endpoint)
	}
}
