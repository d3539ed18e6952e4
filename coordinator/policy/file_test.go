package policy

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

const sampleFile = `
cluster: main
pitr_window: 14d
tiers:
  - name: weekly
    type: full
    schedule: "0 2 * * 0"
    timezone: Europe/Berlin
    keep_count: 8
    repos: [local, s3-eu]
    run_on: standby-only
    timeout: 6h
  - name: nightly
    type: incr
    schedule: "CRON_TZ=Europe/Berlin 0 2 * * 1-6"
    keep_age: 2w
`

func TestParseFile(t *testing.T) {
	cluster, p, err := ParseFile([]byte(sampleFile))
	if err != nil {
		t.Fatal(err)
	}
	want := Policy{PITRWindow: 14 * Day, Tiers: []Tier{
		{Name: "weekly", Type: TypeFull, Schedule: "0 2 * * 0", Timezone: "Europe/Berlin", KeepCount: 8,
			Repos: []string{"local", "s3-eu"}, RunOn: RunOnStandbyOnly, Timeout: 6 * time.Hour},
		{Name: "nightly", Type: TypeIncr, Schedule: "0 2 * * 1-6", Timezone: "Europe/Berlin", KeepAge: 14 * Day,
			RunOn: RunOnPreferStandby, Timeout: DefaultTimeout(TypeIncr)},
	}}
	if cluster != "main" || !reflect.DeepEqual(p, want) {
		t.Fatalf("parsed %q %+v\nwant %+v", cluster, p, want)
	}
	if err := p.Validate(Options{}); err != nil {
		t.Fatal(err)
	}
	// The YAML form and the replicated form both round-trip.
	b, err := MarshalFile("main", p)
	if err != nil {
		t.Fatal(err)
	}
	c2, p2, err := ParseFile(b)
	if err != nil || c2 != "main" || !reflect.DeepEqual(p2, p) {
		t.Fatalf("YAML round trip: %v\n%s\n%+v", err, b, p2)
	}
	if p3 := FromProto(ToProto(p)); !reflect.DeepEqual(p3, p) {
		t.Fatalf("proto round trip: %+v", p3)
	}
	if d := FromProto(nil); !reflect.DeepEqual(d, Default()) {
		t.Fatalf("nil proto is not the defaults: %+v", d)
	}
	if _, isDefault := Effective(&pgdrv1.Cluster{}); !isDefault {
		t.Fatal("a cluster without a policy does not use the defaults")
	}
}

func TestParseFileErrors(t *testing.T) {
	for _, c := range []struct{ name, yaml, want string }{
		{"unknown key", "tiers:\n  - name: a\n    type: full\n    schedule: '@daily'\n    keep: 3\n", "tiers[0].keep"},
		{"bad duration", "tiers:\n  - name: a\n    type: full\n    schedule: '@daily'\n    keep_age: 3 days\n", "tiers[0].keep_age: \"3 days\" is not a duration"},
		{"bad pitr", "pitr_window: forever\ntiers: []\n", "pitr_window: \"forever\" is not a duration"},
		{"keep_count not a number", "tiers:\n  - name: a\n    keep_count: many\n", "invalid YAML"},
		{"empty", "", "empty"},
		{"not a map", "- a\n- b\n", "invalid YAML"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := ParseFile([]byte(c.yaml))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want %q, got %v", c.want, err)
			}
		})
	}
	if _, _, err := ParseFile(make([]byte, MaxFileSize+1)); err == nil {
		t.Fatal("an oversized file was read")
	}
}

// TestDocsExample: the policy file in docs/policy.md is valid.
func TestDocsExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/policy.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```yaml\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("docs/policy.md has no ```yaml block")
	}
	cluster, p, err := ParseFile([]byte(block))
	if err == nil {
		err = p.Validate(Options{})
	}
	if err != nil || cluster != "main" || len(p.Tiers) != 2 {
		t.Fatalf("docs/policy.md example: %v (%q, %+v)", err, cluster, p)
	}
}
