package mainlib

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/tollgate-dev/tollgate/pricing"
)

// pricesCommands are the subcommands of `tollgate prices`.
func pricesCommands() map[string]command {
	return map[string]command{
		"import": {"import model prices from OpenRouter's /api/v1/models JSON (FILE)", runPricesImport},
	}
}

// runPrices manages the catalog of model prices: `tollgate prices import FILE`.
func runPrices(ctx context.Context, env *environment, args []string) error {
	return runSubcommand(ctx, env, "prices", pricesCommands(), args)
}

// maxSkippedShown bounds the skipped models named in the summary.
const maxSkippedShown = 10

func runPricesImport(ctx context.Context, env *environment, args []string) error {
	fs, path := flagSet(env, "prices import")
	pos, err := parseArgs(fs, args, "FILE", 1)
	if err != nil {
		return err
	}
	file := pos[0]
	f, err := os.Open(file) //nolint:gosec // the operator names the file to import
	if err != nil {
		return fmt.Errorf("prices import: %w", err)
	}
	defer func() { _ = f.Close() }()
	parsed, err := pricing.ParseOpenRouterFile(f)
	if err != nil {
		return fmt.Errorf("prices import: %s: %w (nothing was imported)", file, err)
	}
	if len(parsed.Models) == 0 {
		return fmt.Errorf("prices import: %s has no model that can be priced per token (nothing was imported)", file)
	}
	return withStores(ctx, env, *path, func(svc *services) error {
		catalog := pricing.NewCatalog(svc.pool, svc.redis, svc.cfg.Redis.Prefix)
		defer func() { _ = catalog.Close() }()
		if err := catalog.Import(ctx, parsed.Models); err != nil {
			return fmt.Errorf("prices import: %w (nothing was imported)", err)
		}
		if _, err := fmt.Fprintf(env.stdout, "Imported the prices of %d model(s) from %s.\n", len(parsed.Models), file); err != nil {
			return err
		}
		if n := len(parsed.Skipped); n > 0 {
			var names []string
			for _, s := range parsed.Skipped[:min(n, maxSkippedShown)] {
				names = append(names, s.Model+" ("+s.Reason+")")
			}
			more := ""
			if n > maxSkippedShown {
				more = fmt.Sprintf(" and %d more", n-maxSkippedShown)
			}
			_, err := fmt.Fprintf(env.stdout, "Skipped %d model(s) that have no fixed per-token price: %s%s.\n", n, strings.Join(names, ", "), more)
			return err
		}
		return nil
	})
}
