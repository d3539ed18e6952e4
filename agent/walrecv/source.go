package walrecv

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pgdr/pgdr/pkg/conninfo"
)

// LocalPrimary is the Deps.Primary of a receiver beside a PostgreSQL
// server: connect opens a connection to that server and says whether it
// is in recovery. A primary is streamed from itself (self, its DSN); a
// replica from the server its primary_conninfo names (set by the agent's
// follow and rejoin orders: the cluster's primary, or the upstream of a
// cascading replica), so the receiver follows the node's own replication
// through failovers and switchovers without asking anyone else.
func LocalPrimary(connect func(context.Context) (*pgx.Conn, bool, error), self string) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		conn, inRecovery, err := connect(ctx)
		if err != nil {
			return "", err
		}
		defer conn.Close(context.WithoutCancel(ctx))
		if !inRecovery {
			return self, nil
		}
		var ci string
		if err := conn.QueryRow(ctx, "SHOW primary_conninfo").Scan(&ci); err != nil {
			return "", fmt.Errorf("reading the local replica's primary_conninfo: %w", err)
		}
		if ci == "" {
			return "", errors.New("the local server is a replica with no primary_conninfo: nothing to stream from")
		}
		// primary_conninfo is libpq's: written by pg_basebackup -R or by
		// hand it carries keywords pgx would send the server as settings
		// (sslcompression, gssencmode, ...), and the server refuses the
		// connection.
		return conninfo.ForPgx(ci), nil
	}
}
