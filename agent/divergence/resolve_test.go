package divergence

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/pgdr/pgdr/agent/pgctl"
	"github.com/pgdr/pgdr/pkg/divergencesum"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestDSNResolverCannotConnectToDatabase: the DSN's role may not connect
// to the database of a relation (REVOKE CONNECT): the resolver returns an
// error naming it, and does not panic (before: a nil connection was
// closed).
func TestDSNResolverCannotConnectToDatabase(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	p := pgtest.New(t, pgtest.Options{})
	p.Start(t)
	p.Exec(t, "CREATE DATABASE app")
	p.Exec(t, "REVOKE CONNECT ON DATABASE app FROM PUBLIC")
	p.Exec(t, "CREATE ROLE reader LOGIN")
	oid := p.QueryString(t, "SELECT oid::text FROM pg_database WHERE datname = 'app'")
	var db uint32
	for _, c := range oid {
		db = db*10 + uint32(c-'0')
	}
	dsn := strings.Replace(p.DSN(), "user=postgres", "user=reader", 1)
	res := DSNResolver(dsn)
	got, err := res(context.Background(), db, []uint32{16384})
	if err == nil || !strings.Contains(err.Error(), "database app") {
		t.Fatalf("resolver: %v, %v; want an error connecting to database app", got, err)
	}
}

// TestGuardedPanic: a panic in the report is an unknown summary with the
// panic's text, not a crash.
func TestGuardedPanic(t *testing.T) {
	s := Guarded(nil, "pg-a1", nil, func() *pgdrv1.DivergenceSummary { panic("boom") })
	if s.GetStatus() != StatusUnknown || !strings.Contains(s.GetError(), "panic: boom") || CheckID(s.GetId()) != nil {
		t.Errorf("summary after a panic: %v", s)
	}
	ok := &pgdrv1.DivergenceSummary{Id: "x", Status: StatusKnown}
	if s := Guarded(nil, "pg-a1", nil, func() *pgdrv1.DivergenceSummary { return ok }); s != ok {
		t.Errorf("summary: %v", s)
	}
}

// TestSummaryBounded: a summary fits divergencesum.MaxBytes whatever the
// report holds (a rejoin result stays far below the gRPC limit): long
// texts clipped, transactions dropped, the counts kept.
func TestSummaryBounded(t *testing.T) {
	r := &Report{ID: NewID("pg-a1", time.Now()), Status: StatusKnown, Committed: 100, NameError: strings.Repeat("n", 1<<20)}
	for i := range 100 {
		tx := Transaction{XID: uint32(1000 + i), LSN: "0/3000000"}
		for j := range 3000 {
			tx.Relations = append(tx.Relations, Relation{RelFileNode: uint32(j), Name: strings.Repeat("x", 60), Inserts: 1})
		}
		r.Transactions = append(r.Transactions, tx)
	}
	s := Summary(r)
	if n := len(protojson.Format(s)); n > divergencesum.MaxBytes {
		t.Errorf("summary of %d bytes encoded", n)
	}
	if s.GetCommitted() != 100 || s.GetId() != r.ID {
		t.Errorf("summary: committed %d, id %s", s.GetCommitted(), s.GetId())
	}
}

// TestStoreReportDespiteSegments: a WAL segment that cannot be stored
// does not keep the report from being stored: it lists the segments
// stored and says which was not.
func TestStoreReportDespiteSegments(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	pgwal := t.TempDir()
	bad := "000000010000000000000003"
	if err := os.Mkdir(filepath.Join(pgwal, bad), 0o700); err != nil { // unreadable as a file
		t.Fatal(err)
	}
	ctx := context.Background()
	r := &Report{ID: NewID("pg-a1", time.Now()), Cluster: cfg.Cluster, Node: "pg-a1", Status: StatusKnown, Segments: []string{bad}, Transactions: []Transaction{}}
	err := Store(ctx, cfg, nil, r, pgwal)
	if err != nil || !r.Stored || !strings.Contains(r.StoreError, bad) || len(r.Segments) != 0 {
		t.Fatalf("store: %v; stored %v (%s), segments %v", err, r.Stored, r.StoreError, r.Segments)
	}
	back, err := Load(ctx, cfg, r.ID)
	if err != nil || !strings.Contains(back.StoreError, bad) {
		t.Errorf("read back: %+v, %v", back, err)
	}
}

// TestMakeSlowNames: a name lookup that never answers gets a share of the
// report's time, not all of it: the report is stored.
func TestMakeSlowNames(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	d := newDiverged(t)
	cfg := testConfig(t, d.old.PGData)
	pg := pgctl.New(pgctl.Config{BinDir: cfg.Postgres.BinDir, PGData: cfg.Postgres.PGData})
	slow := func(ctx context.Context, _ uint32, _ []uint32) (map[uint32]Name, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	r := Make(context.Background(), Input{Cfg: cfg, PG: pg, NewPrimary: "pg-a2", DSN: d.new.DSN(), Timeout: 10 * time.Second, Resolver: slow})
	if r.Status != StatusKnown || !r.Stored || r.NameError == "" {
		t.Errorf("status %s, stored %v (%s), name error %q", r.Status, r.Stored, r.StoreError, r.NameError)
	}
}
