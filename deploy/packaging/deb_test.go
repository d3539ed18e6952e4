package packaging

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	testVersion = "v9.9.9-test.1"
	testCommit  = "0123456789abcdef0123456789abcdef01234567"
	debVersion  = "9.9.9+test.1-1"
)

var binaries = []string{"pgdr-agent", "pgdr-coordinator", "pgdrctl"}

// dist runs scripts/dist.sh for the host's architecture into a temporary
// directory and returns it.
func dist(t *testing.T) string {
	t.Helper()
	out := t.TempDir()
	cmd := exec.Command("bash", "scripts/dist.sh")
	cmd.Dir = filepath.Join("..", "..")
	cmd.Env = append(os.Environ(), "DIST_ARCHES="+runtime.GOARCH, "DIST_DIR="+out, "VERSION="+testVersion, "COMMIT="+testCommit)
	start := time.Now()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/dist.sh: %v\n%s", err, b)
	}
	t.Logf("scripts/dist.sh for %s took %s", runtime.GOARCH, time.Since(start).Round(time.Millisecond))
	return out
}

func wantVersion(program string) string {
	return fmt.Sprintf("%s %s (commit %s, %s linux/%s)", program, testVersion, testCommit, runtime.Version(), runtime.GOARCH)
}

// runVersions runs each installed binary's version command.
func runVersions(t *testing.T, bindir string) {
	t.Helper()
	for _, p := range binaries {
		arg := "--version"
		if p == "pgdrctl" {
			arg = "version"
		}
		out, err := exec.Command(filepath.Join(bindir, p), arg).CombinedOutput()
		if got := strings.TrimSpace(string(out)); err != nil || got != wantVersion(p) {
			t.Errorf("%s %s: %v, %q; want %q", p, arg, err, got, wantVersion(p))
		}
	}
}

// TestDist: make dist for the host's architecture. The archive holds what
// the release promises, SHA256SUMS matches both files, and the .deb
// installs, runs and purges cleanly (testDeb).
func TestDist(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: not building the release")
	}
	if runtime.GOOS != "linux" || (runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64") {
		t.Skipf("packages are built for linux/amd64 and linux/arm64, not %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb is not installed (Debian: dpkg): make dist cannot run")
	}
	dir := dist(t)
	name := "pgdr-" + testVersion + "-linux-" + runtime.GOARCH
	archive := filepath.Join(dir, name+".tar.gz")
	deb := filepath.Join(dir, "pgdr_"+debVersion+"_"+runtime.GOARCH+".deb")

	t.Run("sums", func(t *testing.T) {
		sums, err := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(sums)), "\n")
		if len(lines) != 2 {
			t.Fatalf("SHA256SUMS has %d lines, want the archive and the .deb:\n%s", len(lines), sums)
		}
		for _, line := range lines {
			sum, file, ok := strings.Cut(line, "  ")
			if !ok {
				t.Fatalf("SHA256SUMS line %q", line)
			}
			data, err := os.ReadFile(filepath.Join(dir, file))
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.Sum256(data)
			if hex.EncodeToString(h[:]) != sum {
				t.Errorf("%s: sha256 %x, SHA256SUMS says %s", file, h, sum)
			}
		}
	})

	t.Run("archive", func(t *testing.T) {
		files := listTarGz(t, archive)
		want := []string{"LICENSE", "README.md", "docs/deploy.md",
			"examples/pgdr-agent.example.yaml", "examples/pgdr-coordinator.example.yaml",
			"systemd/pgdr-agent.service", "systemd/pgdr-coordinator.service", "systemd/postgresql@.service.d/pgdr-fence.conf",
			"completion/bash/pgdrctl", "completion/bash/pgdr-agent", "completion/zsh/_pgdrctl", "completion/zsh/_pgdr-agent",
			"man/pgdrctl.1", "man/pgdr-agent.1"}
		for _, b := range binaries {
			want = append(want, "bin/"+b)
		}
		for _, w := range want {
			if mode, ok := files[name+"/"+w]; !ok {
				t.Errorf("archive lacks %s", w)
			} else if strings.HasPrefix(w, "bin/") && mode&0o111 == 0 {
				t.Errorf("%s is not executable (%v)", w, mode)
			}
		}
		if !slices.ContainsFunc(slices.Collect(maps.Keys(files)), func(f string) bool {
			return strings.HasPrefix(f, name+"/licenses/google.golang.org/grpc@")
		}) {
			t.Errorf("archive lacks the Go modules' licences (licenses/google.golang.org/grpc@...)")
		}
		// Static binaries that run.
		x := t.TempDir()
		if out, err := exec.Command("tar", "-xzf", archive, "-C", x).CombinedOutput(); err != nil {
			t.Fatalf("tar: %v %s", err, out)
		}
		runVersions(t, filepath.Join(x, name, "bin"))
		if out, err := exec.Command("file", filepath.Join(x, name, "bin", "pgdr-agent")).CombinedOutput(); err == nil && !strings.Contains(string(out), "statically linked") {
			t.Errorf("pgdr-agent is not statically linked (CGO_ENABLED=0): %s", out)
		}
	})

	t.Run("deb", func(t *testing.T) { testDeb(t, deb) })
}

func listTarGz(t *testing.T, path string) map[string]fs.FileMode {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	tr := tar.NewReader(zr)
	files := map[string]fs.FileMode{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: %s owned by %d:%d, want 0:0", path, h.Name, h.Uid, h.Gid)
		}
		files[strings.TrimSuffix(h.Name, "/")] = h.FileInfo().Mode()
	}
}

// installedFiles are checked after the install and must be gone after the
// purge.
var installedFiles = []string{
	"/usr/bin/pgdr-agent", "/usr/bin/pgdr-coordinator", "/usr/bin/pgdrctl",
	"/lib/systemd/system/pgdr-agent.service", "/lib/systemd/system/pgdr-coordinator.service",
	"/usr/share/man/man1/pgdrctl.1.gz", "/usr/share/man/man1/pgdr-agent.1.gz",
	"/usr/share/bash-completion/completions/pgdrctl", "/usr/share/bash-completion/completions/pgdr-agent",
	"/usr/share/zsh/vendor-completions/_pgdrctl", "/usr/share/zsh/vendor-completions/_pgdr-agent",
	"/usr/share/doc/pgdr/examples/pgdr-agent.example.yaml", "/usr/share/doc/pgdr/copyright",
}

func testDeb(t *testing.T, deb string) {
	info, err := exec.Command("dpkg-deb", "--field", deb, "Package", "Version", "Architecture").CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb --field: %v %s", err, info)
	}
	for _, w := range []string{"Package: pgdr", "Version: " + debVersion, "Architecture: " + runtime.GOARCH} {
		if !strings.Contains(string(info), w) {
			t.Errorf("control lacks %q:\n%s", w, info)
		}
	}
	why := canInstall()
	if why != "" {
		t.Logf("NOT installing with dpkg -i (%s): extracting with dpkg-deb -x into a scratch root; the maintainer scripts do not run", why)
		root := t.TempDir()
		if out, err := exec.Command("dpkg-deb", "-x", deb, root).CombinedOutput(); err != nil {
			t.Fatalf("dpkg-deb -x: %v %s", err, out)
		}
		for _, f := range installedFiles {
			if _, err := os.Stat(filepath.Join(root, f)); err != nil {
				t.Errorf("the package lacks %s", f)
			}
		}
		runVersions(t, filepath.Join(root, "usr", "bin"))
		return
	}
	purged := false
	t.Cleanup(func() {
		if !purged {
			out, err := dpkg("--purge", "pgdr")
			t.Logf("cleanup: dpkg --purge pgdr: %v %s", err, out)
		}
	})
	if out, err := dpkg("-i", deb); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, out)
	}
	for _, f := range installedFiles {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("installed package lacks %s", f)
		}
	}
	runVersions(t, "/usr/bin")

	u, err := user.Lookup("pgdr")
	if err != nil {
		t.Fatalf("the pgdr user: %v", err)
	}
	g, err := user.LookupGroup("pgdr")
	if err != nil || g.Gid != u.Gid {
		t.Errorf("the pgdr group: %v (gid %v, the user's %s)", err, g, u.Gid)
	}
	if uid, err := strconv.Atoi(u.Uid); err != nil || uid == 0 || uid >= 1000 {
		t.Errorf("pgdr's uid %s is not a system uid", u.Uid)
	}
	if shell := passwdField(t, "pgdr", 6); !strings.HasSuffix(shell, "nologin") {
		t.Errorf("pgdr's shell is %q, want nologin", shell)
	}
	// PostgreSQL's archive_command reads /etc/pgdr as postgres.
	if pg, err := user.Lookup("postgres"); err == nil {
		if gids, err := pg.GroupIds(); err != nil || !slices.Contains(gids, g.Gid) {
			t.Errorf("postgres is not in the pgdr group (%v, %v): archive_command could not read /etc/pgdr", gids, err)
		}
	}
	fi, err := os.Stat("/etc/pgdr")
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode() != fs.ModeDir|0o750 || st.Uid != 0 || fmt.Sprint(st.Gid) != g.Gid {
		t.Errorf("/etc/pgdr: %v %d:%d, want drwxr-x--- root:pgdr (%s)", fi.Mode(), st.Uid, st.Gid, g.Gid)
	}
	// Installed, not enabled.
	for _, unit := range []string{"pgdr-agent.service", "pgdr-coordinator.service"} {
		if state := enabledState(unit); state != "" && state != "disabled" {
			t.Errorf("systemctl is-enabled %s: %q, want disabled", unit, state)
		}
	}
	_ = filepath.WalkDir("/etc/systemd/system", func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), "pgdr-") {
			t.Errorf("%s: a pgdr unit is enabled or linked", p)
		}
		return nil
	})

	// A purge removes the files, the user, the group and /etc/pgdr.
	out, err := dpkg("--purge", "pgdr")
	purged = true
	if err != nil {
		t.Fatalf("dpkg --purge: %v\n%s", err, out)
	}
	for _, f := range append(installedFiles, "/etc/pgdr", "/usr/share/doc/pgdr") {
		if _, err := os.Stat(f); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("after the purge %s is still there (%v)", f, err)
		}
	}
	if _, err := user.Lookup("pgdr"); err == nil {
		t.Errorf("after the purge the pgdr user is still there")
	}
	if _, err := user.LookupGroup("pgdr"); err == nil {
		t.Errorf("after the purge the pgdr group is still there")
	}
	if out, err := exec.Command("id", "-nG", "postgres").Output(); err == nil && slices.Contains(strings.Fields(string(out)), "pgdr") {
		t.Errorf("after the purge postgres is still in a pgdr group: %s", out)
	}
	if out, err := exec.Command("dpkg-query", "-W", "pgdr").CombinedOutput(); err == nil {
		t.Errorf("after the purge dpkg still knows pgdr: %s", out)
	}
}

// canInstall says why the package cannot be installed into this machine
// ("" when it can): not root, no dpkg, or a pgdr package or user that is not
// the test's to remove.
func canInstall() string {
	if os.Geteuid() != 0 {
		return "not root"
	}
	if _, err := exec.LookPath("dpkg"); err != nil {
		return "no dpkg"
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f", "${Status}", "pgdr").Output(); err == nil && strings.Contains(string(out), "installed") {
		return "a pgdr package is already installed: " + string(out)
	}
	if _, err := user.Lookup("pgdr"); err == nil {
		return "a pgdr user already exists and the purge would remove it"
	}
	if _, err := user.LookupGroup("pgdr"); err == nil {
		return "a pgdr group already exists and the purge would remove it"
	}
	return ""
}

// dpkg runs dpkg, waiting (up to a minute) while another dpkg or apt holds
// its lock: other work on a shared machine may be installing packages.
func dpkg(args ...string) (string, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := exec.Command("dpkg", args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "lock") || time.Now().After(deadline) {
			return string(out), err
		}
		time.Sleep(time.Second)
	}
}

// enabledState is `systemctl is-enabled UNIT` ("" without systemctl; it
// reads the unit files and needs no running systemd).
func enabledState(unit string) string {
	if _, err := exec.LookPath("systemctl"); err != nil {
		return ""
	}
	out, _ := exec.Command("systemctl", "is-enabled", unit).Output()
	return strings.TrimSpace(string(out))
}

func passwdField(t *testing.T, name string, field int) string {
	t.Helper()
	out, err := exec.Command("getent", "passwd", name).Output()
	if err != nil {
		t.Fatalf("getent passwd %s: %v", name, err)
	}
	parts := strings.Split(strings.TrimSpace(string(out)), ":")
	if len(parts) <= field {
		t.Fatalf("getent passwd %s: %q", name, out)
	}
	return parts[field]
}
