package config

import (
	"fmt"
	"time"
)

// UI is the status page: served over HTTPS at /ui/ with the tls
// section's certificate, to callers the admin API would let read (a
// client certificate of role read or admin, or a bearer token of the
// tokens file). An empty Listen disables it.
type UI struct {
	Listen string `yaml:"listen"`
	// Refresh: how often the page reloads itself (default 10s).
	Refresh Duration `yaml:"refresh"`
}

func (u *UI) defaults() {
	if u.Refresh.Duration == 0 {
		u.Refresh.Duration = 10 * time.Second
	}
}

func (u *UI) validate() error {
	if err := hostPort("ui.listen", u.Listen, false); err != nil {
		return err
	}
	if r := u.Refresh.Duration; r < time.Second || r > time.Hour {
		return &FieldError{"ui.refresh", fmt.Sprintf("%s: want between 1s and 1h", r)}
	}
	return nil
}
