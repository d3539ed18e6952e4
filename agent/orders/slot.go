package orders

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgdr/pgdr/pkg/config"
)

// dropSlotWait bounds a DropSlot order.
const dropSlotWait = 20 * time.Second

// dropSlot carries out a DropSlot order: it drops the named replication
// slot unless a connection uses it. Only slots pgdr manages (named like
// config.ReceiverSlot) are dropped, whatever the order says; a slot already
// gone is success.
func (x *Executor) dropSlot(ctx context.Context, name, reason string) (string, error) {
	if len(name) <= len(config.SlotPrefix) || name[:len(config.SlotPrefix)] != config.SlotPrefix {
		return "", fmt.Errorf("refusing to drop replication slot %q: pgdr manages only slots named %s<node>", name, config.SlotPrefix)
	}
	// Orders run one at a time: a server too slow to answer must not hold
	// a fence or a promotion queued behind this one.
	ctx, cancel := context.WithTimeout(ctx, dropSlotWait)
	defer cancel()
	conn, _, err := x.pg.ConnRecovery(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "SET statement_timeout = '10s'"); err != nil {
		return "", fmt.Errorf("dropping replication slot %s: %w", name, err)
	}
	var active, temporary bool
	var typ string
	var pid *int32
	err = conn.QueryRow(ctx, "SELECT active, active_pid, slot_type, temporary FROM pg_replication_slots WHERE slot_name = $1", name).Scan(&active, &pid, &typ, &temporary)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Sprintf("replication slot %s is already gone", name), nil
	}
	if err != nil {
		return "", fmt.Errorf("reading replication slot %s: %w", name, err)
	}
	if typ != "physical" || temporary {
		return "", fmt.Errorf("refusing to drop replication slot %s: a %s slot (temporary %t); pgdr manages only permanent physical slots", name, typ, temporary)
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
