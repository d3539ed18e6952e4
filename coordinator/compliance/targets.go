package compliance

import (
	"errors"
	"fmt"
	"strconv"
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
	// DefaultWriteAvailabilityPPM is the write-availability target of the
	// original design, 99.99%, in parts per million.
	DefaultWriteAvailabilityPPM = 999_900
	// MinWriteAvailabilityPPM and MaxWriteAvailabilityPPM bound the
	// target: below 50% is a mistake, 100% leaves no error budget.
	MinWriteAvailabilityPPM = 500_000
	MaxWriteAvailabilityPPM = 999_999
)

// Targets are a cluster's recovery targets.
type Targets struct {
	RTO      time.Duration
	RPO      time.Duration
	Failover time.Duration
	// WriteAvailabilityPPM: the share of seconds with a committed
	// heartbeat promised over 28 days, in parts per million (docs/slo.md).
	WriteAvailabilityPPM uint32
}

// WriteAvailability is the write-availability target as a ratio.
func (t Targets) WriteAvailability() float64 { return float64(t.WriteAvailabilityPPM) / 1e6 }

// DefaultTargets are the targets of a cluster that set none.
func DefaultTargets() Targets {
	return Targets{RTO: DefaultRTO, RPO: DefaultRPO, Failover: DefaultFailover, WriteAvailabilityPPM: DefaultWriteAvailabilityPPM}
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
	if t.WriteAvailabilityPPM == 0 {
		t.WriteAvailabilityPPM = d.WriteAvailabilityPPM
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
	if err := CheckWriteAvailability(t.WriteAvailabilityPPM); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// CheckWriteAvailability checks a write-availability target (0: the
// default) against its bounds, naming the field.
func CheckWriteAvailability(ppm uint32) error {
	if ppm != 0 && (ppm < MinWriteAvailabilityPPM || ppm > MaxWriteAvailabilityPPM) {
		return fmt.Errorf("targets.write_availability: %s is out of range 50%%..99.9999%% (100%% leaves no error budget)", FormatPPM(ppm))
	}
	return nil
}

// FormatPPM is a ratio in parts per million as a percentage (99.99%).
func FormatPPM(ppm uint32) string {
	return strconv.FormatFloat(float64(ppm)/1e4, 'f', -1, 64) + "%"
}

// TargetsFromProto reads the replicated targets; nil or zero fields are
// the defaults.
func TargetsFromProto(p *pgdrv1.RecoveryTargets) Targets {
	return Targets{
		RTO:                  time.Duration(p.GetRtoMs()) * time.Millisecond,
		RPO:                  time.Duration(p.GetRpoMs()) * time.Millisecond,
		Failover:             time.Duration(p.GetFailoverMs()) * time.Millisecond,
		WriteAvailabilityPPM: p.GetWriteAvailabilityPpm(),
	}.WithDefaults()
}

// Proto is t as the replicated state holds it.
func (t Targets) Proto() *pgdrv1.RecoveryTargets {
	return &pgdrv1.RecoveryTargets{RtoMs: t.RTO.Milliseconds(), RpoMs: t.RPO.Milliseconds(), FailoverMs: t.Failover.Milliseconds(),
		WriteAvailabilityPpm: t.WriteAvailabilityPPM}
}
