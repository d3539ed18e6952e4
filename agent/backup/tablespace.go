package backup

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// nameTablespaces fills in the name of every tablespace found in
// pg_tblspc from pg_tablespace on the backup's connection, so that a
// restore can relocate tablespaces by name as well as by OID. A tablespace
// dropped since the walk keeps an empty name (it is replayed away anyway).
func nameTablespaces(ctx context.Context, conn *pgx.Conn, ts []Tablespace) error {
	if len(ts) == 0 {
		return nil
	}
	rows, err := conn.Query(ctx, "SELECT oid::text, spcname::text FROM pg_tablespace")
	if err != nil {
		return fmt.Errorf("reading pg_tablespace: %w", err)
	}
	names := map[string]string{}
	for rows.Next() {
		var oid, name string
		if err := rows.Scan(&oid, &name); err != nil {
			rows.Close()
			return fmt.Errorf("reading pg_tablespace: %w", err)
		}
		names[oid] = name
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading pg_tablespace: %w", err)
	}
	for i := range ts {
		ts[i].Name = names[ts[i].OID]
	}
	return nil
}
