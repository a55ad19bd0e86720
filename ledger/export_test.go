package ledger

import "time"

// Test hooks for batch_test.go (compiled only into this package's tests).

// SetSoloGrace sets how long a request running on its own keeps the next batch from writing.
func SetSoloGrace(l *Ledger, d time.Duration) {
	l.holds.soloGrace = d
	l.captures.soloGrace = d
}

// QueuedCalls reports how many holds and captures wait in l's batchers.
func QueuedCalls(l *Ledger) (holds, captures int) {
	l.holds.g.mu.Lock()
	defer l.holds.g.mu.Unlock()
	return len(l.holds.queue), len(l.captures.queue)
}
