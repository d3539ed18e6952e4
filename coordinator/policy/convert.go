package policy

import (
	"slices"
	"time"

	"github.com/pgdr/pgdr/coordinator/compliance"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// ToProto is p as the replicated state holds it (durations in whole
// seconds; UpdatedAt and UpdatedBy are the FSM's to stamp, not copied).
func ToProto(p Policy) *pgdrv1.BackupPolicy {
	out := &pgdrv1.BackupPolicy{PitrWindowSeconds: seconds(p.PITRWindow), Drill: drillToProto(p.Drill), GameDays: gameDaysToProto(p.GameDays)}
	if p.Targets != (compliance.Targets{}) {
		out.Targets = &pgdrv1.RecoveryTargets{RtoMs: p.Targets.RTO.Milliseconds(), RpoMs: p.Targets.RPO.Milliseconds(), FailoverMs: p.Targets.Failover.Milliseconds(),
			WriteAvailabilityPpm: p.Targets.WriteAvailabilityPPM}
	}
	for _, t := range p.Tiers {
		out.Tiers = append(out.Tiers, &pgdrv1.BackupTier{
			Name: t.Name, Type: t.Type, Schedule: t.Schedule, Timezone: t.Timezone,
			KeepCount: t.KeepCount, KeepAgeSeconds: seconds(t.KeepAge),
			Repos: slices.Clone(t.Repos), RunOn: t.RunOn, TimeoutSeconds: seconds(t.Timeout),
		})
	}
	return out
}

// FromProto is the replicated policy as a Policy; nil is the defaults.
func FromProto(bp *pgdrv1.BackupPolicy) Policy {
	if bp == nil {
		return Default()
	}
	p := Policy{PITRWindow: fromSeconds(bp.GetPitrWindowSeconds()), UpdatedBy: bp.GetUpdatedBy(), Drill: drillFromProto(bp.GetDrill()), GameDays: gameDaysFromProto(bp.GetGameDays())}
	if t := bp.GetTargets(); t != nil {
		ms := func(v int64) time.Duration { return fromSeconds(v/1000) + time.Duration(v%1000)*time.Millisecond }
		p.Targets = compliance.Targets{RTO: ms(t.GetRtoMs()), RPO: ms(t.GetRpoMs()), Failover: ms(t.GetFailoverMs()),
			WriteAvailabilityPPM: t.GetWriteAvailabilityPpm()}
	}
	if bp.GetUpdatedAt() != nil {
		p.UpdatedAt = bp.GetUpdatedAt().AsTime()
	}
	for _, t := range bp.GetTiers() {
		p.Tiers = append(p.Tiers, Tier{
			Name: t.GetName(), Type: t.GetType(), Schedule: t.GetSchedule(), Timezone: t.GetTimezone(),
			KeepCount: t.GetKeepCount(), KeepAge: fromSeconds(t.GetKeepAgeSeconds()),
			Repos: slices.Clone(t.GetRepos()), RunOn: t.GetRunOn(), Timeout: fromSeconds(t.GetTimeoutSeconds()),
		})
	}
	return p
}

// EffectiveTargets are a cluster's recovery targets, defaults filled in.
func EffectiveTargets(c *pgdrv1.Cluster) compliance.Targets {
	p, _ := Effective(c)
	return p.Targets.WithDefaults()
}

// Effective is the backup policy a cluster runs: its own, or the defaults
// (isDefault) when it has none.
func Effective(c *pgdrv1.Cluster) (p Policy, isDefault bool) {
	if bp := c.GetBackupPolicy(); bp != nil {
		return FromProto(bp), false
	}
	return Default(), true
}

func seconds(d time.Duration) int64 { return int64(d / time.Second) }

// fromSeconds converts back, saturating instead of overflowing on a value
// no valid policy holds.
func fromSeconds(s int64) time.Duration {
	const maxS = int64(1<<63-1) / int64(time.Second)
	switch {
	case s > maxS:
		s = maxS
	case s < -maxS:
		s = -maxS
	}
	return time.Duration(s) * time.Second
}
