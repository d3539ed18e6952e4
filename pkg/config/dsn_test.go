package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/pkg/conninfo"
)

// TestDSNWithControlCharacterRefused: a configured DSN with a newline (the
// coordinator would refuse it at registration, issue 13 item 4) is a
// configuration error naming the key, never the DSN (it may hold a
// password).
func TestDSNWithControlCharacterRefused(t *testing.T) {
	base := "cluster: main\nnode: {name: n1}\nrepos: [{url: 'file:///tmp/r'}]\nencryption: {disabled: true}\n"
	for _, c := range []struct{ yaml, field string }{
		{"postgres: {pgdata: /d, dsn: \"host=x password=s3cret\\narchive_mode=on\"}\n", "postgres.dsn"},
		{"postgres: {pgdata: /d}\nnode: {name: n1, advertise_dsn: \"host=x password=s3cret\\r\"}\n", "node.advertise_dsn"},
	} {
		y := base + c.yaml
		if strings.Contains(c.yaml, "node:") {
			y = strings.Replace(y, "node: {name: n1}\n", "", 1)
		}
		_, err := Parse([]byte(y))
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field || !errors.Is(err, conninfo.ErrInvalid) && !strings.Contains(err.Error(), "control character") {
			t.Errorf("%s: Parse = %v, want a refusal of %s", c.field, err, c.field)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("the error shows the password: %v", err)
		}
	}
}
