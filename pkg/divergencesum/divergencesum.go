package divergencesum

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// MaxBytes bounds a summary encoded as protojson.
const MaxBytes = 16 << 10

// MaxText bounds a summary's free texts (errors), in runes.
const MaxText = 1000

// Bounded returns a copy of s that fits MaxBytes encoded as protojson, and
// that encoding: free texts clipped, and transactions dropped from the
// end until it fits (the counts stay).
func Bounded(s *pgdrv1.DivergenceSummary) (*pgdrv1.DivergenceSummary, []byte, error) {
	b := proto.Clone(s).(*pgdrv1.DivergenceSummary)
	b.Error, b.StoreError, b.NameError = Clip(b.Error, MaxText), Clip(b.StoreError, MaxText), Clip(b.NameError, MaxText)
	b.Id, b.Status, b.ForkLsn, b.EndLsn = Clip(b.Id, 200), Clip(b.Status, 32), Clip(b.ForkLsn, 32), Clip(b.EndLsn, 32)
	for _, tx := range b.Transactions {
		tx.CommitLsn = Clip(tx.CommitLsn, 32)
		for _, r := range tx.Relations {
			r.Name, r.DatabaseName = Clip(r.Name, 200), Clip(r.DatabaseName, 200)
		}
	}
	for {
		js, err := protojson.Marshal(b)
		if err != nil {
			return nil, nil, err
		}
		if len(js) <= MaxBytes {
			return b, js, nil
		}
		if len(b.Transactions) == 0 {
			return nil, nil, fmt.Errorf("divergence summary %s: %d bytes without transactions", b.Id, len(js))
		}
		b.Transactions = b.Transactions[:len(b.Transactions)*3/4]
	}
}

// Clip cuts s to n runes, the last an ellipsis.
func Clip(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// Printable is s safe to print on a terminal: every control character
// (escape sequences, newlines, tabs, C1 controls) and invalid byte
// escaped as Go does in a quoted string; a report's texts come from
// catalogs and error messages anyone with a database could write into.
func Printable(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == utf8.RuneError:
			_, n := utf8.DecodeRuneInString(s[i:])
			if n == 1 {
				fmt.Fprintf(&b, `\x%02x`, s[i])
				continue
			}
			b.WriteRune(r)
		case unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		}
	}
	return b.String()
}

// ReportTimeout bounds the making of a report on the agent, before a
// rejoin changes the data directory; the coordinators add it to their
// rejoin waits.
const ReportTimeout = 2 * time.Minute
