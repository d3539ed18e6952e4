// Package wal knows PostgreSQL's write-ahead log file names and on-disk
// headers: segment, timeline history, partial and backup-history file names;
// the long page header at the start of every segment (system identifier,
// segment size, timeline); the system identifier in global/pg_control;
// and the records of a sequence of segments (RecordReader, records.go),
// with named restore points. It does no I/O beyond reading the files it is
// pointed at and the segments its caller supplies.
package wal
