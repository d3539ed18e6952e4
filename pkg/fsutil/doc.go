// Package fsutil holds the small durability helpers that every part of
// pgdr writing files needs: fsync of a directory (so that a created or
// renamed entry survives a crash) and writing a file whose content is on
// disk before it is closed.
package fsutil
