package mainlib

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/pricing"
	"github.com/tollgate-dev/tollgate/webhook"
)

// paywallCommands are the subcommands of `tollgate paywall`.
func paywallCommands() map[string]command {
	return map[string]command{
		"create":     {"create a paywall and print its API key (shown once)", runPaywallCreate},
		"list":       {"list the paywalls", runPaywallList},
		"rotate-key": {"give a paywall a new API key; the old one stops working", runPaywallRotateKey},
		"set-price":  {"set a paywall's own price for a model (USDC per 1M tokens)", runPaywallSetPrice},
		"set-markup": {"set a paywall's markup over model prices, in basis points", runPaywallSetMarkup},
		"set-upstream-key": {"replace a BYOK paywall's upstream credential (read from standard input)",
			runPaywallSetUpstreamKey},
		"set-webhook": {"send a paywall's events to a URL with a new signing secret (shown once); -url \"\" turns it off",
			runPaywallSetWebhook},
	}
}

// runPaywall manages paywalls: `tollgate paywall SUBCOMMAND [flags] [args]`.
func runPaywall(ctx context.Context, env *environment, args []string) error {
	return runSubcommand(ctx, env, "paywall", paywallCommands(), args)
}

// runSubcommand dispatches `tollgate NAME SUB …` to one of subs.
func runSubcommand(ctx context.Context, env *environment, name string, subs map[string]command, args []string) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		subUsage(env.stdout, name, subs)
		if len(args) == 0 {
			return fmt.Errorf("%w: %s needs a subcommand", errUsage, name)
		}
		return nil
	}
	sub, ok := subs[args[0]]
	if !ok {
		subUsage(env.stderr, name, subs)
		return fmt.Errorf("%w: unknown %s subcommand %q", errUsage, name, args[0])
	}
	return sub.run(ctx, env, args[1:])
}

func subUsage(w io.Writer, name string, subs map[string]command) {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: tollgate %s SUBCOMMAND [flags] [args]\n\n", name)
	writeCommands(&b, subs)
	fmt.Fprintf(&b, "\n`tollgate %s SUBCOMMAND -h` lists a subcommand's flags.\n", name)
	_, _ = io.WriteString(w, b.String())
}

// parseArgs parses flags that may come before, between or after the positional arguments,
// and checks that there are exactly want positional ones (named in usage).
func parseArgs(fs *flag.FlagSet, args []string, usage string, want int) ([]string, error) {
	fs.Usage = func() {
		_, _ = fmt.Fprintf(fs.Output(), "usage: %s %s\n", fs.Name(), usage)
		fs.PrintDefaults()
	}
	var pos []string
	for {
		if err := parse(fs, args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) != want {
		fs.Usage()
		return nil, fmt.Errorf("%w: %s wants %s", errUsage, fs.Name(), usage)
	}
	return pos, nil
}

// withStores loads the configuration, opens the database and Redis (so that running servers
// hear of every change within a second) and runs fn.
func withStores(ctx context.Context, env *environment, configPath string, fn func(*services) error) error {
	cfg, err := loadConfig(env, configPath)
	if err != nil {
		return err
	}
	svc, err := openServices(ctx, cfg, newLogger(env.stderr, cfg.Log.Level))
	if err != nil {
		return err
	}
	defer svc.Close()
	return fn(svc)
}

// describePaywallError turns a store error into advice.
func describePaywallError(id string, err error) error {
	switch {
	case errors.Is(err, paywall.ErrNotFound):
		return fmt.Errorf("no paywall has id %q (`tollgate paywall list` shows them)", id)
	case errors.Is(err, paywall.ErrInvalid):
		return fmt.Errorf("%s", strings.TrimPrefix(err.Error(), paywall.ErrInvalid.Error()+": "))
	case errors.Is(err, paywall.ErrNoSecretsKey):
		return fmt.Errorf("%w\nSet it to the value `tollgate serve` uses (a new deployment makes one with `openssl rand -base64 32`)", err)
	}
	return err
}

// paywallJSON is a paywall as -json prints it; the upstream key is never printed.
type paywallJSON struct {
	ID                  string    `json:"id"`
	Name                string    `json:"name"`
	Owner               string    `json:"owner"`
	Mode                string    `json:"mode"`
	Upstream            string    `json:"upstream"`
	MarkupBps           int64     `json:"markup_bps"`
	DefaultMaxTokens    int64     `json:"default_max_tokens"`
	MinCompletionTokens int64     `json:"min_completion_tokens"`
	PayoutAddress       string    `json:"payout_address"`
	MaxConcurrent       int       `json:"max_concurrent"`
	RatePerMinute       int       `json:"rate_per_minute"`
	CreatedAt           time.Time `json:"created_at"`
	APIKey              string    `json:"api_key,omitempty"`
}

func toPaywallJSON(p paywall.Paywall) paywallJSON {
	return paywallJSON{
		ID: p.ID, Name: p.Name, Owner: p.Owner, Mode: string(p.Mode), Upstream: p.Upstream, MarkupBps: p.MarkupBps,
		DefaultMaxTokens: p.DefaultMaxTokens, MinCompletionTokens: p.MinCompletionTokens, PayoutAddress: p.PayoutAddress,
		MaxConcurrent: p.MaxConcurrent, RatePerMinute: p.RatePerMinute, CreatedAt: p.CreatedAt.UTC(),
	}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func runPaywallCreate(ctx context.Context, env *environment, args []string) error {
	fs, path := flagSet(env, "paywall create")
	var p paywall.Paywall
	var mode string
	fs.StringVar(&p.Name, "name", "", "the app's `name`, shown to users (required)")
	fs.StringVar(&p.Owner, "owner", "", "who runs the app, e.g. an email (required)")
	fs.StringVar(&mode, "mode", string(paywall.ModeBuiltin), "`builtin` (the operator's provider) or byok (the app's own upstream)")
	fs.StringVar(&p.Upstream, "upstream", "", "BYOK: the upstream's name (an Envoy cluster)")
	fs.StringVar(&p.UpstreamKey, "upstream-key", "", "BYOK: the credential sent upstream as Authorization: Bearer")
	fs.Int64Var(&p.MarkupBps, "markup-bps", 0, "markup over model prices in basis points (built-in paywalls must cover the platform fee)")
	fs.Int64Var(&p.DefaultMaxTokens, "default-max-tokens", 0, "completion budget when a request sets none (0: default)")
	fs.Int64Var(&p.MinCompletionTokens, "min-completion-tokens", 0, "below this affordable budget, ask the user to top up (0: default)")
	fs.StringVar(&p.PayoutAddress, "payout-address", "", "0x address that receives withdrawals of earnings")
	fs.IntVar(&p.MaxConcurrent, "max-concurrent", 0, "per-user concurrent requests cap (0: none)")
	fs.IntVar(&p.RatePerMinute, "rate-per-minute", 0, "per-user requests per minute cap (0: none)")
	fs.StringVar(&p.Templates.Authorize, "authorize-template", "", "text/template of the authorize message; must show {{.Link}}")
	fs.StringVar(&p.Templates.TopUp, "topup-template", "", "text/template of the top-up message; must show {{.Link}}")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parseArgs(fs, args, "-name NAME -owner OWNER [flags]", 0); err != nil {
		return err
	}
	p.Mode = paywall.Mode(mode)
	return withStores(ctx, env, *path, func(svc *services) error {
		created, key, err := svc.paywallStore().Create(ctx, p)
		if err != nil {
			return fmt.Errorf("paywall create: %w", describePaywallError("", err))
		}
		if *asJSON {
			out := toPaywallJSON(created)
			out.APIKey = key
			return printJSON(env.stdout, out)
		}
		_, err = fmt.Fprintf(env.stdout, "Created paywall %q (%s).\nid:  %s\nkey: %s\n%s\n", created.Name, created.Mode, created.ID, key,
			"The key is shown this once: store it now. `tollgate paywall rotate-key ID` makes a new one.")
		return err
	})
}

func runPaywallList(ctx context.Context, env *environment, args []string) error {
	fs, path := flagSet(env, "paywall list")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parseArgs(fs, args, "[-json]", 0); err != nil {
		return err
	}
	return withStores(ctx, env, *path, func(svc *services) error {
		ps, err := svc.paywallStore().List(ctx)
		if err != nil {
			return fmt.Errorf("paywall list: %w", err)
		}
		if *asJSON {
			out := make([]paywallJSON, 0, len(ps))
			for _, p := range ps {
				out = append(out, toPaywallJSON(p))
			}
			return printJSON(env.stdout, out)
		}
		tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
		_, _ = fmt.Fprintln(tw, "ID\tNAME\tOWNER\tMODE\tUPSTREAM\tMARKUP_BPS\tPAYOUT_ADDRESS\tCREATED")
		for _, p := range ps {
			payout := p.PayoutAddress
			if payout == "" {
				payout = "-"
			}
			_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", p.ID, p.Name, p.Owner, p.Mode, p.Upstream, p.MarkupBps,
				payout, p.CreatedAt.UTC().Format(time.RFC3339))
		}
		return tw.Flush()
	})
}

func runPaywallRotateKey(ctx context.Context, env *environment, args []string) error {
	fs, path := flagSet(env, "paywall rotate-key")
	pos, err := parseArgs(fs, args, "ID", 1)
	if err != nil {
		return err
	}
	id := pos[0]
	return withStores(ctx, env, *path, func(svc *services) error {
		key, err := svc.paywallStore().RotateKey(ctx, id)
		if err != nil {
			return fmt.Errorf("paywall rotate-key: %w", describePaywallError(id, err))
		}
		_, err = fmt.Fprintf(env.stdout, "New key for paywall %s: %s\nThe old key stopped working. The new one is shown this once: store it now.\n", id, key)
		return err
	})
}

func runPaywallSetMarkup(ctx context.Context, env *environment, args []string) error {
	fs, path := flagSet(env, "paywall set-markup")
	pos, err := parseArgs(fs, args, "ID BPS", 2)
	if err != nil {
		return err
	}
	id := pos[0]
	bps, err := strconv.ParseInt(pos[1], 10, 64)
	if err != nil {
		return fmt.Errorf("%w: paywall set-markup: BPS must be a whole number of basis points (100 = 1 %%), got %q", errUsage, pos[1])
	}
	return withStores(ctx, env, *path, func(svc *services) error {
		if err := svc.paywallStore().SetMarkup(ctx, id, bps); err != nil {
			return fmt.Errorf("paywall set-markup: %w", describePaywallError(id, err))
		}
		_, err := fmt.Fprintf(env.stdout, "Markup of paywall %s is now %d bps.\n", id, bps)
		return err
	})
}

// runPaywallSetUpstreamKey replaces a BYOK paywall's upstream credential. The credential is
// read from standard input (one line), not from the command line, where other users of the
// machine and the shell's history would see it. The stored credential is not opened first, so
// this also sets again one that no longer opens (a lost or replaced secrets key).
func runPaywallSetUpstreamKey(ctx context.Context, env *environment, args []string) error {
	fs, path := flagSet(env, "paywall set-upstream-key")
	pos, err := parseArgs(fs, args, "ID  (the credential on standard input)", 1)
	if err != nil {
		return err
	}
	id := pos[0]
	line, err := bufio.NewReader(io.LimitReader(env.stdin, 64<<10)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("paywall set-upstream-key: read the credential from standard input: %w", err)
	}
	credential := strings.TrimRight(line, "\r\n")
	if credential == "" {
		return fmt.Errorf("%w: paywall set-upstream-key: no credential on standard input (e.g. `printf %%s \"$KEY\" | tollgate paywall set-upstream-key ID`)", errUsage)
	}
	return withStores(ctx, env, *path, func(svc *services) error {
		if err := svc.paywallStore().SetUpstreamKey(ctx, id, credential); err != nil {
			return fmt.Errorf("paywall set-upstream-key: %w", describePaywallError(id, err))
		}
		_, err := fmt.Fprintf(env.stdout, "Upstream credential of paywall %s replaced (stored sealed).\n", id)
		return err
	})
}

// priceFlags are the rates of `paywall set-price`, decimal USDC per 1M tokens.
var priceFlags = []struct {
	name, usage string
	field       func(*pricing.Price) *pricing.Decimal
}{
	{"input", "per 1M uncached prompt tokens (required)", func(p *pricing.Price) *pricing.Decimal { return &p.Input }},
	{"output", "per 1M completion tokens (required)", func(p *pricing.Price) *pricing.Decimal { return &p.Output }},
	{"cached-input", "per 1M cached prompt tokens (default: input)", func(p *pricing.Price) *pricing.Decimal { return &p.CachedInput }},
	{"cache-write", "per 1M prompt tokens written to the cache (default: input)", func(p *pricing.Price) *pricing.Decimal { return &p.CacheWrite }},
	{"reasoning", "per 1M reasoning tokens (default: output)", func(p *pricing.Price) *pricing.Decimal { return &p.Reasoning }},
	{"request", "per request (default: 0)", func(p *pricing.Price) *pricing.Decimal { return &p.Request }},
}

func runPaywallSetPrice(ctx context.Context, env *environment, args []string) error {
	fs, path := flagSet(env, "paywall set-price")
	raw := make([]*string, len(priceFlags))
	for i, f := range priceFlags {
		raw[i] = fs.String(f.name, "", "USDC "+f.usage)
	}
	pos, err := parseArgs(fs, args, "ID MODEL -input USDC -output USDC [flags]", 2)
	if err != nil {
		return err
	}
	id, model := pos[0], pos[1]
	var price pricing.Price
	var shown []string
	for i, f := range priceFlags {
		if *raw[i] == "" {
			if i < 2 {
				return fmt.Errorf("%w: paywall set-price: -%s is required", errUsage, f.name)
			}
			continue
		}
		d, err := pricing.ParseDecimal(*raw[i])
		if err != nil || d.Sign() < 0 {
			return fmt.Errorf("%w: paywall set-price: -%s must be a non-negative decimal number of USDC, got %q", errUsage, f.name, *raw[i])
		}
		*f.field(&price) = d
		shown = append(shown, f.name+" "+d.String())
	}
	return withStores(ctx, env, *path, func(svc *services) error {
		pw, err := svc.paywallStore().Get(ctx, id)
		if err != nil {
			return fmt.Errorf("paywall set-price: %w", describePaywallError(id, err))
		}
		catalog := pricing.NewCatalog(svc.pool, svc.redis, svc.cfg.Redis.Prefix)
		defer func() { _ = catalog.Close() }()
		if err := catalog.SetOverride(ctx, pw.ID, model, price); err != nil {
			return fmt.Errorf("paywall set-price: %w", err)
		}
		_, err = fmt.Fprintf(env.stdout, "Paywall %s (%s) now charges for %s, in USDC per 1M tokens (request: per request): %s; its %d bps markup comes on top.\n",
			pw.ID, pw.Name, model, strings.Join(shown, ", "), pw.MarkupBps)
		return err
	})
}

// runPaywallSetWebhook sets or turns off a paywall's webhook. The signing secret is made here,
// stored sealed and printed once, like an API key.
func runPaywallSetWebhook(ctx context.Context, env *environment, args []string) error {
	fs, path := flagSet(env, "paywall set-webhook")
	rawURL := fs.String("url", "", `where to POST the paywall's events (https; http only for loopback hosts); "" turns webhooks off`)
	pos, err := parseArgs(fs, args, `ID -url URL   (-url "" turns webhooks off)`, 1)
	if err != nil {
		return err
	}
	urlSet := false
	fs.Visit(func(f *flag.Flag) { urlSet = urlSet || f.Name == "url" })
	if !urlSet {
		return fmt.Errorf(`%w: paywall set-webhook: -url is required (-url "" turns webhooks off)`, errUsage)
	}
	if *rawURL != "" {
		if err := webhook.ValidateURL(*rawURL); err != nil {
			return fmt.Errorf("%w: paywall set-webhook: %s", errUsage, strings.TrimPrefix(err.Error(), webhook.ErrInvalidURL.Error()+": "))
		}
	}
	id := pos[0]
	return withStores(ctx, env, *path, func(svc *services) error {
		if _, err := svc.paywallStore().Get(ctx, id); err != nil {
			return fmt.Errorf("paywall set-webhook: %w", describePaywallError(id, err))
		}
		out := svc.outbox(webhook.Options{})
		if *rawURL == "" {
			removed, err := out.RemoveEndpoint(ctx, id)
			if err != nil {
				return fmt.Errorf("paywall set-webhook: %w", err)
			}
			msg := "Webhooks of paywall %s are off; events not delivered yet are cancelled.\n"
			if !removed {
				msg = "Paywall %s had no webhook; nothing changed.\n"
			}
			_, err = fmt.Fprintf(env.stdout, msg, id)
			return err
		}
		secret, err := out.SetEndpoint(ctx, id, *rawURL)
		if errors.Is(err, webhook.ErrNoSecretsKey) {
			return fmt.Errorf("paywall set-webhook: %w\nSet paywall.secrets_key to the value `tollgate serve` uses", err)
		}
		if err != nil {
			return fmt.Errorf("paywall set-webhook: %w", err)
		}
		_, err = fmt.Fprintf(env.stdout, "Paywall %s now sends its events to %s.\nSigning secret: %s\nIt is shown this once (stored sealed): store it now; running set-webhook again makes a new one.\n",
			id, *rawURL, secret)
		return err
	})
}
