package cli

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	"github.com/pgdr/pgdr/agent/restore"
	"github.com/pgdr/pgdr/pkg/config"
)

// readableBy reports whether the user uid (primary group gid, plus its
// supplementary groups) may read path by its mode bits, and every directory
// above it may be searched. ACLs are not consulted.
func readableBy(path string, uid, gid uint32) (bool, error) {
	if uid == 0 {
		return true, nil
	}
	groups := []uint32{gid}
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		if ids, err := u.GroupIds(); err == nil {
			for _, s := range ids {
				if g, err := strconv.ParseUint(s, 10, 32); err == nil {
					groups = append(groups, uint32(g))
				}
			}
		}
	}
	allowed := func(p string, owner, group, other os.FileMode) (bool, error) {
		fi, err := os.Stat(p)
		if err != nil {
			return false, err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return true, nil
		}
		m := fi.Mode().Perm()
		switch {
		case st.Uid == uid:
			return m&owner != 0, nil
		case slices.Contains(groups, st.Gid):
			return m&group != 0, nil
		default:
			return m&other != 0, nil
		}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return false, err
	}
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		if ok, err := allowed(d, 0o100, 0o010, 0o001); err != nil || !ok {
			return false, err
		}
		if d == filepath.Dir(d) {
			break
		}
	}
	return allowed(abs, 0o400, 0o040, 0o004)
}

// checkRestoreUser refuses, before anything is written, a restore run as
// root whose result the user PostgreSQL will run as cannot use: the
// restored tree goes to the owner of the target's parent directory, who
// starts the server (PostgreSQL refuses root) and runs restore_command,
// which reads the configuration and the identity file.
func checkRestoreUser(cfg *config.Config, pgdata string, start bool) error {
	if os.Geteuid() != 0 {
		return nil
	}
	parent := filepath.Dir(pgdata)
	uid, gid, err := restore.Owner(parent)
	if err != nil {
		return nil // the restore itself reports a missing parent
	}
	if uid == 0 {
		if start {
			return fmt.Errorf("--start: the restored data directory would belong to root (the owner of %s), and PostgreSQL refuses to run as root; give the parent to the user PostgreSQL runs as (chown postgres: %s) or run restore as that user", parent, parent)
		}
		return nil
	}
	for _, f := range []struct{ what, path string }{
		{"the configuration file", cfg.Path},
		{"encryption.identity_file", cfg.Encryption.IdentityFile},
	} {
		if f.path == "" {
			continue
		}
		ok, err := readableBy(f.path, uid, gid)
		if err != nil {
			return fmt.Errorf("%s %s: %w", f.what, f.path, err)
		}
		if !ok {
			return fmt.Errorf("%s %s is not readable by %s, who will own the restored cluster (the owner of %s) and run its restore_command (pgdr-agent wal-fetch): recovery would fail; make it readable by %s (e.g. chown %s: %s)",
				f.what, f.path, userName(uid), parent, userName(uid), userName(uid), f.path)
		}
	}
	return nil
}
