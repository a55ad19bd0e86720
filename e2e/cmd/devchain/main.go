// Command devchain prepares a local anvil chain for `make run` and docker compose (the test
// USDC at a fixed address, minted to the wallets named), and signs as a user's wallet in the
// curl walk-through (docs/e2e.md). Development only: it uses anvil's well-known keys. See
// package e2e/devchain for the flags.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/tollgate-dev/tollgate/e2e/devchain"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	err := devchain.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
