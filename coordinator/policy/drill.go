package policy

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/pgdr/pgdr/pkg/duration"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Drill schedules a cluster's restore drills (issue 17): when, what is
// restored, where, and the SQL checks the drill node runs on the
// restored copy. The replicated policy holds it, so it is bounded: at
// most MaxDrillChecks checks, their SQL at most MaxDrillCheckSQL bytes
// and their other fields MaxDrillCheckField.
type Drill struct {
	Schedule string
	Timezone string // IANA name; "" = UTC
	// Tier: restore the newest backup of this tier ("" = the latest).
	Tier string
	// Node: a member name, or DrillNodePreferStandby (the default).
	Node string
	// Scratch: the scratch directory on the node, absolute ("" = a fresh
	// one under the agent's temporary directory). The agent refuses one
	// inside the production data directory.
	Scratch string
	Timeout time.Duration // 0 = DefaultDrillTimeout
	Checks  []DrillCheck
	// TargetAfterBackup: recover to the restored backup's end plus this
	// (file: target: backup-end+10m); 0 = the end of the archive
	// (target: latest).
	TargetAfterBackup time.Duration
}

// DrillCheck is one SQL check: SQL run in Database must return Expect.
type DrillCheck struct {
	Name, Database, SQL, Expect string
}

// Drill bounds and defaults.
const (
	DrillNodePreferStandby = "prefer-standby"
	DefaultDrillTimeout    = time.Hour
	MaxDrillTimeout        = 24 * time.Hour
	MaxDrillChecks         = 16
	MaxDrillCheckSQL       = 4096
	MaxDrillCheckField     = 256
	maxScratchLen          = 1024
	// MaxTargetAfterBackup bounds "backup-end+N".
	MaxTargetAfterBackup = 30 * Day
	targetLatest         = "latest"
	targetBackupEnd      = "backup-end+"
)

// normalizeDrill fills d's defaults (timezone, node, timeout).
func normalizeDrill(d *Drill) {
	if d == nil {
		return
	}
	if tz, rest, ok := cutTZ(d.Schedule); ok && (d.Timezone == "" || d.Timezone == tz) {
		d.Timezone, d.Schedule = tz, rest
	}
	if d.Timezone == "" {
		d.Timezone = DefaultTimezone
	}
	if d.Node == "" {
		d.Node = DrillNodePreferStandby
	}
	if d.Timeout == 0 {
		d.Timeout = DefaultDrillTimeout
	}
}

// NextRun is the first slot of d's schedule after after.
func (d Drill) NextRun(after time.Time) (time.Time, error) {
	return Tier{Schedule: d.Schedule, Timezone: d.Timezone}.NextRun(after)
}

// validateDrill reports d's problems through bad, each naming its field
// (drill.schedule, drill.checks[2].sql, ...); withSchedule also parses
// the schedule and time zone (Validate; CheckBounds leaves them out).
func validateDrill(d *Drill, p Policy, withSchedule bool, bad func(field, format string, a ...any)) {
	if d == nil {
		return
	}
	if d.Schedule == "" || len(d.Schedule) > MaxScheduleLen {
		bad("drill.schedule", "required, at most %d bytes", MaxScheduleLen)
	} else if withSchedule {
		if _, err := (Tier{Schedule: d.Schedule, Timezone: d.Timezone}).schedule(); err != nil {
			bad("drill.schedule", "%v", err)
		}
	}
	if len(d.Timezone) > MaxTimezoneLen {
		bad("drill.timezone", "at most %d bytes", MaxTimezoneLen)
	}
	if d.Tier != "" {
		if _, ok := p.TierByName(d.Tier); !ok && withSchedule {
			bad("drill.tier", "%q is not a tier of the policy", clip(d.Tier))
		} else if !validName(d.Tier) {
			bad("drill.tier", "%q is not a valid name", clip(d.Tier))
		}
	}
	if d.Node != DrillNodePreferStandby && !validName(d.Node) {
		bad("drill.node", "%q: want a member name or %s", clip(d.Node), DrillNodePreferStandby)
	}
	if d.Scratch != "" && (!filepath.IsAbs(d.Scratch) || len(d.Scratch) > maxScratchLen || filepath.Clean(d.Scratch) == "/") {
		bad("drill.scratch", "%q: want an absolute directory other than /, at most %d bytes", clip(d.Scratch), maxScratchLen)
	}
	switch {
	case d.Timeout < time.Second:
		bad("drill.timeout", "%s is less than a second", duration.Format(d.Timeout))
	case d.Timeout > MaxDrillTimeout:
		bad("drill.timeout", "%s is more than %s", duration.Format(d.Timeout), duration.Format(MaxDrillTimeout))
	case d.Timeout%time.Second != 0:
		bad("drill.timeout", "%s is not a whole number of seconds", d.Timeout)
	}
	if err := CheckDrillChecks(d.Checks); err != nil {
		bad("drill.checks", "%v", err)
	}
	if d.TargetAfterBackup < 0 || d.TargetAfterBackup > MaxTargetAfterBackup || d.TargetAfterBackup%time.Second != 0 {
		bad("drill.target", "backup-end+%s: want whole seconds up to %s", duration.Format(d.TargetAfterBackup), duration.Format(MaxTargetAfterBackup))
	}
}

// parseTarget reads a drill's target: "" or "latest" (0), or
// "backup-end+DURATION".
func parseTarget(s string) (time.Duration, error) {
	switch {
	case s == "" || s == targetLatest:
		return 0, nil
	case strings.HasPrefix(s, targetBackupEnd):
		d, err := duration.Parse(strings.TrimPrefix(s, targetBackupEnd))
		if err != nil || d <= 0 {
			return 0, fmt.Errorf("%q: want latest or backup-end+DURATION (backup-end+10m)", clip(s))
		}
		return d, nil
	}
	return 0, fmt.Errorf("%q: want latest or backup-end+DURATION (backup-end+10m)", clip(s))
}

func formatTarget(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return targetBackupEnd + duration.Format(d)
}

// CheckDrillChecks checks the bounds of a drill's SQL checks, naming the
// check and field that is wrong ("checks[1] (rows).sql: ...").
func CheckDrillChecks(checks []DrillCheck) error {
	if len(checks) > MaxDrillChecks {
		return fmt.Errorf("%d checks, at most %d", len(checks), MaxDrillChecks)
	}
	for i, ch := range checks {
		switch {
		case ch.Name == "" || len(ch.Name) > MaxDrillCheckField:
			return fmt.Errorf("checks[%d].name: want 1 to %d bytes", i, MaxDrillCheckField)
		case ch.SQL == "" || len(ch.SQL) > MaxDrillCheckSQL:
			return fmt.Errorf("checks[%d] (%s).sql: want 1 to %d bytes", i, clip(ch.Name), MaxDrillCheckSQL)
		case len(ch.Database) > 63:
			return fmt.Errorf("checks[%d] (%s).database: at most 63 bytes", i, clip(ch.Name))
		case len(ch.Expect) > MaxDrillCheckField:
			return fmt.Errorf("checks[%d] (%s).expect: at most %d bytes", i, clip(ch.Name), MaxDrillCheckField)
		}
	}
	return nil
}

// DrillChecksProto are checks as the replicated state and orders hold
// them.
func DrillChecksProto(checks []DrillCheck) []*pgdrv1.DrillCheck {
	var out []*pgdrv1.DrillCheck
	for _, c := range checks {
		out = append(out, &pgdrv1.DrillCheck{Name: c.Name, Database: c.Database, Sql: c.SQL, Expect: c.Expect})
	}
	return out
}

// DrillChecksFromProto is the converse of DrillChecksProto.
func DrillChecksFromProto(checks []*pgdrv1.DrillCheck) []DrillCheck {
	var out []DrillCheck
	for _, c := range checks {
		out = append(out, DrillCheck{Name: c.GetName(), Database: c.GetDatabase(), SQL: c.GetSql(), Expect: c.GetExpect()})
	}
	return out
}

func drillToProto(d *Drill) *pgdrv1.DrillPolicy {
	if d == nil {
		return nil
	}
	return &pgdrv1.DrillPolicy{Schedule: d.Schedule, Timezone: d.Timezone, Tier: d.Tier, Node: d.Node, Scratch: d.Scratch,
		TimeoutSeconds: seconds(d.Timeout), Checks: DrillChecksProto(d.Checks), TargetAfterBackupSeconds: seconds(d.TargetAfterBackup)}
}

func drillFromProto(dp *pgdrv1.DrillPolicy) *Drill {
	if dp == nil {
		return nil
	}
	return &Drill{Schedule: dp.GetSchedule(), Timezone: dp.GetTimezone(), Tier: dp.GetTier(), Node: dp.GetNode(),
		Scratch: dp.GetScratch(), Timeout: fromSeconds(dp.GetTimeoutSeconds()), Checks: DrillChecksFromProto(dp.GetChecks()),
		TargetAfterBackup: fromSeconds(dp.GetTargetAfterBackupSeconds())}
}

// FileDrill is the drill section of a policy File.
type FileDrill struct {
	Schedule string `yaml:"schedule" json:"schedule"`
	Timezone string `yaml:"timezone,omitempty" json:"timezone"`
	Tier     string `yaml:"tier,omitempty" json:"tier"`
	Node     string `yaml:"node,omitempty" json:"node"`
	Scratch  string `yaml:"scratch,omitempty" json:"scratch"`
	Timeout  string `yaml:"timeout,omitempty" json:"timeout"`
	// Target: latest (default) or backup-end+DURATION.
	Target string           `yaml:"target,omitempty" json:"target"`
	Checks []FileDrillCheck `yaml:"checks,omitempty" json:"checks"`
}

// FileDrillCheck is one SQL check of a FileDrill.
type FileDrillCheck struct {
	Name     string `yaml:"name" json:"name"`
	Database string `yaml:"database,omitempty" json:"database"`
	SQL      string `yaml:"sql" json:"sql"`
	Expect   string `yaml:"expect" json:"expect"`
}

func drillFromFile(fd *FileDrill, dur func(field, s string, def time.Duration) time.Duration) (*Drill, error) {
	if fd == nil {
		return nil, nil
	}
	after, err := parseTarget(fd.Target)
	if err != nil {
		err = fmt.Errorf("drill.target: %w", err)
	}
	d := &Drill{Schedule: fd.Schedule, Timezone: fd.Timezone, Tier: fd.Tier, Node: fd.Node, Scratch: fd.Scratch,
		Timeout: dur("drill.timeout", fd.Timeout, 0), TargetAfterBackup: after}
	for _, c := range fd.Checks {
		d.Checks = append(d.Checks, DrillCheck{Name: c.Name, Database: c.Database, SQL: c.SQL, Expect: c.Expect})
	}
	return d, err
}

func drillToFile(d *Drill) *FileDrill {
	if d == nil {
		return nil
	}
	fd := &FileDrill{Schedule: d.Schedule, Timezone: d.Timezone, Tier: d.Tier, Node: d.Node, Scratch: d.Scratch,
		Target: formatTarget(d.TargetAfterBackup)}
	if d.Timeout != 0 {
		fd.Timeout = duration.Format(d.Timeout)
	}
	for _, c := range d.Checks {
		fd.Checks = append(fd.Checks, FileDrillCheck{Name: c.Name, Database: c.Database, SQL: c.SQL, Expect: c.Expect})
	}
	return fd
}
