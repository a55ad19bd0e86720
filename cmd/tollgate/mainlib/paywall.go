package mainlib

import (
	"context"
	"errors"
)

// runPaywall is replaced by the issue that builds this command.
func runPaywall(ctx context.Context, env *environment, args []string) error {
	return errors.New("paywall: not built yet")
}
