package restore

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/pgdr/pgdr/agent/backup"
)

// checkManifest refuses, before anything is written, a manifest that could
// make a restore write outside its target. The repository is untrusted
// storage (docs/security.md): anyone who can write to the bucket can forge
// a manifest, and the restore runs as root or as PostgreSQL's user, also
// unattended (the daemon's re-clone from the latest backup). So every
// path a restore creates is checked here:
//
//   - Files and Dirs are relative to the data directory, '/'-separated,
//     with no empty, "." or ".." segment and no NUL: nothing resolves
//     outside the root by its spelling. (The writer also creates them
//     beneath the root without following symbolic links, beneath.go.)
//   - A file or directory is not a tablespace link itself
//     (pg_tblspc/<OID>): the restore makes those links.
//   - Modes are permission bits only (no setuid, setgid or sticky bit).
//   - Tablespace OIDs are digits only: the OID names the link
//     pg_tblspc/<OID>.
//   - Tablespace locations are absolute, clean paths other than "/"
//     (where they are, relative to the data directory and to each other,
//     is checked by checkLocations once --tablespace-map has applied).
func checkManifest(m *backup.Manifest) error {
	links := map[string]bool{}
	for _, ts := range m.Tablespaces {
		if !validOID(ts.OID) {
			return fmt.Errorf("backup %s: tablespace OID %q is not a number: refusing the manifest", m.ID, ts.OID)
		}
		link := "pg_tblspc/" + ts.OID
		if links[link] {
			return fmt.Errorf("backup %s: tablespace %s is listed twice: refusing the manifest", m.ID, ts.OID)
		}
		links[link] = true
		if err := checkLocation(ts.Location); err != nil {
			return fmt.Errorf("backup %s: tablespace %s: %w: refusing the manifest", m.ID, ts.OID, err)
		}
	}
	dirs := make(map[string]bool, len(m.Dirs))
	for _, d := range m.Dirs {
		if err := checkRelPath(d.Path); err != nil {
			return fmt.Errorf("backup %s: directory %q: %w: refusing the manifest", m.ID, d.Path, err)
		}
		if links[d.Path] {
			return fmt.Errorf("backup %s: directory %q is a tablespace link: refusing the manifest", m.ID, d.Path)
		}
		if d.Mode&^0o777 != 0 {
			return fmt.Errorf("backup %s: directory %q has mode %#o, more than permission bits: refusing the manifest", m.ID, d.Path, d.Mode)
		}
		dirs[d.Path] = true
	}
	files := make(map[string]bool, len(m.Files))
	for _, f := range m.Files {
		if err := checkRelPath(f.Path); err != nil {
			return fmt.Errorf("backup %s: file %q: %w: refusing the manifest", m.ID, f.Path, err)
		}
		if links[f.Path] || dirs[f.Path] {
			return fmt.Errorf("backup %s: file %q is also a directory or a tablespace link: refusing the manifest", m.ID, f.Path)
		}
		if files[f.Path] {
			return fmt.Errorf("backup %s: file %q is listed twice: refusing the manifest", m.ID, f.Path)
		}
		files[f.Path] = true
		if f.Mode&^0o777 != 0 {
			return fmt.Errorf("backup %s: file %q has mode %#o, more than permission bits: refusing the manifest", m.ID, f.Path, f.Mode)
		}
		if f.Size < 0 {
			return fmt.Errorf("backup %s: file %q has a negative size: refusing the manifest", m.ID, f.Path)
		}
	}
	return nil
}

// checkRelPath accepts a '/'-separated path relative to a root that names
// something beneath it by its spelling alone.
func checkRelPath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("an empty path")
	case strings.IndexByte(p, 0) >= 0:
		return fmt.Errorf("a NUL in the path")
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("an absolute path")
	}
	for _, seg := range strings.Split(p, "/") {
		switch seg {
		case "":
			return fmt.Errorf("an empty path segment")
		case ".", "..":
			return fmt.Errorf("a %q path segment", seg)
		}
	}
	return nil
}

// validOID reports whether s is a tablespace OID: 1 to 10 decimal digits.
func validOID(s string) bool {
	if s == "" || len(s) > 10 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// checkLocation accepts a tablespace location recorded in a manifest: an
// absolute, clean path other than the file system's root.
func checkLocation(loc string) error {
	switch {
	case strings.IndexByte(loc, 0) >= 0:
		return fmt.Errorf("location %q has a NUL", loc)
	case !filepath.IsAbs(loc):
		return fmt.Errorf("location %q is not an absolute path", loc)
	case filepath.Clean(loc) != loc:
		return fmt.Errorf("location %q is not a clean path (it would be %q)", loc, filepath.Clean(loc))
	case loc == string(filepath.Separator):
		return fmt.Errorf("location %q is the file system's root", loc)
	}
	return nil
}
