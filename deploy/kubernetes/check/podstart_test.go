package check

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const pgBin = "/usr/lib/postgresql/15/bin"

// podStart runs deploy/kubernetes/pgdr-pod-start as the postgres user with
// the chart's environment, a fake agent that only logs how it was called.
type podStart struct {
	t          *testing.T
	dir, sock  string
	uid, gid   int
	scriptPath string
}

func newPodStart(t *testing.T) *podStart {
	if os.Geteuid() != 0 {
		t.Skip("pgdr-pod-start runs PostgreSQL as the postgres user: needs root")
	}
	if _, err := os.Stat(filepath.Join(pgBin, "initdb")); err != nil {
		t.Skipf("PostgreSQL 15 is not installed (%v): scripts/ci-deps.sh installs it", err)
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Skipf("no postgres user: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp("", "pgdr-pod-start-")
	if err != nil {
		t.Fatal(err)
	}
	p := &podStart{t: t, dir: dir, sock: filepath.Join(dir, "sock"), uid: uid, gid: gid, scriptPath: filepath.Join(dir, "pgdr-pod-start")}
	t.Cleanup(func() { os.RemoveAll(dir) })
	script, err := os.ReadFile("../pgdr-pod-start")
	if err != nil {
		t.Fatal(err)
	}
	p.write("pgdr-pod-start", string(script), 0o755)
	p.write("fake-agent", "#!/bin/sh\necho \"fake agent: $*\" >&2\n", 0o755)
	p.write("auth/superuser-password", "su'pw\n", 0o600)
	p.write("auth/replication-password", "repl:pw\\x'\n", 0o600)
	for _, d := range []string{"sock", "a", "b", "c"} {
		p.mkdir(d)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *podStart) mkdir(rel string) {
	path := filepath.Join(p.dir, rel)
	if err := os.MkdirAll(path, 0o700); err != nil {
		p.t.Fatal(err)
	}
	if err := os.Chown(path, p.uid, p.gid); err != nil {
		p.t.Fatal(err)
	}
}

func (p *podStart) write(rel, content string, mode os.FileMode) {
	path := filepath.Join(p.dir, rel)
	p.mkdir(filepath.Dir(rel))
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		p.t.Fatal(err)
	}
	if err := os.Chown(path, p.uid, p.gid); err != nil {
		p.t.Fatal(err)
	}
}

func (p *podStart) run(ctx context.Context, pod, pgdata string, primaryPort int, arg string) (string, error) {
	cmd := exec.CommandContext(ctx, "runuser", "-u", "postgres", "--", "env",
		"POD_NAME="+pod, "PGDATA="+pgdata, "PGDR_CONFIG=/etc/pgdr/config/"+pod+".yaml",
		"PGDR_BOOTSTRAP_POD=pg-0", "PGDR_PRIMARY_HOST=127.0.0.1", "PGDR_PORT="+strconv.Itoa(primaryPort),
		"PGDR_AUTH_DIR="+filepath.Join(p.dir, "auth"), "PGDR_AGENT="+filepath.Join(p.dir, "fake-agent"),
		"PGDR_SOCKET_DIR="+p.sock, "PGDR_CLONE_RETRY=1", "PGBIN="+pgBin,
		p.scriptPath, arg)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return out.String(), err
}

func (p *podStart) pgctl(ctx context.Context, args ...string) string {
	out, _ := exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", filepath.Join(pgBin, "pg_ctl")}, args...)...).CombinedOutput()
	return string(out)
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestPodStartScript runs the PostgreSQL pod's entry point with the real
// PostgreSQL 15: the bootstrap pod's initdb, a second pod's copy of it
// streaming from it, a restart that finds PostgreSQL running, a fenced node
// left stopped, the bootstrap pod copying rather than initdb while a
// primary answers, and a data directory of unknown content refused.
func TestPodStartScript(t *testing.T) {
	p := newPodStart(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	port := freePort(t)
	a, b, c := filepath.Join(p.dir, "a", "pgdata"), filepath.Join(p.dir, "b", "pgdata"), filepath.Join(p.dir, "c", "pgdata")
	t.Cleanup(func() {
		for _, d := range []string{a, b, c} {
			if _, err := os.Stat(filepath.Join(d, "postmaster.pid")); err == nil {
				p.pgctl(context.Background(), "-D", d, "-m", "immediate", "-w", "stop")
			}
		}
	})
	want := func(out string, err error, wantErr bool, subs ...string) {
		t.Helper()
		if (err != nil) != wantErr {
			t.Fatalf("exit: %v (want failure: %v)\n%s", err, wantErr, out)
		}
		for _, s := range subs {
			if !strings.Contains(out, s) {
				t.Fatalf("output lacks %q:\n%s", s, out)
			}
		}
	}

	// pg-0, nobody answering on the primary's address: initdb, then run.
	out, err := p.run(ctx, "pg-0", a, port, "init")
	want(out, err, false, "initdb in "+a)
	out, err = p.run(ctx, "pg-0", a, port, "run")
	want(out, err, false, "starting PostgreSQL", "fake agent: run --config /etc/pgdr/config/pg-0.yaml")
	out, err = p.run(ctx, "pg-0", a, port, "init")
	want(out, err, false, "holds a cluster; nothing to prepare")
	// Every start writes the password file the pod's connections use,
	// readable by its owner alone (libpq ignores it otherwise).
	if fi, err := os.Stat(filepath.Join(p.dir, "a", ".pgpass")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the password file: %v, %v; want mode 0600", fi, err)
	}

	// pg-1 copies pg-0 (the replication role and its password work) and
	// streams from it once started on a port of its own.
	out, err = p.run(ctx, "pg-1", b, port, "init")
	want(out, err, false, "copying the primary")
	if _, err := os.Stat(filepath.Join(b, "standby.signal")); err != nil {
		t.Fatalf("the copy is not a standby: %v", err)
	}
	portB := freePort(t)
	f, err := os.OpenFile(filepath.Join(b, "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("port = " + strconv.Itoa(portB) + "\n")
	f.Close()
	out, err = p.run(ctx, "pg-1", b, portB, "run")
	want(out, err, false, "starting PostgreSQL", "fake agent: run")
	deadline := time.Now().Add(time.Minute)
	for {
		q, _ := exec.CommandContext(ctx, "runuser", "-u", "postgres", "--", filepath.Join(pgBin, "psql"), "-X", "-At",
			"-h", p.sock, "-p", strconv.Itoa(port), "-U", "postgres", "-d", "postgres",
			"-c", "SELECT state FROM pg_stat_replication").CombinedOutput()
		if strings.TrimSpace(string(q)) == "streaming" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pg-1 does not stream from pg-0: %q", q)
		}
		time.Sleep(200 * time.Millisecond)
	}
	out, err = p.run(ctx, "pg-1", b, portB, "run")
	want(out, err, false, "PostgreSQL already runs", "fake agent: run")

	// Fenced: stopped, the marker present; run leaves it stopped.
	p.pgctl(ctx, "-D", b, "-m", "fast", "-w", "stop")
	p.write("b/pgdata/pgdr.fenced", `{"reason":"test"}`, 0o600)
	out, err = p.run(ctx, "pg-1", b, portB, "run")
	want(out, err, false, "the node is fenced", "fake agent: run")
	if s := p.pgctl(ctx, "-D", b, "status"); !strings.Contains(s, "no server running") {
		t.Fatalf("a fenced node was started: %s", s)
	}

	// The bootstrap pod with an empty volume while a primary answers
	// copies it: a second initdb would make a second, divergent cluster.
	out, err = p.run(ctx, "pg-0", c, port, "init")
	want(out, err, false, "copying the primary")
	if strings.Contains(out, "initdb") {
		t.Fatalf("the bootstrap pod ran initdb while a primary answered:\n%s", out)
	}

	// Something that is not a cluster is never overwritten, nor a
	// directory the script cannot read.
	p.mkdir("e")
	p.mkdir("e/pgdata")
	if err := os.Chown(filepath.Join(p.dir, "e", "pgdata"), 0, 0); err != nil {
		t.Fatal(err)
	}
	out, err = p.run(ctx, "pg-2", filepath.Join(p.dir, "e", "pgdata"), port, "init")
	want(out, err, true, "refusing: cannot read")

	p.mkdir("d")
	p.mkdir("d/pgdata")
	p.write("d/pgdata/junk", "x", 0o600)
	out, err = p.run(ctx, "pg-2", filepath.Join(p.dir, "d", "pgdata"), port, "init")
	want(out, err, true, "refusing")
	if _, err := os.Stat(filepath.Join(p.dir, "d", "pgdata", "junk")); err != nil {
		t.Fatalf("the unknown content was touched: %v", err)
	}
}
