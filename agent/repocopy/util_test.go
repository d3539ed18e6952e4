package repocopy

import (
	"os"
	"slices"
)

func sortedCopy(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }

func writeFile(p, body string) error { return os.WriteFile(p, []byte(body), 0o600) }

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
