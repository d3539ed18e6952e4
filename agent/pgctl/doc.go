// Package pgctl is the agent's one place for controlling the local
// PostgreSQL server as a process: running PostgreSQL's programs (pg_ctl,
// pg_rewind, pg_basebackup, pg_controldata) from postgres.bindir as the
// data directory's owner, starting and stopping the server with pg_ctl,
// reading postmaster.pid and checking that the postmaster it names is
// alive, and opening connections to the local server.
//
// It owns how these things are done — the flags, the time limits, the
// identity the programs run as, and keeping passwords out of their error
// messages — never whether or when. It must never start PostgreSQL (and so
// never let it serve writes) or stop it on its own judgement: every start,
// stop, rewind or copy is a decision its caller made (the lease and
// fencing, the watchdog, orders). It keeps no state beyond its
// configuration, so any number of callers may share one Controller.
//
// PostgreSQL refuses to run as root, and the files its programs write must
// stay the server's: when the agent runs as root, every program runs with
// the data directory owner's user, group and supplementary groups
// (Credential).
package pgctl
