package notify

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"strings"
)

// Channel types.
const (
	TypeSlack        = "slack"
	TypePagerDuty    = "pagerduty"
	TypeAlertmanager = "alertmanager"
	TypeWebhook      = "webhook"
)

// DefaultPagerDutyURL is the Events API v2 endpoint.
const DefaultPagerDutyURL = "https://events.pagerduty.com/v2/enqueue"

// ChannelConfig configures one channel. Secrets are named by file, never
// given inline.
type ChannelConfig struct {
	Name string `yaml:"name" json:"name"`
	Type string `yaml:"type" json:"type"` // slack, pagerduty, alertmanager, webhook

	// URL of the receiver: Alertmanager's base URL (http://am:9093), the
	// signed webhook's URL, PagerDuty's enqueue URL (default
	// DefaultPagerDutyURL). Slack's URL is a secret: see URLFile.
	URL string `yaml:"url" json:"url"`
	// URLFile holds the Slack incoming-webhook URL.
	URLFile string `yaml:"url_file" json:"url_file"`
	// RoutingKeyFile holds the PagerDuty integration (routing) key.
	RoutingKeyFile string `yaml:"routing_key_file" json:"routing_key_file"`
	// BearerTokenFile, or BasicAuthUser with BasicAuthPasswordFile,
	// authenticate to Alertmanager (both optional).
	BearerTokenFile       string `yaml:"bearer_token_file" json:"bearer_token_file"`
	BasicAuthUser         string `yaml:"basic_auth_user" json:"basic_auth_user"`
	BasicAuthPasswordFile string `yaml:"basic_auth_password_file" json:"basic_auth_password_file"`
	// SecretFile holds the signed webhook's HMAC key (optional).
	SecretFile string `yaml:"secret_file" json:"secret_file"`
}

// Config is the set of channels.
type Config struct {
	Channels []ChannelConfig `yaml:"channels" json:"channels"`
}

// Validate checks the config without touching files or the network; the
// error names the field that is wrong.
func Validate(cfg Config) error {
	seen := map[string]bool{}
	var errs []error
	for i, c := range cfg.Channels {
		field := fmt.Sprintf("channels[%d]", i)
		if c.Name == "" {
			errs = append(errs, fmt.Errorf("%s.name: empty", field))
		} else if seen[c.Name] {
			errs = append(errs, fmt.Errorf("%s.name: %q is used twice", field, c.Name))
		}
		seen[c.Name] = true
		if err := validateChannel(field, c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func validateChannel(field string, c ChannelConfig) error {
	var errs []error
	need := func(name, v string) {
		if strings.TrimSpace(v) == "" {
			errs = append(errs, fmt.Errorf("%s.%s: required for type %s", field, name, c.Type))
		}
	}
	refuse := func(name, v string) {
		if v != "" {
			errs = append(errs, fmt.Errorf("%s.%s: not used by type %s", field, name, c.Type))
		}
	}
	checkURL := func(name, v string) {
		if err := checkHTTPURL(v); err != nil {
			errs = append(errs, fmt.Errorf("%s.%s: %w", field, name, err))
		}
	}
	switch c.Type {
	case TypeSlack:
		need("url_file", c.URLFile)
		refuse("url", c.URL) // the URL is the secret: it belongs in url_file
		refuse("routing_key_file", c.RoutingKeyFile)
		refuse("secret_file", c.SecretFile)
	case TypePagerDuty:
		need("routing_key_file", c.RoutingKeyFile)
		if c.URL != "" {
			checkURL("url", c.URL)
		}
		refuse("url_file", c.URLFile)
		refuse("secret_file", c.SecretFile)
	case TypeAlertmanager:
		need("url", c.URL)
		if c.URL != "" {
			checkURL("url", c.URL)
		}
		if c.BearerTokenFile != "" && (c.BasicAuthUser != "" || c.BasicAuthPasswordFile != "") {
			errs = append(errs, fmt.Errorf("%s.bearer_token_file: set with basic_auth_*: choose one", field))
		}
		if (c.BasicAuthUser == "") != (c.BasicAuthPasswordFile == "") {
			errs = append(errs, fmt.Errorf("%s.basic_auth_password_file: basic_auth_user and basic_auth_password_file go together", field))
		}
		refuse("url_file", c.URLFile)
		refuse("routing_key_file", c.RoutingKeyFile)
		refuse("secret_file", c.SecretFile)
	case TypeWebhook:
		need("url", c.URL)
		if c.URL != "" {
			checkURL("url", c.URL)
		}
		refuse("url_file", c.URLFile)
		refuse("routing_key_file", c.RoutingKeyFile)
	case "":
		errs = append(errs, fmt.Errorf("%s.type: empty (want slack, pagerduty, alertmanager or webhook)", field))
	default:
		errs = append(errs, fmt.Errorf("%s.type: unknown channel type %q (want slack, pagerduty, alertmanager or webhook)", field, c.Type))
	}
	if c.Type != TypeAlertmanager {
		refuse("bearer_token_file", c.BearerTokenFile)
		refuse("basic_auth_user", c.BasicAuthUser)
		refuse("basic_auth_password_file", c.BasicAuthPasswordFile)
	}
	return errors.Join(errs...)
}

// checkHTTPURL accepts an absolute http or https URL with a host. The
// error never quotes the URL: it may hold a token.
func checkHTTPURL(s string) error {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		return errors.New("not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("scheme must be http or https")
	}
	if u.Host == "" {
		return errors.New("no host")
	}
	return nil
}

// readSecret reads a secret file named by field. The content is trimmed;
// an empty file is refused. A file others can read is accepted with a
// warning.
func readSecret(log *slog.Logger, field, path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("%s: file %s does not exist", field, path)
		}
		return "", fmt.Errorf("%s: %w", field, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s: %s is not a regular file", field, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s: file %s is empty", field, path)
	}
	if fi.Mode().Perm()&0o004 != 0 && log != nil {
		log.Warn("notify: secret file is world-readable", "field", field, "file", path, "mode", fi.Mode().Perm().String())
	}
	return s, nil
}
