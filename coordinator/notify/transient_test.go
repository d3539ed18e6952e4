package notify

import (
	"context"
	"testing"
)

// TestTransient: a delivery whose every attempt failed with a retryable
// error (an outage) is Transient, so the leader sends it again later; a
// refused one (4xx) is not.
func TestTransient(t *testing.T) {
	for _, tc := range []struct {
		code int
		want bool
	}{{500, true}, {429, true}, {400, false}} {
		rcv := newReceiver(t, tc.code)
		n := New(testOptions(&sleeper{}), pdChannel(t, rcv.srv.URL, "k"))
		err := n.Deliver(context.Background(), n.Channels()[0], testEvent(StatusTriggered))
		if err == nil || Transient(err) != tc.want {
			t.Errorf("%d: err %v, Transient %v, want %v", tc.code, err, Transient(err), tc.want)
		}
	}
}
