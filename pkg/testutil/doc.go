// Package testutil holds helpers for pgdr's tests that run the real things:
// pgtest starts PostgreSQL 15 servers, s3server starts a versitygw S3 server,
// and the functions here build pgdr's binaries and find free ports.
package testutil
