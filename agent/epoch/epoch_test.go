package epoch

import (
	"sync"
	"testing"
)

// TestSee: See raises the highest epoch seen and returns it; a lower or
// zero epoch leaves it as it is (See(0) just reads it), as the agent's
// seeEpoch always did.
func TestSee(t *testing.T) {
	var tr Tracker
	for _, c := range []struct {
		see, want uint64
	}{
		{0, 0},
		{3, 3},
		{0, 3},
		{2, 3},
		{3, 3},
		{7, 7},
		{5, 7},
	} {
		if got := tr.See(c.see); got != c.want {
			t.Fatalf("See(%d) = %d; want %d", c.see, got, c.want)
		}
		if got := tr.Current(); got != c.want {
			t.Fatalf("Current() after See(%d) = %d; want %d", c.see, got, c.want)
		}
	}
}

// TestSeeConcurrent: the lease loop, the coordinator session, orders and
// the failsafe see epochs at once. The tracker ends at the highest, and
// never goes back: every See returns at least its own epoch and at least
// what that goroutine was told before.
func TestSeeConcurrent(t *testing.T) {
	tr := new(Tracker)
	const workers, rounds = 8, 2000
	var wg sync.WaitGroup
	errs := make(chan string, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last uint64
			for i := range rounds {
				e := uint64(i*workers + w)
				if i%3 == 0 {
					e = 0 // a read
				}
				got := tr.See(e)
				if got < e || got < last {
					errs <- "See went back"
					return
				}
				if c := tr.Current(); c < got {
					errs <- "Current went back"
					return
				}
				last = got
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	// The highest epoch seen: the last round's (rounds-1 is not a read
	// when (rounds-1)%3 != 0).
	want := uint64((rounds-1)*workers + workers - 1)
	if got := tr.Current(); got != want {
		t.Fatalf("Current() = %d after concurrent See; want %d", got, want)
	}
}
