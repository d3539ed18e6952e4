// Package layout judges whether a deployment's placement survives the loss
// of any one region: the coordinators' Raft quorum and, per cluster, a
// failover candidate outside the primary's region.
//
// The placement rule (docs/regions.md): with N voting coordinators a
// quorum is N/2+1, so no region may hold N - quorum + 1 or more voters —
// with three voters that is one per region (three regions, or two regions
// plus a witness coordinator in a third); with five, at most two per
// region over at least three regions. A cluster needs at least one member
// outside its primary's region, or losing that region leaves nothing to
// promote.
//
// Check is a pure function of what `pgdrctl status` already shows (the
// coordinators with their regions and voting state, the members with their
// regions and roles): it reads no clock and calls nothing, so a table test
// covers it; pgdrctl status prints what it finds.
package layout
