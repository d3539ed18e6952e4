package drill

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.yaml.in/yaml/v3"

	"github.com/pgdr/pgdr/agent/pgctl"
)

// Check is one SQL check: sql, run in database, must return one row of
// one column whose text form is expect (NULL reads as "NULL").
type Check struct {
	Name     string `yaml:"name" json:"name"`
	Database string `yaml:"database" json:"database"`
	SQL      string `yaml:"sql" json:"sql"`
	Expect   string `yaml:"expect" json:"expect"`
}

// CheckRun is a check's outcome.
type CheckRun struct {
	Name     string `json:"name"`
	Database string `json:"database"`
	OK       bool   `json:"ok"`
	Got      string `json:"got"`
	Want     string `json:"want"`
	Error    string `json:"error,omitempty"`
}

// LoadChecks reads a checks file: a YAML list of {name, database, sql,
// expect}. Every entry needs a name and sql; database defaults to
// postgres; names are unique.
func LoadChecks(path string) ([]Check, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("checks file: %w", err)
	}
	var cs []Check
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cs); err != nil {
		return nil, fmt.Errorf("checks file %s: want a YAML list of {name, database, sql, expect}: %w", path, err)
	}
	seen := map[string]bool{}
	for i := range cs {
		c := &cs[i]
		switch {
		case strings.TrimSpace(c.Name) == "":
			return nil, fmt.Errorf("checks file %s: check %d has no name", path, i+1)
		case strings.TrimSpace(c.SQL) == "":
			return nil, fmt.Errorf("checks file %s: check %q has no sql", path, c.Name)
		case seen[c.Name]:
			return nil, fmt.Errorf("checks file %s: two checks are named %q", path, c.Name)
		}
		seen[c.Name] = true
		if c.Database == "" {
			c.Database = "postgres"
		}
	}
	return cs, nil
}

// runCheck runs one check in the text protocol, so that the value
// compared is PostgreSQL's own text form of it.
func runCheck(ctx context.Context, s server, c Check) CheckRun {
	cr := CheckRun{Name: c.Name, Database: c.Database, Want: c.Expect}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	conn, err := s.connect(cctx, c.Database)
	if err != nil {
		cr.Error = err.Error()
		return cr
	}
	defer conn.Close(context.WithoutCancel(ctx))
	results, err := conn.PgConn().Exec(cctx, c.SQL).ReadAll()
	if err != nil {
		cr.Error = err.Error()
		return cr
	}
	var rows [][][]byte
	for _, r := range results {
		if r.Err != nil {
			cr.Error = r.Err.Error()
			return cr
		}
		if len(r.FieldDescriptions) > 0 {
			rows = r.Rows // the last statement returning rows
			if len(r.FieldDescriptions) != 1 {
				cr.Error = fmt.Sprintf("returned %d columns, want 1", len(r.FieldDescriptions))
				return cr
			}
		}
	}
	if len(rows) != 1 {
		cr.Error = fmt.Sprintf("returned %d rows, want 1", len(rows))
		return cr
	}
	if rows[0][0] == nil {
		cr.Got = "NULL"
	} else {
		cr.Got = string(rows[0][0])
	}
	cr.OK = cr.Got == cr.Want
	return cr
}

// Amcheck is pg_amcheck's outcome.
type Amcheck struct {
	OK       bool    `json:"ok"`
	Seconds  float64 `json:"seconds"`
	ExitCode int     `json:"exit_code"`
	// Problems are the relations pg_amcheck reported, each with its first
	// line of detail (at most maxProblems).
	Problems []string `json:"problems,omitempty"`
	// Output is the end of pg_amcheck's output when it failed.
	Output string `json:"output,omitempty"`
}

const maxProblems = 20

func (a *Amcheck) summary() string {
	if len(a.Problems) > 0 {
		s := strings.Join(a.Problems[:min(3, len(a.Problems))], "; ")
		if len(a.Problems) > 3 {
			s += fmt.Sprintf("; and %d more", len(a.Problems)-3)
		}
		return s
	}
	return fmt.Sprintf("exit status %d: %s", a.ExitCode, a.Output)
}

// A relation pg_amcheck reports: `heap table "db.schema.rel", block 0, offset 1:`
// or `btree index "db.schema.idx":`, followed by indented detail lines.
var amcheckRelation = regexp.MustCompile(`^(heap table|btree index|toast table) "[^"]+"`)

// runAmcheck runs pg_amcheck --all --heapallindexed on the scratch
// server (installing the amcheck extension where it is missing: the copy
// is thrown away).
func runAmcheck(ctx context.Context, s server, jobs int) *Amcheck {
	start := time.Now()
	a := &Amcheck{}
	cmd, err := pgctl.New(pgctl.Config{BinDir: s.binDir, PGData: s.pgdata}).Command(ctx, "pg_amcheck",
		"--host", s.sock, "--port", strconv.Itoa(s.port), "--username", "postgres",
		"--all", "--heapallindexed", "--install-missing", "--jobs", strconv.Itoa(jobs))
	if err != nil {
		a.ExitCode, a.Output = -1, err.Error()
		return a
	}
	out := &amcheckOutput{a: a}
	cmd.Stdout, cmd.Stderr = out, out
	err = cmd.Run()
	out.flush()
	a.Seconds = time.Since(start).Seconds()
	var ee *exec.ExitError
	switch {
	case err == nil:
		a.OK = true
		return a
	case errors.As(err, &ee):
		a.ExitCode = ee.ExitCode()
	default:
		a.ExitCode = -1
		out.tail = append(out.tail, err.Error()...)
	}
	a.Output = pgctl.Tail(string(out.tail), 2000)
	return a
}

// amcheckOutput reads pg_amcheck's output as it comes, keeping only the
// first maxProblems relations reported (each with its first line of
// detail) and the end of the output: a badly damaged cluster reports
// every damaged tuple, hundreds of megabytes.
type amcheckOutput struct {
	a       *Amcheck
	line    []byte // the line being read (at most maxLine bytes kept)
	pending bool   // the last problem waits for its detail line
	tail    []byte // the last tailKeep bytes of the output
}

const (
	maxLine  = 4096
	tailKeep = 4096
)

func (o *amcheckOutput) Write(p []byte) (int, error) {
	o.tail = append(o.tail, p...)
	if len(o.tail) > 2*tailKeep {
		o.tail = append(o.tail[:0], o.tail[len(o.tail)-tailKeep:]...)
	}
	for rest := p; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		chunk := rest
		if i >= 0 {
			chunk = rest[:i]
		}
		if room := maxLine - len(o.line); room > 0 {
			o.line = append(o.line, chunk[:min(room, len(chunk))]...)
		}
		if i < 0 {
			break
		}
		o.endLine()
		rest = rest[i+1:]
	}
	return len(p), nil
}

func (o *amcheckOutput) flush() {
	if len(o.line) > 0 {
		o.endLine()
	}
	if len(o.tail) > tailKeep {
		o.tail = o.tail[len(o.tail)-tailKeep:]
	}
}

func (o *amcheckOutput) endLine() {
	l := o.line
	o.line = o.line[:0]
	ps := o.a.Problems
	if o.pending {
		o.pending = false
		if bytes.HasPrefix(l, []byte(" ")) {
			ps[len(ps)-1] = strings.Join(strings.Fields(ps[len(ps)-1]+": "+string(l)), " ")
			return
		}
	}
	if len(ps) >= maxProblems || !amcheckRelation.Match(l) {
		return
	}
	o.a.Problems = append(ps, strings.Join(strings.Fields(strings.TrimSuffix(string(l), ":")), " "))
	o.pending = true
}

// RowCounts are the restored copy's per-table row counts.
type RowCounts struct {
	Databases int   `json:"databases"`
	Tables    int   `json:"tables"`
	Rows      int64 `json:"rows"`
	// Compared says whether the counts were compared with the source's;
	// Note says why not, or what the comparison means.
	Compared bool   `json:"compared"`
	Note     string `json:"note"`
	// Mismatches are the tables (at most maxTables) whose count differs
	// from the source's; MismatchCount is how many in all.
	Mismatches    []TableCount `json:"mismatches,omitempty"`
	MismatchCount int          `json:"mismatch_count,omitempty"`
	// Counts are the tables' counts, largest first (at most maxTables;
	// Omitted says how many more).
	Counts  []TableCount `json:"counts"`
	Omitted int          `json:"omitted,omitempty"`
}

// TableCount is one table's count(*).
type TableCount struct {
	Database string `json:"database"`
	Table    string `json:"table"` // schema.name
	Rows     int64  `json:"rows"`
	// SourceRows is the source's count (-1: the table is not there).
	SourceRows *int64 `json:"source_rows,omitempty"`

	schema, name string
}

const maxTables = 100

func sourceRows(t TableCount) string {
	switch {
	case t.SourceRows == nil:
		return "not counted"
	case *t.SourceRows < 0:
		return "no such table"
	}
	return strconv.FormatInt(*t.SourceRows, 10)
}

// Permanent user tables: unlogged tables come back empty from any
// recovery, so their counts say nothing of the backup.
const userTables = `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND n.nspname <> 'information_schema'
  AND n.nspname NOT LIKE 'pg\_%' ORDER BY 1, 2`

// countRows counts the rows of every permanent user table of every
// database, and compares them with the source's when it can tell.
func countRows(ctx context.Context, s server, o Options) (*RowCounts, error) {
	conn, err := s.connect(ctx, "postgres")
	if err != nil {
		return nil, err
	}
	var dbs []string
	rows, _ := conn.Query(ctx, "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1")
	dbs, err = pgx.CollectRows(rows, pgx.RowTo[string])
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return nil, fmt.Errorf("listing the databases: %w", err)
	}
	rc := &RowCounts{Databases: len(dbs)}
	compare := o.SourceDSN != "" && o.TargetTime == nil
	switch {
	case o.SourceDSN == "":
		rc.Note = "counts recorded, not compared: no source given (--source-dsn)"
	case !compare:
		rc.Note = "counts recorded, not compared: the source can tell only its counts now, and the drill recovered to a target time before now"
	default:
		rc.Compared = true
		rc.Note = "compared with the source's counts now: exact for tables not written since the archive's last WAL"
	}
	var all []TableCount
	for _, db := range dbs {
		counts, err := countDB(ctx, func(ctx context.Context) (*pgx.Conn, error) { return s.connect(ctx, db) }, db, nil)
		if err != nil {
			return nil, err
		}
		if compare {
			src, err := countDB(ctx, func(ctx context.Context) (*pgx.Conn, error) { return connectSource(ctx, o.SourceDSN, db) }, db, counts)
			if err != nil {
				return nil, fmt.Errorf("the source: %w", err)
			}
			for i := range counts {
				n := src[i].Rows
				counts[i].SourceRows = &n
				if n != counts[i].Rows {
					rc.MismatchCount++
					if len(rc.Mismatches) < maxTables {
						rc.Mismatches = append(rc.Mismatches, counts[i])
					}
				}
			}
		}
		all = append(all, counts...)
	}
	for _, t := range all {
		rc.Tables++
		rc.Rows += t.Rows
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].Rows > all[j].Rows })
	if len(all) > maxTables {
		rc.Omitted = len(all) - maxTables
		all = all[:maxTables]
	}
	rc.Counts = all
	return rc, nil
}

// countDB counts the rows of db's permanent user tables, or, given only,
// of those tables (a table missing counts -1).
func countDB(ctx context.Context, connect func(context.Context) (*pgx.Conn, error), db string, only []TableCount) ([]TableCount, error) {
	conn, err := connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var names [][2]string
	if only == nil {
		rows, _ := conn.Query(ctx, userTables)
		names, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
			var n [2]string
			err := r.Scan(&n[0], &n[1])
			return n, err
		})
		if err != nil {
			return nil, fmt.Errorf("database %s: listing the tables: %w", db, err)
		}
	} else {
		for _, t := range only {
			names = append(names, [2]string{t.schema, t.name})
		}
	}
	out := make([]TableCount, 0, len(names))
	for _, n := range names {
		tc := TableCount{Database: db, Table: n[0] + "." + n[1], schema: n[0], name: n[1]}
		if only != nil {
			var exists bool
			if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", pgx.Identifier{n[0], n[1]}.Sanitize()).Scan(&exists); err != nil {
				return nil, fmt.Errorf("database %s: table %s: %w", db, tc.Table, err)
			}
			if !exists {
				tc.Rows = -1
				out = append(out, tc)
				continue
			}
		}
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{n[0], n[1]}.Sanitize()).Scan(&tc.Rows); err != nil {
			return nil, fmt.Errorf("database %s: counting %s: %w", db, tc.Table, err)
		}
		out = append(out, tc)
	}
	return out, nil
}

// connectSource connects to database db of the source cluster.
func connectSource(ctx context.Context, dsn, db string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.Database = db
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["application_name"] = "pgdr-agent drill"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to the source's database %q: %w", db, err)
	}
	return conn, nil
}
