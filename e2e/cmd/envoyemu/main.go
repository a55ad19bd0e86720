// Command envoyemu runs the Envoy emulator (e2e/envoyemu) as a front proxy: what `make run`
// uses where no Envoy binary exists. It reads envoy/envoy.yaml; -endpoint points clusters at
// local processes.
//
//	envoyemu -config envoy/envoy.yaml -listen 127.0.0.1:10000 \
//	  -endpoint tollgate_extproc=127.0.0.1:9001 -endpoint demo=127.0.0.1:8080
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tollgate-dev/tollgate/e2e/envoyemu"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "envoyemu:", err)
		os.Exit(1)
	}
}

type endpoints map[string][]string

func (e endpoints) String() string { return fmt.Sprint(map[string][]string(e)) }

func (e endpoints) Set(v string) error {
	name, addr, ok := strings.Cut(v, "=")
	if !ok || name == "" || addr == "" {
		return fmt.Errorf("want CLUSTER=HOST:PORT, got %q", v)
	}
	e[name] = append(e[name], addr)
	return nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("envoyemu", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := fs.String("config", "envoy/envoy.yaml", "Envoy bootstrap `file`")
	listen := fs.String("listen", "127.0.0.1:10000", "`address` to serve on")
	eps := endpoints{}
	fs.Var(eps, "endpoint", "CLUSTER=HOST:PORT: replace a cluster's endpoints (repeatable)")
	accessLog := fs.Bool("access-log", true, "log one JSON line per request")
	if err := fs.Parse(args); err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(stderr, nil))
	opts := envoyemu.Options{Config: *cfg, Endpoints: eps, Logger: logger}
	if *accessLog {
		opts.OnRequest = func(l envoyemu.RequestLog) {
			logger.Info("request", "method", l.Method, "path", l.Path, "status", l.Status, "route", l.Route,
				"cluster", l.Cluster, "details", l.Details, "ext_proc", strings.Join(l.Sent, ","), "client_gone", l.ClientGone)
		}
	}
	p, err := envoyemu.New(opts)
	if err != nil {
		return err
	}
	defer func() { _ = p.Close() }()
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	if _, err := fmt.Fprintf(stdout, "envoyemu: listening on http://%s\n", ln.Addr()); err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
