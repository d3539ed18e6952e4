package orders

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pgdr/pgdr/pkg/config"
)

// dropSlot carries out a DropSlot order: it drops the named replication
// slot unless a connection uses it. Only slots pgdr manages (named like
// config.ReceiverSlot) are dropped, whatever the order says; a slot already
// gone is success.
func (x *Executor) dropSlot(ctx context.Context, name, reason string) (string, error) {
	if len(name) <= len(config.SlotPrefix) || name[:len(config.SlotPrefix)] != config.SlotPrefix {
		return "", fmt.Errorf("refusing to drop replication slot %q: pgdr manages only slots named %s<node>", name, config.SlotPrefix)
	}
	conn, _, err := x.pg.ConnRecovery(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var active bool
	var pid *int32
	err = conn.QueryRow(ctx, "SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = $1", name).Scan(&active, &pid)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Sprintf("replication slot %s is already gone", name), nil
	}
	if err != nil {
		return "", fmt.Errorf("reading replication slot %s: %w", name, err)
	}
	if active {
		who := "a connection"
		if pid != nil {
			who = fmt.Sprintf("process %d", *pid)
		}
		return "", fmt.Errorf("refusing to drop replication slot %s: %s uses it", name, who)
	}
	// pg_drop_replication_slot itself refuses a slot that became active
	// since (object in use).
	if _, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", name); err != nil {
		return "", fmt.Errorf("dropping replication slot %s: %w", name, err)
	}
	x.log.Info("replication slot dropped", "slot", name, "reason", reason)
	return fmt.Sprintf("replication slot %s dropped", name), nil
}
