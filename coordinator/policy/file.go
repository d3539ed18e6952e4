package policy

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pgdr/pgdr/coordinator/compliance"
	"github.com/pgdr/pgdr/pkg/strictyaml"

	"github.com/pgdr/pgdr/pkg/duration"
)

// File is the YAML form of a policy, as `pgdrctl policy apply -f` reads
// it and `pgdrctl policy show --yaml` writes it. Durations are written as
// duration.Parse (pkg/duration) reads them (7d, 12w, 7y, 90m).
type File struct {
	// Cluster, when given, must match --cluster.
	Cluster    string     `yaml:"cluster,omitempty"`
	PITRWindow string     `yaml:"pitr_window,omitempty"`
	Tiers      []FileTier `yaml:"tiers"`
	// Targets: the recovery targets (omitted ones are the defaults).
	Targets *FileTargets `yaml:"targets,omitempty"`
	// Drill: scheduled restore drills (drill.go).
	Drill *FileDrill `yaml:"drill,omitempty"`
	// GameDays: DR test plans (gameday.go, docs/gamedays.md).
	GameDays []FileGameDay `yaml:"game_days,omitempty"`
}

// FileTargets are a File's recovery targets, as durations (15m, 90s, 1ms).
type FileTargets struct {
	RTO      string `yaml:"rto,omitempty"`
	RPO      string `yaml:"rpo,omitempty"`
	Failover string `yaml:"failover,omitempty"`
	// WriteAvailability: a percentage (99.99%) or a ratio (0.9999).
	WriteAvailability string `yaml:"write_availability,omitempty"`
}

// FileTier is one tier of a File.
type FileTier struct {
	Name      string   `yaml:"name"`
	Type      string   `yaml:"type"`
	Schedule  string   `yaml:"schedule"`
	Timezone  string   `yaml:"timezone,omitempty"`
	KeepCount int64    `yaml:"keep_count,omitempty"`
	KeepAge   string   `yaml:"keep_age,omitempty"`
	Repos     []string `yaml:"repos,omitempty,flow"`
	RunOn     string   `yaml:"run_on,omitempty"`
	Timeout   string   `yaml:"timeout,omitempty"`
}

// MaxFileSize bounds what ParseFile reads.
const MaxFileSize = 1 << 20

// ParseFile decodes a policy file strictly (an unknown key is an error
// naming it), fills the defaults of omitted fields (Normalize; a missing
// pitr_window is 7 days) and returns the cluster it names ("" if none).
// It does not Validate.
func ParseFile(data []byte) (cluster string, p Policy, err error) {
	if len(data) > MaxFileSize {
		return "", Policy{}, fmt.Errorf("the file is larger than %d bytes", MaxFileSize)
	}
	var f File
	if err := strictyaml.Decode(data, &f); err != nil {
		return "", Policy{}, err
	}
	var errs []error
	dur := func(field, s string, def time.Duration) time.Duration {
		if s == "" {
			return def
		}
		d, err := duration.Parse(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", field, err))
		}
		return d
	}
	p.PITRWindow = dur("pitr_window", f.PITRWindow, DefaultPITR)
	if ft := f.Targets; ft != nil {
		target := func(field, s string) time.Duration {
			d := dur(field, s, 0)
			if s != "" && d <= 0 {
				errs = append(errs, fmt.Errorf("%s: %q is not a positive duration", field, s))
			}
			return d
		}
		p.Targets.RTO = target("targets.rto", ft.RTO)
		p.Targets.RPO = target("targets.rpo", ft.RPO)
		p.Targets.Failover = target("targets.failover", ft.Failover)
		if ft.WriteAvailability != "" {
			ppm, err := ParsePPM(ft.WriteAvailability)
			if err == nil {
				err = compliance.CheckWriteAvailability(ppm)
			} else {
				err = fmt.Errorf("targets.write_availability: %w", err)
			}
			if err != nil {
				errs = append(errs, err)
			}
			p.Targets.WriteAvailabilityPPM = ppm
		}
	}
	for i, ft := range f.Tiers {
		field := fmt.Sprintf("tiers[%d]", i)
		p.Tiers = append(p.Tiers, Tier{
			Name: ft.Name, Type: ft.Type, Schedule: ft.Schedule, Timezone: ft.Timezone,
			KeepCount: ft.KeepCount, KeepAge: dur(field+".keep_age", ft.KeepAge, 0),
			Repos: ft.Repos, RunOn: ft.RunOn, Timeout: dur(field+".timeout", ft.Timeout, 0),
		})
	}
	var derr error
	if p.Drill, derr = drillFromFile(f.Drill, dur); derr != nil {
		errs = append(errs, derr)
	}
	p.GameDays = gameDaysFromFile(f.GameDays, dur)
	if len(errs) > 0 {
		return "", Policy{}, errors.Join(errs...)
	}
	p.Normalize()
	return f.Cluster, p, nil
}

// ToFile is p in its YAML form.
func ToFile(cluster string, p Policy) File {
	f := File{Cluster: cluster, PITRWindow: duration.Format(p.PITRWindow), Tiers: []FileTier{}, Drill: drillToFile(p.Drill), GameDays: gameDaysToFile(p.GameDays)}
	opt := func(d time.Duration) string {
		if d == 0 {
			return ""
		}
		return duration.Format(d)
	}
	if p.Targets != (compliance.Targets{}) {
		f.Targets = &FileTargets{RTO: opt(p.Targets.RTO), RPO: opt(p.Targets.RPO), Failover: opt(p.Targets.Failover)}
		if p.Targets.WriteAvailabilityPPM != 0 {
			f.Targets.WriteAvailability = compliance.FormatPPM(p.Targets.WriteAvailabilityPPM)
		}
	}
	for _, t := range p.Tiers {
		f.Tiers = append(f.Tiers, FileTier{
			Name: t.Name, Type: t.Type, Schedule: t.Schedule, Timezone: t.Timezone,
			KeepCount: t.KeepCount, KeepAge: opt(t.KeepAge), Repos: t.Repos, RunOn: t.RunOn, Timeout: opt(t.Timeout),
		})
	}
	return f
}

// MarshalFile writes p as a policy file.
func MarshalFile(cluster string, p Policy) ([]byte, error) {
	return yaml.Marshal(ToFile(cluster, p))
}

// ParsePPM reads a ratio as a percentage ("99.99%") or a plain ratio
// ("0.9999") into parts per million.
func ParsePPM(s string) (uint32, error) {
	t := strings.TrimSpace(s)
	scale := 1e6
	if p, ok := strings.CutSuffix(t, "%"); ok {
		t, scale = strings.TrimSpace(p), 1e4
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(v) || v <= 0 || v*scale > 1e6 {
		return 0, fmt.Errorf("%q is not a percentage above 0 and at most 100%% (e.g. 99.99%%) or a ratio (0.9999)", s)
	}
	return uint32(math.Round(v * scale)), nil
}
