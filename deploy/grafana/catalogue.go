package grafana

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Catalogue is the set of series a query may select: the metrics of
// docs/metrics.md by name and type, and the recording rules of
// deploy/prometheus.
type Catalogue struct {
	Metrics map[string]string // name → type (gauge, counter, histogram, summary)
	Records map[string]bool
}

// ReadCatalogue reads the metric names and types from the tables of the
// metrics catalogue: the first column of a table row holds the name in
// backquotes, the second its type.
func ReadCatalogue(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("metrics catalogue: %w", err)
	}
	metrics := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 2 {
			continue
		}
		name := strings.TrimSpace(cells[0])
		if len(name) < 3 || name[0] != '`' || name[len(name)-1] != '`' {
			continue // header, separator or a table of something else
		}
		name = name[1 : len(name)-1]
		typ := strings.TrimSpace(cells[1])
		if _, dup := metrics[name]; dup {
			return nil, fmt.Errorf("metrics catalogue %s:%d: %s listed twice", path, n, name)
		}
		metrics[name] = typ
	}
	if len(metrics) == 0 {
		return nil, fmt.Errorf("metrics catalogue %s: no metric tables found", path)
	}
	return metrics, sc.Err()
}

// ReadRecordingRules returns the names recorded by the Prometheus rule files
// (*.yml, *.yaml with a groups: list) under dir; files of other kinds
// (scrape configs, rule unit tests) have no groups and add nothing. A
// missing dir is no rules.
func ReadRecordingRules(dir string) (map[string]bool, error) {
	records := map[string]bool{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && path == dir {
				return fs.SkipAll
			}
			return err
		}
		if d.IsDir() || !(strings.HasSuffix(path, ".yml") || strings.HasSuffix(path, ".yaml")) {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var f struct {
			Groups []struct {
				Rules []struct {
					Record string `yaml:"record"`
				} `yaml:"rules"`
			} `yaml:"groups"`
		}
		if err := yaml.Unmarshal(b, &f); err != nil {
			return fmt.Errorf("rule file %s: %w", path, err)
		}
		for _, g := range f.Groups {
			for _, r := range g.Rules {
				if r.Record != "" {
					records[r.Record] = true
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("recording rules under %s: %w", dir, err)
	}
	return records, nil
}

// Unknown returns the metric names expr selects that are neither in the
// catalogue nor recorded by a rule. A histogram's or summary's series
// (name_bucket, name_sum, name_count) count as its name.
func (c Catalogue) Unknown(expr string) ([]string, error) {
	names, err := MetricNames(expr)
	if err != nil {
		return nil, err
	}
	var unknown []string
	for _, n := range names {
		if !c.has(n) {
			unknown = append(unknown, n)
		}
	}
	return unknown, nil
}

func (c Catalogue) has(name string) bool {
	if _, ok := c.Metrics[name]; ok || c.Records[name] {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		switch c.Metrics[base] {
		case "histogram":
			return true
		case "summary":
			return suffix != "_bucket"
		}
	}
	return false
}
