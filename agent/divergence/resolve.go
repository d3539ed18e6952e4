package divergence

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/pgdr/pgdr/agent/pgctl"
)

// Name is what a catalog says about a relfilenode.
type Name struct {
	OID          uint32
	Name         string // schema.relation
	DatabaseName string
}

// Resolver names the relations of relfilenodes: one call per database OID
// (0: the shared catalogs), returning what it found by relfilenode.
type Resolver func(ctx context.Context, database uint32, relfilenodes []uint32) (map[uint32]Name, error)

// DSNResolver resolves names on the server at dsn (the new primary): the
// relations that existed before the fork kept their relfilenodes there.
// It reads pg_database on dsn's database, then pg_class of each database
// in turn (pg_relation_filenode, so that mapped catalogs resolve too).
func DSNResolver(dsn string) Resolver {
	return func(ctx context.Context, database uint32, relfilenodes []uint32) (map[uint32]Name, error) {
		conn, err := pgctl.Connect(ctx, dsn, "the new primary's DSN")
		if err != nil {
			return nil, fmt.Errorf("connecting to the new primary: %w", err)
		}
		// conn is replaced when the relations are in another database:
		// the deferred close closes the one open then.
		defer func() {
			if conn != nil {
				conn.Close(context.WithoutCancel(ctx))
			}
		}()
		var dbname string
		if database != 0 {
			allow := false
			err := conn.QueryRow(ctx, "SELECT datname::text, datallowconn FROM pg_database WHERE oid = $1::int8::oid", int64(database)).Scan(&dbname, &allow)
			if errors.Is(err, pgx.ErrNoRows) {
				return map[uint32]Name{}, nil // a database created past the fork
			}
			if err != nil {
				return nil, fmt.Errorf("database %d on the new primary: %w", database, err)
			}
			if !allow {
				return map[uint32]Name{}, nil
			}
			if pc := conn.Config(); dbname != pc.Database {
				pc2 := pc.Copy()
				pc2.Database = dbname
				other, err := pgx.ConnectConfig(ctx, pc2)
				if err != nil {
					return nil, fmt.Errorf("connecting to database %s on the new primary: %w", dbname, err)
				}
				conn.Close(context.WithoutCancel(ctx))
				conn = other
			}
		}
		ids := make([]int64, len(relfilenodes))
		for i, r := range relfilenodes {
			ids[i] = int64(r)
		}
		rows, err := conn.Query(ctx, `SELECT pg_relation_filenode(c.oid)::int8, c.oid::int8, n.nspname::text, c.relname::text
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE pg_relation_filenode(c.oid)::int8 = ANY($1::int8[]) AND c.relisshared = ($2::int8 = 0)`, ids, int64(database))
		if err != nil {
			return nil, fmt.Errorf("relations of database %d on the new primary: %w", database, err)
		}
		out := map[uint32]Name{}
		for rows.Next() {
			var fn, oid int64
			var nsp, rel string
			if err := rows.Scan(&fn, &oid, &nsp, &rel); err != nil {
				return nil, err
			}
			out[uint32(fn)] = Name{OID: uint32(oid), Name: nsp + "." + rel, DatabaseName: dbname}
		}
		return out, rows.Err()
	}
}

// resolve names the relations of rng's transactions with res; it returns
// the first error (names stay empty where it failed).
func resolve(ctx context.Context, rng *Range, res Resolver) error {
	byDB := map[uint32][]uint32{}
	for _, tx := range rng.Transactions {
		for _, r := range tx.Relations {
			if !slices.Contains(byDB[r.Database], r.RelFileNode) {
				byDB[r.Database] = append(byDB[r.Database], r.RelFileNode)
			}
		}
	}
	names := map[RelKey]Name{}
	var errs []error
	dbs := make([]uint32, 0, len(byDB))
	for db := range byDB {
		dbs = append(dbs, db)
	}
	slices.Sort(dbs)
	for _, db := range dbs {
		got, err := res(ctx, db, byDB[db])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for fn, n := range got {
			names[RelKey{Database: db, RelFileNode: fn}] = n
		}
	}
	for i := range rng.Transactions {
		for j := range rng.Transactions[i].Relations {
			r := &rng.Transactions[i].Relations[j]
			if n, ok := names[RelKey{Database: r.Database, RelFileNode: r.RelFileNode}]; ok {
				r.OID, r.Name, r.DatabaseName = n.OID, n.Name, n.DatabaseName
			}
		}
	}
	return errors.Join(errs...)
}
