package conninfo

import (
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
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

func TestForPgx(t *testing.T) {
	// What pg_basebackup -R (PostgreSQL 15) writes into primary_conninfo.
	basebackup := "user=postgres passfile='/var/lib/postgresql/.pgpass' channel_binding=prefer host=127.0.0.1 port=28941 sslmode=prefer " +
		"sslcompression=0 sslcertmode=allow sslsni=1 ssl_min_protocol_version=TLSv1.2 gssencmode=prefer krbsrvname=postgres " +
		"gssdelegation=0 target_session_attrs=any load_balance_hosts=disable application_name=pg-a2"
	for in, want := range map[string]string{
		basebackup: "user=postgres passfile='/var/lib/postgresql/.pgpass' channel_binding=prefer host=127.0.0.1 port=28941 sslmode=prefer " +
			"sslcertmode=allow sslsni=1 krbsrvname=postgres target_session_attrs=any application_name=pg-a2",
		"hostaddr=10.0.0.1 port=5432 password='a b\\' c'": "host=10.0.0.1 port=5432 password='a b\\' c'",
		"host=db hostaddr=10.0.0.1 keepalives_idle=30":    "host=db",
		"host=h application_name='pgdr agent'":            "host=h application_name='pgdr agent'",
		"postgres://u@h/db?sslcompression=0":              "postgres://u@h/db?sslcompression=0",
		"host=h password='unterminated sslcompression=0":  "host=h password='unterminated sslcompression=0",
		"": "",
	} {
		got := ForPgx(in)
		if got != want {
			t.Errorf("ForPgx(%q) = %q, want %q", in, got, want)
		}
		if want != in && !strings.HasPrefix(in, "host=h password='unterm") {
			pc, err := pgconn.ParseConfig(got)
			if err != nil {
				t.Errorf("pgconn.ParseConfig(%q): %v", got, err)
				continue
			}
			for k := range pc.RuntimeParams {
				if k != "application_name" {
					t.Errorf("ForPgx(%q) leaves %s, which pgx sends to the server", in, k)
				}
			}
		}
	}
}
