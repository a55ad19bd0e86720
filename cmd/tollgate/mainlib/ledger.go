package mainlib

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-dev/tollgate/api"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/ledger/ledgercheck"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/pricing"
)

// ledgerCommands are the subcommands of `tollgate ledger`: the operator's view of the books.
func ledgerCommands() map[string]command {
	return map[string]command{
		"check": {"check every ledger invariant from one snapshot (reads whole tables: an audit, run it off-peak)",
			runLedgerCheck},
		"balance":  {"show a wallet's USDC: available, held, posted (WALLET)", runLedgerBalance},
		"earnings": {"show a paywall's earnings in USDC: available, in flight, paid out (PAYWALL_ID)", runLedgerEarnings},
		"history":  {"list a wallet's transfers, newest first, a page at a time (WALLET)", runLedgerHistory},
		"show":     {"show one transfer: its entries, metadata and reversal (TRANSFER_ID)", runLedgerShow},
		"reverse": {"reverse a deposit, capture or charge: a refund or correction (TRANSFER_ID; needs -yes)",
			runLedgerReverse},
	}
}

// runLedger reads and corrects the ledger: `tollgate ledger SUBCOMMAND [flags] [args]`.
func runLedger(ctx context.Context, env *environment, args []string) error {
	return runSubcommand(ctx, env, "ledger", ledgerCommands(), args)
}

// withBook loads the configuration, opens the database (the ledger needs no Redis) and runs fn
// with the pool and the ledger; cmd names the command in the log.
func withBook(ctx context.Context, env *environment, configPath, cmd string,
	fn func(pool *pgxpool.Pool, book *ledger.Ledger, logger *slog.Logger) error) error {
	cfg, err := loadConfig(env, configPath)
	if err != nil {
		return err
	}
	logger := newLogger(env.stderr, cfg.Log.Level).With("cmd", cmd)
	pool, err := openPool(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer pool.Close()
	return fn(pool, ledger.New(pool, ledger.Options{Logger: logger.With("part", "ledger")}), logger)
}

// parseWallet reads a wallet address: 0x and 40 hex digits, either case; the ledger's
// spelling (lower case, paywall.NormalizeWallet's) is returned.
func parseWallet(cmd, s string) (string, error) {
	w, err := paywall.NormalizeWallet(s)
	if err != nil {
		return "", fmt.Errorf("%w: %s: WALLET must be a 0x address with 40 hex digits, got %q", errUsage, cmd, s)
	}
	return w, nil
}

// parseUUID reads an id (a transfer's or a paywall's): a UUID in its 8-4-4-4-12 hex form,
// either case, returned in lower case, the ledger's spelling.
func parseUUID(cmd, what, s string) (string, error) {
	if !ledger.ValidUUID(s) {
		return "", fmt.Errorf("%w: %s: %s must be a UUID such as 5c7b5d3e-8c1f-4b8e-9a55-3f0c1a2b3c4d, got %q", errUsage, cmd, what, s)
	}
	return strings.ToLower(s), nil
}

// usdc is micro-USDC as "1.50 USDC".
func usdc(micro int64) string { return pricing.FormatUSDC(micro) + " USDC" }

// signedUSDC is a signed change as "+1.50 USDC" or "-1.50 USDC".
func signedUSDC(micro int64) string {
	if micro > 0 {
		return "+" + usdc(micro)
	}
	return usdc(micro)
}

// accountName is an account as the docs name it: "wallet 0x…", "earnings <paywall>", "platform_fees".
func accountName(a ledger.Account) string {
	if a.Ref == "" {
		return string(a.Kind)
	}
	return string(a.Kind) + " " + a.Ref
}

// timestamp is a ledger time as the CLI prints it: UTC, to the second.
func timestamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// writeRows writes label/value pairs aligned in two columns.
func writeRows(w io.Writer, rows ...[2]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) // write errors surface at Flush
	for _, r := range rows {
		_, _ = fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}

// ledgerCheckJSON is `ledger check -json`.
type ledgerCheckJSON struct {
	OK         bool     `json:"ok"`
	Violations []string `json:"violations"`
}

// errViolations: `ledger check` found the ledger broken. It exits with status 1.
var errViolations = errors.New("ledger check: invariants violated")

func runLedgerCheck(ctx context.Context, env *environment, args []string) error {
	fs, path := flagSet(env, "ledger check")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parseArgs(fs, args, "[-json]  (reads whole tables in one snapshot: run it off-peak)", 0); err != nil {
		return err
	}
	return withBook(ctx, env, *path, "ledger", func(pool *pgxpool.Pool, _ *ledger.Ledger, _ *slog.Logger) error {
		violations, err := ledgercheck.Check(ctx, pool)
		if err != nil {
			return fmt.Errorf("ledger check: %w (nothing was checked)", err)
		}
		if *asJSON {
			if err := printJSON(env.stdout, ledgerCheckJSON{OK: len(violations) == 0, Violations: append([]string{}, violations...)}); err != nil {
				return err
			}
		} else {
			var b strings.Builder
			if len(violations) == 0 {
				fmt.Fprintf(&b, "ledger: all %d invariants hold (docs/ledger.md, \"Invariants\")\n", ledgercheck.Count())
			}
			for _, v := range violations {
				fmt.Fprintf(&b, "ledger: VIOLATED: %s\n", v)
			}
			if _, err := io.WriteString(env.stdout, b.String()); err != nil {
				return err
			}
		}
		if len(violations) > 0 {
			return fmt.Errorf("%w: %d violation(s) found; the ledger needs investigating before money moves on it", errViolations, len(violations))
		}
		return nil
	})
}

// walletBalanceJSON is `ledger balance -json`, in the API's shape.
type walletBalanceJSON struct {
	api.WalletBalanceJSON
	// InLedger is false for a wallet that was never credited (no account: every figure is 0).
	InLedger bool `json:"in_ledger"`
}

// neverCredited is the note for a wallet without an account.
const neverCredited = "(this wallet has no account in the ledger: it was never credited)"

func runLedgerBalance(ctx context.Context, env *environment, args []string) error {
	fs, path := flagSet(env, "ledger balance")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseArgs(fs, args, "WALLET [-json]", 1)
	if err != nil {
		return err
	}
	wallet, err := parseWallet("ledger balance", pos[0])
	if err != nil {
		return err
	}
	return withBook(ctx, env, *path, "ledger", func(_ *pgxpool.Pool, book *ledger.Ledger, _ *slog.Logger) error {
		b, err := book.Balance(ctx, wallet)
		known := !errors.Is(err, ledger.ErrUnknownAccount)
		if err != nil && known {
			return fmt.Errorf("ledger balance: %w", err)
		}
		if *asJSON {
			return printJSON(env.stdout, walletBalanceJSON{api.NewWalletBalanceJSON(wallet, b), known})
		}
		rows := [][2]string{
			{"wallet", wallet},
			{"available", usdc(b.AvailableMicro)},
			{"held", usdc(b.HeldMicro) + "  (reserved for requests in progress)"},
			{"posted", usdc(b.PostedMicro)},
		}
		if !known {
			rows = append(rows, [2]string{"", neverCredited})
		}
		return writeRows(env.stdout, rows...)
	})
}

func runLedgerEarnings(ctx context.Context, env *environment, args []string) error {
	fs, path := flagSet(env, "ledger earnings")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseArgs(fs, args, "PAYWALL_ID [-json]", 1)
	if err != nil {
		return err
	}
	id, err := parseUUID("ledger earnings", "PAYWALL_ID", pos[0])
	if err != nil {
		return err
	}
	return withBook(ctx, env, *path, "ledger", func(pool *pgxpool.Pool, book *ledger.Ledger, _ *slog.Logger) error {
		e, err := book.Earnings(ctx, id)
		if errors.Is(err, ledger.ErrUnknownAccount) {
			// Nothing earned yet, or no such paywall: only the latter is a mistake.
			err = paywallExists(ctx, pool, id)
		}
		if err != nil {
			return fmt.Errorf("ledger earnings: %w", err)
		}
		if *asJSON {
			return printJSON(env.stdout, api.NewEarningsJSON(id, e))
		}
		return writeRows(env.stdout,
			[2]string{"paywall", id},
			[2]string{"available", usdc(e.AvailableMicro) + "  (can be withdrawn)"},
			[2]string{"in flight", usdc(e.InFlightMicro) + "  (withdrawals requested, not yet paid on chain)"},
			[2]string{"paid out", usdc(e.PaidOutMicro)})
	})
}

// paywallExists returns nil if a paywall has id, and advice naming `paywall list` if none has.
// It lists the paywalls (which opens no upstream credential, so it needs no secrets key).
func paywallExists(ctx context.Context, pool *pgxpool.Pool, id string) error {
	store := paywall.NewStore(pool, nil, "", paywall.Options{})
	defer func() { _ = store.Close() }()
	ps, err := store.List(ctx)
	if err != nil {
		return err
	}
	if slices.ContainsFunc(ps, func(p paywall.Paywall) bool { return p.ID == id }) {
		return nil
	}
	return describePaywallError(id, paywall.ErrNotFound)
}

// historyPageJSON is `ledger history -json`, in the API's shape.
type historyPageJSON struct {
	Wallet string                `json:"wallet"`
	Items  []api.HistoryItemJSON `json:"items"`
	Next   string                `json:"next"` // "" on the last page
}

// describingKeys are the metadata keys that say what a transfer was, in the order shown.
var describingKeys = []string{ledger.MetaPaywall, ledger.MetaUser, ledger.MetaModel, ledger.MetaDescription, ledger.MetaReason, ledger.MetaBy}

// describe is a transfer's describing metadata as `key=value` pairs (values quoted when they
// hold spaces, so a description reads as one).
func describe(meta map[string]string) string {
	var parts []string
	for _, k := range describingKeys {
		if v, ok := meta[k]; ok {
			if strings.ContainsAny(v, " \t\"=") || v == "" {
				v = strconv.Quote(v)
			}
			parts = append(parts, k+"="+v)
		}
	}
	return strings.Join(parts, " ")
}

func runLedgerHistory(ctx context.Context, env *environment, args []string) error {
	fs, path := flagSet(env, "ledger history")
	limit := fs.Int("limit", 50, "transfers per page (1 to 500)")
	cursor := fs.String("cursor", "", "the `cursor` a previous page printed, for the next page")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseArgs(fs, args, "WALLET [-limit N] [-cursor C] [-json]", 1)
	if err != nil {
		return err
	}
	wallet, err := parseWallet("ledger history", pos[0])
	if err != nil {
		return err
	}
	if *limit < 1 || *limit > 500 {
		return fmt.Errorf("%w: ledger history: -limit must be between 1 and 500, got %d", errUsage, *limit)
	}
	return withBook(ctx, env, *path, "ledger", func(_ *pgxpool.Pool, book *ledger.Ledger, _ *slog.Logger) error {
		page, err := book.History(ctx, ledger.Wallet(wallet), *cursor, *limit)
		known := !errors.Is(err, ledger.ErrUnknownAccount)
		switch {
		case errors.Is(err, ledger.ErrInvalid):
			return fmt.Errorf("%w: ledger history: -cursor %q is not a cursor this command printed", errUsage, *cursor)
		case err != nil && known:
			return fmt.Errorf("ledger history: %w", err)
		}
		if *asJSON {
			out := historyPageJSON{Wallet: wallet, Items: []api.HistoryItemJSON{}, Next: page.Next}
			for _, it := range page.Items {
				out.Items = append(out.Items, api.NewHistoryItemJSON(it))
			}
			return printJSON(env.stdout, out)
		}
		if len(page.Items) == 0 {
			note := "No transfers."
			if !known {
				note = "No transfers " + neverCredited + "."
			}
			_, err := fmt.Fprintln(env.stdout, note)
			return err
		}
		tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0) // write errors surface at Flush
		_, _ = fmt.Fprintln(tw, "TIME\tKIND\tAMOUNT\tTRANSFER\tWHAT")
		for _, it := range page.Items {
			_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", timestamp(it.CreatedAt), it.Kind, signedUSDC(it.AmountMicro),
				it.TransferID, describe(it.Metadata))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if page.Next == "" {
			_, err = fmt.Fprintln(env.stdout, "(last page)")
		} else {
			_, err = fmt.Fprintf(env.stdout, "next: tollgate ledger history %s -limit %d -cursor %s\n", wallet, *limit, page.Next)
		}
		return err
	})
}

// transferJSON is a transfer as `ledger show -json` and `ledger reverse -json` print it.
type transferJSON struct {
	ID             string            `json:"id"`
	Kind           string            `json:"kind"`
	IdempotencyKey string            `json:"idempotency_key"`
	CreatedAt      time.Time         `json:"created_at"`
	Currency       string            `json:"currency"`
	Entries        []entryJSON       `json:"entries"`
	Metadata       map[string]string `json:"metadata,omitempty"`
	// Reverses is, for a reversal, the transfer it reverses.
	Reverses string `json:"reverses,omitempty"`
	// ReversedBy is the reversal of this transfer, if it has one.
	ReversedBy *transferJSON `json:"reversed_by,omitempty"`
}

type entryJSON struct {
	Account     string `json:"account"` // kind
	Ref         string `json:"ref,omitempty"`
	Amount      string `json:"amount"`
	AmountMicro int64  `json:"amount_micro"` // signed: positive adds to the account
}

func toTransferJSON(t ledger.Transfer) *transferJSON {
	out := &transferJSON{ID: t.ID, Kind: string(t.Kind), IdempotencyKey: t.IdempotencyKey, CreatedAt: t.CreatedAt.UTC(),
		Currency: "USDC", Entries: []entryJSON{}, Metadata: t.Metadata, Reverses: t.Reverses}
	for _, e := range t.Entries {
		out.Entries = append(out.Entries, entryJSON{Account: string(e.Account.Kind), Ref: e.Account.Ref,
			Amount: pricing.FormatUSDC(e.AmountMicro), AmountMicro: e.AmountMicro})
	}
	return out
}

// writeTransfer prints a transfer: id, kind, time, key, entries and metadata.
func writeTransfer(w io.Writer, t ledger.Transfer) error {
	rows := [][2]string{{"transfer", t.ID}, {"kind", string(t.Kind)}, {"time", timestamp(t.CreatedAt)}, {"key", t.IdempotencyKey}}
	rows = append(rows, entryRows(t.Entries)...)
	for i, k := range slices.Sorted(maps.Keys(t.Metadata)) {
		label := ""
		if i == 0 {
			label = "metadata"
		}
		rows = append(rows, [2]string{label, k + ": " + t.Metadata[k]})
	}
	return writeRows(w, rows...)
}

// entryRows are a transfer's entries, one a row, under the label "entries".
func entryRows(entries []ledger.Entry) [][2]string {
	var rows [][2]string
	for i, e := range entries {
		label := ""
		if i == 0 {
			label = "entries"
		}
		rows = append(rows, [2]string{label, fmt.Sprintf("%13s  %s", signedUSDC(e.AmountMicro), accountName(e.Account))})
	}
	return rows
}

func runLedgerShow(ctx context.Context, env *environment, args []string) error {
	fs, path := flagSet(env, "ledger show")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseArgs(fs, args, "TRANSFER_ID [-json]", 1)
	if err != nil {
		return err
	}
	id, err := parseUUID("ledger show", "TRANSFER_ID", pos[0])
	if err != nil {
		return err
	}
	return withBook(ctx, env, *path, "ledger", func(_ *pgxpool.Pool, book *ledger.Ledger, _ *slog.Logger) error {
		t, err := book.GetTransfer(ctx, id)
		if err != nil {
			return fmt.Errorf("ledger show: %w", describeTransferError(id, err))
		}
		rev, err := book.Reversal(ctx, id)
		reversed := err == nil
		if err != nil && !errors.Is(err, ledger.ErrTransferNotFound) {
			return fmt.Errorf("ledger show: %w", err)
		}
		if *asJSON {
			out := toTransferJSON(t)
			if reversed {
				out.ReversedBy = toTransferJSON(rev)
			}
			return printJSON(env.stdout, out)
		}
		if err := writeTransfer(env.stdout, t); err != nil {
			return err
		}
		if t.Reverses != "" {
			if err := writeRows(env.stdout, [2]string{"reverses", t.Reverses}); err != nil {
				return err
			}
		}
		var status string
		switch {
		case reversed:
			status = fmt.Sprintf("by %s at %s", rev.ID, timestamp(rev.CreatedAt))
			if r := rev.Metadata[ledger.MetaReason]; r != "" {
				status += fmt.Sprintf(" (reason: %s)", r)
			}
		case reversible(t.Kind):
			status = "no"
		default:
			status = fmt.Sprintf("no (a %s cannot be reversed)", t.Kind)
		}
		return writeRows(env.stdout, [2]string{"reversed", status})
	})
}

// reversible reports whether the ledger's Reverse takes a transfer of kind k: deposits,
// captures and charges. Payouts move with their payout's state; reversals are final.
func reversible(k ledger.TransferKind) bool {
	return k == ledger.KindDeposit || k == ledger.KindCapture || k == ledger.KindCharge
}

// describeTransferError turns a ledger read or write error about transfer id into advice.
func describeTransferError(id string, err error) error {
	switch {
	case errors.Is(err, ledger.ErrTransferNotFound):
		return fmt.Errorf("no transfer has id %s (`tollgate ledger history WALLET` lists a wallet's)", id)
	case errors.Is(err, ledger.ErrAmbiguous):
		return fmt.Errorf("%w\nRun the same command again, with the same -key: it acts at most once", err)
	}
	return err
}

// operatorKeyPrefix namespaces the operator's reversal keys, as the API's are ("api:refund:…"),
// so that an operator's key never replays an app's transfer.
const operatorKeyPrefix = "operator:reverse:"

// maxLedgerKey is the longest idempotency key the ledger takes, in bytes.
const maxLedgerKey = 256

func runLedgerReverse(ctx context.Context, env *environment, args []string) error {
	fs, path := flagSet(env, "ledger reverse")
	key := fs.String("key", "", "idempotency `key` of this reversal (required): running again with it reverses at most once")
	reason := fs.String("reason", "", "why, recorded on the reversal and shown in the wallet's history (required)")
	yes := fs.Bool("yes", false, "reverse; without it the command only says what it would do")
	asJSON := fs.Bool("json", false, "print the reversal as JSON (with -yes)")
	pos, err := parseArgs(fs, args, "TRANSFER_ID -key KEY -reason TEXT [-yes] [-json]", 1)
	if err != nil {
		return err
	}
	id, err := parseUUID("ledger reverse", "TRANSFER_ID", pos[0])
	if err != nil {
		return err
	}
	switch {
	case strings.TrimSpace(*key) == "" || strings.TrimSpace(*reason) == "":
		fs.Usage()
		return fmt.Errorf("%w: ledger reverse needs -key (an idempotency key of your choosing) and -reason (why)", errUsage)
	case len(operatorKeyPrefix+*key) > maxLedgerKey:
		return fmt.Errorf("%w: ledger reverse: -key is longer than %d bytes", errUsage, maxLedgerKey-len(operatorKeyPrefix))
	case strings.ContainsRune(*reason, 0) || strings.ContainsRune(*key, 0):
		return fmt.Errorf("%w: ledger reverse: -key and -reason cannot hold a NUL character", errUsage)
	}
	return withBook(ctx, env, *path, "ledger", func(_ *pgxpool.Pool, book *ledger.Ledger, logger *slog.Logger) error {
		t, err := book.GetTransfer(ctx, id)
		if err != nil {
			return fmt.Errorf("ledger reverse: %w", describeTransferError(id, err))
		}
		if !reversible(t.Kind) {
			return fmt.Errorf("ledger reverse: transfer %s is a %s, which cannot be reversed: only deposits, captures and charges can "+
				"(a payout moves with its payout's state; a reversal is final)", id, t.Kind)
		}
		if !*yes {
			return previewReversal(ctx, env.stdout, book, t, *key, *reason)
		}
		meta := map[string]string{ledger.MetaBy: "operator"}
		for _, k := range []string{ledger.MetaPaywall, ledger.MetaUser} { // so that the app's view of the history shows it
			if v, ok := t.Metadata[k]; ok {
				meta[k] = v
			}
		}
		rev, err := book.Reverse(ctx, ledger.ReverseRequest{Key: operatorKeyPrefix + *key, TransferID: id, Reason: *reason, Metadata: meta})
		if err != nil {
			return fmt.Errorf("ledger reverse: %w", describeReverseError(ctx, book, t, *key, err))
		}
		logger.InfoContext(ctx, "ledger reverse", "transfer", id, "reversal", rev.ID, "key", rev.IdempotencyKey, "reason", *reason)
		if *asJSON {
			return printJSON(env.stdout, toTransferJSON(rev))
		}
		if _, err := fmt.Fprintf(env.stdout, "Reversed %s %s: reversal %s at %s.\n", t.Kind, id, rev.ID, timestamp(rev.CreatedAt)); err != nil {
			return err
		}
		return writeRows(env.stdout, append(entryRows(rev.Entries), [2]string{"reason", rev.Metadata[ledger.MetaReason]})...)
	})
}

// previewReversal says what reversing t would move, or that it was reversed already, and
// changes nothing.
func previewReversal(ctx context.Context, w io.Writer, book *ledger.Ledger, t ledger.Transfer, key, reason string) error {
	prev, err := book.Reversal(ctx, t.ID)
	switch {
	case err == nil:
		return fmt.Errorf("ledger reverse: %w", alreadyReversed(t, prev))
	case !errors.Is(err, ledger.ErrTransferNotFound):
		return fmt.Errorf("ledger reverse: %w", err)
	}
	opposite := make([]ledger.Entry, 0, len(t.Entries))
	for _, e := range t.Entries {
		opposite = append(opposite, ledger.Entry{Account: e.Account, AmountMicro: -e.AmountMicro})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Would reverse %s %s of %s", t.Kind, t.ID, timestamp(t.CreatedAt))
	if d := describe(t.Metadata); d != "" {
		fmt.Fprintf(&b, " (%s)", d)
	}
	b.WriteString(", moving:\n")
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	if err := writeRows(w, append(entryRows(opposite), [2]string{"reason", reason}, [2]string{"key", key})...); err != nil {
		return err
	}
	_, err = io.WriteString(w, "Nothing was changed. Run the same command with -yes to reverse it.\n")
	return err
}

// alreadyReversed is the error for a transfer that prev reversed.
func alreadyReversed(t ledger.Transfer, prev ledger.Transfer) error {
	why := ""
	if r := prev.Metadata[ledger.MetaReason]; r != "" {
		why = fmt.Sprintf(", reason %q", r)
	}
	return fmt.Errorf("%s %s was already reversed by %s (at %s%s); a transfer is reversed once, and nothing was moved",
		t.Kind, t.ID, prev.ID, timestamp(prev.CreatedAt), why)
}

// describeReverseError turns Reverse's error into what the operator needs: which reversal
// came first, which account lacks the money, what to do.
func describeReverseError(ctx context.Context, book *ledger.Ledger, t ledger.Transfer, key string, err error) error {
	switch {
	case errors.Is(err, ledger.ErrAlreadyReversed):
		if prev, perr := book.Reversal(ctx, t.ID); perr == nil {
			return alreadyReversed(t, prev)
		}
		return fmt.Errorf("%s %s was already reversed; nothing was moved", t.Kind, t.ID)
	case errors.Is(err, ledger.ErrInsufficientFunds):
		return fmt.Errorf("%s; nothing was moved", shortAccount(ctx, book, t))
	case errors.Is(err, ledger.ErrIdempotencyConflict):
		return fmt.Errorf("-key %q was used before for another transfer's reversal; choose a new key (nothing was moved)", key)
	case errors.Is(err, ledger.ErrNotReversible), errors.Is(err, ledger.ErrTransferNotFound), errors.Is(err, ledger.ErrAmbiguous):
		return describeTransferError(t.ID, err)
	}
	return err
}

// shortAccount names the account that cannot give back what t credited it: the wallet (a
// deposit spent since) or the paywall's earnings (withdrawn since). Other accounts have no
// read in the ledger's API; they are named together.
func shortAccount(ctx context.Context, book *ledger.Ledger, t ledger.Transfer) string {
	var others []string
	for _, e := range t.Entries {
		if e.AmountMicro <= 0 {
			continue // the reversal credits this account
		}
		available := int64(-1)
		var since string
		switch e.Account.Kind {
		case ledger.KindWallet:
			if b, err := book.Balance(ctx, e.Account.Ref); err == nil {
				available, since = b.AvailableMicro, "spent or held since"
			}
		case ledger.KindEarnings:
			if b, err := book.Earnings(ctx, e.Account.Ref); err == nil {
				available, since = b.AvailableMicro, "withdrawn since"
			}
		default:
			others = append(others, accountName(e.Account))
			continue
		}
		if available >= 0 && available < e.AmountMicro {
			return fmt.Sprintf("insufficient funds: %s has %s available and the reversal takes back %s (%s)",
				accountName(e.Account), usdc(available), usdc(e.AmountMicro), since)
		}
	}
	return fmt.Sprintf("insufficient funds: an account the reversal takes money back from cannot give it (%s)", strings.Join(others, ", "))
}
