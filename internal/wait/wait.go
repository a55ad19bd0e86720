// Package wait pauses for a while unless a context ends first.
package wait

import (
	"context"
	"time"
)

// Sleep waits for d or until ctx ends, whichever comes first; it returns ctx's error in the
// second case and nil otherwise.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Every calls f every d until ctx ends (the first call d after Every starts). f runs in the
// caller's goroutine; a call that overruns d delays the next one instead of stacking it.
func Every(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}
