// Package systemd holds no code: it is the home of pgdr's systemd units
// (pgdr-agent.service, pgdr-coordinator.service and the postgresql@.service
// drop-in pgdr-fence.conf) and of their tests, which run
// `systemd-analyze verify` on the units when the tool is installed and check
// the hardening and fencing-related directives by parsing them.
package systemd
