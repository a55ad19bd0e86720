// Command tollgate is the ext_proc paywall server (serve), the settlement worker (settle) and
// the operator's tools (migrate, paywall, prices, ledger). See `tollgate help`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/tollgate-dev/tollgate/cmd/tollgate/mainlib"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := mainlib.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tollgate:", err)
		os.Exit(mainlib.ExitCode(err))
	}
}
