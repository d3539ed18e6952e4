// Package repo turns the repositories of a configuration into object stores
// and owns the repository layout: where a cluster's identity record and its
// archived WAL live, so that every command agrees on the keys.
//
// Layout, under each repository's root (file path or s3 bucket/prefix):
//
//	<cluster>/cluster.json            system identifier, written by the first push
//	<cluster>/wal/<TLI>/<file name>   archived WAL: segments, .history, .partial, .backup
//	<cluster>/wal-replaced/<file name>.<time>   objects wal-repair replaced, kept for inspection
//	<cluster>/divergence/<id>/report.json        a former primary's divergence report
//	<cluster>/divergence/<id>/wal/<segment>      the raw WAL segments holding its range
//
// <TLI> is the file name's first eight hex digits (its timeline), so one
// listing per timeline finds its files in order.
package repo
