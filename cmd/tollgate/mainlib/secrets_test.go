package mainlib

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/testredis"
	"github.com/tollgate-dev/tollgate/paywall"
)

// storedUpstreamKey reads a paywall's upstream_key column as it is.
func (c *cli) storedUpstreamKey(id string) string {
	c.t.Helper()
	var v string
	if err := c.db.Pool.QueryRow(c.t.Context(), `SELECT upstream_key FROM paywalls WHERE id = $1`, id).Scan(&v); err != nil {
		c.t.Fatal(err)
	}
	return v
}

// TestPaywallCreateSealsUpstreamKey: `tollgate paywall create -upstream-key` stores the
// credential sealed with paywall.secrets_key, a running server's store opens it, and without
// the setting the command refuses, naming it.
func TestPaywallCreateSealsUpstreamKey(t *testing.T) {
	c := newCLI(t)
	const credential = "sk-acme-cli-secret"
	var created paywallJSON
	out := c.mustRun("paywall", "create", "-mode", "byok", "-upstream", "acme-llm", "-upstream-key", credential,
		"-name", "Acme", "-owner", "ops@acme.test", "-json")
	if err := json.Unmarshal([]byte(out), &created); err != nil || strings.Contains(out, credential) {
		t.Fatalf("create -json printed %q: %v", out, err)
	}
	col := c.storedUpstreamKey(created.ID)
	if !strings.HasPrefix(col, "v1:") || strings.Contains(col, credential) {
		t.Errorf("column upstream_key = %q; want the sealed form", col)
	}
	if p, err := c.store().ByKey(t.Context(), created.APIKey); err != nil || p.UpstreamKey != credential {
		t.Errorf("ByKey = %+v, %v", p, err)
	}

	t.Setenv("TOLLGATE_PAYWALL_SECRETS_KEY", "")
	_, err := c.run("paywall", "create", "-mode", "byok", "-upstream", "acme-llm", "-upstream-key", credential,
		"-name", "Acme 2", "-owner", "ops@acme.test")
	if !errors.Is(err, paywall.ErrNoSecretsKey) || !strings.Contains(err.Error(), "paywall.secrets_key") ||
		!strings.Contains(err.Error(), "openssl rand -base64 32") {
		t.Errorf("create without a secrets key = %v; want the setting named and how to make one", err)
	}
	if _, err := c.run("paywall", "set-markup", created.ID, "700"); !errors.Is(err, paywall.ErrNoSecretsKey) {
		t.Errorf("set-markup of a BYOK paywall without a secrets key = %v", err)
	}
	c.mustRun("paywall", "create", "-name", "Built-in", "-owner", "o", "-markup-bps", "600") // needs no key
}

// TestPaywallSetUpstreamKey: `tollgate paywall set-upstream-key ID` reads the credential from
// standard input (never from the command line), stores it sealed and prints nothing of it;
// without input it is a usage error and changes nothing.
func TestPaywallSetUpstreamKey(t *testing.T) {
	c := newCLI(t)
	var created paywallJSON
	out := c.mustRun("paywall", "create", "-mode", "byok", "-upstream", "acme-llm", "-upstream-key", "sk-first",
		"-name", "Acme", "-owner", "ops@acme.test", "-json")
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatal(err)
	}
	setKey := func(stdin string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(t.Context(), []string{"paywall", "set-upstream-key", created.ID, "-config", c.config}, strings.NewReader(stdin), &out, &errOut)
		return out.String(), err
	}
	const credential = "sk-acme-replaced"
	printed, err := setKey(credential + "\n")
	if err != nil || !strings.Contains(printed, created.ID) || strings.Contains(printed, credential) {
		t.Fatalf("set-upstream-key printed %q, %v", printed, err)
	}
	if col := c.storedUpstreamKey(created.ID); !strings.HasPrefix(col, "v1:") || strings.Contains(col, credential) {
		t.Errorf("column upstream_key = %q; want the sealed form", col)
	}
	if p, err := c.store().ByKey(t.Context(), created.APIKey); err != nil || p.UpstreamKey != credential {
		t.Errorf("ByKey = %+v, %v", p, err)
	}
	before := c.storedUpstreamKey(created.ID)
	if _, err := setKey(""); !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "standard input") {
		t.Errorf("set-upstream-key without input = %v; want a usage error about standard input", err)
	}
	if c.storedUpstreamKey(created.ID) != before {
		t.Error("a refused set-upstream-key changed the stored credential")
	}
}

// TestServeChecksCredentials: `tollgate serve` does not start when a stored BYOK credential
// does not open — no secrets key, or another one — and says which setting and paywall.
func TestServeChecksCredentials(t *testing.T) {
	db, rdb, prefix := serveEnv(t)
	ctx := t.Context()
	store := paywall.NewStore(db.Pool, rdb, prefix, paywall.Options{PlatformFeeBps: 500, SecretsKey: testSecrets(t)})
	defer func() { _ = store.Close() }()
	pw, _, err := store.Create(ctx, paywall.Paywall{Name: "Own Key", Owner: "dev@acme.example", Mode: paywall.ModeBYOK,
		Upstream: "demo", UpstreamKey: "sk-dev"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, key, want string }{
		{"no key", "", "paywall.secrets_key is not set"},
		{"another key", "ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICA=", "does not open with paywall.secrets_key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("TOLLGATE_PAYWALL_SECRETS_KEY", tt.key)
			var stderr lockedBuffer
			var err error
			select {
			case err = <-startServe(ctx, &stderr):
			case <-time.After(60 * time.Second):
				t.Fatalf("serve did not refuse:\n%s", stderr.String())
			}
			if err == nil || strings.Contains(stderr.String(), readyLine) || !strings.Contains(err.Error(), tt.want) ||
				!strings.Contains(err.Error(), pw.ID) {
				t.Errorf("serve = %v; want a refusal saying %q and naming %s", err, tt.want, pw.ID)
			}
		})
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stderr lockedBuffer
	done := startServe(sctx, &stderr)
	waitReady(t, &stderr, done)
	stopServe(t, cancel, done)
}

// TestMigrateSealsPlaintextCredentials: `tollgate migrate` seals a credential stored in
// plaintext by a version before sealing, and refuses, naming the setting, without the key.
func TestMigrateSealsPlaintextCredentials(t *testing.T) {
	c := newCLI(t)
	var created paywallJSON
	if err := json.Unmarshal([]byte(c.mustRun("paywall", "create", "-mode", "byok", "-upstream", "acme-llm", "-upstream-key", "sk-x",
		"-name", "Acme", "-owner", "ops@acme.test", "-json")), &created); err != nil {
		t.Fatal(err)
	}
	const legacy = "sk-legacy-plaintext"
	c.db.Must(t, `UPDATE paywalls SET upstream_key = $2 WHERE id = $1`, created.ID, legacy)

	t.Setenv("TOLLGATE_PAYWALL_SECRETS_KEY", "")
	if _, err := c.run("migrate"); !errors.Is(err, paywall.ErrNoSecretsKey) || !strings.Contains(err.Error(), created.ID) {
		t.Errorf("migrate without a key = %v; want ErrNoSecretsKey naming %s", err, created.ID)
	}
	t.Setenv("TOLLGATE_PAYWALL_SECRETS_KEY", testSecretsKey)
	if out := c.mustRun("migrate"); !strings.Contains(out, "1 BYOK upstream credential(s) sealed") {
		t.Errorf("migrate printed %q", out)
	}
	col := c.storedUpstreamKey(created.ID)
	if !strings.HasPrefix(col, "v1:") || strings.Contains(col, legacy) {
		t.Errorf("column after migrate = %q", col)
	}
	if p, err := c.store().ByKey(t.Context(), created.APIKey); err != nil || p.UpstreamKey != legacy {
		t.Errorf("ByKey after migrate = %+v, %v", p, err)
	}
}

// TestMigrateRotatesSecretsKey: with a new paywall.secrets_key and the old one in
// paywall.previous_secrets_keys, the paywall commands still open credentials sealed with the
// old key, and `tollgate migrate` seals them again with the new one, which alone then opens
// them — the Redis copies a serving replica made of the old values dropped.
func TestMigrateRotatesSecretsKey(t *testing.T) {
	c := newCLI(t)
	var a, b paywallJSON
	for i, into := range []*paywallJSON{&a, &b} {
		if err := json.Unmarshal([]byte(c.mustRun("paywall", "create", "-mode", "byok", "-upstream", "acme-llm", "-upstream-key", "sk-x",
			"-name", fmt.Sprintf("Acme %d", i), "-owner", "ops@acme.test", "-json")), into); err != nil {
			t.Fatal(err)
		}
	}
	sealedB := c.storedUpstreamKey(b.ID)
	// b's webhook signing secret, sealed with the old key too.
	secretOut := c.mustRun("paywall", "set-webhook", b.ID, "-url", "http://127.0.0.1:9/hook")
	secret := regexp.MustCompile(`whsec_\S+`).FindString(secretOut)
	if secret == "" {
		t.Fatalf("set-webhook printed %q", secretOut)
	}
	storedSecret := func() string {
		var v string
		if err := c.db.Pool.QueryRow(t.Context(), `SELECT secret_sealed FROM webhook_endpoints WHERE paywall = $1`, b.ID).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	sealedSecret := storedSecret()

	const newKey = "ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICA="
	newOnly, err := paywall.ParseSecretsKey(newKey)
	if err != nil {
		t.Fatal(err)
	}
	rdb, _ := testredis.New(t)
	replica := func(opts paywall.Options) *paywall.Store { // a serving replica's store, on the CLI's Redis prefix
		opts.PlatformFeeBps = 500
		s := paywall.NewStore(c.db.Pool, rdb, c.prefix, opts)
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	// A replica already rotating reads b, so Redis holds b sealed with the old key.
	if got, err := replica(paywall.Options{SecretsKey: newOnly, PreviousSecretsKeys: []*paywall.SecretsKey{testSecrets(t)}}).ByKey(t.Context(), b.APIKey); err != nil || got.UpstreamKey != "sk-x" {
		t.Fatalf("ByKey while rotating = %+v, %v", got, err)
	}

	t.Setenv("TOLLGATE_PAYWALL_SECRETS_KEY", newKey)
	t.Setenv("TOLLGATE_PAYWALL_PREVIOUS_SECRETS_KEYS", testSecretsKey)
	c.mustRun("paywall", "set-markup", a.ID, "700") // opens with the old key, seals with the new
	out := c.mustRun("migrate")
	if !strings.Contains(out, "1 BYOK upstream credential(s) and 1 webhook signing secret(s) sealed again with paywall.secrets_key") ||
		!strings.Contains(out, "paywall.previous_secrets_keys can now be removed") {
		t.Errorf("migrate while rotating printed %q; want b sealed again (a already was, by set-markup)", out)
	}
	if c.storedUpstreamKey(b.ID) == sealedB {
		t.Error("b's credential was not sealed again")
	}
	// The webhook's secret opens with the new key alone, to the same secret (apps keep theirs).
	// "webhook signing_secret" is the purpose package webhook seals it for.
	if got, _, err := paywall.OpenSealed(newOnly, nil, "webhook signing_secret", b.ID, storedSecret()); err != nil || got != secret || storedSecret() == sealedSecret {
		t.Errorf("b's webhook secret after migrate: %q, %v (sealed again: %v)", got, err, storedSecret() != sealedSecret)
	}

	store := replica(paywall.Options{SecretsKey: newOnly})
	for _, p := range []paywallJSON{a, b} {
		if got, err := store.ByKey(t.Context(), p.APIKey); err != nil || got.UpstreamKey != "sk-x" {
			t.Errorf("ByKey(%s) with the new key alone = %q, %v", p.ID, got.UpstreamKey, err)
		}
	}
	t.Setenv("TOLLGATE_PAYWALL_PREVIOUS_SECRETS_KEYS", "")
	if out := c.mustRun("migrate"); strings.Contains(out, "sealed") {
		t.Errorf("migrate after the rotation printed %q; want nothing to seal", out)
	}
}

// TestMigrateReportsWhatNoKeyOpens: during a rotation, a BYOK credential and a webhook signing
// secret that open with no key stop neither reseal: `tollgate migrate` seals every other value
// again, prints how many, then fails (exit 1) with one message naming each paywall, and only
// those, with the commands that fix them — never saying the previous keys can go. Run again, it
// seals nothing and says the same.
func TestMigrateReportsWhatNoKeyOpens(t *testing.T) {
	c := newCLI(t)
	create := func(name string) paywallJSON {
		var p paywallJSON
		if err := json.Unmarshal([]byte(c.mustRun("paywall", "create", "-mode", "byok", "-upstream", "acme-llm", "-upstream-key", "sk-x",
			"-name", name, "-owner", "ops@acme.test", "-json")), &p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a := create("Acme A")
	c.mustRun("paywall", "set-webhook", a.ID, "-url", "http://127.0.0.1:9/hook")
	// A key nobody keeps: lost's credential and b's signing secret are sealed with it.
	t.Setenv("TOLLGATE_PAYWALL_SECRETS_KEY", "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=")
	lost := create("Lost")
	t.Setenv("TOLLGATE_PAYWALL_SECRETS_KEY", testSecretsKey)
	b := create("Acme B")
	t.Setenv("TOLLGATE_PAYWALL_SECRETS_KEY", "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=")
	t.Setenv("TOLLGATE_PAYWALL_PREVIOUS_SECRETS_KEYS", testSecretsKey) // set-webhook opens b's credential
	c.mustRun("paywall", "set-webhook", b.ID, "-url", "http://127.0.0.1:9/hook")
	sealedLost := c.storedUpstreamKey(lost.ID)

	const newKey = "ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICA="
	t.Setenv("TOLLGATE_PAYWALL_SECRETS_KEY", newKey)
	t.Setenv("TOLLGATE_PAYWALL_PREVIOUS_SECRETS_KEYS", testSecretsKey)
	check := func(run, wantOut string) string {
		t.Helper()
		out, err := c.run("migrate")
		if !strings.Contains(out, wantOut) || strings.Contains(out, "can now be removed") {
			t.Errorf("%s: migrate printed %q; want %q and not that the previous keys can be removed", run, out, wantOut)
		}
		if !errors.Is(err, paywall.ErrSealedCredential) || ExitCode(err) != 1 {
			t.Fatalf("%s: migrate = %v (exit %d); want ErrSealedCredential, exit 1", run, err, ExitCode(err))
		}
		msg := err.Error()
		for _, want := range []string{
			"the BYOK upstream credential of paywall(s) " + lost.ID + "\n",
			"the webhook signing secret of paywall(s) " + b.ID + "\n",
			"paywall.previous_secrets_keys",
			"`tollgate paywall set-upstream-key ID`",
			"`tollgate paywall set-webhook ID -url URL`",
		} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: migrate's error %q does not say %q", run, msg, want)
			}
		}
		if strings.Contains(msg, a.ID) || strings.Count(msg, lost.ID) != 1 || strings.Count(msg, b.ID) != 1 {
			t.Errorf("%s: migrate's error %q names a paywall whose values open, or one twice", run, msg)
		}
		return msg
	}
	first := check("first run", "2 BYOK upstream credential(s) and 1 webhook signing secret(s) sealed again with paywall.secrets_key")

	newOnly, err := paywall.ParseSecretsKey(newKey)
	if err != nil {
		t.Fatal(err)
	}
	store := paywall.NewStore(c.db.Pool, nil, c.prefix, paywall.Options{PlatformFeeBps: 500, SecretsKey: newOnly})
	t.Cleanup(func() { _ = store.Close() })
	for _, p := range []paywallJSON{a, b} {
		if got, err := store.Get(t.Context(), p.ID); err != nil || got.UpstreamKey != "sk-x" {
			t.Errorf("Get(%s) with the new key alone = %q, %v", p.ID, got.UpstreamKey, err)
		}
	}
	var sealedA string
	if err := c.db.Pool.QueryRow(t.Context(), `SELECT secret_sealed FROM webhook_endpoints WHERE paywall = $1`, a.ID).Scan(&sealedA); err != nil {
		t.Fatal(err)
	}
	if _, _, err := paywall.OpenSealed(newOnly, nil, "webhook signing_secret", a.ID, sealedA); err != nil {
		t.Errorf("a's webhook secret does not open with the new key alone: %v", err)
	}
	if c.storedUpstreamKey(lost.ID) != sealedLost {
		t.Error("the credential no key opens was changed")
	}

	if again := check("second run", "0 BYOK upstream credential(s) and 0 webhook signing secret(s) sealed again"); again != first {
		t.Errorf("the second run said %q; want what the first said, %q", again, first)
	}
}
