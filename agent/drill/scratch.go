package drill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/fsutil"
)

// scratch is the drill's directory:
//
//	<dir>/               mode 0700, owned by the user PostgreSQL runs as
//	  data/              the restored data directory
//	  tablespaces/<name> the restored tablespaces (never their original place)
//	  pg_hba.conf        local connections only
//	  postgres.log       the scratch server's log
//	  .s.PGSQL.<port>    its unix socket
type scratch struct {
	dir     string
	created bool // the drill made dir (and removes it, not only its contents)
	uid     int  // owner to give files the drill writes (-1: leave them)
	gid     int
}

func (s *scratch) data() string        { return filepath.Join(s.dir, "data") }
func (s *scratch) tablespaces() string { return filepath.Join(s.dir, "tablespaces") }
func (s *scratch) logFile() string     { return filepath.Join(s.dir, "postgres.log") }
func (s *scratch) hbaFile() string     { return filepath.Join(s.dir, "pg_hba.conf") }

// maxSocketDir is the longest socket directory a unix socket path
// (<dir>/.s.PGSQL.65535) fits in: sun_path holds 108 bytes with the NUL.
const maxSocketDir = 107 - len("/.s.PGSQL.65535")

// prepareScratch checks the scratch path and makes it ready (absent:
// created; empty: used). A refusal creates nothing.
func prepareScratch(cfg *config.Config, path string, a account) (*scratch, error) {
	s := &scratch{uid: a.uid, gid: a.gid}
	if path == "" {
		dir, err := os.MkdirTemp("", "pgdr-drill-")
		if err != nil {
			return nil, fmt.Errorf("%w: making a scratch directory: %w", ErrScratch, err)
		}
		s.dir, s.created = dir, true
		if err := checkOutside(cfg, dir); err != nil {
			os.Remove(dir)
			return nil, err
		}
		if err := checkReachable(dir, a); err != nil {
			os.Remove(dir)
			return nil, fmt.Errorf("%w (set TMPDIR or give --scratch)", err)
		}
	} else {
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, fmt.Errorf("%w: --scratch %s: %w", ErrScratch, path, err)
		}
		s.dir = filepath.Clean(abs)
		if err := checkOutside(cfg, s.dir); err != nil {
			return nil, err
		}
		if len(s.dir) > maxSocketDir {
			return nil, fmt.Errorf("%w: --scratch %s: the path is %d bytes long, and the scratch server's unix socket in it needs one of at most %d",
				ErrScratch, s.dir, len(s.dir), maxSocketDir)
		}
		fi, err := os.Lstat(s.dir)
		exists := err == nil
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("%w: --scratch %s: %w", ErrScratch, s.dir, err)
		case !fi.IsDir():
			return nil, fmt.Errorf("%w: --scratch %s is not a directory", ErrScratch, s.dir)
		default:
			empty, err := isEmpty(s.dir)
			if err != nil {
				return nil, fmt.Errorf("%w: --scratch %s: %w", ErrScratch, s.dir, err)
			}
			if !empty {
				return nil, fmt.Errorf("%w: --scratch %s is not empty: a drill restores only into an empty or absent directory (and deletes what it puts there); empty it or give another",
					ErrScratch, s.dir)
			}
		}
		if err := checkReachable(s.dir, a); err != nil {
			return nil, err
		}
		if !exists {
			if err := os.Mkdir(s.dir, 0o700); err != nil {
				return nil, fmt.Errorf("%w: --scratch %s: %w", ErrScratch, s.dir, err)
			}
			s.created = true
		}
	}
	if len(s.dir) > maxSocketDir {
		s.remove()
		return nil, fmt.Errorf("%w: the scratch directory %s is too long a path for the scratch server's unix socket (at most %d bytes); give a shorter --scratch",
			ErrScratch, s.dir, maxSocketDir)
	}
	if err := os.Chmod(s.dir, 0o700); err == nil && s.uid >= 0 {
		err = os.Chown(s.dir, s.uid, s.gid)
		if err != nil {
			s.remove()
			return nil, fmt.Errorf("%w: giving %s to the server's user: %w", ErrScratch, s.dir, err)
		}
	} else if err != nil {
		s.remove()
		return nil, fmt.Errorf("%w: %s: %w", ErrScratch, s.dir, err)
	}
	return s, nil
}

// serverUser is the user the scratch server runs as when the agent runs
// as root: the production data directory's owner, or postgres where this
// host has no such directory (a dedicated drill node). -1 as any other
// user: everything is the agent's own.
func serverUser(cfg *config.Config) (int, int, error) {
	if os.Geteuid() != 0 {
		return -1, -1, nil
	}
	if o, err := fsutil.OwnerOf(cfg.Postgres.PGData); err == nil && o.UID != 0 {
		return o.UID, o.GID, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return 0, 0, fmt.Errorf("%w: running as root, the scratch server needs a user to run as (PostgreSQL refuses root): %s does not name one and there is no postgres user: %w",
			ErrScratch, cfg.Postgres.PGData, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid, nil
}

// account is the user the scratch server and its restore_command run as
// (uid < 0: the agent's own user, who needs no check).
type account struct {
	uid, gid int
	name     string
	groups   map[uint32]bool
}

func lookupAccount(uid, gid int) account {
	a := account{uid: uid, gid: gid, name: strconv.Itoa(uid), groups: map[uint32]bool{uint32(gid): true}}
	if uid < 0 {
		return a
	}
	if u, err := user.LookupId(a.name); err == nil {
		a.name = u.Username
		if ids, err := u.GroupIds(); err == nil {
			for _, g := range ids {
				if n, err := strconv.ParseUint(g, 10, 32); err == nil {
					a.groups[uint32(n)] = true
				}
			}
		}
	}
	return a
}

// allows reports whether fi's permission bits give a the access want
// (0o4 read, 0o1 search) as owner, group or other.
func (a account) allows(fi os.FileInfo, want uint32) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	mode := uint32(fi.Mode().Perm())
	switch {
	case int(st.Uid) == a.uid:
		return mode&(want<<6) != 0
	case a.groups[st.Gid]:
		return mode&(want<<3) != 0
	}
	return mode&want != 0
}

// blocked is the first directory above path that a cannot enter ("" when
// none); a missing one is an error.
func (a account) blocked(path string) (string, os.FileInfo, error) {
	for p := filepath.Dir(path); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return "", nil, fmt.Errorf("its parent %s does not exist", p)
			}
			return "", nil, err
		}
		if !a.allows(fi, 0o1) {
			return p, fi, nil
		}
		if filepath.Dir(p) == p {
			return "", nil, nil
		}
	}
}

func describeMode(fi os.FileInfo) string {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fmt.Sprintf("mode %04o, owner uid %d", fi.Mode().Perm(), st.Uid)
	}
	return fmt.Sprintf("mode %04o", fi.Mode().Perm())
}

// checkReachable refuses a scratch directory the server's user could not
// reach: every directory above it must let that user through.
func checkReachable(dir string, a account) error {
	if a.uid < 0 {
		return nil
	}
	p, fi, err := a.blocked(dir)
	switch {
	case err != nil:
		return fmt.Errorf("%w: --scratch %s: %w", ErrScratch, dir, err)
	case p != "":
		return fmt.Errorf("%w: --scratch %s: the scratch server runs as %s, who cannot enter %s (%s); give a directory %s can reach",
			ErrScratch, dir, a.name, p, describeMode(fi), a.name)
	}
	return nil
}

// checkReadable refuses a file the scratch server's restore_command
// (pgdr-agent wal-fetch, run as the server's user) must read and could
// not: recovery would fail only once the server is started.
func checkReadable(what, path string, a account) error {
	if a.uid < 0 || path == "" {
		return nil
	}
	p, fi, err := a.blocked(path)
	if err == nil && p == "" {
		if fi, err = os.Stat(path); err == nil && a.allows(fi, 0o4) {
			return nil
		}
		p = path
	}
	if err != nil {
		return fmt.Errorf("%w: %s %s: %w", ErrOptions, what, path, err)
	}
	return fmt.Errorf("%w: %s %s cannot be read by %s (%s is %s), who runs the scratch server and its restore_command (pgdr-agent wal-fetch): make it readable by %s",
		ErrOptions, what, path, a.name, p, describeMode(fi), a.name)
}

// checkOutside refuses a scratch path equal to, inside or holding the
// production data directory, its WAL directory or one of its tablespaces
// (each compared as given and with symbolic links resolved).
func checkOutside(cfg *config.Config, dir string) error {
	pgdata := filepath.Clean(cfg.Postgres.PGData)
	type place struct{ what, path string }
	places := []place{{"the production data directory (postgres.pgdata)", pgdata}}
	if dest, err := os.Readlink(filepath.Join(pgdata, "pg_wal")); err == nil {
		places = append(places, place{"the production WAL directory (" + pgdata + "/pg_wal)", absFrom(pgdata, dest)})
	}
	if ents, err := os.ReadDir(filepath.Join(pgdata, "pg_tblspc")); err == nil {
		for _, e := range ents {
			if dest, err := os.Readlink(filepath.Join(pgdata, "pg_tblspc", e.Name())); err == nil {
				places = append(places, place{"tablespace " + e.Name() + " of the production data directory", absFrom(filepath.Join(pgdata, "pg_tblspc"), dest)})
			}
		}
	}
	for _, d := range []string{dir, resolve(dir)} {
		for _, p := range places {
			for _, pp := range []string{p.path, resolve(p.path)} {
				switch {
				case d == pp:
					return fmt.Errorf("%w: %s is %s: a drill never touches production data", ErrScratch, dir, p.what)
				case within(d, pp):
					return fmt.Errorf("%w: %s is inside %s (%s): a drill never touches production data", ErrScratch, dir, p.what, p.path)
				case within(pp, d):
					return fmt.Errorf("%w: %s holds %s (%s): a drill never touches production data", ErrScratch, dir, p.what, p.path)
				}
			}
		}
	}
	// The same directories by another path (a bind mount, a second mount
	// of the file system) show in no path: compare the directory and each
	// of its existing parents with the production places themselves.
	// pg_wal and the tablespace links as the directories they lead to
	// (a WAL directory mounted there, not linked, is one too).
	places = append(places, place{"the production WAL directory (" + pgdata + "/pg_wal)", filepath.Join(pgdata, "pg_wal")})
	if ents, err := os.ReadDir(filepath.Join(pgdata, "pg_tblspc")); err == nil {
		for _, e := range ents {
			places = append(places, place{"tablespace " + e.Name() + " of the production data directory", filepath.Join(pgdata, "pg_tblspc", e.Name())})
		}
	}
	var infos []os.FileInfo
	for _, p := range places {
		fi, err := os.Stat(p.path)
		infos = append(infos, fi)
		if err != nil {
			infos[len(infos)-1] = nil
		}
	}
	for cur := dir; ; cur = filepath.Dir(cur) {
		if fi, err := os.Stat(cur); err == nil {
			for i, p := range places {
				if infos[i] == nil || !os.SameFile(fi, infos[i]) {
					continue
				}
				if cur == dir {
					return fmt.Errorf("%w: %s is %s: it is %s by another path: a drill never touches production data", ErrScratch, dir, p.what, p.path)
				}
				return fmt.Errorf("%w: %s is inside %s: %s is %s by another path: a drill never touches production data", ErrScratch, dir, p.what, cur, p.path)
			}
		}
		if filepath.Dir(cur) == cur {
			return nil
		}
	}
}

func absFrom(base, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(base, p)
}

// resolve resolves symbolic links in the longest existing prefix of p.
func resolve(p string) string {
	p = filepath.Clean(p)
	rest := ""
	for cur := p; ; cur = filepath.Dir(cur) {
		if r, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(r, rest)
		}
		if filepath.Dir(cur) == cur {
			return p
		}
		rest = filepath.Join(filepath.Base(cur), rest)
	}
}

// within reports whether p is strictly inside dir.
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel)
}

func isEmpty(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	if errors.Is(err, io.EOF) {
		return true, nil
	}
	return false, err
}

// configure makes the restored copy safe to start next to production:
// settings appended to postgresql.auto.conf (read last, so they win over
// the restored ones) and a pg_hba.conf of its own allowing only local
// socket connections, in the scratch directory only its user can enter.
func (s *scratch) configure(port int) error {
	q := func(v string) string { return "'" + strings.ReplaceAll(v, "'", "''") + "'" }
	hba := "# pgdr restore drill: the scratch socket directory is mode 0700; no TCP connections\nlocal all all trust\n"
	if err := s.write(s.hbaFile(), hba); err != nil {
		return err
	}
	conf := filepath.Join(s.data(), "postgresql.conf")
	if _, err := os.Stat(conf); errors.Is(err, os.ErrNotExist) {
		// The source kept its postgresql.conf outside the data directory
		// (Debian's /etc/postgresql): PostgreSQL needs one to start.
		if err := s.write(conf, "# written by pgdr-agent drill: the backup held no postgresql.conf\n"); err != nil {
			return err
		}
	}
	settings := []string{
		"listen_addresses = '127.0.0.1'",
		"port = " + strconv.Itoa(port),
		"unix_socket_directories = " + q(s.dir),
		"unix_socket_permissions = 0700",
		"hba_file = " + q(s.hbaFile()),
		"archive_mode = 'off'",
		"archive_command = ''",
		"archive_library = ''",
		// Commands of the source's host that recovery would run: a
		// standby's archive_cleanup_command deletes from its archive at
		// every restartpoint, recovery_end_command runs at promotion.
		"archive_cleanup_command = ''",
		"recovery_end_command = ''",
		// The production server's pid file outside its data directory,
		// which the scratch server would overwrite and then delete.
		"external_pid_file = ''",
		// Subscriptions restored enabled: their apply workers would take
		// the publisher's slots and consume the changes meant for the
		// real subscriber.
		"max_logical_replication_workers = 0",
		// Not into the production server's syslog or event log, where
		// the scratch server's messages would read as production's.
		"log_destination = 'stderr'",
		// The host's huge page pool is sized for the production server:
		// one the scratch server took would make production's next start
		// fail (huge_pages = on) or run without them.
		"huge_pages = 'off'",
		"primary_conninfo = ''",
		"primary_slot_name = ''",
		"synchronous_standby_names = ''",
		"hot_standby = 'on'",
		"logging_collector = 'off'",
		"ssl = 'off'",
		"cluster_name = 'pgdr-drill'",
	}
	auto := filepath.Join(s.data(), "postgresql.auto.conf")
	f, err := os.OpenFile(auto, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString("\n# restore drill settings written by pgdr-agent drill: a scratch copy reaches nothing of production\n" + strings.Join(settings, "\n") + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", auto, err)
	}
	return s.chown(auto)
}

func (s *scratch) write(path, body string) error {
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		return err
	}
	return s.chown(path)
}

func (s *scratch) chown(path string) error {
	if s.uid < 0 {
		return nil
	}
	return os.Chown(path, s.uid, s.gid)
}

// finish stops the scratch server and deletes the scratch copy (unless
// keep), and says what it did.
func (s *scratch) finish(ctx context.Context, d Deps, keep, interrupted bool) string {
	if err := stopServer(ctx, d.Cfg.Postgres.BinDir, s.data(), interrupted, d.Log); err != nil {
		return fmt.Sprintf("failed: stopping the scratch server: %v (left at %s)", err, s.dir)
	}
	if keep {
		return "kept at " + s.dir + " (stopped): delete it when done"
	}
	if err := s.remove(); err != nil {
		return fmt.Sprintf("failed: deleting %s: %v", s.dir, err)
	}
	return "deleted"
}

// remove deletes the scratch directory if the drill made it, else its
// contents.
func (s *scratch) remove() error {
	if s.created {
		return os.RemoveAll(s.dir)
	}
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		errs = append(errs, os.RemoveAll(filepath.Join(s.dir, e.Name())))
	}
	return errors.Join(errs...)
}
