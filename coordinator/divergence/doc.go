// Package divergence is the coordinators' side of the divergence reports
// (agent/divergence): a former primary's report, returned with its rejoin
// order's result, is recorded as a history event of kind "divergence"
// whose details hold a bounded summary (Details: the range, the bytes,
// the counts and the first transactions, at most MaxDetailBytes encoded),
// and as a note on the cluster's failover incident (Message). The full
// report and the raw WAL stay in the repositories, which the coordinators
// hold no keys for. pgdrctl divergence reads the summaries back
// (FromEvent).
//
// It does no I/O: encoding and decoding only, so that the replicated
// history stays bounded whatever an agent sends.
package divergence
