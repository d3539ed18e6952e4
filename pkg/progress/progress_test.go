package progress

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/testutil"
)

func TestLine(t *testing.T) {
	for _, c := range []struct {
		done, total int64
		elapsed     time.Duration
		ended       bool
		want        string
	}{
		{0, 100 << 20, 0, false, "x:   0.0%  0/100 MiB  0 MiB/s"},
		{25 << 20, 100 << 20, time.Second, false, "x:  25.0%  25/100 MiB  25 MiB/s  3s left"},
		{100 << 20, 100 << 20, 4 * time.Second, true, "x: 100.0%  100/100 MiB  25 MiB/s  in 4s"},
		{0, 0, time.Second, true, "x: 100.0%  0/0 MiB  0 MiB/s  in 1s"},
		{120 << 20, 100 << 20, time.Second, false, "x: 100.0%  120/100 MiB  120 MiB/s"}, // a file grew while read
	} {
		if got := Line("x", c.done, c.total, c.elapsed, c.ended); got != c.want {
			t.Errorf("Line(%d, %d, %v, %v) = %q, want %q", c.done, c.total, c.elapsed, c.ended, got, c.want)
		}
	}
}

// TestStart: lines while running, one last line at stop, nothing after;
// a nil writer prints nothing and stop is safe to call twice.
func TestStart(t *testing.T) {
	var out testutil.SyncBuffer
	var done atomic.Int64
	total := func() int64 { return 10 << 20 }
	stop := Start(&out, "restore B", total, done.Load, 10*time.Millisecond)
	done.Store(4 << 20)
	testutil.WaitFor(t, 10*time.Second, "a progress line at 40%", func() (bool, error) {
		return strings.Contains(out.String(), "restore B:  40.0%  4/10 MiB"), nil
	})
	done.Store(10 << 20)
	stop()
	stop()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "restore B: 100.0%  10/10 MiB") || !strings.Contains(last, " in ") {
		t.Fatalf("last line %q, want the final 100%% line", last)
	}
	n := len(out.String())
	time.Sleep(50 * time.Millisecond) // several intervals: nothing may follow the final line
	if len(out.String()) != n {
		t.Fatalf("printed after stop:\n%s", out.String())
	}
	Start(nil, "x", total, done.Load, time.Millisecond)()
}
