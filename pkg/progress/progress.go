package progress

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultEvery is how often Start prints while the operation runs.
const DefaultEvery = 2 * time.Second

// Start prints a progress line to w every interval (DefaultEvery when 0)
// until the returned function is called, which prints a last line and
// returns once nothing more will be written. done reports the bytes done
// so far and total the bytes expected (either may be read concurrently
// with the operation; done should be an atomic load). With a nil w it
// prints nothing.
func Start(w io.Writer, what string, total func() int64, done func() int64, every time.Duration) (stop func()) {
	if w == nil {
		return func() {}
	}
	if every <= 0 {
		every = DefaultEvery
	}
	start := time.Now()
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				fmt.Fprintln(w, Line(what, done(), total(), time.Since(start), false))
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(quit)
			wg.Wait()
			fmt.Fprintln(w, Line(what, done(), total(), time.Since(start), true))
		})
	}
}

// Line formats one progress line: "what: 42.0%  420/1000 MiB  210 MiB/s
// 3s left" while running, "what: 100.0%  1000/1000 MiB  250 MiB/s  in 4s"
// once ended.
func Line(what string, done, total int64, elapsed time.Duration, ended bool) string {
	pct := 100.0
	if total > 0 {
		pct = min(100, 100*float64(done)/float64(total))
	}
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(done) / (1 << 20) / s
	}
	tail := ""
	switch {
	case ended:
		tail = "  in " + elapsed.Round(100*time.Millisecond).String()
	case done > 0 && total > done:
		left := time.Duration(float64(elapsed) * float64(total-done) / float64(done))
		tail = "  " + left.Round(time.Second).String() + " left"
	}
	return fmt.Sprintf("%s: %5.1f%%  %d/%d MiB  %.0f MiB/s%s", what, pct, done>>20, total>>20, rate, tail)
}

// Reader counts the bytes read through it into N, for the done side of a
// progress line.
type Reader struct {
	R io.Reader
	N *atomic.Int64
}

func (c *Reader) Read(p []byte) (int, error) {
	n, err := c.R.Read(p)
	c.N.Add(int64(n))
	return n, err
}
