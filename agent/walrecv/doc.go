// Package walrecv is the agent's WAL receiver (wal.receive): it streams
// the cluster's WAL from the current primary over a physical replication
// connection (jackc/pglogrepl), through a physical replication slot it
// creates and keeps, into a local spool laid out like pg_wal (one file per
// segment, named by timeline and segment number), fsyncing before it
// reports a position flushed; and it uploads through the agent's
// walship.Shipper the segment being written as its partial object at least
// every upload interval, and each complete segment as exactly the object
// wal-push stores (so archive_command later finds it archived and
// compresses nothing).
//
// The receiver connects with application_name AppName(node) (the node name
// followed by "_walrecv": on a replica the node name is already its
// PostgreSQL walreceiver's), so that synchronous_standby_names can name it:
// a synchronous receiver reports a position flushed only once it is
// durable in the spool, so a commit waiting for it is acknowledged only
// once it exists outside the primary.
//
// Timelines: the spool's newest file says where the receiver stands
// (timeline S, end E). On each connection it asks the server's timeline T
// and, when T is newer, T's history (stored in the archive as wal-push
// would store the .history file); Plan then finishes S up to its switch
// point when E is before it, or starts the next timeline at the beginning
// of the segment holding the switch point. WAL of S past the switch point
// (received from an old primary that went on after the fork) stays under
// S's names: it is never written or uploaded as the new timeline's.
//
// The segment being received is written as NAME.partial and renamed to
// NAME only once complete and fsynced (as pg_receivewal does): a file
// without the suffix is a whole segment, durably, and only such a file is
// archived as one (a segment archived with zeros a crash left in it would
// meet archive_command as a conflict). A restarted receiver cuts each
// partial file back to its sound prefix (pages that begin with
// PostgreSQL's page magic and their own address), resumes from the
// spool's end (rounded down to a WAL page), and uploads again every
// complete segment still in the spool (an upload of an object already
// stored with the same content writes nothing).
package walrecv
