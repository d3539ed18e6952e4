// Package pgcontrol reads PostgreSQL's control file, global/pg_control:
// its CRC-32C check (ControlFileData ends with a pg_crc32c over the bytes
// before it) and a reader that re-reads a copy torn by a concurrent
// rewrite until it checks, as PostgreSQL's own frontend reader does.
// PostgreSQL rewrites the file in place, often (on a standby each time
// minRecoveryPoint advances), so a plain read of a live cluster's file can
// return half of the old and half of the new contents; a cluster restored
// with such a copy refuses to start ("incorrect checksum in control
// file").
package pgcontrol
