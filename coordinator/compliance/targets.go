package compliance

import (
	"errors"
	"fmt"
	"time"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Defaults of the original design: RTO 15 minutes, RPO 5 minutes,
// failover 5 minutes.
const (
	DefaultRTO      = 15 * time.Minute
	DefaultRPO      = 5 * time.Minute
	DefaultFailover = 5 * time.Minute
	// MaxTarget bounds a target (a year): anything longer is a mistake.
	MaxTarget = 365 * 24 * time.Hour
)

// Targets are a cluster's recovery targets.
type Targets struct {
	RTO      time.Duration
	RPO      time.Duration
	Failover time.Duration
}

// DefaultTargets are the targets of a cluster that set none.
func DefaultTargets() Targets {
	return Targets{RTO: DefaultRTO, RPO: DefaultRPO, Failover: DefaultFailover}
}

// WithDefaults fills each zero target with its default.
func (t Targets) WithDefaults() Targets {
	d := DefaultTargets()
	if t.RTO == 0 {
		t.RTO = d.RTO
	}
	if t.RPO == 0 {
		t.RPO = d.RPO
	}
	if t.Failover == 0 {
		t.Failover = d.Failover
	}
	return t
}

// Validate checks that every target is positive and at most MaxTarget,
// naming the field (targets.rpo: ...). Zero targets must have been filled
// with their defaults first (WithDefaults).
func (t Targets) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"rto", t.RTO}, {"rpo", t.RPO}, {"failover", t.Failover}} {
		switch {
		case f.d <= 0:
			errs = append(errs, fmt.Errorf("targets.%s: %s is not a positive duration", f.name, f.d))
		case f.d > MaxTarget:
			errs = append(errs, fmt.Errorf("targets.%s: %s is more than a year", f.name, f.d))
		case f.d%time.Millisecond != 0:
			errs = append(errs, fmt.Errorf("targets.%s: %s is not a whole number of milliseconds", f.name, f.d))
		}
	}
	return errors.Join(errs...)
}

// TargetsFromProto reads the replicated targets; nil or zero fields are
// the defaults.
func TargetsFromProto(p *pgdrv1.RecoveryTargets) Targets {
	return Targets{
		RTO:      time.Duration(p.GetRtoMs()) * time.Millisecond,
		RPO:      time.Duration(p.GetRpoMs()) * time.Millisecond,
		Failover: time.Duration(p.GetFailoverMs()) * time.Millisecond,
	}.WithDefaults()
}

// Proto is t as the replicated state holds it.
func (t Targets) Proto() *pgdrv1.RecoveryTargets {
	return &pgdrv1.RecoveryTargets{RtoMs: t.RTO.Milliseconds(), RpoMs: t.RPO.Milliseconds(), FailoverMs: t.Failover.Milliseconds()}
}
