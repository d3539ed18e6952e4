package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/divergence"
	"github.com/pgdr/pgdr/pkg/config"
)

// TestDivergenceShow: divergence-show prints a stored report with every
// transaction (table and --json); a malformed id is a usage error, an
// unknown one exits 1 saying so.
func TestDivergenceShow(t *testing.T) {
	cfgPath, _ := walFetchConfig(t)
	t.Setenv("PGDR_CONFIG", "")
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	r := &divergence.Report{ID: divergence.NewID("n1", time.Now()), Cluster: "c1", Node: "n1", Status: divergence.StatusKnown,
		Timeline: 1, NewTimeline: 2, Fork: "0/3000000", End: "0/3004000", Bytes: 16384, Committed: 150}
	for i := range 150 {
		r.Transactions = append(r.Transactions, divergence.Transaction{XID: uint32(700 + i), LSN: "0/3000100", CommitTime: time.Now(),
			Relations: []divergence.Relation{{Database: 5, RelFileNode: 16384, OID: 16384, Name: "public.orders", DatabaseName: "postgres", Inserts: 1}}})
	}
	r.Transactions[0].Relations[0].Name = "public.\x1b]0;pwned\x07\x1b[2J"
	r.NameError = "database app: \x1b[31mred"
	if err := divergence.Store(context.Background(), cfg, slog.New(slog.DiscardHandler), r, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	agent := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := Main(append([]string{"divergence-show", "--config", cfgPath}, args...), &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}
	code, out, errOut := agent(r.ID)
	if code != 0 || !regexp.MustCompile(`(?m)^849\s.*public\.orders\s+1\s+0\s+0$`).MatchString(out) || !strings.Contains(out, "150 committed") {
		t.Errorf("divergence-show: exit %d\n%s%s", code, out, errOut)
	}
	if strings.ContainsAny(out, "\x1b\x07") || !strings.Contains(out, `public.\x1b]0;pwned\a\x1b[2J`) {
		t.Errorf("divergence-show printed control characters: %q", out)
	}
	code, out, _ = agent("--json", r.ID)
	var back divergence.Report
	if err := json.Unmarshal([]byte(out), &back); code != 0 || err != nil || len(back.Transactions) != 150 {
		t.Errorf("divergence-show --json: exit %d, %v, %d transactions", code, err, len(back.Transactions))
	}
	if code, _, errOut = agent("../x"); code != ExitUsage || !strings.Contains(errOut, "not a divergence report id") {
		t.Errorf("malformed id: exit %d: %s", code, errOut)
	}
	if code, _, errOut = agent(divergence.NewID("n9", time.Now())); code != ExitNotFound || !strings.Contains(errOut, "not found") {
		t.Errorf("unknown id: exit %d: %s", code, errOut)
	}
}
