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
