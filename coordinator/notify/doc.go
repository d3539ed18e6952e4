// Package notify delivers incident notifications to the tools an on-call
// team already uses: a Slack-compatible incoming webhook, the PagerDuty
// Events API v2, an Alertmanager v2 push and pgdr's signed webhook.
//
// A Channel only renders an Event into an HTTP request; a Notifier carries
// the request out with bounded retries (exponential backoff with a cap,
// retried on network errors, 5xx and 429 honouring Retry-After, never on
// another status) and keeps a bounded in-memory log of the last deliveries.
//
// Endpoint secrets (Slack webhook URL, PagerDuty routing key, Alertmanager
// credentials, webhook signing key) come from files named in the config,
// read once when a channel is built. They never appear in the config text,
// in error messages or in logs.
//
// The package is self-contained: the coordinator does not use it yet (it
// will with incidents, issue 19).
package notify
