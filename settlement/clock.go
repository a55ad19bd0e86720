package settlement

import "time"

// Clock tells the time. The worker and TopUps take one so that expiry, back-off and stuck
// transactions are tested without sleeping.
type Clock interface {
	Now() time.Time
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns the current time.
func (SystemClock) Now() time.Time { return time.Now() }
