package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/compliance"
)

// TestTargetsFile: the recovery targets of a policy file are read, kept
// through the replicated form, written back, and a non-positive one is
// refused naming its field.
func TestTargetsFile(t *testing.T) {
	const file = sampleFile + `
targets:
  rto: 20m
  rpo: 1ms
`
	_, p, err := ParseFile([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	want := compliance.Targets{RTO: 20 * time.Minute, RPO: time.Millisecond}
	if p.Targets != want {
		t.Fatalf("targets %+v, want %+v", p.Targets, want)
	}
	if err := p.Validate(Options{}); err != nil {
		t.Fatal(err)
	}
	if got := FromProto(ToProto(p)).Targets; got != want {
		t.Fatalf("through the proto: %+v", got)
	}
	if eff := p.Targets.WithDefaults(); eff.Failover != compliance.DefaultFailover {
		t.Fatalf("failover default: %+v", eff)
	}
	b, err := MarshalFile("main", p)
	if err != nil || !strings.Contains(string(b), "rpo: 1ms") || strings.Contains(string(b), "failover:") {
		t.Fatalf("written back: %v\n%s", err, b)
	}
	if _, p, _ := ParseFile([]byte(sampleFile)); p.Targets != (compliance.Targets{}) || ToProto(p).Targets != nil {
		t.Fatalf("a file without targets: %+v", p.Targets)
	}
	for _, tc := range []struct{ yaml, field string }{
		{"targets: {rpo: 0s}", "targets.rpo"},
		{"targets: {rto: -5m}", "targets.rto"},
		{"targets: {failover: soon}", "targets.failover"},
		{"targets: {rpo: 1m, bogus: 1m}", "bogus"},
	} {
		_, _, err := ParseFile([]byte(sampleFile + tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: error %v does not name %s", tc.yaml, err, tc.field)
		}
	}
	p.Targets.Failover = -time.Second
	if err := p.Validate(Options{}); err == nil || !strings.Contains(err.Error(), "targets.failover") {
		t.Fatalf("validate: %v", err)
	}
	if err := p.CheckBounds(); err == nil || !strings.Contains(err.Error(), "targets.failover") {
		t.Fatalf("check bounds: %v", err)
	}
}

// TestWriteAvailabilityTarget: targets.write_availability is read as a
// percentage (or a ratio), kept through the replicated form, written
// back, defaults to 99.99%, and a bad one is refused naming the field.
func TestWriteAvailabilityTarget(t *testing.T) {
	for in, ppm := range map[string]uint32{`"99.99%"`: 999900, `99.9%`: 999000, `0.9995`: 999500, `"99.999 %"`: 999990} {
		_, p, err := ParseFile([]byte(sampleFile + "targets: {write_availability: " + in + "}\n"))
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if p.Targets.WriteAvailabilityPPM != ppm {
			t.Errorf("%s: %d ppm, want %d", in, p.Targets.WriteAvailabilityPPM, ppm)
		}
		if err := p.Validate(Options{}); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if got := FromProto(ToProto(p)).Targets; got != p.Targets {
			t.Errorf("%s: through the proto: %+v", in, got)
		}
		if b, err := MarshalFile("main", p); err != nil || !strings.Contains(string(b), "write_availability:") {
			t.Errorf("%s: written back: %v\n%s", in, err, b)
		}
	}
	if _, p, _ := ParseFile([]byte(sampleFile)); p.Targets.WithDefaults().WriteAvailabilityPPM != 999900 || p.Targets.WithDefaults().WriteAvailability() != 0.9999 {
		t.Fatalf("default write availability: %+v", p.Targets.WithDefaults())
	}
	for _, bad := range []string{"100%", "101%", "0%", "40%", "often", "-99%", "1.5"} {
		_, _, err := ParseFile([]byte(sampleFile + "targets: {write_availability: '" + bad + "'}\n"))
		if err == nil || !strings.Contains(err.Error(), "targets.write_availability") {
			t.Errorf("%s: error %v does not name targets.write_availability", bad, err)
		}
	}
	_, p, _ := ParseFile([]byte(sampleFile))
	p.Targets.WriteAvailabilityPPM = 1_000_000
	if err := p.CheckBounds(); err == nil || !strings.Contains(err.Error(), "targets.write_availability") {
		t.Fatalf("check bounds: %v", err)
	}
}
