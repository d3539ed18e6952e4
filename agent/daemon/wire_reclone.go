package daemon

import (
	"context"

	"github.com/pgdr/pgdr/agent/reclone"
)

// newRecloner builds the agent's recloner (agent/reclone), with the
// orders' recovery settings and wait for streaming, the unfence and the
// health checks it calls.
func (d *Daemon) newRecloner() *reclone.Recloner {
	return reclone.New(reclone.Deps{
		Cfg:                d.cfg,
		PG:                 d.pg,
		Log:                d.log,
		ConfigFiles:        configFiles,
		StreamWait:         rejoinWait,
		HostPort:           hostPort,
		PrimaryConninfo:    primaryConninfo,
		WriteStandbyConfig: d.writeStandbyConfig,
		WaitStreaming:      d.waitStreaming,
		Unfence:            d.unfence,
		CheckNow:           func(ctx context.Context) { d.CheckNow(ctx) },
	})
}

// reclone is d.recloner.Reclone, for the orders (rejoin).
func (d *Daemon) reclone(ctx context.Context, epoch uint64, primary, dsn string, why error) (string, error) {
	return d.recloner.Reclone(ctx, epoch, primary, dsn, why)
}
