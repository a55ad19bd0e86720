package mainlib

import (
	"context"
	"errors"
)

// runServe is replaced by the issue that builds this command.
func runServe(ctx context.Context, env *environment, args []string) error {
	return errors.New("serve: not built yet")
}
