package config

import (
	"strings"
	"testing"
	"time"
)

// TestCommands: the commands section is parsed with its default timeout,
// and a bad entry is refused naming the field.
func TestCommands(t *testing.T) {
	base := "cluster: c\nnode: {name: n}\npostgres: {pgdata: /d}\nrepos: [{url: 'file:///r'}]\nencryption: {disabled: true}\n"
	cfg, err := Parse([]byte(base + "commands:\n  drain: {argv: [/usr/bin/true, x]}\n  slow: {argv: [/bin/sleep, '9'], timeout: 10m}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Commands["drain"].Timeout.Duration != DefaultCommandTimeout || cfg.Commands["slow"].Timeout.Duration != 10*time.Minute ||
		cfg.Commands["drain"].Argv[1] != "x" {
		t.Fatalf("commands: %+v", cfg.Commands)
	}
	for _, c := range []struct{ yaml, field string }{
		{"commands:\n  Bad Name: {argv: [/bin/true]}\n", "commands.Bad Name"},
		{"commands:\n  x: {argv: []}\n", "commands.x.argv"},
		{"commands:\n  x: {argv: [true]}\n", "commands.x.argv[0]"},
		{"commands:\n  x: {argv: [/bin/true], timeout: 2h}\n", "commands.x.timeout"},
		{"commands:\n  x: {argv: [/bin/true], timeout: soon}\n", "commands.x.timeout"},
		{"commands:\n  x: {argv: [/bin/true], shell: yes}\n", "shell"},
	} {
		if _, err := Parse([]byte(base + c.yaml)); err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%q: %v, want an error naming %s", c.yaml, err, c.field)
		}
	}
}
