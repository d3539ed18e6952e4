package orders

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// backslashQuoteDSN ends a plain '...' literal early when
// standard_conforming_strings is off (\' is then an escaped quote, and the
// doubled ' closes the string): the rest would be SQL of its own.
const backslashQuoteDSN = `host=x\'; CREATE TABLE injected (); SELECT 'x`

// TestQuoteLiteral: ' and \ are doubled inside E'...', so the literal
// means s whatever standard_conforming_strings is.
func TestQuoteLiteral(t *testing.T) {
	for in, want := range map[string]string{
		"":                 `E''`,
		"host=a port=5432": `E'host=a port=5432'`,
		"pass'word":        `E'pass''word'`,
		`a\b`:              `E'a\\b'`,
		`host=x\'`:         `E'host=x\\'''`,
		backslashQuoteDSN:  `E'host=x\\''; CREATE TABLE injected (); SELECT ''x'`,
	} {
		if got := quoteLiteral(in); got != want {
			t.Errorf("quoteLiteral(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestQuoteLiteralWithPostgres: with standard_conforming_strings off on
// the server, the ALTER SYSTEM a follow order runs stores exactly the DSN,
// and nothing else runs.
func TestQuoteLiteralWithPostgres(t *testing.T) {
	if _, err := os.Stat(filepath.Join(pgtest.DefaultBinDir, "postgres")); err != nil {
		t.Skipf("no PostgreSQL at %s", pgtest.DefaultBinDir)
	}
	c := pgtest.New(t, pgtest.Options{Conf: map[string]string{"standard_conforming_strings": "off"}})
	c.Start(t)
	if got := c.QueryString(t, "SHOW standard_conforming_strings"); got != "off" {
		t.Fatalf("standard_conforming_strings = %s, want off", got)
	}
	conn := c.Conn(t)
	ctx := context.Background()
	for _, dsn := range []string{backslashQuoteDSN, `host=x\' password=a\\'b`, `host=y application_name=n1`} {
		if _, err := conn.Exec(ctx, "ALTER SYSTEM SET primary_conninfo = "+quoteLiteral(dsn)); err != nil {
			t.Fatalf("ALTER SYSTEM with %q: %v", dsn, err)
		}
		var got string
		if err := conn.QueryRow(ctx, "SELECT setting FROM pg_file_settings WHERE name = 'primary_conninfo' AND sourcefile LIKE '%postgresql.auto.conf'").Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != dsn {
			t.Errorf("primary_conninfo stored as %q, want %q", got, dsn)
		}
	}
	if n := c.QueryString(t, "SELECT count(*) FROM pg_class WHERE relname = 'injected'"); n != "0" {
		t.Errorf("the injected statement ran: %s tables named injected", n)
	}
}
