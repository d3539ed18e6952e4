package backup

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/testutil"
)

// TestTakeErrorHidesPassword: when Take cannot connect to the local
// server, its error names the server without the DSN's password, in
// either form: the error ends up in the run's record in Raft and in
// pgdrctl backups.
func TestTakeErrorHidesPassword(t *testing.T) {
	port := testutil.FreePort(t) // nothing listens there
	for _, dsn := range []string{
		fmt.Sprintf("host=127.0.0.1 port=%d user=backup password=secret dbname=postgres sslmode=disable connect_timeout=10", port),
		fmt.Sprintf("postgres://backup:secret@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=10", port),
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cfg := &config.Config{}
		cfg.Postgres.DSN = dsn
		_, err := Take(ctx, Deps{Cfg: cfg, Log: slog.New(slog.DiscardHandler)}, Options{})
		cancel()
		if err == nil {
			t.Fatalf("%s: Take connected to a closed port", dsn)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("the error shows the DSN's password: %v", err)
		}
		if !strings.Contains(err.Error(), "connecting to") || !strings.Contains(err.Error(), fmt.Sprint(port)) {
			t.Errorf("the error does not say which server it could not connect to: %v", err)
		}
	}
}
