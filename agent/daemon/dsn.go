package daemon

import "github.com/pgdr/pgdr/pkg/conninfo"

// withoutPassword returns dsn with any password removed
// (conninfo.WithoutPassword).
func withoutPassword(dsn string) string { return conninfo.WithoutPassword(dsn) }
