// Package cli is pgdr-agent's command line: it parses each subcommand's
// flags, loads the configuration, runs the work in the walship and daemon
// packages, and maps outcomes to exit statuses (notably restore_command's:
// 1 = not in the archive, 126 = exists but cannot be used, so recovery
// aborts instead of ending early).
package cli
