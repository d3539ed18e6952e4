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

func TestWithoutPassword(t *testing.T) {
	for in, want := range map[string]string{
		"host=127.0.0.1 port=5432 user=postgres password=s3cret dbname=postgres": "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
		"password='a b\\' c' host=h":                               "host=h",
		"host = h   password = x user=u":                           "host=h user=u",
		"host=h application_name='pgdr agent'":                     "host=h application_name='pgdr agent'",
		"postgres://u:s3cret@h:5432/db?sslmode=require&password=x": "postgres://u@h:5432/db?sslmode=require",
		"postgresql://h/db":                                        "postgresql://h/db",
		"host=h password='unterminated":                            "",
		"":                                                         "",
	} {
		if got := WithoutPassword(in); got != want {
			t.Errorf("WithoutPassword(%q) = %q, want %q", in, got, want)
		}
	}
}
