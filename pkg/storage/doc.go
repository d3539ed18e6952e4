// Package storage defines ObjectStore, the small interface every pgdr
// repository backend implements (file:// and s3://), and Open, which builds a
// store from a repository URL, and Syncer, the optional interface of a
// backend whose visible objects may not yet be durable (file://). Backends live in sub-packages; one conformance
// suite (storagetest) runs against each of them.
package storage
