package mainlib

import (
	"context"
	"errors"
)

// runPrices is replaced by the issue that builds this command.
func runPrices(ctx context.Context, env *environment, args []string) error {
	return errors.New("prices: not built yet")
}
