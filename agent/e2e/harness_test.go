package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
	"github.com/pgdr/pgdr/pkg/testutil/s3server"
)

var agentBin testutil.Builder

func agentPath(t *testing.T) string {
	return agentBin.Build(t, "./agent/cmd/pgdr-agent", "pgdr-agent")
}

// result is one finished pgdr-agent invocation.
type result struct {
	stdout, stderr string
	code           int
}

// runAgent runs pgdr-agent with args as the current user.
func runAgent(t *testing.T, env []string, args ...string) result {
	t.Helper()
	return runAgentCred(t, nil, env, args...)
}

// runAgentPG runs pgdr-agent as the user PostgreSQL runs as, as an agent
// next to the server does (so what it writes into a repository stays
// writable for archive_command).
func runAgentPG(t *testing.T, args ...string) result {
	t.Helper()
	return runAgentCred(t, pgtest.Credential(t), nil, args...)
}

func runAgentCred(t *testing.T, cred *syscall.Credential, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, agentPath(t), args...)
	// On a time-out, SIGQUIT makes the Go runtime print every goroutine's
	// stack into stderr, which the failure message shows.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) }
	cmd.WaitDelay = 10 * time.Second
	cmd.Env = append(os.Environ(), env...)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("running pgdr-agent %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return result{so.String(), se.String(), code}
}

func mustAgent(t *testing.T, args ...string) result {
	t.Helper()
	r := runAgent(t, nil, args...)
	if r.code != 0 {
		t.Fatalf("pgdr-agent %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// lab is a PostgreSQL cluster whose archive_command is pgdr-agent.
type lab struct {
	pg        *pgtest.Cluster
	dir       string // owned by the postgres user: repo, configs, keys
	repoDir   string
	cfg       string // file + (optional) s3
	identity  string
	recipient string
	signKey   string // the writers' signing key file
	signPub   string // its public key, which readers trust
	s3        *s3server.Server
	bucket    string
}

type labOpts struct {
	s3              bool
	pushConcurrency int
	checksums       bool // initdb --data-checksums
	waldir          bool // initdb -X <lab dir>/wal: pg_wal is a link
}

func newLab(t *testing.T, o labOpts) *lab {
	t.Helper()
	l := &lab{dir: pgtest.OwnedDir(t, "pgdr-e2e-")}
	l.repoDir = filepath.Join(l.dir, "repo")
	l.identity = filepath.Join(l.dir, "identity.txt")
	l.recipient = strings.TrimSpace(mustAgent(t, "keygen", "-o", l.identity).stdout)
	if !strings.HasPrefix(l.recipient, "age1") {
		t.Fatalf("keygen printed %q, want an age1 recipient", l.recipient)
	}
	// Manifests and WAL are signed, so the signed path is what the tests
	// exercise.
	l.signKey = filepath.Join(l.dir, "signing.key")
	l.signPub = strings.TrimSpace(mustAgent(t, "keygen", "--signing", "-o", l.signKey).stdout)
	if !strings.HasPrefix(l.signPub, "pgdr-ed25519:") {
		t.Fatalf("keygen --signing printed %q, want a pgdr-ed25519: public key", l.signPub)
	}
	if o.s3 {
		l.s3 = s3server.Start(t)
		l.bucket = "pgdr-test"
		l.s3.CreateBucket(t, l.bucket)
		os.WriteFile(filepath.Join(l.dir, "s3-key-id"), []byte(l.s3.AccessKey+"\n"), 0o600)
		os.WriteFile(filepath.Join(l.dir, "s3-secret"), []byte(l.s3.SecretKey+"\n"), 0o600)
	}
	var initdb []string
	if o.checksums {
		initdb = append(initdb, "--data-checksums")
	}
	if o.waldir {
		initdb = append(initdb, "-X", filepath.Join(l.dir, "wal"))
	}
	l.pg = pgtest.New(t, pgtest.Options{InitdbArgs: initdb})
	repos := []string{"file"}
	if o.s3 {
		repos = append(repos, "s3")
	}
	l.cfg = l.writeConfig(t, "agent.yaml", repos, l.identity, o.pushConcurrency)
	l.pg.AppendConf(t, map[string]string{
		"archive_mode":    "on",
		"archive_command": fmt.Sprintf("'%s wal-push --config %s %%p'", agentPath(t), l.cfg),
		"wal_keep_size":   "'2GB'", // keep the originals to compare with what comes back
		"max_wal_size":    "'2GB'",
	})
	pgtest.Chown(t, l.dir)
	l.pg.Start(t)
	return l
}

// writeConfig writes an agent configuration using some of the lab's
// repositories ("file", "s3") and identity file.
func (l *lab) writeConfig(t *testing.T, name string, repos []string, identity string, pushConcurrency int) string {
	t.Helper()
	if pushConcurrency == 0 {
		pushConcurrency = 4
	}
	var b strings.Builder
	fmt.Fprintf(&b, "cluster: main\nnode: {name: pg-a1, region: local}\npostgres:\n  pgdata: %s\n  dsn: %q\nrepos:\n", l.pg.PGData, l.pg.DSN())
	for _, r := range repos {
		switch r {
		case "file":
			fmt.Fprintf(&b, "  - name: local\n    url: file://%s\n", l.repoDir)
		case "s3":
			fmt.Fprintf(&b, "  - name: dr\n    url: s3://%s/archive\n    s3:\n      endpoint: %s\n      region: %s\n      path_style: true\n      max_attempts: 2\n      access_key_id_file: %s\n      secret_access_key_file: %s\n",
				l.bucket, l.s3.Endpoint, l.s3.Region, filepath.Join(l.dir, "s3-key-id"), filepath.Join(l.dir, "s3-secret"))
		}
	}
	fmt.Fprintf(&b, "compression: {method: zstd, level: 3}\nencryption:\n  recipients: [%q]\n  identity_file: %s\n", l.recipient, identity)
	if l.signKey != "" {
		fmt.Fprintf(&b, "signing:\n  key_file: %s\n  public_keys: [%q]\n", l.signKey, l.signPub)
	}
	fmt.Fprintf(&b, "wal: {push_concurrency: %d, prefetch: 4}\nagent:\n  socket: %s\n  log_level: debug\n", pushConcurrency, filepath.Join(l.dir, "agent-"+name+".sock"))
	p := filepath.Join(l.dir, name)
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	pgtest.Chown(t, p)
	return p
}

// switchWAL closes the current segment and returns its name.
func (l *lab) switchWAL(t *testing.T) string {
	t.Helper()
	l.pg.Exec(t, "CREATE TABLE IF NOT EXISTS switch_marker(i int); INSERT INTO switch_marker VALUES (1)")
	return l.pg.QueryString(t, "SELECT pg_walfile_name(pg_switch_wal())")
}

// waitArchived waits until PostgreSQL reports name (or a later file) archived.
func (l *lab) waitArchived(t *testing.T, name string, timeout time.Duration) {
	t.Helper()
	testutil.WaitFor(t, timeout, "archiving of "+name, func() (bool, error) {
		last := l.pg.QueryString(t, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
		if len(last) >= 24 && last[:24] >= name {
			return true, nil
		}
		return false, fmt.Errorf("last archived %q; server log:\n%s", last, tail(l.pg.Log(), 1500))
	})
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// walList runs wal-list --json with cfg.
func walList(t *testing.T, cfg string) listing {
	t.Helper()
	r := mustAgent(t, "wal-list", "--config", cfg, "--json")
	var out listing
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("wal-list --json: %v\n%s", err, r.stdout)
	}
	return out
}

type listing struct {
	Cluster string `json:"cluster"`
	OK      *bool  `json:"ok"`
	Repos   []struct {
		Repo      string `json:"repo"`
		Objects   int    `json:"objects"`
		Timelines []struct {
			Timeline uint32            `json:"timeline"`
			First    string            `json:"first_segment"`
			Last     string            `json:"last_segment"`
			Segments int               `json:"segments"`
			Gaps     []json.RawMessage `json:"gaps"`
			Parent   uint32            `json:"parent"`
			Fork     string            `json:"fork"`
		} `json:"timelines"`
		Failed []struct {
			Key   string `json:"key"`
			Error string `json:"error"`
		} `json:"failed"`
	} `json:"repos"`
}

// agentDaemon starts `pgdr-agent run` as the postgres user (the user
// archive_command runs as, so it may use the daemon's 0600 socket).
func startDaemon(t *testing.T, l *lab, cfg string) *testutil.SyncBuffer {
	t.Helper()
	cmd := exec.Command(agentPath(t), "run", "--config", cfg)
	var logb testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &logb, &logb
	if cred := pgtest.Credential(t); cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	sock := filepath.Join(l.dir, "agent-"+filepath.Base(cfg)+".sock")
	testutil.WaitFor(t, 30*time.Second, "the agent daemon's socket", func() (bool, error) {
		_, err := os.Stat(sock)
		return err == nil, err
	})
	return &logb
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// rewriteFile replaces every old in the file at p with new (which must
// occur), keeping its mode and owner.
func rewriteFile(t *testing.T, p, old, new string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s does not contain %q", p, old)
	}
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(b), old, new)), 0); err != nil {
		t.Fatal(err)
	}
}
