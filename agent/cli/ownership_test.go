package cli

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/pgdr/pgdr/pkg/config"
)

func TestReadableByAndRestoreUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to hand files to another user")
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Skip("no postgres user")
	}
	uid64, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid64, _ := strconv.ParseUint(u.Gid, 10, 32)
	uid, gid := uint32(uid64), uint32(gid64)

	dir, err := os.MkdirTemp("", "pgdr-readable-") // 0700, root's, in the world-searchable /tmp
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := filepath.Join(dir, "identity.txt")
	os.WriteFile(f, []byte("x"), 0o600)
	if ok, err := readableBy(f, uid, gid); err != nil || ok {
		t.Fatalf("a root-only file in a root-only directory: readable %v %v", ok, err)
	}
	os.Chmod(dir, 0o755)
	if ok, _ := readableBy(f, uid, gid); ok {
		t.Fatal("a 0600 root-owned file counted as readable by postgres")
	}
	os.Chmod(f, 0o644)
	if ok, _ := readableBy(f, uid, gid); !ok {
		t.Fatal("a 0644 file in a 0755 directory counted as unreadable")
	}
	os.Chmod(f, 0o600)
	os.Chown(f, int(uid), int(gid))
	if ok, _ := readableBy(f, uid, gid); !ok {
		t.Fatal("postgres's own 0600 file counted as unreadable")
	}

	// checkRestoreUser: the restored tree goes to the parent's owner.
	cfgFile := filepath.Join(dir, "agent.yaml")
	os.WriteFile(cfgFile, []byte("x"), 0o644)
	idFile := filepath.Join(dir, "root-identity.txt")
	os.WriteFile(idFile, []byte("x"), 0o600)
	cfg := &config.Config{Path: cfgFile}
	cfg.Encryption.IdentityFile = idFile
	pgParent := filepath.Join(dir, "pg")
	os.Mkdir(pgParent, 0o755)
	os.Chown(pgParent, int(uid), int(gid))
	err = checkRestoreUser(cfg, filepath.Join(pgParent, "data"), false)
	if err == nil || !strings.Contains(err.Error(), "encryption.identity_file "+idFile+" is not readable by postgres") {
		t.Fatalf("a root-only identity: %v", err)
	}
	os.Chown(idFile, int(uid), int(gid))
	if err := checkRestoreUser(cfg, filepath.Join(pgParent, "data"), true); err != nil {
		t.Fatalf("everything readable: %v", err)
	}
	rootParent := filepath.Join(dir, "rootpg")
	os.Mkdir(rootParent, 0o755)
	if err := checkRestoreUser(cfg, filepath.Join(rootParent, "data"), true); err == nil || !strings.Contains(err.Error(), "PostgreSQL refuses to run as root") {
		t.Fatalf("--start into a root-owned parent: %v", err)
	}
	if err := checkRestoreUser(cfg, filepath.Join(rootParent, "data"), false); err != nil {
		t.Fatalf("no --start into a root-owned parent: %v", err)
	}
}

func TestKeygenOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Skip("no postgres user")
	}
	dir := t.TempDir()
	var out, errb strings.Builder
	p := filepath.Join(dir, "id.txt")
	if code := Main([]string{"keygen", "-o", p, "--owner", "postgres"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "age1") {
		t.Fatalf("keygen --owner: exit %d %s %s", code, out.String(), errb.String())
	}
	fi, _ := os.Stat(p)
	if st := fi.Sys().(*syscall.Stat_t); strconv.FormatUint(uint64(st.Uid), 10) != u.Uid || fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity owned by uid %d mode %v, want postgres 0600", st.Uid, fi.Mode().Perm())
	}
	out.Reset()
	errb.Reset()
	if code := Main([]string{"keygen", "-o", filepath.Join(dir, "root.txt")}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "readable by root only") {
		t.Fatalf("keygen as root without --owner: exit %d, stderr %q", code, errb.String())
	}
	if code := Main([]string{"keygen", "-o", filepath.Join(dir, "x.txt"), "--owner", "no-such-user-pgdr"}, &out, &errb); code != ExitUsage {
		t.Fatalf("keygen --owner unknown: exit %d", code)
	}
	if _, err := os.Stat(filepath.Join(dir, "x.txt")); err == nil {
		t.Fatal("keygen with an unknown owner wrote the file")
	}
}
