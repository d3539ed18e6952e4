package pgpage

import (
	"context"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// TestAgainstPostgres checks Verify, Checksum, ParseRelPath and BlockNumber
// against pages written by a real PostgreSQL 15 with data checksums, and
// against pg_checksums' own calculation.
func TestAgainstPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	c := pgtest.New(t, pgtest.Options{InitdbArgs: []string{"--data-checksums"}})
	c.Start(t)
	spcDir := pgtest.OwnedDir(t, "pgpage-spc-")
	c.Exec(t, "CREATE TABLESPACE spc LOCATION '"+spcDir+"'")
	c.Exec(t, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	c.Exec(t, `INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g`)
	c.Exec(t, `CREATE INDEX t_v ON t (v)`)
	c.Exec(t, `CREATE TABLE ts TABLESPACE spc AS SELECT g AS id FROM generate_series(1, 5000) g`)
	c.Exec(t, `VACUUM t`) // writes the fsm and vm forks
	c.Exec(t, `VACUUM ts`)
	c.Exec(t, `CHECKPOINT`)

	dbOID := c.QueryString(t, `SELECT oid::text FROM pg_database WHERE datname = current_database()`)
	spcOID := c.QueryString(t, `SELECT oid::text FROM pg_tablespace WHERE spcname = 'spc'`)
	type rel struct {
		name, path, node string
	}
	var rels []rel
	for _, name := range []string{"t", "t_v", "t_pkey", "ts", "pg_database"} {
		rels = append(rels, rel{
			name: name,
			path: c.QueryString(t, `SELECT pg_relation_filepath($1)`, name),
			node: c.QueryString(t, `SELECT pg_relation_filenode($1)::text`, name),
		})
	}
	c.Stop(t, "fast") // the shutdown checkpoint leaves every page on disk
	// Cross-check that the cluster really is checksummed and consistent.
	c.Run(t, "pg_checksums", "--check", "-D", c.PGData)

	for _, r := range rels {
		rf, ok := ParseRelPath(r.path)
		if !ok {
			t.Fatalf("ParseRelPath(%q) (%s) = false", r.path, r.name)
		}
		wantSpc, wantDB := "base", dbOID
		switch r.name {
		case "ts":
			wantSpc = spcOID
		case "pg_database":
			wantSpc, wantDB = "global", "0"
		}
		if rf.Tablespace != wantSpc || strconv.FormatUint(uint64(rf.DB), 10) != wantDB ||
			strconv.FormatUint(uint64(rf.RelFileNode), 10) != r.node || rf.Fork != "main" || rf.Segment != 0 {
			t.Errorf("ParseRelPath(%q) = %+v; want tablespace %s, db %s, relfilenode %s", r.path, rf, wantSpc, wantDB, r.node)
		}
		pages := verifyFile(t, c.PGData, r.path)
		t.Logf("%s (%s): %d pages verified", r.name, r.path, pages)
		if min := map[string]int{"t": 100, "t_v": 50, "t_pkey": 20, "ts": 10, "pg_database": 1}[r.name]; pages < min {
			t.Errorf("%s: %d pages, expected at least %d", r.path, pages, min)
		}
		for _, fork := range []string{"_fsm", "_vm"} {
			if r.name == "t" || r.name == "ts" {
				verifyFile(t, c.PGData, r.path+fork)
			}
		}
	}

	// Every relation file in the cluster, tablespaces included, verifies.
	files, pages := 0, 0
	walk := func(root, prefix string) {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			relp, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			relp = filepath.Join(prefix, relp)
			if _, ok := ParseRelPath(relp); ok {
				files++
				pages += verifyFile(t, c.PGData, relp)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	walk(c.PGData, "")
	walk(filepath.Join(c.PGData, "pg_tblspc", spcOID), filepath.Join("pg_tblspc", spcOID))
	t.Logf("whole cluster: %d relation files, %d pages verified", files, pages)
	if files < 100 {
		t.Errorf("only %d relation files found", files)
	}

	// Corruption and transposed pages are caught.
	tPath := rels[0].path
	data, err := os.ReadFile(filepath.Join(c.PGData, tPath))
	if err != nil {
		t.Fatal(err)
	}
	page := append([]byte(nil), data[3*BlockSize:4*BlockSize]...)
	if err := Verify(page, 3); err != nil {
		t.Fatal(err)
	}
	if err := Verify(page, 4); !errors.Is(err, ErrChecksum) {
		t.Errorf("page 3 verified as block 4: %v", err)
	}
	if err := Verify(page, RelSegSize+3); !errors.Is(err, ErrChecksum) {
		t.Errorf("page 3 verified as block 3 of segment 1: %v", err)
	}
	page[5000] ^= 0x01
	if err := Verify(page, 3); !errors.Is(err, ErrChecksum) {
		t.Errorf("page with a flipped bit verified: %v", err)
	}

	// A segment 1 file: pg_checksums must compute the same checksum as
	// Checksum(page, RelSegSize+n), proving both the algorithm for large
	// block numbers and the segment arithmetic. The first run carries a
	// wrong checksum in block 1 so that pg_checksums reports what it
	// calculated (and so shows it read the file).
	segPath := filepath.Join("base", dbOID, "999999.1")
	rf, ok := ParseRelPath(segPath)
	if !ok || rf.Segment != 1 {
		t.Fatalf("ParseRelPath(%q) = %+v, %v", segPath, rf, ok)
	}
	seg := append([]byte(nil), data[:2*BlockSize]...)
	for i := uint32(0); i < 2; i++ {
		p := seg[i*BlockSize : (i+1)*BlockSize]
		binary.LittleEndian.PutUint16(p[8:], Checksum(p, rf.BlockNumber(i)))
	}
	good := binary.LittleEndian.Uint16(seg[BlockSize+8:])
	binary.LittleEndian.PutUint16(seg[BlockSize+8:], good^0x5555)
	full := filepath.Join(c.PGData, segPath)
	if err := os.WriteFile(full, seg, 0o600); err != nil {
		t.Fatal(err)
	}
	pgtest.Chown(t, full)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := c.Command(ctx, "pg_checksums", "--check", "-D", c.PGData).CombinedOutput()
	if err == nil {
		t.Fatalf("pg_checksums accepted a wrong checksum:\n%s", out)
	}
	m := regexp.MustCompile(`999999\.1", block (\d+): calculated checksum ([0-9A-F]+) but block contains ([0-9A-F]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("pg_checksums did not report the segment 1 block:\n%s", out)
	}
	calc, _ := strconv.ParseUint(string(m[2]), 16, 16)
	if string(m[1]) != "1" || uint16(calc) != good {
		t.Fatalf("pg_checksums calculated %s for block %s of segment 1; Checksum(page, %d) = %X", m[2], m[1], rf.BlockNumber(1), good)
	}
	binary.LittleEndian.PutUint16(seg[BlockSize+8:], good)
	if err := os.WriteFile(full, seg, 0o600); err != nil {
		t.Fatal(err)
	}
	c.Run(t, "pg_checksums", "--check", "-D", c.PGData)
}

// verifyFile verifies every page of the relation file rel (relative to
// pgdata) with the block numbers of its segment and checks each initialized
// page's header; it returns the number of pages.
func verifyFile(t *testing.T, pgdata, rel string) int {
	t.Helper()
	rf, ok := ParseRelPath(rel)
	if !ok {
		t.Fatalf("%s is not a relation file", rel)
	}
	data, err := os.ReadFile(filepath.Join(pgdata, rel))
	if err != nil {
		t.Fatal(err)
	}
	if len(data)%BlockSize != 0 {
		t.Fatalf("%s: %d bytes, not whole pages", rel, len(data))
	}
	n := len(data) / BlockSize
	for i := 0; i < n; i++ {
		p := data[i*BlockSize : (i+1)*BlockSize]
		if err := Verify(p, rf.BlockNumber(uint32(i))); err != nil {
			t.Errorf("%s: %v", rel, err)
			continue
		}
		if IsNew(p) {
			continue
		}
		h := ParseHeader(p)
		if h.PageSize() != BlockSize || h.Version() != 4 || h.Lower > h.Upper || h.Upper > h.Special || h.Special > BlockSize {
			t.Errorf("%s block %d: implausible header %+v", rel, i, h)
		}
		if h.Checksum == 0 {
			t.Errorf("%s block %d: checksum 0", rel, i)
		}
	}
	return n
}
