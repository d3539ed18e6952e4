package grafana

import (
	"slices"
	"strings"
	"testing"
)

func TestMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`pgdr_agent_up`, []string{"pgdr_agent_up"}},
		{`time() - max by (cluster, tier) (pgdr_repo_last_backup_timestamp_seconds{cluster=~"$cluster"})`,
			[]string{"pgdr_repo_last_backup_timestamp_seconds"}},
		{`histogram_quantile(0.99, sum by (cluster, repository, le) (rate(pgdr_agent_wal_push_duration_seconds_bucket{region=~"$region"}[$__rate_interval])))`,
			[]string{"pgdr_agent_wal_push_duration_seconds_bucket"}},
		// Label lists of on/group_left, keywords, offsets and numbers are not metrics.
		{`a / on (cluster) group_left (tier) b offset 5m > bool 1.5e3 and ignoring(x) c unless without`,
			[]string{"a", "b", "c"}},
		{`sum without (node) (x) or count(y) by (z)`, []string{"x", "y"}},
		{`a / on (cluster) group_left max by (cluster) (b)`, []string{"a", "b"}},
		// Strings and matchers hide what looks like names, even with escapes and braces.
		{`label_replace(m{a="x}y", b='q\'r'}, "dst", "$1 not_a_metric", "src", "(.*)")`, []string{"m"}},
		{"count_values(`value`, v)", []string{"v"}},
		{`{__name__="by_name", job="j"} + {__name__=~"pgdr_.+"}`, []string{"by_name"}},
		{`cluster:pgdr_archive_rpo_seconds:max{cluster="a"}`, []string{"cluster:pgdr_archive_rpo_seconds:max"}},
		{`increase((max by (cluster) (x))[$__range:1m]) @ end()`, []string{"x"}},
		{`x[${__range}] # a comment names not_this`, []string{"x"}},
		{`vector(1) + Inf - NaN`, nil},
		{`x + x`, []string{"x"}},
	} {
		got, err := MetricNames(tc.expr)
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.expr, got, tc.want)
		}
	}
}

func TestMetricNamesRefusesUnterminated(t *testing.T) {
	for _, tc := range []struct{ expr, want string }{
		{`x{a="b}`, "unterminated string"},
		{`x{a="b"`, "unterminated {"},
		{`rate(x[5m)`, "unterminated ["},
		{`sum by (a x`, "unterminated label list"},
	} {
		_, err := MetricNames(tc.expr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.expr, err, tc.want)
		}
	}
}
