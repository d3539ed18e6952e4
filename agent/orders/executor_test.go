package orders

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/agent/epoch"
	"github.com/pgdr/pgdr/agent/leaderclock"
	"github.com/pgdr/pgdr/pkg/config"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// leader answers the Epoch call as the coordinator leader would.
type leader struct {
	mu      sync.Mutex
	epoch   uint64
	primary string
	asked   int
}

func (l *leader) Epoch(_ context.Context, _ *pgdrv1.EpochRequest, _ ...grpc.CallOption) (*pgdrv1.EpochResponse, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.asked++
	return &pgdrv1.EpochResponse{Epoch: l.epoch, Primary: l.primary, Now: timestamppb.Now()}, nil
}

// replica is the local server's side of a promotion: a replica that
// promotes at once.
type replica struct {
	mu       sync.Mutex
	promoted int
}

func (r *replica) InRecovery(context.Context) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.promoted == 0, nil
}

func (r *replica) Promote(context.Context, time.Duration) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.promoted++
	return true, nil
}

func (r *replica) Finish(context.Context) (string, error) {
	return "promoted: timeline 2, lsn 0/3000000", nil
}
func (r *replica) Close() {}

type monitor struct{ checks int }

func (m *monitor) CheckNow(context.Context) *pgdrv1.HealthReport { m.checks++; return nil }

type failsafe struct{}

func (failsafe) BeginPromote() (func(), error) { return func() {}, nil }

// executor is an Executor of node pg-a2 over fakes, with no daemon.
func executor(t *testing.T, l *leader, r *replica, m *monitor) (*Executor, *epoch.Tracker) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	cfg := &config.Config{Cluster: "main", Node: config.Node{Name: "pg-a2"}, Postgres: config.Postgres{PGData: t.TempDir()}}
	var ep epoch.Tracker
	x := New(cfg, Deps{
		Log:           log,
		Epoch:         &ep,
		LeaderClock:   leaderclock.New(log, nil),
		Session:       func() EpochClient { return l },
		RPCTimeout:    3 * time.Second,
		SafetyMargin:  func() time.Duration { return time.Second },
		Monitor:       m,
		Failsafe:      failsafe{},
		Granted:       func() bool { return false },
		Fence:         func(context.Context, string) error { return errors.New("no fencing here") },
		OpenPromotion: func(context.Context) (Promotion, error) { return r, nil },
	})
	return x, &ep
}

func promote(epoch uint64, budget time.Duration) *pgdrv1.AgentCommand {
	now := time.Now()
	return &pgdrv1.AgentCommand{Id: "p1", Cluster: "main", Node: "pg-a2", Epoch: epoch, IssuedAt: timestamppb.New(now),
		SentAt: timestamppb.New(now), Deadline: timestamppb.New(now.Add(budget)), BudgetMs: budget.Milliseconds(),
		Kind: &pgdrv1.AgentCommand_Promote{Promote: &pgdrv1.Promote{Reason: "test"}}}
}

// TestExecutorPromoteConfirmsEpoch: the Executor, built from its Deps
// alone, promotes only once the leader confirms the order's epoch right
// before pg_promote, and takes the leader's newer epoch when it does not.
func TestExecutorPromoteConfirmsEpoch(t *testing.T) {
	t.Run("confirmed", func(t *testing.T) {
		l, r, m := &leader{epoch: 6, primary: "pg-a2"}, &replica{}, &monitor{}
		x, _ := executor(t, l, r, m)
		out, err := x.Order(t.Context(), promote(6, time.Minute), time.Now())
		if err != nil || !strings.HasPrefix(out, "promoted:") || r.promoted != 1 || l.asked == 0 || m.checks == 0 {
			t.Fatalf("promote confirmed by the leader: %q, %v (pg_promote %d, Epoch asked %d, checks %d)", out, err, r.promoted, l.asked, m.checks)
		}
	})
	t.Run("superseded", func(t *testing.T) {
		l, r := &leader{epoch: 7, primary: "pg-a3"}, &replica{}
		x, ep := executor(t, l, r, &monitor{})
		_, err := x.Order(t.Context(), promote(6, time.Minute), time.Now())
		if !errors.Is(err, ErrSuperseded) || r.promoted != 0 {
			t.Fatalf("promote superseded at the leader: %v (pg_promote called %d times); want refused", err, r.promoted)
		}
		if ep.Current() != 7 {
			t.Fatalf("epoch %d after the leader answered 7", ep.Current())
		}
	})
	t.Run("expired", func(t *testing.T) {
		l, r := &leader{epoch: 6, primary: "pg-a2"}, &replica{}
		x, ep := executor(t, l, r, &monitor{})
		_, err := x.Order(t.Context(), promote(6, time.Minute), time.Now().Add(-2*time.Minute))
		if !errors.Is(err, ErrOrderExpired) || r.promoted != 0 || ep.Current() != 0 {
			t.Fatalf("promote received 2 minutes ago with a 1 minute budget: %v (pg_promote %d, epoch %d); want refused, epoch not adopted", err, r.promoted, ep.Current())
		}
	})
}

// TestExecutorHold: while the executor is held no order starts.
func TestExecutorHold(t *testing.T) {
	l, r := &leader{epoch: 6, primary: "pg-a2"}, &replica{}
	x, _ := executor(t, l, r, &monitor{})
	release := x.Hold()
	done := make(chan error, 1)
	go func() {
		_, err := x.Order(context.Background(), promote(6, time.Minute), time.Now())
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("an order ran while the executor was held: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the order after release: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the order did not run within 30s of the release")
	}
}
