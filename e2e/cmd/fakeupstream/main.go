// Command fakeupstream serves the fake OpenAI-compatible upstream (e2e/fakeupstream): the
// demo upstream of `make run` and docker compose. It is a fake: its completions are numbered
// words and its usage is a deterministic count.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tollgate-dev/tollgate/e2e/fakeupstream"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "fakeupstream:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fakeupstream", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "`address` to serve on")
	name := fs.String("name", "demo", "name shown in replies")
	key := fs.String("key", os.Getenv("FAKEUPSTREAM_KEY"), "bearer token to require (empty: any)")
	tokens := fs.Int("completion-tokens", 16, "words per completion")
	delay := fs.Duration("delay", 20*time.Millisecond, "pause between streamed events")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: fakeupstream.New(fakeupstream.Options{Name: *name, RequireKey: *key, CompletionTokens: *tokens, Delay: *delay}), ReadHeaderTimeout: 10 * time.Second}
	if _, err := fmt.Fprintf(stdout, "fakeupstream: listening on http://%s\n", ln.Addr()); err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
