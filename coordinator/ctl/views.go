package ctl

import (
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// The views below are what `pgdrctl status`, `report` and `history`
// print, exported so that the coordinators' status page
// (coordinator/server/ui.go) shows the same values in the same words
// instead of deriving them again.

// StatusView is `pgdrctl status --json` of a StatusResponse; addr is the
// address that answered.
func StatusView(r *pgdrv1.StatusResponse, addr string) StatusJSON { return statusView(r, addr) }

// ComplianceView is the compliance part of status and report.
func ComplianceView(c *pgdrv1.Compliance) ComplianceJSON { return complianceView(c) }

// ReportView is `pgdrctl report --json` of a ReportResponse.
func ReportView(r *pgdrv1.ReportResponse) ReportJSON { return reportView(r) }

// HistoryView is `pgdrctl history --json` of a HistoryResponse (oldest
// first).
func HistoryView(r *pgdrv1.HistoryResponse) HistoryJSON { return historyView(r) }

// FormatLag is status's LAG column: "-" on a primary without lag, bytes
// plus seconds otherwise.
func FormatLag(m MemberJSON) string { return lag(m) }

// FormatSeconds is a duration in seconds as status prints it.
func FormatSeconds(sec float64) string { return seconds(sec) }

// FormatBytes is a byte count as status prints it (KiB, MiB, ...).
func FormatBytes(n int64) string { return humanBytes(n) }
