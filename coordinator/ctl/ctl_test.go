package ctl

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pgdr/pgdr/coordinator/outcome"
	"github.com/pgdr/pgdr/pkg/buildinfo"
	"github.com/pgdr/pgdr/pkg/tlsutil"
)

func TestStatusJSONShapeAndValues(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	addr := l.serve(t, &fakeAdmin{name: "c1"})
	// Connection flags after the command, token from PGDR_TOKEN.
	l.env["PGDR_TOKEN"] = testToken
	code, out, errOut := l.run(t, "status", "--json", "--address", addr)
	if code != 0 {
		t.Fatalf("exit %d, stderr: %s", code, errOut)
	}
	if strings.Contains(out, "null") {
		t.Errorf("JSON has a null (lists must be arrays):\n%s", out)
	}
	var raw map[string]any
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	for _, k := range []string{"coordinators", "clusters", "answered_by", "warnings"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("top level lacks %q", k)
		}
	}
	coord := raw["coordinators"].([]any)[0].(map[string]any)
	for _, k := range []string{"name", "address", "leader", "region", "raft_address", "gossip"} {
		if _, ok := coord[k]; !ok {
			t.Errorf("coordinator lacks %q", k)
		}
	}
	clusters := raw["clusters"].([]any)
	cl := clusters[1].(map[string]any) // sorted: empty, main
	for _, k := range []string{"name", "primary", "epoch", "paused", "paused_reason", "members"} {
		if _, ok := cl[k]; !ok {
			t.Errorf("cluster lacks %q", k)
		}
	}
	m := cl["members"].([]any)[0].(map[string]any)
	for _, k := range []string{"name", "region", "role", "healthy", "dsn", "timeline", "lsn", "lsn_bytes", "lag_bytes",
		"lag_seconds", "last_report_age_seconds", "problems", "tags", "priority", "api_url", "streaming"} {
		if _, ok := m[k]; !ok {
			t.Errorf("member lacks %q", k)
		}
	}
	if _, isNum := m["lsn_bytes"].(float64); !isNum {
		t.Errorf("lsn_bytes is %T, want a JSON number", m["lsn_bytes"])
	}
	if em := clusters[0].(map[string]any)["members"]; em == nil || len(em.([]any)) != 0 {
		t.Errorf("empty cluster's members = %#v, want []", em)
	}

	var v StatusJSON
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	if v.AnsweredBy != "c1" || v.Address != addr {
		t.Errorf("answered_by %q address %q", v.AnsweredBy, v.Address)
	}
	if got := []string{v.Coordinators[0].Name, v.Coordinators[1].Name}; !slices.Equal(got, []string{"c1", "c2"}) || !v.Coordinators[0].Leader {
		t.Errorf("coordinators %+v", v.Coordinators)
	}
	main := v.Clusters[1]
	if main.Name != "main" || main.Primary != "pg-a1" || main.Epoch != 3 || !main.Paused || main.PausedReason != "kernel upgrade" {
		t.Errorf("cluster header %+v", main)
	}
	var names []string
	for _, m := range main.Members {
		names = append(names, m.Name)
	}
	if !slices.Equal(names, []string{"pg-a1", "pg-a2", "pg-b1"}) {
		t.Errorf("members not by region then name: %v", names)
	}
	a1, a2, b1 := main.Members[0], main.Members[1], main.Members[2]
	if a1.LSN != "1/60" || a1.LSNBytes != 0x1_0000_0060 || a1.Role != "primary" || a1.Timeline != 2 || a1.Priority != 10 {
		t.Errorf("pg-a1 %+v", a1)
	}
	if b1.LSN != "0/3000060" || b1.LSNBytes != 0x3000060 || b1.LagBytes != 1536 || b1.LagSeconds != 0.5 || !b1.Streaming || !slices.Equal(b1.Tags, []string{"no-failover"}) {
		t.Errorf("pg-b1 %+v", b1)
	}
	if b1.Problems == nil || len(b1.Problems) != 0 {
		t.Errorf("healthy member's problems = %#v, want []", b1.Problems)
	}
	if a2.Role != "stopped" || a2.Healthy || a2.LastReportAgeSeconds != -1 || len(a2.Problems) != 2 || a2.LSN != "0/0" {
		t.Errorf("pg-a2 %+v", a2)
	}
	// Two voters, one per region: losing either region loses quorum.
	if len(v.Warnings) != 2 || v.Warnings[0].Kind != "quorum" || v.Warnings[0].Region != "us-east-1" || v.Warnings[1].Region != "us-west-2" {
		t.Errorf("warnings %+v, want quorum warnings for us-east-1 and us-west-2", v.Warnings)
	}
}

func TestStatusHumanTable(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	addr := l.serve(t, &fakeAdmin{name: "c1"})
	// Connection flags before the command, with a client certificate of role read.
	code, out, errOut := l.run(t, "--address", addr, "--cert", l.file("reader.crt"), "--key", l.file("reader.key"), "status")
	if code != 0 {
		t.Fatalf("exit %d, stderr: %s", code, errOut)
	}
	for _, re := range []string{
		`answered by c1 via ` + regexp.QuoteMeta(addr),
		`(?m)^\s+c1\s+127\.0\.0\.1:7001\s+\*\s+us-east-1\s+alive`,
		`Cluster main: primary pg-a1, epoch 3, PAUSED \(maintenance mode: kernel upgrade\)`,
		`NAME\s+REGION\s+ROLE\s+HEALTHY\s+TIMELINE\s+LSN\s+LAG\s+REPORT-AGE\s+PROBLEMS`,
		`(?m)^\s+pg-a1\s+us-east-1\s+primary\s+yes\s+2\s+1/60\s+-\s+200ms\s+-$`,
		`(?m)^\s+pg-a2\s+us-east-1\s+stopped\s+NO\s+-\s+-\s+0 B\s+never\s+postmaster not running; no report for 9s$`,
		`(?m)^\s+pg-b1\s+us-west-2\s+replica\s+yes\s+1\s+0/3000060\s+1\.5 KiB \(500ms\)\s+400ms\s+-$`,
		`Cluster empty: primary -, epoch 0\n\s+\(no members registered\)`,
		`Layout warnings \(losing one region\):\n\s+WARNING: losing region us-east-1 \(coordinators c1\) loses the coordinators' quorum: 1 of 2 voters left, quorum needs 2`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output lacks %s:\n%s", re, out)
		}
	}
	if strings.Index(out, "pg-a2") > strings.Index(out, "pg-b1") {
		t.Errorf("members not sorted by region then name:\n%s", out)
	}
}

func TestMembersAndCoordinators(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	fake := &fakeAdmin{name: "c1"}
	addr := l.serve(t, fake)
	l.env["PGDR_ADDR"] = addr
	l.env["PGDR_TOKEN_FILE"] = l.tokenFile(t)

	code, out, errOut := l.run(t, "members", "--json")
	if code != 0 {
		t.Fatalf("members: exit %d: %s", code, errOut)
	}
	var mv MembersJSON
	if err := json.Unmarshal([]byte(out), &mv); err != nil {
		t.Fatal(err)
	}
	if len(mv.Members) != 2 || mv.Members[0].Name != "pg-a1" || mv.Members[0].RegisteredAt != "2025-01-01T00:00:01Z" || mv.Members[0].Tags == nil {
		t.Errorf("members %+v", mv.Members)
	}
	if code, out, _ = l.run(t, "members"); code != 0 || !regexp.MustCompile(`pg-b1\s+main\s+us-west-2\s+host=127.0.0.1 port=5434\s+-\s+no-failover`).MatchString(out) {
		t.Errorf("members table (exit %d):\n%s", code, out)
	}

	code, out, errOut = l.run(t, "coordinator", "add", "--name", "c3", "--raft-address", "127.0.0.1:8003", "--api-address", "127.0.0.1:7003", "--region", "eu-west-1")
	if code != 0 || !strings.Contains(out, "coordinator c3 added") || !regexp.MustCompile(`c3\s+127\.0\.0\.1:7003\s+eu-west-1`).MatchString(out) {
		t.Errorf("coordinator add: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = l.run(t, "coordinator", "remove", "--name", "c2", "--json")
	var cv CoordinatorsJSON
	if err := json.Unmarshal([]byte(out), &cv); code != 0 || err != nil || len(cv.Coordinators) != 1 || cv.Coordinators[0].Name != "c1" {
		t.Errorf("coordinator remove: exit %d err %v\n%s", code, err, out)
	}
	if code, out, _ = l.run(t, "coordinator", "list"); code != 0 || !strings.Contains(out, "c2") {
		t.Errorf("coordinator list: exit %d\n%s", code, out)
	}
	if code, _, errOut = l.run(t, "coordinator", "add", "--name", "c4"); code != ExitUsage || !strings.Contains(errOut, "--raft-address is required") {
		t.Errorf("coordinator add without addresses: exit %d: %s", code, errOut)
	}
	// --update needs only the name and passes on what it changes; --force
	// reaches the server.
	code, out, errOut = l.run(t, "coordinator", "add", "--update", "--name", "c2", "--region", "ap-south-1")
	fake.mu.Lock()
	add := fake.add
	fake.mu.Unlock()
	if code != 0 || !strings.Contains(out, "coordinator c2 updated") || !add.GetUpdate() || add.GetRaftAddress() != "" || add.GetRegion() != "ap-south-1" {
		t.Errorf("coordinator add --update: exit %d request %v\n%s%s", code, add, out, errOut)
	}
	code, _, errOut = l.run(t, "coordinator", "remove", "--name", "c2", "--force")
	fake.mu.Lock()
	rm := fake.remove
	fake.mu.Unlock()
	if code != 0 || !rm.GetForce() {
		t.Errorf("coordinator remove --force: exit %d request %v: %s", code, rm, errOut)
	}
}

func TestHistoryOldestFirst(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	addr := l.serve(t, &fakeAdmin{name: "c1"})
	l.env["PGDR_TOKEN"] = testToken
	code, out, errOut := l.run(t, "history", "--address", addr, "--json", "--limit", "3")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var v HistoryJSON
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, ev := range v.Events {
		seqs = append(seqs, ev.Seq)
	}
	if !slices.Equal(seqs, []uint64{1, 2, 3}) || v.Events[0].Time != "2025-01-01T00:00:01Z" {
		t.Errorf("events %+v", v.Events)
	}
	code, out, _ = l.run(t, "history", "--address", addr)
	first, last := strings.Index(out, "member-registered"), strings.Index(out, "paused")
	if code != 0 || first < 0 || last < first || !strings.Contains(out, "2025-01-01T00:00:02Z") {
		t.Errorf("history table not oldest first (exit %d):\n%s", code, out)
	}
}

func TestPauseNeedsClusterAndChangesNothing(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	f := &fakeAdmin{name: "c1"}
	addr := l.serve(t, f)
	tok := l.tokenFile(t)
	code, out, errOut := l.run(t, "pause", "--address", addr, "--token-file", tok, "--reason", "oops")
	if code != ExitUsage || !strings.Contains(errOut, "--cluster is required") || out != "" {
		t.Errorf("pause without --cluster: exit %d stdout %q stderr %q", code, out, errOut)
	}
	if code, _, errOut = l.run(t, "resume", "--address", addr, "--token-file", tok); code != ExitUsage || !strings.Contains(errOut, "--cluster") {
		t.Errorf("resume without --cluster: exit %d: %s", code, errOut)
	}
	if calls := f.seen(); len(calls) != 0 {
		t.Fatalf("the server saw %v after usage errors", calls)
	}

	code, out, errOut = l.run(t, "pause", "--address", addr, "--token-file", tok, "--cluster", "main", "--reason", "kernel upgrade")
	if code != 0 || !strings.Contains(out, "cluster main: PAUSED") || !strings.Contains(out, "kernel upgrade") {
		t.Errorf("pause: exit %d\n%s%s", code, out, errOut)
	}
	if f.pause.GetCluster() != "main" || f.pause.GetReason() != "kernel upgrade" {
		t.Errorf("server got %v", f.pause)
	}
	// A second pause with another reason keeps the first, and says so.
	code, out, errOut = l.run(t, "pause", "--address", addr, "--token-file", tok, "--cluster", "main", "--reason", "disk swap")
	if code != 0 || !strings.Contains(out, "kernel upgrade") || !strings.Contains(errOut, `already paused: the reason stays "kernel upgrade"`) {
		t.Errorf("second pause: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = l.run(t, "resume", "--address", addr, "--token-file", tok, "--cluster", "main", "--json")
	var pv PolicyResultJSON
	if err := json.Unmarshal([]byte(out), &pv); code != 0 || err != nil || pv.Cluster != "main" || pv.Policy.Paused || pv.Policy.PreferredRegions == nil {
		t.Errorf("resume --json: exit %d err %v\n%s", code, err, out)
	}
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	addr := l.serve(t, &fakeAdmin{name: "c1"})
	l.env["PGDR_ADDR"] = addr

	// No credentials at all: the server refuses, pgdrctl says what to present.
	code, out, errOut := l.run(t, "status")
	if code != ExitFailure || !strings.HasPrefix(errOut, "pgdrctl: Status: no client certificate or bearer token") ||
		!strings.Contains(errOut, "--token-file") || out != "" {
		t.Errorf("unauthenticated: exit %d stderr %q", code, errOut)
	}
	// The token is sent as metadata (the server checks it) and never printed.
	code, out, errOut = l.run(t, "status", "--token-file", l.tokenFile(t))
	if code != 0 || strings.Contains(out+errOut, testToken) {
		t.Errorf("token file: exit %d\n%s%s", code, out, errOut)
	}
	wrong := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrong, []byte("not-the-token"), 0o600)
	code, out, errOut = l.run(t, "status", "--token-file", wrong)
	if code != ExitFailure || !strings.Contains(errOut, "invalid bearer token") || strings.Contains(out+errOut, "not-the-token") {
		t.Errorf("wrong token: exit %d stderr %q", code, errOut)
	}
	// Role read may read but not pause; the message names the role needed.
	reader := []string{"--cert", l.file("reader.crt"), "--key", l.file("reader.key")}
	code, _, errOut = l.run(t, append([]string{"pause", "--cluster", "main"}, reader...)...)
	if code != ExitFailure || !strings.Contains(errOut, "pgdrctl: Pause: Pause needs role admin") {
		t.Errorf("reader pausing: exit %d stderr %q", code, errOut)
	}
}

func TestMissingCA(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	delete(l.env, "PGDR_CA")
	code, _, errOut := l.run(t, "status", "--address", "127.0.0.1:1")
	if code != ExitUsage || !strings.Contains(errOut, "PGDR_CA") || !strings.Contains(errOut, "--ca") {
		t.Errorf("exit %d stderr %q", code, errOut)
	}
	code, _, errOut = l.run(t, "status", "--address", "127.0.0.1:1", "--ca", filepath.Join(l.dir, "nope.crt"))
	if code != ExitFailure || !strings.Contains(errOut, "nope.crt") {
		t.Errorf("unreadable CA: exit %d stderr %q", code, errOut)
	}
	code, _, errOut = l.run(t, "status", "--ca", l.file("ca.crt"))
	if code != ExitUsage || !strings.Contains(errOut, "PGDR_ADDR") {
		t.Errorf("no address: exit %d stderr %q", code, errOut)
	}
}

// deadAddress returns a loopback address nothing listens on.
func deadAddress(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

func TestAddressFallthrough(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	l.env["PGDR_TOKEN"] = testToken
	live := &fakeAdmin{name: "c1"}
	liveAddr := l.serve(t, live)
	noLeader := &fakeAdmin{name: "c2", failWith: status.Error(codes.Unavailable, "no leader")}
	noLeaderAddr := l.serve(t, noLeader)
	dead := deadAddress(t)

	code, out, errOut := l.run(t, "status", "--json", "--address", dead+","+noLeaderAddr+","+liveAddr)
	var v StatusJSON
	if err := json.Unmarshal([]byte(out), &v); code != 0 || err != nil || v.Address != liveAddr {
		t.Fatalf("exit %d err %v address %q stderr %s", code, err, v.Address, errOut)
	}
	if len(noLeader.seen()) != 1 || len(live.seen()) != 1 {
		t.Errorf("calls: unavailable server %v, live server %v", noLeader.seen(), live.seen())
	}

	// Any other answer is final: a write is never sent to a second coordinator.
	broken := &fakeAdmin{name: "c3", failWith: status.Error(codes.Internal, "raft apply failed")}
	brokenAddr := l.serve(t, broken)
	code, _, errOut = l.run(t, "pause", "--cluster", "main", "--address", brokenAddr+","+liveAddr)
	if code != ExitFailure || errOut != "pgdrctl: Pause: raft apply failed\n" || len(live.seen()) != 1 {
		t.Errorf("exit %d stderr %q, live server saw %v", code, errOut, live.seen())
	}

	// None answers: every address and its reason is named.
	code, _, errOut = l.run(t, "status", "--address", dead+","+noLeaderAddr)
	if code != ExitFailure || !strings.Contains(errOut, "no coordinator answered") || !strings.Contains(errOut, dead) || !strings.Contains(errOut, "no leader") {
		t.Errorf("none answered: exit %d stderr %q", code, errOut)
	}
}

// TestSilentAddressDoesNotEatTheTimeout: an address that accepts TCP but
// never completes the TLS handshake (as a hung or black-holed coordinator
// does) gets only its share of --timeout, and the next address answers.
func TestSilentAddressDoesNotEatTheTimeout(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	l.env["PGDR_TOKEN"] = testToken
	liveAddr := l.serve(t, &fakeAdmin{name: "c1"})
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	start := time.Now()
	code, out, errOut := l.run(t, "status", "--json", "--timeout", "3s", "--address", silent.Addr().String()+","+liveAddr)
	var v StatusJSON
	if err := json.Unmarshal([]byte(out), &v); code != 0 || err != nil || v.Address != liveAddr {
		t.Fatalf("exit %d err %v stderr %s", code, err, errOut)
	}
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Errorf("took %s: the silent address used more than its share", d)
	}
}

func TestTLSInit(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "pki")
	l := &lab{env: map[string]string{}}
	code, _, errOut := l.run(t, "tls", "init", "--dir", dir, "--coordinators", "c1,c2,c3", "--agents", "pg-a1,pg-b1")
	if code != ExitUsage || !strings.Contains(errOut, "--cluster is required") {
		t.Fatalf("agents without --cluster: exit %d stderr %q", code, errOut)
	}
	code, out, errOut := l.run(t, "tls", "init", "--dir", dir, "--coordinators", "c1,c2,c3", "--agents", "pg-a1,pg-b1", "--cluster", "main")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if pemData, err := os.ReadFile(filepath.Join(dir, "pg-a1.crt")); err != nil {
		t.Error(err)
	} else if b, _ := pem.Decode(pemData); b == nil {
		t.Error("pg-a1.crt holds no PEM block")
	} else if cert, err := x509.ParseCertificate(b.Bytes); err != nil || tlsutil.Cluster(cert) != "main" || tlsutil.Role(cert) != tlsutil.RoleAgent {
		t.Errorf("pg-a1.crt: err %v, cluster %q; want an agent certificate of cluster main", err, tlsutil.Cluster(cert))
	}
	for _, n := range []string{"ca", "c1", "c2", "c3", "pg-a1", "pg-b1", "admin", "reader"} {
		for _, ext := range []string{".crt", ".key"} {
			p := filepath.Join(dir, n+ext)
			fi, err := os.Stat(p)
			if err != nil {
				t.Errorf("%s: %v", p, err)
				continue
			}
			if ext == ".key" && fi.Mode().Perm() != 0o600 {
				t.Errorf("%s has mode %v", p, fi.Mode().Perm())
			}
			if !strings.Contains(out, p) {
				t.Errorf("output does not list %s", p)
			}
		}
	}
	before, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	code, _, errOut = l.run(t, "tls", "init", "--dir", dir, "--coordinators", "c1")
	after, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if code != ExitFailure || !strings.Contains(errOut, "--force") || string(before) != string(after) {
		t.Errorf("second init without --force: exit %d stderr %q, CA changed: %v", code, errOut, string(before) != string(after))
	}
	code, out, _ = l.run(t, "tls", "init", "--dir", dir, "--coordinators", "c1", "--force", "--json")
	after, _ = os.ReadFile(filepath.Join(dir, "ca.crt"))
	var v TLSInitJSON
	if err := json.Unmarshal([]byte(out), &v); code != 0 || err != nil || string(before) == string(after) || len(v.Files) != 8 {
		t.Errorf("init --force: exit %d err %v files %v", code, err, v.Files)
	}
	if code, _, errOut = l.run(t, "tls", "init", "--dir", dir, "--agents", "ca", "--cluster", "main", "--force"); code != ExitUsage || !strings.Contains(errOut, `"ca" is already used`) {
		t.Errorf("agent named ca: exit %d stderr %q", code, errOut)
	}
}

func TestUsageAndHelp(t *testing.T) {
	t.Parallel()
	l := &lab{env: map[string]string{}}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, ExitUsage, "Commands:"},
		{[]string{"help"}, 0, "PGDR_TOKEN_FILE"},
		{[]string{"help", "status"}, 0, "--cluster"},
		{[]string{"status", "--help"}, 0, "--address"},
		{[]string{"help", "coordinator", "add"}, 0, "--raft-address"},
		{[]string{"pause", "-h"}, 0, "maintenance mode"},
		{[]string{"tls", "init", "--help"}, 0, "--force"},
		{[]string{"frobnicate"}, ExitUsage, `unknown command "frobnicate"`},
		{[]string{"status", "--bogus"}, ExitUsage, "flag provided but not defined"},
		{[]string{"status", "extra"}, ExitUsage, `unexpected argument "extra"`},
		{[]string{"coordinator", "rename"}, ExitUsage, "unknown subcommand"},
		{[]string{"version"}, 0, buildinfo.Line("pgdrctl")},
		{[]string{"--version"}, 0, buildinfo.Line("pgdrctl")},
		{[]string{"version", "--json"}, 0, `"commit": "` + buildinfo.Get().Commit + `"`},
		{[]string{"status", "--timeout", "0s", "--address", "a:1", "--ca", "x"}, ExitUsage, "--timeout must be positive"},
		{[]string{"status", "--address", "nohost", "--ca", "x"}, ExitUsage, "not host:port"},
		{[]string{"status", "--address", "a:1", "--ca", "x", "--cert", "c"}, ExitUsage, "--key"},
	} {
		code, out, errOut := l.run(t, tc.args...)
		if code != tc.code || !strings.Contains(out+errOut, tc.want) {
			t.Errorf("pgdrctl %v: exit %d (want %d), output lacks %q:\n%s%s", tc.args, code, tc.code, tc.want, out, errOut)
		}
	}
}

func TestFormatting(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		n    int64
		want string
	}{{0, "0 B"}, {1023, "1023 B"}, {1536, "1.5 KiB"}, {16 << 20, "16.0 MiB"}, {3 << 30, "3.0 GiB"}} {
		if got := humanBytes(tc.n); got != tc.want {
			t.Errorf("humanBytes(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
	for _, tc := range []struct {
		m    MemberJSON
		want string
	}{
		{MemberJSON{Role: "primary"}, "-"},
		{MemberJSON{Role: "replica"}, "0 B"},
		{MemberJSON{Role: "replica", LagBytes: 2048, LagSeconds: 12.4}, "2.0 KiB (12s)"},
		{MemberJSON{Role: "replica", LagBytes: -1}, "?"},
	} {
		if got := lag(tc.m); got != tc.want {
			t.Errorf("lag(%+v) = %q, want %q", tc.m, got, tc.want)
		}
	}
	if age(-1) != "never" || age(0.25) != "300ms" || age(75) != "1m15s" {
		t.Errorf("age: %q %q %q", age(-1), age(0.25), age(75))
	}
	if finite(0/zero(), -1) != -1 {
		t.Error("NaN not replaced")
	}
}

func zero() float64 { return 0 }

func TestHistoryTableKeepsOneLinePerEvent(t *testing.T) {
	long := strings.Repeat("x", 500)
	v := HistoryJSON{Events: []EventJSON{
		{Time: "2026-12-07T01:00:00Z", Seq: 1, Cluster: "main", Kind: "rejoin", Node: "pg-a1", Message: "pg-a1 rejoined as a replica of pg-a2: rewound\npg_rewind: servers diverged at WAL location 0/3000000 on timeline 1\r\nno rewind required"},
		{Time: "2026-12-07T01:00:01Z", Seq: 2, Cluster: "main", Kind: "note", Message: long},
	}}
	var b strings.Builder
	if err := writeHistory(&b, v); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("want a header and 2 rows, got %d lines:\n%s", len(lines), b.String())
	}
	if !strings.Contains(lines[1], "rewound | pg_rewind: servers diverged at WAL location 0/3000000 on timeline 1 | no rewind required") {
		t.Errorf("multi-line message not joined: %q", lines[1])
	}
	if strings.Contains(lines[2], long) || !strings.HasSuffix(lines[2], "…") {
		t.Errorf("a long message is not cut in the table: %d bytes", len(lines[2]))
	}
}

// TestWriteNeverSentTwice: a write answered with a bare Unavailable (a
// connection that broke after the request went out, or a coordinator that
// took it and lost its leadership) may have been applied, so it is not
// sent to the next address; a read is, and so is a write the server says
// it never submitted.
func TestWriteNeverSentTwice(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	l.env["PGDR_TOKEN"] = testToken
	live := &fakeAdmin{name: "c1"}
	liveAddr := l.serve(t, live)
	lost := &fakeAdmin{name: "c2", failWith: status.Error(codes.Unavailable, "raft apply: leadership lost while committing log")}
	lostAddr := l.serve(t, lost)

	code, _, errOut := l.run(t, "pause", "--cluster", "main", "--address", lostAddr+","+liveAddr)
	if code != ExitFailure || slices.Contains(live.seen(), "Pause") {
		t.Fatalf("a write answered Unavailable was sent again: exit %d stderr %q, live server saw %v", code, errOut, live.seen())
	}
	if !strings.Contains(errOut, "outcome is unknown") || !strings.Contains(errOut, "pgdrctl history") {
		t.Errorf("stderr %q does not say the outcome is unknown", errOut)
	}
	// A read is safe to repeat.
	if code, _, errOut := l.run(t, "status", "--address", lostAddr+","+liveAddr); code != 0 {
		t.Fatalf("status: exit %d stderr %q", code, errOut)
	}
	// A write the coordinator says it never submitted goes to the next.
	notLeader := &fakeAdmin{name: "c3", failWith: outcome.NotSubmitted("no raft leader is elected right now")}
	notLeaderAddr := l.serve(t, notLeader)
	if code, _, errOut := l.run(t, "pause", "--cluster", "main", "--address", notLeaderAddr+","+liveAddr); code != 0 || !slices.Contains(live.seen(), "Pause") {
		t.Fatalf("a write not submitted was not sent to the next address: exit %d stderr %q, live server saw %v", code, errOut, live.seen())
	}
	// And so does one that never left: nothing listens at the first address.
	live2 := &fakeAdmin{name: "c4"}
	live2Addr := l.serve(t, live2)
	if code, _, errOut := l.run(t, "pause", "--cluster", "main", "--address", deadAddress(t)+","+live2Addr); code != 0 || !slices.Contains(live2.seen(), "Pause") {
		t.Fatalf("a write to a dead address was not sent to the next: exit %d stderr %q, live server saw %v", code, errOut, live2.seen())
	}
}

// TestRetryRule: which errors move a call on to the next address.
func TestRetryRule(t *testing.T) {
	bare := status.Error(codes.Unavailable, "transport is closing")
	for _, tc := range []struct {
		name        string
		err         error
		write, sent bool
		want        bool
	}{
		{"read, bare Unavailable after sending", bare, false, true, true},
		{"write, bare Unavailable before sending", bare, true, false, true},
		{"write, bare Unavailable after sending", bare, true, true, false},
		{"write, not submitted", outcome.NotSubmitted("no leader"), true, true, true},
		{"write, outcome unknown", outcome.Unknown("raft apply", errors.New("leadership lost")), true, true, false},
		{"read, permission denied", status.Error(codes.PermissionDenied, "no"), false, true, false},
		{"write, deadline", status.Error(codes.DeadlineExceeded, "deadline"), true, true, false},
	} {
		if got := retryable(tc.err, tc.write, tc.sent); got != tc.want {
			t.Errorf("%s: retryable %v, want %v", tc.name, got, tc.want)
		}
	}
}
