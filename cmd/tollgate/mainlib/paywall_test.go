package mainlib

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/schema"
	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/internal/testredis"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/pricing"
)

// testSecretsKey is paywall.secrets_key in the tests' configurations.
const testSecretsKey = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="

// testSecrets is testSecretsKey, for the tests' own stores.
func testSecrets(t *testing.T) *paywall.SecretsKey {
	t.Helper()
	k, err := paywall.ParseSecretsKey(testSecretsKey)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// cli runs the real program in-process against one test database and Redis prefix.
type cli struct {
	t      *testing.T
	config string
	db     *testdb.DB
	prefix string
}

func newCLI(t *testing.T) *cli {
	t.Helper()
	db := testdb.New(t, schema.All()...)
	_, prefix := testredis.New(t)
	config := filepath.Join(t.TempDir(), "tollgate.yaml")
	body := fmt.Sprintf("database:\n  url: %q\nredis:\n  addr: %q\n  prefix: %q\nlog:\n  level: warn\npaywall:\n  secrets_key: %q\n",
		db.URL, testredis.Addr(), prefix, testSecretsKey)
	if err := os.WriteFile(config, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return &cli{t: t, config: config, db: db, prefix: prefix}
}

// run runs `tollgate ARGS… -config FILE` and returns stdout and the error.
func (c *cli) run(args ...string) (string, error) {
	c.t.Helper()
	var out, errOut bytes.Buffer
	err := Main(c.t.Context(), append(args, "-config", c.config), &out, &errOut)
	if err != nil {
		c.t.Logf("tollgate %s: %v\nstderr: %s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), err
}

func (c *cli) mustRun(args ...string) string {
	c.t.Helper()
	out, err := c.run(args...)
	if err != nil {
		c.t.Fatalf("tollgate %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// createPaywall runs `tollgate paywall create … -json` with a name, owner and markup that pass,
// and returns what it printed.
func (c *cli) createPaywall() paywallJSON {
	c.t.Helper()
	var created paywallJSON
	out := c.mustRun("paywall", "create", "-name", "Demo", "-owner", "o", "-markup-bps", "600", "-json")
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.ID == "" {
		c.t.Fatalf("create -json printed %q: %v", out, err)
	}
	return created
}

// store is a paywall store like a running server's (cached, listening for invalidations).
func (c *cli) store() *paywall.Store {
	c.t.Helper()
	rdb, _ := testredis.New(c.t)
	s := paywall.NewStore(c.db.Pool, rdb, c.prefix, paywall.Options{PlatformFeeBps: 500, SecretsKey: testSecrets(c.t)})
	c.t.Cleanup(func() { _ = s.Close() })
	if err := s.WaitReady(c.t.Context()); err != nil {
		c.t.Fatal(err)
	}
	return s
}

func TestPaywallCreateAndList(t *testing.T) {
	c := newCLI(t)
	out := c.mustRun("paywall", "create", "-name", "Demo", "-owner", "dev@example.com", "-markup-bps", "600", "-json")
	var created paywallJSON
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatalf("create -json printed %q: %v", out, err)
	}
	if created.Mode != "builtin" || created.Upstream != "openrouter" || created.MarkupBps != 600 || !strings.HasPrefix(created.APIKey, "tg_") {
		t.Errorf("created %+v", created)
	}
	store := c.store()
	if p, err := store.ByKey(t.Context(), created.APIKey); err != nil || p.ID != created.ID {
		t.Errorf("the printed key does not open the paywall: %+v %v", p, err)
	}

	// Flags may follow the subcommand in any order; the text output shows the key once.
	out = c.mustRun("paywall", "create", "-mode", "byok", "-upstream", "acme-llm", "-upstream-key", "sk-acme",
		"-name", "Acme", "-owner", "ops@acme.test", "-payout-address", "0x00000000000000000000000000000000000000AB")
	if !strings.Contains(out, `Created paywall "Acme" (byok).`) || !strings.Contains(out, "key: tg_") {
		t.Errorf("create printed %q", out)
	}

	out = c.mustRun("paywall", "list")
	for _, want := range []string{"ID", "Demo", "Acme", "byok", "acme-llm", "0x00000000000000000000000000000000000000ab"} {
		if !strings.Contains(out, want) {
			t.Errorf("list lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "sk-acme") {
		t.Error("list prints the upstream credential")
	}
	var listed []paywallJSON
	if err := json.Unmarshal([]byte(c.mustRun("paywall", "list", "-json")), &listed); err != nil || len(listed) != 2 {
		t.Errorf("list -json: %v %+v", err, listed)
	}
}

func TestPaywallCreateRefusals(t *testing.T) {
	c := newCLI(t)
	tests := []struct {
		name  string
		args  []string
		usage bool
		want  string
	}{
		{"markup below the fee", []string{"-name", "A", "-owner", "o"}, false, "markup_bps"},
		{"no name", []string{"-owner", "o", "-markup-bps", "600"}, false, "name: required"},
		{"byok without upstream", []string{"-name", "A", "-owner", "o", "-mode", "byok"}, false, "upstream: required"},
		{"bad mode", []string{"-name", "A", "-owner", "o", "-mode", "free"}, false, "mode: must be"},
		{"bad payout address", []string{"-name", "A", "-owner", "o", "-markup-bps", "600", "-payout-address", "0x12"}, false, "payout_address"},
		{"stray argument", []string{"-name", "A", "-owner", "o", "extra"}, true, ""},
		{"unknown flag", []string{"-colour", "red"}, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.run(append([]string{"paywall", "create"}, tt.args...)...)
			if err == nil {
				t.Fatal("create succeeded")
			}
			if errors.Is(err, errUsage) != tt.usage {
				t.Errorf("usage error = %v, want %v (%v)", errors.Is(err, errUsage), tt.usage, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
		})
	}
	if out := c.mustRun("paywall", "list", "-json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("a refused create stored something: %s", out)
	}
}

// TestPaywallRotateKeyReachesServers: a running server's cached key stops working within a
// second of `rotate-key`.
func TestPaywallRotateKeyReachesServers(t *testing.T) {
	c := newCLI(t)
	created := c.createPaywall()
	server := c.store()
	if _, err := server.ByKey(t.Context(), created.APIKey); err != nil { // now cached
		t.Fatal(err)
	}
	out := c.mustRun("paywall", "rotate-key", created.ID)
	i := strings.Index(out, "tg_")
	if i < 0 {
		t.Fatalf("rotate-key printed %q", out)
	}
	newKey := strings.Fields(out[i:])[0]
	deadline := time.Now().Add(time.Second)
	for {
		_, err := server.ByKey(t.Context(), created.APIKey)
		if errors.Is(err, paywall.ErrUnknownKey) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the old key still works on the server a second later: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if p, err := server.ByKey(t.Context(), newKey); err != nil || p.ID != created.ID {
		t.Errorf("new key: %+v %v", p, err)
	}
	if _, err := c.run("paywall", "rotate-key", "5c7b5d3e-8c1f-4b8e-9a55-3f0c1a2b3c4d"); err == nil || !strings.Contains(err.Error(), "no paywall has id") {
		t.Errorf("unknown id: %v", err)
	}
}

func TestPaywallSetMarkupAndPrice(t *testing.T) {
	c := newCLI(t)
	created := c.createPaywall()
	store := c.store()

	c.mustRun("paywall", "set-markup", created.ID, "900")
	if p, err := store.Get(t.Context(), created.ID); err != nil || p.MarkupBps != 900 {
		t.Errorf("markup after set-markup: %+v %v", p, err)
	}
	if _, err := c.run("paywall", "set-markup", created.ID, "100"); err == nil || !strings.Contains(err.Error(), "markup") {
		t.Errorf("a markup below the fee: %v", err)
	}
	if _, err := c.run("paywall", "set-markup", created.ID, "lots"); !errors.Is(err, errUsage) {
		t.Errorf("non-numeric markup: %v", err)
	}
	if _, err := c.run("paywall", "set-markup", created.ID); !errors.Is(err, errUsage) {
		t.Errorf("missing argument: %v", err)
	}

	// Flags before, between and after the positional arguments.
	c.mustRun("paywall", "set-price", "-input", "0.15", created.ID, "openai/gpt-4o-mini", "-output", "0.6", "-cached-input", "0.075")
	catalog := pricing.NewCatalog(c.db.Pool, nil, c.prefix)
	t.Cleanup(func() { _ = catalog.Close() })
	got, err := catalog.Lookup(t.Context(), created.ID, "openai/gpt-4o-mini")
	if err != nil {
		t.Fatal(err)
	}
	want := pricing.Price{Input: mustDecimal(t, "0.15"), Output: mustDecimal(t, "0.6"), CachedInput: mustDecimal(t, "0.075")}
	if !got.Equal(want) {
		t.Errorf("price %+v, want %+v", got, want)
	}
	for _, bad := range [][]string{
		{"set-price", created.ID, "m", "-input", "1"},
		{"set-price", created.ID, "m", "-input", "-1", "-output", "1"},
		{"set-price", created.ID, "m", "-input", "one", "-output", "1"},
		{"set-price", created.ID, "-input", "1", "-output", "1"},
	} {
		if _, err := c.run(append([]string{"paywall"}, bad...)...); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want a usage error", bad, err)
		}
	}
	if _, err := c.run("paywall", "set-price", "5c7b5d3e-8c1f-4b8e-9a55-3f0c1a2b3c4d", "m", "-input", "1", "-output", "1"); err == nil ||
		!strings.Contains(err.Error(), "no paywall has id") {
		t.Errorf("unknown paywall: %v", err)
	}
}

func mustDecimal(t *testing.T, s string) pricing.Decimal {
	t.Helper()
	d, err := pricing.ParseDecimal(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestPricesImport(t *testing.T) {
	c := newCLI(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "models.json")
	if err := os.WriteFile(good, []byte(`{"data": [
		{"id": "openai/gpt-4o-mini", "name": "GPT-4o mini", "pricing": {"prompt": "0.00000015", "completion": "0.0000006", "input_cache_read": "0.000000075"}},
		{"id": "anthropic/claude-x", "pricing": {"prompt": "0.000003", "completion": "0.000015", "request": "0"}},
		{"id": "openrouter/auto", "pricing": {"prompt": "-1", "completion": "-1"}}
	]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out := c.mustRun("prices", "import", good)
	if !strings.Contains(out, "Imported the prices of 2 model(s)") || !strings.Contains(out, "Skipped 1 model(s)") || !strings.Contains(out, "openrouter/auto") {
		t.Errorf("import printed %q", out)
	}
	catalog := pricing.NewCatalog(c.db.Pool, nil, c.prefix)
	t.Cleanup(func() { _ = catalog.Close() })
	p, err := catalog.Lookup(t.Context(), "", "openai/gpt-4o-mini")
	if err != nil {
		t.Fatal(err)
	}
	if !p.Input.Equal(mustDecimal(t, "0.15")) || !p.Output.Equal(mustDecimal(t, "0.6")) || !p.CachedInput.Equal(mustDecimal(t, "0.075")) {
		t.Errorf("imported price %+v (USD per token × 1M = USDC per 1M tokens)", p)
	}

	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"data": [{"id": "x/y", "pricing": {"prompt": "cheap", "completion": "1"}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.run("prices", "import", bad); err == nil || !strings.Contains(err.Error(), "x/y") || !strings.Contains(err.Error(), "nothing was imported") {
		t.Errorf("bad file: %v", err)
	}
	if _, err := catalog.Lookup(t.Context(), "", "x/y"); !errors.Is(err, pricing.ErrUnpricedModel) {
		t.Errorf("a bad file imported something: %v", err)
	}
	if _, err := c.run("prices", "import", filepath.Join(dir, "missing.json")); err == nil {
		t.Error("a missing file imported")
	}
	if _, err := c.run("prices", "import"); !errors.Is(err, errUsage) {
		t.Errorf("no file: %v", err)
	}
}

func TestPaywallUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := Main(t.Context(), []string{"paywall"}, &out, &errOut); !errors.Is(err, errUsage) || !strings.Contains(out.String(), "rotate-key") {
		t.Errorf("paywall without a subcommand: %v %q", err, out.String())
	}
	if err := Main(t.Context(), []string{"paywall", "delete"}, &out, &errOut); !errors.Is(err, errUsage) {
		t.Errorf("unknown subcommand: %v", err)
	}
	errOut.Reset()
	if err := Main(t.Context(), []string{"paywall", "create", "-h"}, &out, &errOut); err != nil || !strings.Contains(errOut.String(), "-upstream-key") {
		t.Errorf("create -h: %v %q", err, errOut.String())
	}
	if err := Main(t.Context(), []string{"prices", "help"}, &out, &errOut); err != nil {
		t.Errorf("prices help: %v", err)
	}
}
