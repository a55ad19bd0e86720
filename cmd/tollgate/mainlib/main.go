// Package mainlib is the tollgate program as a function, so tests can run the real program
// in-process: Main parses the subcommand, wires the parts by hand (logger, metrics, stores,
// servers) and returns when ctx is cancelled or the work is done.
package mainlib

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/tollgate-dev/tollgate/config"
)

// command is one subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, env *environment, args []string) error
}

// environment is what every subcommand gets.
type environment struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         []string // os.Environ()-shaped
}

func commands() map[string]command {
	return map[string]command{
		"serve":   {"run the ext_proc server, the HTTP API and hosted pages", runServe},
		"settle":  {"run the settlement worker (top-ups, deposits, payouts)", runSettle},
		"migrate": {"apply the database schema", runMigrate},
		"paywall": {"manage paywalls: create, list, rotate-key, set-price, set-markup, set-upstream-key", runPaywall},
		"prices":  {"manage model prices: import FILE", runPrices},
		"ledger":  {"read and correct the books: check, balance, earnings, history, show, reverse", runLedger},
	}
}

// errUsage marks a command-line mistake; it exits with status 2.
var errUsage = errors.New("usage")

// errHelpShown stops a command after it printed its flags for -h; Main turns it into success.
var errHelpShown = errors.New("help shown")

// ExitCode maps Main's error to a process exit status.
func ExitCode(err error) int {
	if errors.Is(err, errUsage) {
		return 2
	}
	return 1
}

// Main runs the tollgate program with args (without the program name), reading os.Stdin.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return run(ctx, args, os.Stdin, stdout, stderr)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	cmds := commands()
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout, cmds)
		if len(args) == 0 {
			return fmt.Errorf("%w: a command is required", errUsage)
		}
		return nil
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		usage(stderr, cmds)
		return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
	}
	env := &environment{stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Environ()}
	if err := cmd.run(ctx, env, args[1:]); err != nil && !errors.Is(err, errHelpShown) {
		return err
	}
	return nil
}

func usage(w io.Writer, cmds map[string]command) {
	var b strings.Builder
	b.WriteString("usage: tollgate COMMAND [flags]\n\n")
	writeCommands(&b, cmds)
	b.WriteString("\nEvery command takes -config FILE (or TOLLGATE_CONFIG); settings can be overridden\n")
	b.WriteString("with TOLLGATE_* environment variables (see README).\n")
	_, _ = io.WriteString(w, b.String()) // usage is best effort: nowhere to report a failed write
}

// writeCommands lists commands by name, one a line, with their summaries aligned.
func writeCommands(b *strings.Builder, cmds map[string]command) {
	names := slices.Sorted(maps.Keys(cmds))
	width := 0
	for _, n := range names {
		width = max(width, len(n))
	}
	for _, n := range names {
		fmt.Fprintf(b, "  %-*s %s\n", width, n, cmds[n].summary)
	}
}

// flagSet returns a FlagSet whose errors go to stderr and that has the -config flag.
func flagSet(env *environment, name string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("tollgate "+name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	path := fs.String("config", lookup(env.getenv, "TOLLGATE_CONFIG"), "config `file` (YAML)")
	return fs, path
}

// parse parses flags, turning a parse error into errUsage and -h into errHelpShown, so the
// command stops after printing its flags.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelpShown
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	return nil
}

// loadConfig loads and validates the configuration.
func loadConfig(env *environment, path string) (*config.Config, error) {
	return config.Load(path, env.getenv)
}

// newLogger returns the JSON logger every command uses.
func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

func lookup(env []string, key string) string {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}
