package restore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// roots are the directories a restore writes beneath, opened as os.Root so
// that nothing a manifest names (checked by checkManifest) can be reached
// outside them, even through a symbolic link planted while the restore
// runs: the data directory, each tablespace's location (for the paths
// under pg_tblspc/<OID>/, which the restore's own links point to) and the
// --waldir directory (for pg_wal/...).
type roots struct {
	data *os.Root
	spc  map[string]*os.Root // OID → its location
	wal  *os.Root            // nil without --waldir
}

func (rs *roots) close() {
	if rs == nil {
		return
	}
	for _, r := range append([]*os.Root{rs.data, rs.wal}, mapValues(rs.spc)...) {
		if r != nil {
			r.Close()
		}
	}
}

func mapValues(m map[string]*os.Root) []*os.Root {
	out := make([]*os.Root, 0, len(m))
	for _, r := range m {
		out = append(out, r)
	}
	return out
}

// place is the root a manifest path p is written beneath and p relative
// to it ("." for the root itself).
func (rs *roots) place(p string) (*os.Root, string) {
	if rest, ok := strings.CutPrefix(p, "pg_tblspc/"); ok {
		oid, sub, _ := strings.Cut(rest, "/")
		if r := rs.spc[oid]; r != nil {
			if sub == "" {
				sub = "."
			}
			return r, sub
		}
	}
	if rs.wal != nil && (p == "pg_wal" || strings.HasPrefix(p, "pg_wal/")) {
		sub := strings.TrimPrefix(strings.TrimPrefix(p, "pg_wal"), "/")
		if sub == "" {
			sub = "."
		}
		return rs.wal, sub
	}
	return rs.data, p
}

// mkdirBeneath makes the directory rel beneath r, one component at a time,
// and checks that every component is a directory, not a symbolic link.
func mkdirBeneath(r *os.Root, rel string, perm os.FileMode) error {
	if rel == "." {
		return nil
	}
	parts := strings.Split(rel, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		if err := r.Mkdir(p, perm); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("making %s in %s: %w", p, r.Name(), err)
		}
		if err := isDirBeneath(r, p); err != nil {
			return err
		}
	}
	return nil
}

// isDirBeneath checks that p beneath r is a directory itself (Lstat: a
// symbolic link to one is refused).
func isDirBeneath(r *os.Root, p string) error {
	fi, err := r.Lstat(p)
	if err != nil {
		return fmt.Errorf("checking %s in %s: %w", p, r.Name(), err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s in %s is not a directory (%v): refusing to write through it", p, r.Name(), fi.Mode().Type())
	}
	return nil
}

// createBeneath creates (or truncates) the regular file rel beneath r for
// writing. No component of rel may be a symbolic link: every parent is
// checked to be a directory, and an existing file must be a regular file.
// The open itself cannot leave r (os.Root), so a link planted between the
// checks and the open still cannot send the write outside.
func createBeneath(r *os.Root, rel string, perm os.FileMode) (*os.File, error) {
	parts := strings.Split(rel, "/")
	for i := 1; i < len(parts); i++ {
		if err := isDirBeneath(r, strings.Join(parts[:i], "/")); err != nil {
			return nil, err
		}
	}
	if fi, err := r.Lstat(rel); err == nil && !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s in %s exists and is not a regular file (%v): refusing to write through it", rel, r.Name(), fi.Mode().Type())
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return r.OpenFile(rel, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, perm)
}
