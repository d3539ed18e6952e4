package buildinfo

import (
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(Collector("pgdr-agent"))
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(fams) != 1 || fams[0].GetName() != "pgdr_build_info" || len(fams[0].Metric) != 1 {
		t.Fatalf("gathered %v, want one pgdr_build_info series", fams)
	}
	m := fams[0].Metric[0]
	if m.GetGauge().GetValue() != 1 {
		t.Fatalf("pgdr_build_info = %v, want 1", m.GetGauge().GetValue())
	}
	got := map[string]string{}
	for _, l := range m.Label {
		got[l.GetName()] = l.GetValue()
	}
	want := map[string]string{"program": "pgdr-agent", "goversion": runtime.Version(), "version": Get().Version, "commit": Get().Commit}
	if len(got) != len(want) {
		t.Fatalf("labels %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v || v == "" {
			t.Fatalf("label %s = %q, want %q (non-empty)", k, got[k], v)
		}
	}
}

func TestLine(t *testing.T) {
	info := Get()
	got := Line("pgdrctl")
	want := "pgdrctl " + info.Version + " (commit " + info.Commit + ", " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ")"
	if got != want {
		t.Fatalf("Line = %q, want %q", got, want)
	}
}
