package systemd

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/cli"
)

// unit is a parsed unit file: section -> key -> every value in order (an
// empty assignment is kept as "").
type unit map[string]map[string][]string

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := unit{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not KEY=VALUE inside a section: %q", path, n, line)
			}
			u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	return u
}

// last is the effective value of a single-valued key ("" and false when unset).
func (u unit) last(section, key string) (string, bool) {
	vs := u[section][key]
	if len(vs) == 0 {
		return "", false
	}
	return vs[len(vs)-1], true
}

// words is every word of a list-valued key (an empty assignment resets).
func (u unit) words(section, key string) []string {
	var out []string
	for _, v := range u[section][key] {
		if v == "" {
			out = nil
			continue
		}
		out = append(out, strings.Fields(v)...)
	}
	return out
}

func (u unit) want(t *testing.T, name, section, key, value string) {
	t.Helper()
	if got, ok := u.last(section, key); !ok || got != value {
		t.Errorf("%s: [%s] %s = %q (set %v), want %q", name, section, key, got, ok, value)
	}
}

// TestHardening: the directives issue 20 asks for, on both units.
func TestHardening(t *testing.T) {
	for _, name := range []string{"pgdr-agent.service", "pgdr-coordinator.service"} {
		u := parseUnit(t, name)
		for key, value := range map[string]string{
			"NoNewPrivileges":       "yes",
			"ProtectSystem":         "strict",
			"ProtectHome":           "yes",
			"PrivateTmp":            "yes",
			"PrivateDevices":        "yes",
			"CapabilityBoundingSet": "", // empty: no capability at all
			"AmbientCapabilities":   "",
			"RestrictSUIDSGID":      "yes",
			"ProtectKernelTunables": "yes",
			"ProtectKernelModules":  "yes",
			"ProtectControlGroups":  "yes",
			"Restart":               "on-failure",
			"Type":                  "simple",
		} {
			u.want(t, name, "Service", key, value)
		}
		if len(u.words("Service", "ReadWritePaths")) == 0 {
			t.Errorf("%s: ProtectSystem=strict without ReadWritePaths", name)
		}
		if !slices.Contains(u.words("Service", "RestartPreventExitStatus"), "2") {
			t.Errorf("%s: a usage/configuration error (exit 2) must not be retried: RestartPreventExitStatus=%v", name, u.words("Service", "RestartPreventExitStatus"))
		}
		if got, _ := u.last("Install", "WantedBy"); got != "multi-user.target" {
			t.Errorf("%s: WantedBy=%q", name, got)
		}
	}
}

// TestAgentUnitKeepsFencing: the agent's unit never undoes a fence (see the
// comments in pgdr-agent.service).
func TestAgentUnitKeepsFencing(t *testing.T) {
	const name = "pgdr-agent.service"
	u := parseUnit(t, name)
	u.want(t, name, "Service", "User", "postgres")
	// The watchdog child must outlive a stopped or restarting agent.
	u.want(t, name, "Service", "KillMode", "process")
	u.want(t, name, "Service", "RemoveIPC", "no")
	// The fence marker and the socket/queue directory are under pgdata's parent.
	if rw := u.words("Service", "ReadWritePaths"); !slices.Contains(rw, "/var/lib/postgresql") {
		t.Errorf("ReadWritePaths %v: the data directory (fence marker, socket, queue) must be writable", rw)
	}
	for _, key := range []string{"RuntimeDirectory", "TemporaryFileSystem", "BindPaths", "DynamicUser", "PrivateUsers", "MemoryDenyWriteExecute"} {
		if _, ok := u.last("Service", key); ok {
			t.Errorf("%s: %s would hide or break the fence marker, the watchdog pid or a PostgreSQL started by the agent", name, key)
		}
	}
	// Stopping the agent must not stop PostgreSQL, and the reverse.
	for _, key := range []string{"Requires", "BindsTo", "PartOf", "Requisite"} {
		for _, w := range u.words("Unit", key) {
			if strings.HasPrefix(w, "postgresql") {
				t.Errorf("%s: %s=%s ties the agent's lifetime to PostgreSQL's", name, key, w)
			}
		}
	}
	after := u.words("Unit", "After")
	for _, w := range []string{"postgresql.service", "postgresql@15-main.service"} {
		if !slices.Contains(after, w) {
			t.Errorf("After=%v lacks %s", after, w)
		}
	}
	// Nor may starting it start PostgreSQL: a start or restart of the agent
	// (Restart=on-failure after a crash, an upgrade) also starts what it
	// Wants=, and postgresql.service wants every auto cluster
	// (postgresql@15-main): a fenced node's PostgreSQL, stopped by the
	// fence, came back writable beside the new primary until the new agent
	// read the marker and stopped it again (only the optional
	// postgresql@ drop-in refused it), and a node the agent had stopped to
	// rewind or re-clone was started half done.
	for _, w := range append(u.words("Unit", "Wants"), u.words("Unit", "Upholds")...) {
		if strings.HasPrefix(w, "postgresql") {
			t.Errorf("%s: Wants/Upholds=%s: starting or restarting the agent would start PostgreSQL, undoing a fence", name, w)
		}
	}
	// A fence's PostgreSQL stop may take 3 minutes (agent/lease.Fence).
	stop, _ := u.last("Service", "TimeoutStopSec")
	if d, err := time.ParseDuration(stop); err != nil || d < 3*time.Minute {
		t.Errorf("TimeoutStopSec=%q: must leave a fence in progress 3 minutes", stop)
	}
	if got, _ := u.last("Service", "ExecStart"); !strings.HasPrefix(got, "/usr/bin/pgdr-agent run --config ") {
		t.Errorf("ExecStart=%q", got)
	}
}

func TestCoordinatorUnit(t *testing.T) {
	const name = "pgdr-coordinator.service"
	u := parseUnit(t, name)
	u.want(t, name, "Service", "User", "pgdr")
	u.want(t, name, "Service", "StateDirectory", "pgdr-coordinator")
	u.want(t, name, "Service", "ConfigurationDirectory", "pgdr")
	u.want(t, name, "Service", "ConfigurationDirectoryMode", "0750")
	if rw := u.words("Service", "ReadWritePaths"); !slices.Contains(rw, "/var/lib/pgdr-coordinator") {
		t.Errorf("ReadWritePaths %v lacks the StateDirectory", rw)
	}
	if got, _ := u.last("Service", "ExecStart"); !strings.HasPrefix(got, "/usr/bin/pgdr-coordinator run --config ") || strings.Contains(got, "--bootstrap") {
		t.Errorf("ExecStart=%q: run --config, never --bootstrap", got)
	}
	// The example configuration's data_dir is the StateDirectory.
	ex, err := os.ReadFile(filepath.Join("..", "pgdr-coordinator.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^data_dir:\s*(\S+)`).FindSubmatch(ex); m == nil || string(m[1]) != "/var/lib/pgdr-coordinator" {
		t.Errorf("deploy/pgdr-coordinator.example.yaml data_dir = %q, want the unit's StateDirectory /var/lib/pgdr-coordinator", m)
	}
}

// TestVerify runs systemd-analyze verify on copies of the units whose
// ExecStart binaries are stubs (verify requires them to exist), and fails on
// any diagnostic, since verify exits 0 on unknown keys and bad values. It
// also asks systemd-analyze security for an exposure level of at most 3.0 (--threshold counts tenths).
func TestVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (Debian: apt-get install systemd): the units were not verified")
	}
	dir := t.TempDir()
	stub := filepath.Join(dir, "stub")
	if err := os.WriteFile(stub, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var units []string
	for _, name := range []string{"pgdr-agent.service", "pgdr-coordinator.service"} {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		bin := "/usr/bin/" + strings.TrimSuffix(name, ".service")
		if !bytes.Contains(data, []byte(bin+" ")) {
			t.Fatalf("%s: ExecStart does not run %s", name, bin)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, bytes.ReplaceAll(data, []byte(bin+" "), []byte(stub+" ")), 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, p)
	}
	out, err := exec.Command(sa, append([]string{"verify", "--man=no"}, units...)...).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, p := range units {
		out, err := exec.Command(sa, "security", "--offline=yes", "--threshold=30", "--no-pager", p).CombinedOutput()
		if err != nil {
			t.Errorf("systemd-analyze security --threshold=30 (exposure 3.0) %s: %v\n%s", filepath.Base(p), err, out)
		}
	}
}

// TestFenceDropIn runs the drop-in's ExecStartPre (systemd's $$ and %%
// unescaped, %i expanded) against a data directory with and without the
// marker.
func TestFenceDropIn(t *testing.T) {
	u := parseUnit(t, filepath.Join("postgresql@.service.d", "pgdr-fence.conf"))
	cmd, ok := u.last("Service", "ExecStartPre")
	if !ok {
		t.Fatal("no ExecStartPre")
	}
	r := strings.NewReplacer("$$", "$", "%%", "%", "%i", "15-main")
	script, rest, ok := strings.Cut(strings.TrimPrefix(cmd, "/bin/sh -c '"), "' ")
	if !ok {
		t.Fatalf("ExecStartPre=%q: not /bin/sh -c '...' ARGS", cmd)
	}
	args := append([]string{"-c", r.Replace(script)}, strings.Fields(r.Replace(rest))...)
	root := t.TempDir()
	run := func(env ...string) (string, error) {
		c := exec.Command("/bin/sh", args...)
		c.Env = append(os.Environ(), env...)
		out, err := c.CombinedOutput()
		return string(out), err
	}
	pgdata := filepath.Join(root, "data")
	if err := os.MkdirAll(pgdata, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := run("PGDR_PGDATA=" + pgdata); err != nil {
		t.Fatalf("no marker: the start was refused: %v %s", err, out)
	}
	if err := os.WriteFile(filepath.Join(pgdata, "pgdr.fenced"), []byte(`{"reason":"lease expired"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := run("PGDR_PGDATA=" + pgdata)
	if err == nil || !strings.Contains(out, "fenced by pgdr") || !strings.Contains(out, "lease expired") {
		t.Fatalf("marker present: err %v, output %q; want a refusal naming the marker", err, out)
	}
	// Without PGDR_PGDATA the Debian path is derived from the instance name.
	if !strings.Contains(r.Replace(script), `/var/lib/postgresql/${1%%-*}/${1#*-}`) {
		t.Errorf("default data directory: %q", r.Replace(script))
	}
	c := exec.Command("/bin/sh", "-c", `d=/var/lib/postgresql/${1%%-*}/${1#*-}; echo $d`, "x", "15-main")
	if o, err := c.Output(); err != nil || strings.TrimSpace(string(o)) != "/var/lib/postgresql/15/main" {
		t.Errorf("15-main -> %q %v", o, err)
	}
}

// TestAgentExecStartParses: the agent's ExecStart, with ${PGDR_CONFIG}
// expanded to a missing file, fails on the configuration (exit 1), not on
// its command line (exit 2, which RestartPreventExitStatus stops on).
func TestAgentExecStartParses(t *testing.T) {
	u := parseUnit(t, "pgdr-agent.service")
	exe, _ := u.last("Service", "ExecStart")
	env, _ := u.last("Service", "Environment")
	k, v, _ := strings.Cut(env, "=")
	if k != "PGDR_CONFIG" || v != "/etc/pgdr/agent.yaml" {
		t.Fatalf("Environment=%q, want PGDR_CONFIG=/etc/pgdr/agent.yaml", env)
	}
	missing := filepath.Join(t.TempDir(), "agent.yaml")
	args := strings.Fields(strings.ReplaceAll(exe, "${PGDR_CONFIG}", missing))[1:]
	var out, errb bytes.Buffer
	code := cli.Main(args, &out, &errb)
	if code != cli.ExitFailure || !strings.Contains(errb.String(), missing) {
		t.Fatalf("pgdr-agent %v: exit %d, stderr %q; want exit 1 naming the missing configuration", args, code, errb.String())
	}
}
