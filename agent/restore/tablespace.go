package restore

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/fsutil"
	"github.com/pgdr/pgdr/pkg/repo"
)

// TablespaceResult is where a restore put one tablespace.
type TablespaceResult struct {
	OID              string `json:"oid"`
	Name             string `json:"name,omitempty"`
	Location         string `json:"location"`
	OriginalLocation string `json:"original_location"`
	Relocated        bool   `json:"relocated"`
}

// relocate returns the manifest as this restore writes it — a copy of m
// whose Tablespaces are at their final locations and whose TablespaceMap
// names those locations, so that recovery recreates the pg_tblspc links
// there — and where each tablespace goes. m itself, and so the backup as
// stored, is unchanged. Every mistake in o.TablespaceMap and
// o.TablespaceMapAll (an unknown OID or name, a relative path, two
// tablespaces at one place, a location inside the data directory) is an
// error here, before anything is written; o.PGData must be absolute.
func relocate(m *backup.Manifest, o Options) (*backup.Manifest, []TablespaceResult, error) {
	moved, err := newLocations(m, o.TablespaceMap, o.TablespaceMapAll)
	if err != nil {
		return nil, nil, err
	}
	out := *m
	out.Tablespaces = make([]backup.Tablespace, len(m.Tablespaces))
	res := make([]TablespaceResult, len(m.Tablespaces))
	for i, ts := range m.Tablespaces {
		loc, ok := moved[ts.OID]
		if !ok {
			loc = ts.Location
		}
		out.Tablespaces[i] = backup.Tablespace{OID: ts.OID, Name: ts.Name, Location: loc}
		res[i] = TablespaceResult{OID: ts.OID, Name: ts.Name, Location: loc, OriginalLocation: ts.Location, Relocated: ok}
	}
	if err := checkLocations(out.Tablespaces, moved, o.PGData); err != nil {
		return nil, nil, err
	}
	if len(moved) == 0 {
		return &out, res, nil
	}
	if out.TablespaceMap, err = rewriteTablespaceMap(m.TablespaceMap, moved); err != nil {
		return nil, nil, fmt.Errorf("backup %s: %w", m.ID, err)
	}
	return &out, res, nil
}

// newLocations resolves the mappings to OID → new location: an explicit
// mapping (by OID or name) for the tablespaces it names, all/<name> (or
// all/<OID>) for the others when all is set.
func newLocations(m *backup.Manifest, byKey map[string]string, all string) (map[string]string, error) {
	moved := map[string]string{}
	if len(byKey) == 0 && all == "" {
		return moved, nil
	}
	if all != "" && !filepath.IsAbs(all) {
		return nil, fmt.Errorf("--tablespace-map-all %q: not an absolute path", all)
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	mappedBy := map[string]string{} // OID → the key that mapped it
	for _, k := range keys {
		dir := byKey[k]
		ts, err := findTablespace(m, k)
		if err != nil {
			return nil, err
		}
		if !filepath.IsAbs(dir) {
			return nil, fmt.Errorf("--tablespace-map %s=%s: %q is not an absolute path", k, dir, dir)
		}
		if prev, dup := mappedBy[ts.OID]; dup {
			return nil, fmt.Errorf("--tablespace-map: tablespace %s is mapped twice (as %q and as %q)", describe(ts), prev, k)
		}
		mappedBy[ts.OID] = k
		moved[ts.OID] = filepath.Clean(dir)
	}
	if all != "" {
		for _, ts := range m.Tablespaces {
			if _, ok := moved[ts.OID]; !ok {
				moved[ts.OID] = filepath.Join(all, dirName(ts))
			}
		}
	}
	return moved, nil
}

// findTablespace finds the tablespace whose OID or name is key.
func findTablespace(m *backup.Manifest, key string) (backup.Tablespace, error) {
	var found []backup.Tablespace
	named := false
	for _, ts := range m.Tablespaces {
		named = named || ts.Name != ""
		if ts.OID == key || (ts.Name != "" && ts.Name == key) {
			found = append(found, ts)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		if len(m.Tablespaces) == 0 {
			return backup.Tablespace{}, fmt.Errorf("--tablespace-map %s: backup %s has no tablespaces", key, m.ID)
		}
		have := make([]string, len(m.Tablespaces))
		for i, ts := range m.Tablespaces {
			have[i] = describe(ts)
		}
		hint := ""
		if !named {
			hint = "; this backup records no tablespace names (taken by an older pgdr): map by OID"
		}
		return backup.Tablespace{}, fmt.Errorf("--tablespace-map %s: backup %s has no tablespace with that OID or name (it has %s)%s",
			key, m.ID, strings.Join(have, ", "), hint)
	default:
		return backup.Tablespace{}, fmt.Errorf("--tablespace-map %s: ambiguous, the OID of tablespace %s and the name of tablespace %s",
			key, describe(found[0]), describe(found[1]))
	}
}

// describe names a tablespace for messages: OID (name).
func describe(ts backup.Tablespace) string {
	if ts.Name == "" {
		return ts.OID
	}
	return ts.OID + " (" + ts.Name + ")"
}

// dirName is the directory --tablespace-map-all puts a tablespace in: its
// name, or its OID when it has none usable as one directory name.
func dirName(ts backup.Tablespace) string {
	n := ts.Name
	if n == "" || n == "." || n == ".." || strings.ContainsAny(n, "/\x00") {
		return ts.OID
	}
	return n
}

// checkLocations refuses a tablespace inside the data directory (or
// around it), and two tablespaces at the same place or one inside the
// other. Paths are compared with the symbolic links of their existing
// parts resolved. A location not in moved comes from the manifest, which
// the repository's writer chose (docs/security.md): it is held to the same
// rules, and the way past a refusal is to relocate it.
func checkLocations(tss []backup.Tablespace, moved map[string]string, pgdata string) error {
	data := resolvePath(pgdata)
	real := make([]string, len(tss))
	for i, ts := range tss {
		real[i] = resolvePath(ts.Location)
		what, hint := "new location", ""
		if _, ok := moved[ts.OID]; !ok {
			what, hint = "location in the backup", fmt.Sprintf(" (relocate it with --tablespace-map %s=DIR)", ts.OID)
		}
		if within(real[i], data) {
			return fmt.Errorf("tablespace %s: the %s %s is inside the data directory %s%s", describe(ts), what, ts.Location, pgdata, hint)
		}
		if within(data, real[i]) {
			return fmt.Errorf("tablespace %s: the data directory %s would be inside its %s %s%s", describe(ts), pgdata, what, ts.Location, hint)
		}
	}
	for i := range tss {
		for j := i + 1; j < len(tss); j++ {
			a, b := tss[i], tss[j]
			switch {
			case real[i] == real[j]:
				return fmt.Errorf("tablespaces %s and %s would both be at %s", describe(a), describe(b), a.Location)
			case within(real[i], real[j]):
				return fmt.Errorf("tablespace %s at %s would be inside tablespace %s at %s", describe(a), a.Location, describe(b), b.Location)
			case within(real[j], real[i]):
				return fmt.Errorf("tablespace %s at %s would be inside tablespace %s at %s", describe(b), b.Location, describe(a), a.Location)
			}
		}
	}
	return nil
}

// within reports whether the clean absolute path p is dir or inside it.
func within(p, dir string) bool {
	if p == dir || dir == string(filepath.Separator) {
		return true
	}
	return strings.HasPrefix(p, dir+string(filepath.Separator))
}

// resolvePath is the clean absolute path p with the symbolic links in its
// longest existing prefix resolved (the rest does not exist yet).
func resolvePath(p string) string {
	p = filepath.Clean(p)
	rest := ""
	for cur := p; ; {
		if r, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(r, rest)
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return p
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}

// rewriteTablespaceMap returns the tablespace_map spcmap with the path of
// every tablespace in moved (OID → new location) replaced. The format is
// PostgreSQL's (do_pg_backup_start writes it, read_tablespace_map reads
// it): one line per tablespace, "<oid> <path>\n", where a '\\', '\n' or
// '\r' in the path is preceded by a backslash; the path is everything after
// the first space, so spaces in it are not escaped. Lines of tablespaces
// not in moved are kept byte for byte. Every OID in moved must have a line:
// a tablespace created while the backup ran is not in the map, and the WAL
// that recovery replays would put it back at its original location.
func rewriteTablespaceMap(spcmap []byte, moved map[string]string) ([]byte, error) {
	var out bytes.Buffer
	seen := map[string]bool{}
	var line []byte // the current line, de-escaped
	start := 0      // where the current line starts in spcmap
	esc := false
	for i, c := range spcmap {
		switch {
		case esc:
			line = append(line, c)
			esc = false
		case c == '\\':
			esc = true
		case c == '\n' || c == '\r':
			raw := spcmap[start : i+1]
			start = i + 1
			if len(line) == 0 {
				out.Write(raw) // an empty line, or the \n of \r\n
				continue
			}
			oid, path, ok := bytes.Cut(line, []byte{' '})
			if !ok || len(oid) == 0 || len(path) == 0 {
				return nil, fmt.Errorf("tablespace_map: invalid line %q", line)
			}
			if seen[string(oid)] {
				return nil, fmt.Errorf("tablespace_map: tablespace %s is listed twice", oid)
			}
			seen[string(oid)] = true
			if loc, ok := moved[string(oid)]; ok {
				out.Write(oid)
				out.WriteByte(' ')
				out.WriteString(escapeMapPath(loc))
				out.WriteByte('\n')
			} else {
				out.Write(raw)
			}
			line = line[:0]
		default:
			line = append(line, c)
		}
	}
	if len(line) > 0 || esc {
		return nil, errors.New("tablespace_map: the last line is not terminated")
	}
	var missing []string
	for oid := range moved {
		if !seen[oid] {
			missing = append(missing, oid)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, fmt.Errorf("tablespace %s is not in the backup's tablespace_map (created while the backup ran?): recovery would replay it to its original location, so it cannot be relocated",
			strings.Join(missing, ", "))
	}
	return out.Bytes(), nil
}

// escapeMapPath escapes a path for tablespace_map as PostgreSQL does.
func escapeMapPath(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '\\' || c == '\n' || c == '\r' {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	return b.String()
}

// makeLocations creates every tablespace location that does not exist yet,
// with its missing parents (mode 0700, as pg_basebackup does). Running as
// root, the parents it creates go to the owner of the data directory's
// parent, like the restored files (chownToParent), so that PostgreSQL can
// reach the tablespaces; the new entries are fsynced.
func makeLocations(m *backup.Manifest, pgdata string) error {
	var created []string
	for _, ts := range m.Tablespaces {
		var missing []string
		for p := filepath.Clean(ts.Location); ; p = filepath.Dir(p) {
			if _, err := os.Lstat(p); err == nil || !errors.Is(err, fs.ErrNotExist) || filepath.Dir(p) == p {
				break
			}
			missing = append(missing, p)
		}
		if err := os.MkdirAll(ts.Location, 0o700); err != nil {
			return fmt.Errorf("tablespace %s at %s: %w", ts.OID, ts.Location, err)
		}
		created = append(created, missing...)
	}
	for _, p := range created {
		if err := fsutil.SyncDir(filepath.Dir(p)); err != nil {
			return err
		}
	}
	if os.Geteuid() != 0 || len(created) == 0 {
		return nil
	}
	uid, gid, err := Owner(filepath.Dir(pgdata))
	if errors.Is(err, fs.ErrNotExist) || (err == nil && uid == 0) {
		return nil // restored files stay root's too (see chownToParent)
	}
	if err != nil {
		return err
	}
	for _, p := range created {
		if err := os.Lchown(p, int(uid), int(gid)); err != nil {
			return err
		}
	}
	return nil
}

// checkUnsigned refuses, for a manifest that is not signed and verified
// (backup.Manifest.Signed), every tablespace location the manifest itself
// chose: whoever can write the repository wrote it (docs/security.md), and
// a restore run as root would make that directory anywhere. A location
// given by --tablespace-map or --tablespace-map-all is the operator's.
// spcs is relocate's result for m.
func checkUnsigned(m *backup.Manifest, spcs []TablespaceResult) error {
	if m.Signed {
		return nil
	}
	for _, ts := range spcs {
		if !ts.Relocated {
			return fmt.Errorf("tablespace %s: backup %s's manifest is not signed, so its location %s comes from whoever can write the repository and is not used: "+
				"relocate it with --tablespace-map %s=DIR (or --tablespace-map-all DIR), or configure signing (signing.key_file, signing.public_keys)",
				describe(backup.Tablespace{OID: ts.OID, Name: ts.Name}), m.ID, ts.OriginalLocation, ts.OID)
		}
	}
	return nil
}

// checkSigned refuses a chain with a manifest that is not signed and
// verified when require is set; else it warns about each one.
func checkSigned(d Deps, r repo.Repo, chain []*backup.Manifest, require bool) error {
	for _, m := range chain {
		if m.Signed {
			continue
		}
		if require {
			return fmt.Errorf("backup %s in repository %s: its manifest is not signed by a trusted key (signing.public_keys): an unattended restore uses only signed backups", m.ID, r.Name)
		}
		d.Log.Warn("the backup's manifest is not signed by a trusted key: what it says comes from whoever can write the repository (configure signing.key_file and signing.public_keys)",
			"backup", m.ID, "repo", r.Name)
	}
	return nil
}

// existingLocations reports which tablespace locations exist before the
// restore makes any.
func existingLocations(m *backup.Manifest) map[string]bool {
	existed := map[string]bool{}
	for _, ts := range m.Tablespaces {
		if _, err := os.Lstat(ts.Location); err == nil {
			existed[ts.Location] = true
		}
	}
	return existed
}

// checkLocationParents refuses a tablespace location that does not exist
// yet unless its nearest existing parent belongs to the data directory's
// owner, or to the owner the restored files are given (that of the data
// directory's parent; the restoring user when not root): the restore
// makes directories only where that user could have made them itself.
func checkLocationParents(m *backup.Manifest, pgdata string) error {
	owners := map[uint32]bool{}
	if os.Geteuid() != 0 {
		owners[uint32(os.Geteuid())] = true
	}
	for _, p := range []string{pgdata, filepath.Dir(pgdata)} {
		if _, fi, err := nearestExisting(p); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				owners[st.Uid] = true
			}
		}
	}
	for _, ts := range m.Tablespaces {
		if _, err := os.Lstat(ts.Location); err == nil || !errors.Is(err, fs.ErrNotExist) {
			continue // it exists (checkDir checks it), or an error the restore reports
		}
		parent, fi, err := nearestExisting(filepath.Dir(ts.Location))
		if err != nil {
			return fmt.Errorf("tablespace %s at %s: %w", describe(ts), ts.Location, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("tablespace %s at %s: %s: no owner information", describe(ts), ts.Location, parent)
		}
		if !owners[st.Uid] {
			return fmt.Errorf("tablespace %s: the location %s does not exist and would be made in %s, owned by uid %d, not by the data directory's owner: "+
				"make the location yourself (empty, owned by the data directory's owner) or relocate the tablespace (--tablespace-map %s=DIR)",
				describe(ts), ts.Location, parent, st.Uid, ts.OID)
		}
	}
	return nil
}

// nearestExisting returns p or its nearest existing parent, and what
// os.Stat says of it (symbolic links followed: the directory the new ones
// would be made in).
func nearestExisting(p string) (string, fs.FileInfo, error) {
	for cur := filepath.Clean(p); ; cur = filepath.Dir(cur) {
		fi, err := os.Stat(cur)
		if err == nil {
			return cur, fi, nil
		}
		if !errors.Is(err, fs.ErrNotExist) || filepath.Dir(cur) == cur {
			return "", nil, err
		}
	}
}
