package notify

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	ok := []ChannelConfig{
		{Name: "s", Type: TypeSlack, URLFile: "/run/secrets/slack"},
		{Name: "p", Type: TypePagerDuty, RoutingKeyFile: "/run/secrets/pd"},
		{Name: "a", Type: TypeAlertmanager, URL: "http://am:9093"},
		{Name: "a2", Type: TypeAlertmanager, URL: "https://am", BasicAuthUser: "u", BasicAuthPasswordFile: "/x"},
		{Name: "w", Type: TypeWebhook, URL: "https://hooks.example/x", SecretFile: "/x"},
	}
	if err := Validate(Config{Channels: ok}); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	for _, tc := range []struct {
		name string
		c    ChannelConfig
		want string // in the error
	}{
		{"unknown type", ChannelConfig{Name: "x", Type: "teams"}, `channels[0].type: unknown channel type "teams"`},
		{"no type", ChannelConfig{Name: "x"}, "channels[0].type: empty"},
		{"no name", ChannelConfig{Type: TypeAlertmanager, URL: "http://am"}, "channels[0].name: empty"},
		{"slack no url_file", ChannelConfig{Name: "s", Type: TypeSlack}, "channels[0].url_file: required"},
		{"slack url inline", ChannelConfig{Name: "s", Type: TypeSlack, URL: "https://hooks.slack.com/services/X", URLFile: "/f"}, "channels[0].url: not used"},
		{"pd no key file", ChannelConfig{Name: "p", Type: TypePagerDuty}, "channels[0].routing_key_file: required"},
		{"pd bad url", ChannelConfig{Name: "p", Type: TypePagerDuty, RoutingKeyFile: "/f", URL: "events.pagerduty.com"}, "channels[0].url: scheme must be http or https"},
		{"am no url", ChannelConfig{Name: "a", Type: TypeAlertmanager}, "channels[0].url: required"},
		{"am no host", ChannelConfig{Name: "a", Type: TypeAlertmanager, URL: "http://"}, "channels[0].url: no host"},
		{"am bad url", ChannelConfig{Name: "a", Type: TypeAlertmanager, URL: "http://a b\x7f"}, "channels[0].url: not a valid URL"},
		{"am user without password", ChannelConfig{Name: "a", Type: TypeAlertmanager, URL: "http://am", BasicAuthUser: "u"}, "channels[0].basic_auth_password_file"},
		{"am both auths", ChannelConfig{Name: "a", Type: TypeAlertmanager, URL: "http://am", BearerTokenFile: "/t", BasicAuthUser: "u", BasicAuthPasswordFile: "/p"}, "channels[0].bearer_token_file"},
		{"webhook no url", ChannelConfig{Name: "w", Type: TypeWebhook}, "channels[0].url: required"},
		{"bearer on slack", ChannelConfig{Name: "s", Type: TypeSlack, URLFile: "/f", BearerTokenFile: "/t"}, "channels[0].bearer_token_file: not used"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(Config{Channels: []ChannelConfig{tc.c}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want it to contain %q", err, tc.want)
			}
		})
	}
	err := Validate(Config{Channels: []ChannelConfig{ok[0], ok[0]}})
	if err == nil || !strings.Contains(err.Error(), `channels[1].name: "s" is used twice`) {
		t.Fatalf("duplicate name: %v", err)
	}
}

func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte(" \n\t"), 0o600)

	for _, tc := range []struct {
		name string
		c    ChannelConfig
		want string
	}{
		{"missing", ChannelConfig{Name: "p", Type: TypePagerDuty, RoutingKeyFile: filepath.Join(dir, "nope")}, "channel p: routing_key_file: file " + filepath.Join(dir, "nope") + " does not exist"},
		{"empty", ChannelConfig{Name: "p", Type: TypePagerDuty, RoutingKeyFile: empty}, "channel p: routing_key_file: file " + empty + " is empty"},
		{"directory", ChannelConfig{Name: "s", Type: TypeSlack, URLFile: dir}, "channel s: url_file: " + dir + " is not a regular file"},
		{"am password", ChannelConfig{Name: "a", Type: TypeAlertmanager, URL: "http://am", BasicAuthUser: "u", BasicAuthPasswordFile: empty}, "channel a: basic_auth_password_file"},
		{"webhook secret", ChannelConfig{Name: "w", Type: TypeWebhook, URL: "http://h", SecretFile: filepath.Join(dir, "nope")}, "channel w: secret_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewChannel(nil, tc.c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}

	// NewFromConfig refuses the whole config when one channel's file is bad.
	_, err := NewFromConfig(Config{Channels: []ChannelConfig{{Name: "p", Type: TypePagerDuty, RoutingKeyFile: empty}}}, Options{})
	if err == nil || !strings.Contains(err.Error(), "routing_key_file") {
		t.Fatalf("NewFromConfig: %v", err)
	}

	// A world-readable secret file is accepted with a warning naming the field.
	open := filepath.Join(dir, "open")
	os.WriteFile(open, []byte("THEKEY\n"), 0o644)
	os.Chmod(open, 0o644)
	var logs logBuffer
	ch, err := NewChannel(logs.logger(), ChannelConfig{Name: "p", Type: TypePagerDuty, RoutingKeyFile: open})
	if err != nil {
		t.Fatal(err)
	}
	if ch.(*PagerDuty).routingKey != "THEKEY" {
		t.Fatal("key not trimmed")
	}
	if l := logs.String(); !strings.Contains(l, "world-readable") || !strings.Contains(l, "routing_key_file") || strings.Contains(l, "THEKEY") {
		t.Fatalf("log %q", l)
	}
}

func TestEventValidate(t *testing.T) {
	ev := testEvent(StatusTriggered)
	ev.Severity = "urgent"
	if err := New(Options{}).Send(t.Context(), ev); err == nil || !strings.Contains(err.Error(), `unknown severity "urgent"`) {
		t.Fatalf("err %v", err)
	}
	ev = testEvent("open")
	if err := ev.Validate(); err == nil || !strings.Contains(err.Error(), `unknown status "open"`) {
		t.Fatalf("err %v", err)
	}
	ev = testEvent(StatusTriggered)
	ev.IncidentID = ""
	if err := ev.Validate(); err == nil {
		t.Fatal("empty incident id accepted")
	}
}
