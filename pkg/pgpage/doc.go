// Package pgpage knows PostgreSQL data pages: the page header fields, the
// data checksum PostgreSQL stores in every page of a cluster initialized with
// --data-checksums (bit-for-bit pg_checksum_page), and which files under
// PGDATA are relation files and at which block number each of their pages
// sits (the block number is mixed into the checksum). Base backups use it to
// verify pages as files are read and to compare page LSNs for page-level
// incremental changes. It does no I/O.
//
// PostgreSQL writes pages in the machine's byte order; this package reads
// them as little-endian, which covers every platform pgdr supports (amd64,
// arm64).
package pgpage
