package e2e

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"github.com/tollgate-dev/tollgate/cmd/tollgate/mainlib"
)

// childEnv, set to 1, makes the test binary run `tollgate` with its arguments instead of the
// tests: the load test starts `tollgate serve` that way, in a process of its own, so that the
// server's garbage collector and scheduler are its own and not shared with the load generator,
// the Envoy emulator and the fake upstream, as in a deployment.
const childEnv = "E2E_TOLLGATE_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(runChild(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// runChild runs `tollgate args…` until SIGTERM or SIGINT, as the real binary would.
func runChild(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	err := mainlib.Main(ctx, args, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tollgate:", err)
		return mainlib.ExitCode(err)
	}
	return 0
}
