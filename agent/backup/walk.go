package backup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pgdr/pgdr/pkg/pgpage"
)

// excludedDirContents are directories whose contents are never backed up
// (the directories themselves are recreated empty), as pg_basebackup does.
var excludedDirContents = map[string]bool{
	"pg_wal": true, "pg_dynshmem": true, "pg_notify": true, "pg_serial": true,
	"pg_snapshots": true, "pg_stat_tmp": true, "pg_subtrans": true, "pg_replslot": true, "pgdr": true,
}

// excludedFiles are top-level files never backed up. pgdr.promote-pending
// (health.PromotePendingFile) is the agent's guard of this node's own
// pending promotion: restored elsewhere, the agent there would take it for
// its own (from another boot) and fence the restored server as soon as it
// starts (a restore of an older backup that holds it leaves it out too).
var excludedFiles = map[string]bool{
	"postmaster.pid": true, "postmaster.opts": true, "backup_label": true, "tablespace_map": true,
	"backup_label.old": true, "recovery.signal": true, "standby.signal": true, "pg_internal.init": true,
	"pgdr.promote-pending": true,
}

type walkFile struct {
	rel  string // path relative to PGDATA, '/'-separated
	abs  string
	info fs.FileInfo
}

type walkResult struct {
	dirs        []Dir
	files       []walkFile
	tablespaces []Tablespace
}

// walk lists what a backup copies from pgdata, following the pg_tblspc
// links into tablespaces, and skipping what PostgreSQL rebuilds or must not
// see at restore (see excludedDirContents, excludedFiles, temporary
// relations and files, and unlogged relations other than their init fork).
func walk(pgdata string) (*walkResult, error) {
	res := &walkResult{}
	var visit func(abs, rel string) error
	visit = func(abs, rel string) error {
		ents, err := os.ReadDir(abs)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && rel != "" {
				return nil // removed while we walk (a dropped database)
			}
			return err
		}
		unlogged := map[string]bool{}
		for _, e := range ents {
			if base, ok := strings.CutSuffix(e.Name(), "_init"); ok {
				unlogged[base] = true
			}
		}
		for _, e := range ents {
			name := e.Name()
			childRel := name
			if rel != "" {
				childRel = rel + "/" + name
			}
			childAbs := filepath.Join(abs, name)
			if rel == "" && excludedFiles[name] {
				continue
			}
			if strings.HasPrefix(name, "pgsql_tmp") || name == "pg_internal.init" {
				continue
			}
			if rel == "pg_tblspc" {
				target, err := os.Readlink(childAbs)
				if err != nil {
					return fmt.Errorf("tablespace link %s: %w", childAbs, err)
				}
				res.tablespaces = append(res.tablespaces, Tablespace{OID: name, Location: target})
				if err := visit(childAbs, childRel); err != nil {
					return err
				}
				continue
			}
			info, err := os.Lstat(childAbs)
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					continue
				}
				return err
			}
			if rel == "" && excludedDirContents[name] && (info.IsDir() || info.Mode()&fs.ModeSymlink != 0) {
				// Recorded as a directory even when it is a link (pg_wal
				// made by initdb -X, pg_stat_tmp on a tmpfs), as
				// pg_basebackup does: the restored cluster needs it,
				// and PostgreSQL refuses to start without pg_wal.
				res.dirs = append(res.dirs, Dir{Path: childRel, Mode: excludedDirMode(childAbs, info)})
				if name == "pg_wal" {
					res.dirs = append(res.dirs, Dir{Path: "pg_wal/archive_status", Mode: 0o700})
				}
				continue
			}
			if info.IsDir() {
				res.dirs = append(res.dirs, Dir{Path: childRel, Mode: uint32(info.Mode().Perm())})
				if err := visit(childAbs, childRel); err != nil {
					return err
				}
				continue
			}
			if !info.Mode().IsRegular() {
				continue // sockets, stray links: not part of a cluster's files
			}
			if rf, ok := pgpage.ParseRelPath(childRel); ok {
				if rf.Fork != "init" && unlogged[fmt.Sprint(rf.RelFileNode)] {
					continue
				}
			} else if isTempRelation(name) {
				continue
			}
			res.files = append(res.files, walkFile{rel: childRel, abs: childAbs, info: info})
		}
		return nil
	}
	if err := visit(pgdata, ""); err != nil {
		return nil, fmt.Errorf("listing %s: %w", pgdata, err)
	}
	sort.Slice(res.files, func(i, j int) bool { return res.files[i].info.Size() > res.files[j].info.Size() })
	return res, nil
}

// excludedDirMode is the mode recorded for an excluded directory: its
// own, or, for a link, its target's (0700 when the target is gone).
func excludedDirMode(abs string, info fs.FileInfo) uint32 {
	if info.Mode()&fs.ModeSymlink != 0 {
		target, err := os.Stat(abs)
		if err != nil || !target.IsDir() {
			return 0o700
		}
		info = target
	}
	return uint32(info.Mode().Perm())
}

// isTempRelation matches temporary relation files (t<backend>_<relfilenode>...).
func isTempRelation(name string) bool {
	if len(name) < 3 || name[0] != 't' {
		return false
	}
	i := 1
	for i < len(name) && name[i] >= '0' && name[i] <= '9' {
		i++
	}
	return i > 1 && i < len(name) && name[i] == '_'
}
