// Package e2e holds pgdr-agent's end-to-end tests: the real binary as
// PostgreSQL 15's archive_command and restore_command, against a file
// repository and a real S3 server (versitygw), with faults injected by
// stopping the server and by damaging stored objects.
package e2e
