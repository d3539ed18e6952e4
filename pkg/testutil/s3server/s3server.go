package s3server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	randv2 "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Module is the versitygw release installed when no binary is found.
const Module = "github.com/versity/versitygw/cmd/versitygw@v1.8.0"

const (
	readyTimeout = 30 * time.Second
	stopTimeout  = 10 * time.Second
	// Ports are taken below the Linux ephemeral range (32768+) so that a
	// client's outgoing connection cannot grab the port while the server
	// is stopped between Stop and Restart.
	portMin = 20000
	portMax = 32000
)

// Server is a running versitygw. The exported fields are fixed for the
// Server's life, across Restart.
type Server struct {
	Endpoint  string // "http://127.0.0.1:PORT"
	AccessKey string
	SecretKey string
	Region    string
	// Dir is the posix backend's root: each bucket is a directory in it.
	Dir string

	bin     string
	addr    string
	logPath string

	mu   sync.Mutex // guards cmd and done
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Start runs a new server for the test and registers its Stop with
// t.Cleanup. It fails the test if versitygw cannot be found, installed or
// started.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := binary()
	if err != nil {
		t.Fatalf("s3server: %v", err)
	}
	base := t.TempDir()
	s := &Server{
		AccessKey: "pgdrtest" + randHex(6),
		SecretKey: randHex(20),
		Region:    "us-east-1",
		Dir:       filepath.Join(base, "root"),
		bin:       bin,
		logPath:   filepath.Join(base, "versitygw.log"),
	}
	if err := os.Mkdir(s.Dir, 0o700); err != nil {
		t.Fatalf("s3server: %v", err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("s3server: versitygw log (%s):\n%s", s.logPath, s.logTail(4096))
		}
	})
	// Another process may take the free port before versitygw binds it;
	// a few fresh ports make that race harmless.
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("s3server: %v", err)
		}
		s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		s.Endpoint = "http://" + s.addr
		err = s.start()
		if err == nil {
			return s
		}
		if attempt == 3 {
			t.Fatalf("s3server: %v\nversitygw log:\n%s", err, s.logTail(4096))
		}
		t.Logf("s3server: retrying on another port: %v", err)
	}
}

// Stop kills the server and waits for it to exit. It is idempotent and
// safe to call from several goroutines.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *Server) stopLocked() {
	if s.cmd == nil {
		return
	}
	// SIGKILL, not a graceful stop: tests use Stop to simulate an outage,
	// and nothing in the data directory needs a clean shutdown.
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		// Cannot happen short of a kernel problem; do not hang the test.
	}
	s.cmd, s.done = nil, nil
}

// Restart stops the server if it runs and starts it again on the same port
// with the same data directory and credentials.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		t.Fatalf("s3server: restart: %v\nversitygw log:\n%s", err, s.logTail(4096))
	}
}

// start launches versitygw on s.addr and waits until it answers HTTP.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("already running")
	}
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	fmt.Fprintf(logf, "=== %s starting on %s\n", time.Now().Format(time.RFC3339Nano), s.addr)

	cmd := exec.Command(s.bin,
		"--port", s.addr,
		"--region", s.Region,
		"--quiet",
		"posix", s.Dir)
	// Credentials go through the environment, not argv, so they do not
	// show in ps output or in a test's failure message.
	cmd.Env = append(os.Environ(),
		"ROOT_ACCESS_KEY_ID="+s.AccessKey,
		"ROOT_SECRET_ACCESS_KEY="+s.SecretKey,
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait() // reaps the process; the exit is reported via done
		close(done)
	}()
	s.cmd, s.done = cmd, done

	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(readyTimeout)
	for {
		// Any HTTP answer (403 for an anonymous request) means it serves.
		resp, err := client.Get(s.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-done:
			s.cmd, s.done = nil, nil
			return fmt.Errorf("versitygw exited before serving on %s: %s", s.addr, cmd.ProcessState)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stopLocked()
			return fmt.Errorf("versitygw did not answer on %s within %v: %w", s.addr, readyTimeout, err)
		}
	}
}

// Client returns an S3 client for the server, for tests that need to look
// behind a store's back (list multipart uploads, create buckets, ...).
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
		// versitygw understands the SDK's default checksums, but other
		// S3-compatible servers may not; match what s3store does.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// CreateBucket creates a bucket through the S3 API.
func (s *Server) CreateBucket(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("s3server: create bucket %q on %s: %v", name, s.Endpoint, err)
	}
}

func (s *Server) logTail(n int64) string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if int64(len(b)) > n {
		b = b[int64(len(b))-n:]
	}
	return string(b)
}

// freePort returns a port in [portMin, portMax) that is free right now.
func freePort() (int, error) {
	for range 100 {
		port := portMin + randv2.IntN(portMax-portMin)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		l.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no free port in [%d, %d) after 100 tries", portMin, portMax)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails
	return hex.EncodeToString(b)
}

// binary finds versitygw, installing it if needed.
func binary() (string, error) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	binDir, err := goBinDir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(binDir, "versitygw")
	if isExecutable(p) {
		return p, nil
	}
	// Several test binaries (one per package) may get here at once; one
	// installs, the others wait on the lock and then find the binary.
	lockPath := filepath.Join(os.TempDir(), "pgdr-versitygw-install.lock")
	lock, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", fmt.Errorf("install lock %s: %w", lockPath, err)
	}
	defer lock.Close() // also releases the flock
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("install lock %s: %w", lockPath, err)
	}
	if isExecutable(p) {
		return p, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "install", Module)
	cmd.Dir = os.TempDir() // outside any module: install exactly that version
	cmd.Env = append(os.Environ(), "GOBIN="+binDir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("versitygw not found in PATH or %s, and `go install %s` failed: %w\n%s",
			binDir, Module, err, out.String())
	}
	if !isExecutable(p) {
		return "", fmt.Errorf("`go install %s` succeeded but %s is missing", Module, p)
	}
	return p, nil
}

func goBinDir() (string, error) {
	out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output()
	if err != nil {
		return "", fmt.Errorf("versitygw not in PATH and `go env` failed: %w", err)
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) == 2 && lines[0] != "" {
		return lines[0], nil
	}
	if len(lines) == 2 && lines[1] != "" {
		// GOPATH may be a list; go install uses the first entry.
		return filepath.Join(filepath.SplitList(lines[1])[0], "bin"), nil
	}
	return "", fmt.Errorf("versitygw not in PATH and cannot tell GOPATH from `go env`: %q", out)
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
