package conninfo

import (
	"errors"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, dsn := range []string{
		"", "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
		`host=db password='it''s \' a \\ secret'`, "postgres://u:p@h:5432/db?sslmode=require", "application_name='é ü'",
	} {
		if err := Check(dsn); err != nil {
			t.Errorf("Check(%q) = %v, want nil", dsn, err)
		}
	}
	for _, dsn := range []string{
		"host=x\\' \narchive_mode = on\narchive_command = 'cp %p /tmp/x'\n#",
		"host=x\rport=1", "host=x\tport=1", "host=x\x00", "host=x\x7f", "host=\xff", strings.Repeat("a", MaxLen+1),
	} {
		err := Check(dsn)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("Check(%q) = %v, want ErrInvalid", dsn, err)
		}
		if err != nil && strings.Contains(err.Error(), "host") {
			t.Errorf("the error repeats the DSN: %v", err)
		}
	}
}
