package pgpage

import (
	"path/filepath"
	"strconv"
	"strings"
)

// RelFile identifies one segment file of one fork of a relation.
type RelFile struct {
	Tablespace  string // "base", "global" or the tablespace OID under pg_tblspc
	DB          uint32 // database OID; 0 for global (shared) relations
	RelFileNode uint32
	Fork        string // "main", "fsm", "vm" or "init"
	Segment     uint32 // 0 for the file without a .N suffix
}

// BlockNumber is the block number within the whole fork of the
// blockInFile'th page of this segment file: the blkno that PostgreSQL mixes
// into the page's checksum.
func (r RelFile) BlockNumber(blockInFile uint32) uint32 {
	return r.Segment*RelSegSize + blockInFile
}

// ParseRelPath recognizes the path of a relation segment file relative to
// PGDATA:
//
//	base/<db>/<relfilenode>[_<fork>][.<segment>]
//	global/<relfilenode>[_<fork>][.<segment>]
//	pg_tblspc/<oid>/PG_<version>_<catversion>/<db>/<relfilenode>[_<fork>][.<segment>]
//
// Anything else is not a relation file: in particular temporary relations
// (t<backend>_<relfilenode>, which pg_basebackup skips and which are not
// checksummed reliably), pg_filenode.map, PG_VERSION and pg_internal.init.
// Both / and the OS separator are accepted.
func ParseRelPath(rel string) (RelFile, bool) {
	parts := strings.Split(filepath.ToSlash(rel), "/")
	var r RelFile
	var ok bool
	switch {
	case len(parts) == 3 && parts[0] == "base":
		r.Tablespace = "base"
		if r.DB, ok = parseOID(parts[1]); !ok {
			return RelFile{}, false
		}
	case len(parts) == 2 && parts[0] == "global":
		r.Tablespace = "global"
	case len(parts) == 5 && parts[0] == "pg_tblspc":
		if _, ok = parseOID(parts[1]); !ok || !strings.HasPrefix(parts[2], "PG_") {
			return RelFile{}, false
		}
		r.Tablespace = parts[1]
		if r.DB, ok = parseOID(parts[3]); !ok {
			return RelFile{}, false
		}
	default:
		return RelFile{}, false
	}
	if !r.parseFileName(parts[len(parts)-1]) {
		return RelFile{}, false
	}
	return r, true
}

// parseFileName fills RelFileNode, Fork and Segment from
// <relfilenode>[_<fork>][.<segment>].
func (r *RelFile) parseFileName(name string) bool {
	base, seg, hasSeg := strings.Cut(name, ".")
	if hasSeg {
		// Segment 0 is the file without a suffix; "x.0" is not PostgreSQL's.
		n, ok := parseOID(seg)
		if !ok {
			return false
		}
		r.Segment = n
	}
	node, fork, hasFork := strings.Cut(base, "_")
	r.Fork = "main"
	if hasFork {
		switch fork {
		case "fsm", "vm", "init":
			r.Fork = fork
		default:
			return false
		}
	}
	// A temporary relation's name starts with 't', so it fails here.
	n, ok := parseOID(node)
	if !ok {
		return false
	}
	r.RelFileNode = n
	return true
}

// parseOID parses a non-zero decimal uint32 written with digits only (no
// sign, no spaces), as PostgreSQL names its files; 0 is InvalidOid.
func parseOID(s string) (uint32, bool) {
	if s == "" || len(s) > 10 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err == nil && n != 0
}
