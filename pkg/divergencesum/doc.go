// Package divergencesum bounds a divergence report's summary
// (pgdrv1.DivergenceSummary): the agent sends it with a rejoin order's
// result and the coordinators keep it in their replicated history, both
// only as Bounded makes it (free texts clipped, transactions dropped from
// the end until it fits MaxBytes), so neither a gRPC message nor a
// history event grows with what a node's WAL held.
package divergencesum
