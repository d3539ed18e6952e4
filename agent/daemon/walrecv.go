package daemon

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgdr/pgdr/agent/walrecv"
	"github.com/pgdr/pgdr/agent/walship"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/wal"
)

// newReceiver builds the WAL receiver of cfg (wal.receive): it streams
// from the server the local one names (itself when primary, its
// primary_conninfo when a replica) and uploads through shipper. Nil when
// wal.receive.enabled is off or there is no shipper (tests).
func (d *Daemon) newReceiver(cfg *config.Config, shipper *walship.Shipper, log *slog.Logger) *walrecv.Receiver {
	rc := cfg.WAL.Receive
	if !rc.Enabled || shipper == nil {
		return nil
	}
	return walrecv.New(walrecv.Config{
		AppName:        walrecv.AppName(cfg.Node.Name),
		Slot:           rc.Slot,
		SpoolDir:       rc.SpoolDir,
		UploadInterval: rc.UploadInterval.Duration,
		// The primary waits for a synchronous receiver: it streams only
		// from the primary.
		RequirePrimary: rc.Synchronous,
	}, walrecv.Deps{
		Primary:  walrecv.LocalPrimary(d.pg.ConnRecovery, cfg.Postgres.DSN),
		Upload:   shipper,
		SystemID: func() (uint64, error) { return wal.SystemIdentifier(cfg.Postgres.PGData) },
		Log:      log,
	})
}

// registerReceiver serves the receiver's progress (pgdr_walrecv_*), read
// at scrape time.
func (m *metrics) registerReceiver(status func() walrecv.Status) {
	desc := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, m.labels) }
	m.reg.MustRegister(&receiverCollector{
		status:     status,
		connected:  desc("pgdr_walrecv_connected", "1 while the WAL receiver's replication stream is open."),
		timeline:   desc("pgdr_walrecv_timeline", "The timeline the WAL receiver receives."),
		write:      desc("pgdr_walrecv_write_lsn_bytes", "WAL position the receiver has written to its spool."),
		flush:      desc("pgdr_walrecv_flush_lsn_bytes", "WAL position the receiver has fsynced in its spool (what it reports flushed)."),
		uploaded:   desc("pgdr_walrecv_uploaded_lsn_bytes", "End of the WAL the receiver has stored in every sync repository (a complete segment or the partial copy)."),
		lag:        desc("pgdr_walrecv_upload_lag_bytes", "WAL fsynced in the spool and not yet uploaded."),
		lastUpload: desc("pgdr_walrecv_last_upload_timestamp_seconds", "When an upload of the receiver last succeeded (0: none yet)."),
		failures:   desc("pgdr_walrecv_upload_failures_total", "Uploads of the receiver that failed (retried)."),
		reconnects: desc("pgdr_walrecv_reconnects_total", "Replication streams of the receiver that ended or could not start."),
	})
}

type receiverCollector struct {
	status                                                       func() walrecv.Status
	connected, timeline, write, flush, uploaded, lag, lastUpload *prometheus.Desc
	failures, reconnects                                         *prometheus.Desc
}

func (c *receiverCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.connected, c.timeline, c.write, c.flush, c.uploaded, c.lag, c.lastUpload, c.failures, c.reconnects} {
		ch <- d
	}
}

func (c *receiverCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.status()
	g := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	conn := 0.0
	if s.Connected {
		conn = 1
	}
	g(c.connected, conn)
	g(c.timeline, float64(s.Timeline))
	g(c.write, float64(s.Write))
	g(c.flush, float64(s.Flush))
	g(c.uploaded, float64(s.Uploaded))
	lag := 0.0
	if s.Flush > s.Uploaded {
		lag = float64(s.Flush - s.Uploaded)
	}
	g(c.lag, lag)
	last := 0.0
	if !s.LastUpload.IsZero() {
		last = float64(s.LastUpload.UnixNano()) / 1e9
	}
	g(c.lastUpload, last)
	ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(s.UploadFailures))
	ch <- prometheus.MustNewConstMetric(c.reconnects, prometheus.CounterValue, float64(s.Reconnects))
}
