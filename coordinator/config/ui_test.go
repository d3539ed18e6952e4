package config

import (
	"strings"
	"testing"
	"time"
)

// TestUIConfig: the status page is off unless ui.listen is set, refreshes
// every 10s by default, and a bad listen address or refresh names its field.
func TestUIConfig(t *testing.T) {
	c, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.UI.Listen != "" || c.UI.Refresh.Duration != 10*time.Second {
		t.Fatalf("ui defaults: %+v", c.UI)
	}
	c, err = Parse([]byte(good + "ui: {listen: \"0.0.0.0:7203\", refresh: 30s}\n"))
	if err != nil || c.UI.Listen != "0.0.0.0:7203" || c.UI.Refresh.Duration != 30*time.Second {
		t.Fatalf("ui set: %+v, %v", c.UI, err)
	}
	for src, field := range map[string]string{
		"ui: {listen: \"7203\"}\n":                         "ui.listen",
		"ui: {listen: \"0.0.0.0:7203\", refresh: 100ms}\n": "ui.refresh",
		"ui: {listen: \"0.0.0.0:7203\", refresh: 2h}\n":    "ui.refresh",
	} {
		if _, err := Parse([]byte(good + src)); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%q: error %v does not name %s", strings.TrimSpace(src), err, field)
		}
	}
}
