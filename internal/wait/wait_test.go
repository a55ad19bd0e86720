package wait_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/wait"
)

func TestSleep(t *testing.T) {
	start := time.Now()
	if err := wait.Sleep(t.Context(), 20*time.Millisecond); err != nil || time.Since(start) < 20*time.Millisecond {
		t.Errorf("Sleep = %v after %s; want nil after 20ms", err, time.Since(start))
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	start = time.Now()
	if err := wait.Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) || time.Since(start) > time.Second {
		t.Errorf("Sleep on an ended context = %v after %s; want context.Canceled at once", err, time.Since(start))
	}
}

func TestEvery(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	calls := 0
	start := time.Now()
	wait.Every(ctx, 10*time.Millisecond, func() {
		calls++
		if calls == 3 {
			cancel()
		}
	})
	if took := time.Since(start); calls != 3 || took < 30*time.Millisecond {
		t.Errorf("%d calls in %s; want 3, the first after 10ms", calls, took)
	}
	start = time.Now()
	wait.Every(ctx, time.Hour, func() { t.Error("called on an ended context") })
	if took := time.Since(start); took > time.Second {
		t.Errorf("Every on an ended context returned after %s", took)
	}
}
