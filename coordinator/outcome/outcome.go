package outcome

import (
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// reasonNotSubmitted marks an Unavailable error the coordinator raised
// itself before submitting anything: the request had no effect.
const reasonNotSubmitted = "NOT_SUBMITTED"

const domain = "pgdr.coordinator"

// UnknownHint ends every error whose outcome is unknown.
const UnknownHint = "the change was submitted and its outcome is unknown: check pgdrctl history before repeating it"

// NotSubmitted is an Unavailable error that proves the request changed
// nothing (no leader, not the leader, the leader unreachable before the
// request was sent): the caller may send it to another coordinator.
func NotSubmitted(format string, a ...any) error {
	st := status.New(codes.Unavailable, fmt.Sprintf(format, a...))
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reasonNotSubmitted, Domain: domain}); err == nil {
		st = d
	}
	return st.Err()
}

// Unknown is the error for a write that was submitted (to Raft, or to the
// leader over a connection that then failed) without an answer: it may
// have been applied. Its code is codes.Unknown, which no client retries.
func Unknown(what string, err error) error {
	return status.Errorf(codes.Unknown, "%s: %v; %s", what, err, UnknownHint)
}

// IsNotSubmitted reports whether err proves the request was not submitted.
func IsNotSubmitted(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return false
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.Reason == reasonNotSubmitted && ei.Domain == domain {
			return true
		}
	}
	return false
}

// Forwarded classifies the error of a write forwarded to the leader over a
// connection that was ready: the leader's own answers pass through, but a
// bare Unavailable (the connection broke while the request was out) may
// follow a write the leader applied, so its outcome is unknown.
func Forwarded(what string, err error) error {
	if err == nil || IsNotSubmitted(err) || status.Code(err) != codes.Unavailable {
		return err
	}
	return Unknown(what, err)
}
