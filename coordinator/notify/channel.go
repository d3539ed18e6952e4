package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
)

// Channel renders an event into one HTTP request to its receiver. It is
// called again for every attempt, so a request body is never reused.
type Channel interface {
	Name() string
	Type() string
	Request(ctx context.Context, ev Event) (*http.Request, error)
}

// secrets is implemented by channels so the notifier can scrub their
// secrets from any error text it keeps or returns.
type secrets interface {
	secrets() []string
}

// NewChannel builds a channel from its config, reading its secret files.
// The error names the config field that is wrong and never holds a secret.
func NewChannel(log *slog.Logger, c ChannelConfig) (Channel, error) {
	if err := validateChannel("channel "+c.Name, c); err != nil {
		return nil, err
	}
	field := func(f string) string { return fmt.Sprintf("channel %s: %s", c.Name, f) }
	switch c.Type {
	case TypeSlack:
		u, err := readSecret(log, field("url_file"), c.URLFile)
		if err != nil {
			return nil, err
		}
		if err := checkHTTPURL(u); err != nil {
			return nil, fmt.Errorf("%s: content of %s: %w", field("url_file"), c.URLFile, err)
		}
		return &Slack{name: c.Name, url: u}, nil
	case TypePagerDuty:
		key, err := readSecret(log, field("routing_key_file"), c.RoutingKeyFile)
		if err != nil {
			return nil, err
		}
		u := c.URL
		if u == "" {
			u = DefaultPagerDutyURL
		}
		return &PagerDuty{name: c.Name, url: u, routingKey: key}, nil
	case TypeAlertmanager:
		a := &Alertmanager{name: c.Name, url: c.URL, basicUser: c.BasicAuthUser}
		var err error
		if c.BearerTokenFile != "" {
			if a.bearer, err = readSecret(log, field("bearer_token_file"), c.BearerTokenFile); err != nil {
				return nil, err
			}
		}
		if c.BasicAuthPasswordFile != "" {
			if a.basicPassword, err = readSecret(log, field("basic_auth_password_file"), c.BasicAuthPasswordFile); err != nil {
				return nil, err
			}
		}
		return a, nil
	case TypeWebhook:
		w := &Webhook{name: c.Name, url: c.URL}
		if c.SecretFile != "" {
			s, err := readSecret(log, field("secret_file"), c.SecretFile)
			if err != nil {
				return nil, err
			}
			w.secret = []byte(s)
		}
		return w, nil
	}
	return nil, fmt.Errorf("%s: unknown channel type %q", field("type"), c.Type)
}

// jsonRequest is a POST of v as JSON.
func jsonRequest(ctx context.Context, url string, v any) (*http.Request, []byte, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, nil, fmt.Errorf("encode payload: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		// net/url errors quote the URL, which may be a secret.
		return nil, nil, fmt.Errorf("build request: invalid URL")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "pgdr-coordinator")
	return req, body, nil
}
