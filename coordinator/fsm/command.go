package fsm

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// NewCommand builds the envelope the server proposes to Raft. now is the
// leader's clock, stamped here once so that every node applies the same
// time. It refuses a type this binary cannot apply or a payload of the
// wrong message type: either would make every coordinator reject or panic
// on the entry after it is committed, when it is too late to refuse.
// Callers that propose an optional extension set IgnoreIfUnknown on the
// result before Encode.
func NewCommand(typ pgdrv1.CommandType, payload proto.Message, actor string, now time.Time) (*pgdrv1.Command, error) {
	if payload == nil {
		return nil, fmt.Errorf("fsm: new %s command: payload is nil", typ)
	}
	e, ok := newRegistry()[typ]
	if !ok {
		return nil, fmt.Errorf("fsm: new command: unknown command type %d", int32(typ))
	}
	want := e.new().ProtoReflect().Descriptor().FullName()
	if got := payload.ProtoReflect().Descriptor().FullName(); got != want {
		return nil, fmt.Errorf("fsm: new %s command: payload is %s, want %s", typ, got, want)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("fsm: new %s command: marshal payload: %w", typ, err)
	}
	return &pgdrv1.Command{
		Type:    typ,
		Payload: b,
		Time:    timestamppb.New(now),
		Actor:   actor,
	}, nil
}

// Encode marshals a command for raft.Apply. Deterministic marshalling keeps
// the bytes of one command identical however often it is encoded, which
// makes log entries comparable in tests and debugging.
func Encode(c *pgdrv1.Command) ([]byte, error) {
	if c == nil {
		return nil, errors.New("fsm: encode: command is nil")
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("fsm: encode %s command: %w", c.GetType(), err)
	}
	return b, nil
}
