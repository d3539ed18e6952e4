// Package syncnames reads synchronous_standby_names the way PostgreSQL
// 15 does (Parse, Setting.String) and applies its semantics to a list of
// walsenders (Required, States): which standbys are synchronous, and up
// to which LSN a commit may be released.
//
// It exists so that the coordinator (which writes the setting), the
// agent's health report (which shows it) and the agent's commit gate
// (agent/commitgate, which enforces it itself when lease-gated commits
// put the gate alone in PostgreSQL's setting) read the setting
// identically. It does no I/O.
package syncnames
