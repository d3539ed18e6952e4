package repo

// DivergencePrefix is where the divergence reports of a cluster live
// (agent/divergence): one directory per report, outside WALPrefix (the
// WAL a former primary wrote past a fork is not archive: nothing replays
// it).
func DivergencePrefix(cluster string) string { return cluster + "/divergence/" }

// DivergenceReportKey is the key of report id's JSON.
func DivergenceReportKey(cluster, id string) string {
	return DivergencePrefix(cluster) + id + "/report.json"
}

// DivergenceWALKey is the key of WAL segment name stored raw with report
// id.
func DivergenceWALKey(cluster, id, name string) string {
	return DivergencePrefix(cluster) + id + "/wal/" + name
}
