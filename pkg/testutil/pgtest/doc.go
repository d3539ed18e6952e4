// Package pgtest runs real PostgreSQL servers for tests: initdb, start, stop,
// SQL and pgbench, as the postgres user when the tests run as root (PostgreSQL
// refuses to run as root). Every server is stopped when its test ends.
package pgtest
