package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"

	"github.com/tollgate-dev/tollgate/cmd/tollgate/mainlib"
)

// childEnv, set to 1, makes the test binary run `tollgate` with its arguments instead of the
// tests (or, given noopCommand, the load test's no-op ext_proc server): the load test starts
// `tollgate serve` and its baseline that way, each in a process of its own, so that a server's
// garbage collector and scheduler are its own and not shared with the load generator, the Envoy
// emulator and the fake upstream, and every ext_proc message crosses processes, as in a
// deployment.
const childEnv = "E2E_TOLLGATE_CHILD"

// noopCommand runs noopExtProc on a loopback port; it prints noopReady and the address.
const (
	noopCommand = "noop-extproc"
	noopReady   = "noop ext_proc: ready"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(runChild(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// runChild runs `tollgate args…` (or the no-op server) until SIGTERM or SIGINT, as the real
// binary would.
func runChild(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if len(args) > 0 && args[0] == noopCommand {
		if err := serveNoop(ctx); err != nil {
			fmt.Fprintln(os.Stderr, noopCommand+":", err)
			return 1
		}
		return 0
	}
	err := mainlib.Main(ctx, args, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tollgate:", err)
		return mainlib.ExitCode(err)
	}
	return 0
}

// serveNoop serves noopExtProc on a loopback port until ctx ends.
func serveNoop(ctx context.Context) error {
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	gs := grpc.NewServer()
	extprocv3.RegisterExternalProcessorServer(gs, noopExtProc{})
	go func() {
		<-ctx.Done()
		gs.Stop()
	}()
	fmt.Printf("%s grpc=%s\n", noopReady, lis.Addr())
	return gs.Serve(lis)
}
