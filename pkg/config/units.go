package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a YAML duration written as Go writes one ("1s", "500ms").
// A value that does not parse is kept and reported by Validate, so the
// error names the field instead of a line of YAML.
type Duration struct {
	time.Duration
	text    string
	invalid string
}

// UnmarshalYAML records the text and its parsed value.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	d.text, d.invalid = n.Value, ""
	v, err := time.ParseDuration(strings.TrimSpace(n.Value))
	if err != nil || n.Kind != yaml.ScalarNode {
		d.invalid = "want a number with a unit: ms, s, m, h"
		return nil
	}
	d.Duration = v
	return nil
}

// MarshalYAML writes the Go form.
func (d Duration) MarshalYAML() (any, error) { return d.Duration.String(), nil }

// ByteSize is a size in bytes, written as an integer or with a unit as
// PostgreSQL writes them (B, kB, MB, GB, TB; powers of 1024, case ignored).
type ByteSize struct {
	Bytes   int64
	text    string
	invalid string
}

// UnmarshalYAML records the text and its parsed value.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	b.text, b.invalid = n.Value, ""
	v, err := parseByteSize(n.Value)
	if err != nil || n.Kind != yaml.ScalarNode {
		b.invalid = "want an integer number of bytes or a size with a unit: B, kB, MB, GB, TB"
		return nil
	}
	b.Bytes = v
	return nil
}

// MarshalYAML writes the number of bytes.
func (b ByteSize) MarshalYAML() (any, error) { return b.Bytes, nil }

func (b ByteSize) String() string { return strconv.FormatInt(b.Bytes, 10) }

// ParseByteSize reads a size as the configuration writes it: a number of
// bytes, or a number with a unit (B, kB, MB, GB, TB; powers of 1024, as in
// PostgreSQL). Negative sizes are refused.
func ParseByteSize(s string) (int64, error) {
	v, err := parseByteSize(s)
	if err != nil {
		return 0, err
	}
	if v < 0 {
		return 0, fmt.Errorf("%s is negative", s)
	}
	return v, nil
}

func parseByteSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	num, unit := s[:i], strings.ToLower(strings.TrimSpace(s[i:]))
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return 0, err
	}
	mult := map[string]int64{"": 1, "b": 1, "kb": 1 << 10, "kib": 1 << 10, "mb": 1 << 20, "mib": 1 << 20,
		"gb": 1 << 30, "gib": 1 << 30, "tb": 1 << 40, "tib": 1 << 40}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("unknown unit %q", unit)
	}
	if v > 0 && v > (1<<63-1)/mult {
		return 0, fmt.Errorf("%s is too large", s)
	}
	return v * mult, nil
}

// Switch is a YAML on/off setting: on, true or yes; off, false or no
// (case ignored). A value that is neither is kept and reported by
// Validate. Its zero value is off.
type Switch struct {
	on      bool
	text    string
	invalid string
}

// UnmarshalYAML records the text and its value.
func (s *Switch) UnmarshalYAML(n *yaml.Node) error {
	s.text, s.invalid = n.Value, ""
	switch strings.ToLower(strings.TrimSpace(n.Value)) {
	case "on", "true", "yes":
		s.on = n.Kind == yaml.ScalarNode
	case "off", "false", "no":
		s.on = false
	default:
		s.invalid = "want on or off"
	}
	if n.Kind != yaml.ScalarNode {
		s.on, s.invalid = false, "want on or off"
	}
	return nil
}

// MarshalYAML writes on or off.
func (s Switch) MarshalYAML() (any, error) { return s.String(), nil }

// On reports whether the setting is on.
func (s Switch) On() bool { return s.on }

func (s Switch) String() string {
	if s.on {
		return "on"
	}
	return "off"
}

// SwitchOn is a Switch set on (for configurations built in code).
func SwitchOn() Switch { return Switch{on: true, text: "on"} }
