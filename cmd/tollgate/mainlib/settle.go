package mainlib

import (
	"context"
	"errors"
)

// runSettle is replaced by the issue that builds this command.
func runSettle(ctx context.Context, env *environment, args []string) error {
	return errors.New("settle: not built yet")
}
