package daemon

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/agent/drill"
	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/agent/walship"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/wal"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// catalogueRow is one row of docs/metrics.md.
type catalogueRow struct {
	name, typ string
	labels    []string
	served    bool // Status yes
}

// agentCatalogue reads the rows of docs/metrics.md's "Both processes"
// and "Agent" sections.
func agentCatalogue(t *testing.T) map[string]catalogueRow {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tick := regexp.MustCompile("`([^`]+)`")
	paren := regexp.MustCompile(`\([^)]*\)`)
	rows := map[string]catalogueRow{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if h, ok := strings.CutPrefix(line, "## "); ok {
			section = h
			continue
		}
		if !strings.HasPrefix(section, "Both processes") && !strings.HasPrefix(section, "Agent") {
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) != 7 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		row := catalogueRow{
			name:   strings.Trim(strings.TrimSpace(cells[1]), "`"),
			typ:    strings.TrimSpace(cells[2]),
			served: strings.HasPrefix(strings.TrimSpace(cells[5]), "yes"),
		}
		for _, m := range tick.FindAllStringSubmatch(paren.ReplaceAllString(cells[3], ""), -1) {
			row.labels = append(row.labels, m[1])
		}
		if _, dup := rows[row.name]; dup {
			t.Errorf("docs/metrics.md lists %s twice", row.name)
		}
		rows[row.name] = row
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(rows) < 20 {
		t.Fatalf("read %d agent rows from docs/metrics.md: the table format changed?", len(rows))
	}
	return rows
}

// allowedLabels are the label names the catalogue's conventions allow
// (and the build's and free space's own).
var allowedLabels = map[string]bool{
	"cluster": true, "node": true, "repository": true, "tier": true, "type": true, "result": true, "reason": true,
	"phase": true, "state": true, "role": true, "target": true, "source": true, "kind": true,
	"path": true, "version": true, "commit": true, "goversion": true, "program": true,
	"slot": true, // a server's replication slots: a handful
}

// unitSuffix: a name says its unit; dimensionless gauges (0/1 states,
// counts of things, a timeline number) are listed by name.
var unitSuffix = regexp.MustCompile(`_(seconds|bytes|total|ratio|info)$`)

var dimensionless = map[string]bool{
	"pg_up": true, "pgdr_agent_up": true, "pgdr_agent_postmaster_alive": true, "pgdr_agent_in_recovery": true,
	"pgdr_agent_role": true, "pgdr_agent_streaming": true, "pgdr_agent_timeline": true, "pgdr_agent_fenced": true,
	"pgdr_agent_coordinator_connected": true, "pgdr_agent_failsafe_active": true, "pgdr_agent_failsafe_members": true,
	"pgdr_agent_failsafe_unverifiable_members": true, "pgdr_agent_wal_ready_segments": true, "pgdr_repo_backups": true,
	"pgdr_repo_copy_lag_objects": true, "pgdr_agent_replication_slot_active": true, "pgdr_walrecv_connected": true, "pgdr_walrecv_timeline": true,
	"pgdr_agent_commit_gate_connected": true,
}

// TestMetricsCatalogue gathers the agent's registry, fed with realistic
// inputs (a primary's report, file repositories holding a backup and WAL
// this daemon pushed and fetched, an async repository, a role-change
// hook, a backup, a drill and a re-clone run through the daemon's
// wrappers, a WAL receiver built but not run), and compares it with docs/metrics.md: every pgdr_* family
// served is catalogued with its type and labels, every row whose Status
// is yes is served, names say their unit, labels are the allowed ones.
func TestMetricsCatalogue(t *testing.T) {
	const sysid = 7300000000000000099
	const segSize = 16 << 20
	dir := t.TempDir()
	pgdata := testutil.FakePGData(t, sysid)
	cfg := testConfig(t, fmt.Sprintf("agent: {state_dir: %s}\nhooks: {on_role_change: [/bin/true]}\nwal: {receive: {enabled: true}}\n", filepath.Join(dir, "state")))
	cfg.Postgres.PGData = pgdata
	cfg.Repos = append(cfg.Repos, cfg.Repos[0])
	cfg.Repos[0].URL, cfg.Repos[1].URL = "file://"+filepath.Join(dir, "main"), "file://"+filepath.Join(dir, "dr")
	cfg.Repos[0].Name, cfg.Repos[1].Name, cfg.Repos[1].Mode, cfg.Repos[1].CopyConcurrency = "main", "dr", "async", 2
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	// Lease-gated commits on (their gate's metrics; it is not run).
	cfg.Coordinator.Addresses, cfg.Failover.LeaseGatedCommits = []string{"127.0.0.1:1"}, config.SwitchOn()
	ctx := context.Background()
	sh, err := walship.New(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	d := New(cfg, sh, slog.New(slog.DiscardHandler))

	// A segment pushed and fetched back through the daemon's shipper.
	pgwal := filepath.Join(pgdata, "pg_wal")
	name := wal.SegmentName(1, 3, segSize)
	if err := os.WriteFile(filepath.Join(pgwal, name), testutil.FakeSegment(sysid, 1, 3, segSize), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pgwal, "archive_status", name+".ready"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := sh.Push(ctx, filepath.Join(pgwal, name)); err != nil {
		t.Fatal(err)
	}
	if err := sh.Fetch(ctx, name, filepath.Join(t.TempDir(), "fetched")); err != nil {
		t.Fatal(err)
	}
	// A backup the repository holds, taken by someone else.
	stop := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	m := &backup.Manifest{Format: backup.ManifestFormat, ID: stop.Format("20060102T150405") + "F", Type: "full", Tier: "daily", Cluster: cfg.Cluster,
		SystemIdentifier: sysid, SegmentSize: segSize, StartTime: stop.Add(-time.Minute), StopTime: stop, Timeline: 1}
	if err := backup.SaveManifest(ctx, sh.Repos()[0], m, nil); err != nil {
		t.Fatal(err)
	}
	d.repoStat.ReadOnce(ctx)
	// A primary's report, the archiver's state.
	d.monitor.SetLatest(&pgdrv1.HealthReport{Cluster: cfg.Cluster, Node: cfg.Node.Name, Time: timestamppb.Now(), PostmasterAlive: true, Connectable: true,
		Timeline: 1, CurrentLsn: 4 * segSize, HeartbeatTime: timestamppb.New(time.Now().Add(-time.Second)), ArchiveRpo: []*pgdrv1.ArchiveRPO{{Repository: "main", Mode: "sync", Bytes: 100, Seconds: 2}, {Repository: "dr", Mode: "async", Bytes: 200, Seconds: 5}},
		ReplicationSlots: []*pgdrv1.ReplicationSlot{{Name: "pgdr_pg_b1", Type: "physical", Active: true, RetainedBytes: 1 << 20}}, ReplicationSlotsKnown: true})
	d.metrics.state.archiver = func() health.Archiver {
		return health.Archiver{Known: true, LastArchived: time.Now().Add(-time.Second), Ready: 1, OldestReady: time.Now().Add(-2 * time.Second)}
	}
	// A backup, a drill and a re-clone run through the daemon's wrappers.
	w := d.metrics.work
	if _, err := w.taker(func(context.Context, []repo.Repo, backup.Options) (*backup.Manifest, error) {
		return &backup.Manifest{Type: "incr", StoredBytes: 1 << 20}, nil
	})(ctx, nil, backup.Options{Type: "incr"}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.driller(func(context.Context, drill.Options, time.Duration) (*drill.Result, error) {
		return &drill.Result{OK: true, Bytes: 1 << 20, Timings: drill.Timings{Total: 12}}, nil
	})(ctx, drill.Options{}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := w.recloner(func(context.Context, uint64, string, string, error) (string, error) { return "", nil })(ctx, 1, "pg-a1", "", nil); err != nil {
		t.Fatal(err)
	}

	fams, err := d.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	rows := agentCatalogue(t)
	gathered := map[string]bool{}
	for _, f := range fams {
		n := f.GetName()
		if !strings.HasPrefix(n, "pgdr_") && n != "pg_up" {
			continue
		}
		gathered[n] = true
		row, ok := rows[n]
		if !ok {
			t.Errorf("%s is served but not in docs/metrics.md's agent tables", n)
			continue
		}
		if !row.served {
			t.Errorf("%s is served, docs/metrics.md's Status does not say yes", n)
		}
		if typ := strings.ToLower(f.GetType().String()); typ != row.typ {
			t.Errorf("%s is a %s, docs/metrics.md says %s", n, typ, row.typ)
		}
		if !unitSuffix.MatchString(n) && !dimensionless[n] {
			t.Errorf("%s does not end in a unit suffix", n)
		}
		want := append([]string{"cluster", "node"}, row.labels...)
		sort.Strings(want)
		for _, mt := range f.Metric {
			got := labelNames(mt)
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("%s has labels %v, docs/metrics.md says %v (and cluster, node)", n, got, row.labels)
				break
			}
			for _, l := range got {
				if !allowedLabels[l] {
					t.Errorf("%s has label %s, not one the catalogue allows", n, l)
				}
			}
		}
	}
	for n, row := range rows {
		if row.served && !gathered[n] {
			t.Errorf("docs/metrics.md says %s is served (Status yes), the agent did not serve it", n)
		}
	}
	// What /metrics serves passes promtool's lint (when promtool is
	// installed: Debian's prometheus package, scripts/ci-deps.sh).
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Log("promtool not installed: /metrics not linted")
		return
	}
	code, body := get(t, d.Handler(), "GET", "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

func labelNames(m *dto.Metric) []string {
	var out []string
	for _, l := range m.Label {
		out = append(out, l.GetName())
	}
	sort.Strings(out)
	return out
}
