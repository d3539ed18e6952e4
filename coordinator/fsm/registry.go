package fsm

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// entry is how one command type is applied: new returns an empty payload
// message to decode into, apply mutates the State. An apply that returns an
// error must leave the State untouched: appliers validate everything first
// and mutate only once nothing can fail.
type entry struct {
	new   func() proto.Message
	apply func(st *pgdrv1.State, c *pgdrv1.Command, payload proto.Message, index uint64) error
}

// registry maps every command type this binary understands to its entry.
// It is built per FSM (no package-level mutable state) and never changes
// after newRegistry returns.
type registry map[pgdrv1.CommandType]entry

// register adds an entry. A duplicate panics: two appliers for one type is
// a programming error that must not reach a running cluster.
func (r registry) register(typ pgdrv1.CommandType, e entry) {
	if _, dup := r[typ]; dup {
		panic(fmt.Sprintf("fsm: duplicate applier for command type %s (%d)", typ, int32(typ)))
	}
	r[typ] = e
}

// typed adapts a strongly typed applier to an entry, so each applier
// receives its own payload type instead of asserting a proto.Message.
func typed[T proto.Message](newT func() T, apply func(*pgdrv1.State, *pgdrv1.Command, T, uint64) error) entry {
	return entry{
		new: func() proto.Message { return newT() },
		apply: func(st *pgdrv1.State, c *pgdrv1.Command, p proto.Message, index uint64) error {
			return apply(st, c, p.(T), index)
		},
	}
}

// newRegistry returns the registry of every command type this binary
// applies. Adding a type here is half the work: the leader must also stop
// proposing it until every voter runs a binary that registers it.
func newRegistry() registry {
	r := registry{}
	r.register(pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER,
		typed(func() *pgdrv1.RegisterMember { return &pgdrv1.RegisterMember{} }, applyRegisterMember))
	r.register(pgdrv1.CommandType_COMMAND_TYPE_REMOVE_MEMBER,
		typed(func() *pgdrv1.RemoveMember { return &pgdrv1.RemoveMember{} }, applyRemoveMember))
	r.register(pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY,
		typed(func() *pgdrv1.SetPrimary { return &pgdrv1.SetPrimary{} }, applySetPrimary))
	r.register(pgdrv1.CommandType_COMMAND_TYPE_SET_SYNC_STANDBYS,
		typed(func() *pgdrv1.SetSyncStandbys { return &pgdrv1.SetSyncStandbys{} }, applySetSyncStandbys))
	r.register(pgdrv1.CommandType_COMMAND_TYPE_SET_PAUSED,
		typed(func() *pgdrv1.SetPaused { return &pgdrv1.SetPaused{} }, applySetPaused))
	r.register(pgdrv1.CommandType_COMMAND_TYPE_SET_POLICY,
		typed(func() *pgdrv1.SetPolicy { return &pgdrv1.SetPolicy{} }, applySetPolicy))
	r.register(pgdrv1.CommandType_COMMAND_TYPE_UPSERT_COORDINATOR,
		typed(func() *pgdrv1.UpsertCoordinator { return &pgdrv1.UpsertCoordinator{} }, applyUpsertCoordinator))
	r.register(pgdrv1.CommandType_COMMAND_TYPE_REMOVE_COORDINATOR,
		typed(func() *pgdrv1.RemoveCoordinator { return &pgdrv1.RemoveCoordinator{} }, applyRemoveCoordinator))
	r.register(pgdrv1.CommandType_COMMAND_TYPE_RECORD_EVENT,
		typed(func() *pgdrv1.RecordEvent { return &pgdrv1.RecordEvent{} }, applyRecordEvent))
	r.register(pgdrv1.CommandType_COMMAND_TYPE_RECORD_PRIMARY_LSN,
		typed(func() *pgdrv1.RecordPrimaryLSN { return &pgdrv1.RecordPrimaryLSN{} }, applyRecordPrimaryLSN))
	r.register(pgdrv1.CommandType_COMMAND_TYPE_SET_BACKUP_POLICY,
		typed(func() *pgdrv1.SetBackupPolicy { return &pgdrv1.SetBackupPolicy{} }, applySetBackupPolicy))
	r.register(pgdrv1.CommandType_COMMAND_TYPE_RECORD_BACKUP_RUN,
		typed(func() *pgdrv1.RecordBackupRun { return &pgdrv1.RecordBackupRun{} }, applyRecordBackupRun))
	r.register(pgdrv1.CommandType_COMMAND_TYPE_RECORD_DRILL_RUN,
		typed(func() *pgdrv1.RecordDrillRun { return &pgdrv1.RecordDrillRun{} }, applyRecordDrillRun))
	r.register(pgdrv1.CommandType_COMMAND_TYPE_RECORD_WRITE_SECONDS,
		typed(func() *pgdrv1.RecordWriteSeconds { return &pgdrv1.RecordWriteSeconds{} }, applyRecordWriteSeconds))
	r.register(pgdrv1.CommandType_COMMAND_TYPE_START_TOTALS,
		typed(func() *pgdrv1.StartTotals { return &pgdrv1.StartTotals{} }, applyStartTotals))
	r.register(pgdrv1.CommandType_COMMAND_TYPE_INCIDENT,
		typed(func() *pgdrv1.IncidentCommand { return &pgdrv1.IncidentCommand{} }, applyIncident))
	r.register(pgdrv1.CommandType_COMMAND_TYPE_RUNBOOK,
		typed(func() *pgdrv1.RunbookCommand { return &pgdrv1.RunbookCommand{} }, applyRunbook))
	return r
}
