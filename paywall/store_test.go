package paywall

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/tollgate-dev/tollgate/pricing"
)

func TestCreate(t *testing.T) {
	s, db := newTestStore(t, Options{})
	ctx := t.Context()

	p, key, err := s.Create(ctx, builtinPaywall())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := normalizeID(p.ID); !ok || p.CreatedAt.IsZero() {
		t.Errorf("created paywall lacks an id or time: %+v", p)
	}
	// Defaults filled in.
	if p.Upstream != "openrouter" || p.DefaultMaxTokens != DefaultMaxTokens || p.MinCompletionTokens != DefaultMinCompletionTokens {
		t.Errorf("defaults not applied: %+v", p)
	}
	// Only the key's hash is stored.
	var stored []byte
	if err := db.Pool.QueryRow(ctx, `SELECT key_hash FROM paywalls WHERE id = $1`, p.ID).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if h := sha256.Sum256([]byte(key)); !bytes.Equal(stored, h[:]) {
		t.Error("the stored hash is not SHA-256 of the key")
	}
	var dump string
	if err := db.Pool.QueryRow(ctx, `SELECT p::TEXT FROM paywalls p WHERE id = $1`, p.ID).Scan(&dump); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(dump, key) || strings.Contains(dump, key[3:]) {
		t.Error("the key itself is stored")
	}

	got, err := s.ByKey(ctx, key)
	if err != nil || got != p {
		t.Errorf("ByKey = %+v, %v; want %+v", got, err, p)
	}
	if got, err := s.Get(ctx, p.ID); err != nil || got != p {
		t.Errorf("Get = %+v, %v", got, err)
	}
	if got, err := s.Get(ctx, strings.ToUpper(p.ID)); err != nil || got != p {
		t.Errorf("Get (upper case id) = %+v, %v", got, err)
	}
	b, _ := mustCreate(t, s, byokPaywall())
	list, err := s.List(ctx)
	if err != nil || len(list) != 2 || list[0] != p || list[1] != with(b, func(q *Paywall) { q.UpstreamKey = "" }) {
		t.Errorf("List = %+v, %v", list, err)
	}
	if b.UpstreamKey != "sk-acme-123" || b.Upstream != "acme-gateway" || b.Mode != ModeBYOK {
		t.Errorf("BYOK paywall = %+v", b)
	}
}

func TestCreateInvalid(t *testing.T) {
	s, _ := newTestStore(t, Options{})
	with := func(base Paywall, change func(*Paywall)) Paywall { change(&base); return base }
	tests := []struct {
		name string
		p    Paywall
		msg  string
	}{
		{"no name", with(builtinPaywall(), func(p *Paywall) { p.Name = " " }), "name: required"},
		{"no owner", with(builtinPaywall(), func(p *Paywall) { p.Owner = "" }), "owner: required"},
		{"long name", with(builtinPaywall(), func(p *Paywall) { p.Name = strings.Repeat("n", 201) }), "name: required, at most 200"},
		{"unknown mode", with(builtinPaywall(), func(p *Paywall) { p.Mode = "free" }), `mode: must be "builtin" or "byok", got "free"`},
		{"built-in markup below the fee", with(builtinPaywall(), func(p *Paywall) { p.MarkupBps = 101 }), "needs at least 102 bps"},
		{"built-in with another upstream", with(builtinPaywall(), func(p *Paywall) { p.Upstream = "acme" }), `a built-in paywall uses "openrouter"`},
		{"built-in with a key", with(builtinPaywall(), func(p *Paywall) { p.UpstreamKey = "sk" }), "uses the operator's key"},
		{"BYOK without upstream", with(byokPaywall(), func(p *Paywall) { p.Upstream = "" }), "upstream: required for BYOK"},
		{"BYOK upstream not a cluster name", with(byokPaywall(), func(p *Paywall) { p.Upstream = "a b" }), "upstream: required for BYOK"},
		{"BYOK without key", with(byokPaywall(), func(p *Paywall) { p.UpstreamKey = "" }), "upstream_key: required for BYOK"},
		{"BYOK key with a newline", with(byokPaywall(), func(p *Paywall) { p.UpstreamKey = "sk\nX-Evil: 1" }), "upstream_key"},
		{"negative markup", with(byokPaywall(), func(p *Paywall) { p.MarkupBps = -1 }), "markup_bps: must be 0…1000000"},
		{"absurd markup", with(byokPaywall(), func(p *Paywall) { p.MarkupBps = pricing.MaxMarkupBps + 1 }), "markup_bps"},
		{"negative budget", with(byokPaywall(), func(p *Paywall) { p.DefaultMaxTokens = -5 }), "default_max_tokens: must be 1…10000000"},
		{"minimum above the default budget", with(byokPaywall(), func(p *Paywall) { p.DefaultMaxTokens = 100; p.MinCompletionTokens = 101 }), "min_completion_tokens"},
		{"template does not parse", with(byokPaywall(), func(p *Paywall) { p.Templates.Authorize = "{{.Link" }), "templates.authorize"},
		{"template without the link", with(byokPaywall(), func(p *Paywall) { p.Templates.TopUp = "Pay up." }), "templates.topup: must show the link"},
		{"template with an unknown field", with(byokPaywall(), func(p *Paywall) { p.Templates.TopUp = "{{.Link}} {{.Secret}}" }), "templates.topup"},
		{"overlong template", with(byokPaywall(), func(p *Paywall) { p.Templates.Authorize = "{{.Link}}" + strings.Repeat("x", 2000) }), "at most 2000"},
		{"bad payout address", with(byokPaywall(), func(p *Paywall) { p.PayoutAddress = "0x12" }), "payout_address"},
		{"negative concurrency cap", with(byokPaywall(), func(p *Paywall) { p.MaxConcurrent = -1 }), "max_concurrent"},
		{"negative rate cap", with(byokPaywall(), func(p *Paywall) { p.RatePerMinute = -1 }), "rate_per_minute"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, key, err := s.Create(t.Context(), tt.p)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.msg) || key != "" {
				t.Errorf("Create = %q, %v; want ErrInvalid saying %q", key, err, tt.msg)
			}
		})
	}
	// Every problem is reported at once.
	_, _, err := s.Create(t.Context(), Paywall{Mode: ModeBYOK, MaxConcurrent: -1})
	for _, part := range []string{"name:", "owner:", "upstream:", "upstream_key:", "max_concurrent:"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("combined error lacks %q: %v", part, err)
		}
	}
	if list, _ := s.List(t.Context()); len(list) != 0 {
		t.Errorf("refused paywalls were stored: %+v", list)
	}
}

func TestByKeyErrors(t *testing.T) {
	s, _ := newTestStore(t, Options{})
	_, key := mustCreate(t, s, builtinPaywall())
	other, _, _ := newKey()
	for _, k := range []string{"", "tg_", "Bearer " + key, key + " ", strings.ToUpper(key), other, "sk-or-v1-abc", strings.Repeat("x", 10000)} {
		if _, err := s.ByKey(t.Context(), k); !errors.Is(err, ErrUnknownKey) {
			t.Errorf("ByKey(%.20q) = %v, want ErrUnknownKey", k, err)
		}
	}
}

func TestGetNotFound(t *testing.T) {
	s, _ := newTestStore(t, Options{})
	for _, id := range []string{"", "nope", "0b3c9c3e-8f47-4f43-9a4c-0e6f5c1d2a01", "0b3c9c3e-8f47-4f43-9a4c-0e6f5c1d2a0g"} {
		if _, err := s.Get(t.Context(), id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q) = %v", id, err)
		}
		if _, err := s.RotateKey(t.Context(), id); !errors.Is(err, ErrNotFound) {
			t.Errorf("RotateKey(%q) = %v", id, err)
		}
		if err := s.SetMarkup(t.Context(), id, 500); !errors.Is(err, ErrNotFound) {
			t.Errorf("SetMarkup(%q) = %v", id, err)
		}
		if _, err := s.Authorize(t.Context(), id, "u", walletA); !errors.Is(err, ErrNotFound) {
			t.Errorf("Authorize(%q) = %v", id, err)
		}
	}
}

func TestRotateKey(t *testing.T) {
	s, _ := newTestStore(t, Options{})
	ctx := t.Context()
	p, old := mustCreate(t, s, builtinPaywall())
	if _, err := s.ByKey(ctx, old); err != nil { // cached now
		t.Fatal(err)
	}
	fresh, err := s.RotateKey(ctx, p.ID)
	if err != nil || fresh == old || !strings.HasPrefix(fresh, KeyPrefix) {
		t.Fatalf("RotateKey = %q, %v", fresh, err)
	}
	if _, err := s.ByKey(ctx, old); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("the rotated-away key still works: %v", err)
	}
	if got, err := s.ByKey(ctx, fresh); err != nil || got.ID != p.ID {
		t.Errorf("the new key: %+v, %v", got, err)
	}
}

func TestSetMarkupAndUpdate(t *testing.T) {
	s, _ := newTestStore(t, Options{})
	ctx := t.Context()
	p, key := mustCreate(t, s, builtinPaywall())
	if _, err := s.ByKey(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMarkup(ctx, p.ID, 150); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ByKey(ctx, key); got.MarkupBps != 150 {
		t.Errorf("markup after SetMarkup = %d", got.MarkupBps)
	}
	for _, bps := range []int64{101, -1, pricing.MaxMarkupBps + 1} {
		if err := s.SetMarkup(ctx, p.ID, bps); !errors.Is(err, ErrInvalid) {
			t.Errorf("SetMarkup(%d) = %v, want ErrInvalid", bps, err)
		}
	}
	b, _ := mustCreate(t, s, byokPaywall())
	if err := s.SetMarkup(ctx, b.ID, 0); err != nil {
		t.Errorf("a BYOK paywall may have no markup: %v", err)
	}

	change := p
	change.Name = "Renamed"
	change.Templates = Templates{TopUp: "Low on funds ({{.BalanceUSDC}}): {{.Link}}"}
	change.PayoutAddress = "0xABCDEF0123456789abcdef0123456789ABCDEF01"
	change.MaxConcurrent, change.RatePerMinute = 3, 60
	change.Mode = ModeBYOK // ignored: the mode cannot change
	got, err := s.Update(ctx, change)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "Renamed" || got.Mode != ModeBuiltin || got.PayoutAddress != "0xabcdef0123456789abcdef0123456789abcdef01" ||
		got.MaxConcurrent != 3 || got.RatePerMinute != 60 || got.CreatedAt != p.CreatedAt {
		t.Errorf("Update = %+v", got)
	}
	if cached, _ := s.ByKey(ctx, key); cached != got {
		t.Errorf("ByKey after Update = %+v, want %+v", cached, got)
	}
	change.Templates.TopUp = "no link"
	if _, err := s.Update(ctx, change); !errors.Is(err, ErrInvalid) {
		t.Errorf("Update with a bad template = %v", err)
	}
}

func TestAuthorizations(t *testing.T) {
	s, _ := newTestStore(t, Options{})
	ctx := t.Context()
	p, _ := mustCreate(t, s, builtinPaywall())
	q, _ := mustCreate(t, s, byokPaywall())

	if _, err := s.Authorization(ctx, p.ID, "alice"); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("first meeting: %v, want ErrNotAuthorized", err)
	}
	a, err := s.Authorize(ctx, p.ID, "alice", "0x1111111111111111111111111111111111111111")
	if err != nil || a.Wallet != walletA || a.PaywallID != p.ID || a.UserID != "alice" || a.CreatedAt.IsZero() {
		t.Fatalf("Authorize = %+v, %v", a, err)
	}
	if got, err := s.Authorization(ctx, p.ID, "alice"); err != nil || got != a {
		t.Errorf("Authorization = %+v, %v; want %+v", got, err, a)
	}
	// Authorizing again with the same wallet (any spelling) is the same link.
	again, err := s.Authorize(ctx, p.ID, "alice", "0X"+walletA[2:])
	if err != nil || again != a {
		t.Errorf("re-authorize = %+v, %v; want %+v", again, err, a)
	}
	// The same wallet serves another paywall the person authorizes; the paywalls stay apart.
	if _, err := s.Authorization(ctx, q.ID, "alice"); !errors.Is(err, ErrNotAuthorized) {
		t.Errorf("authorizing one paywall authorized another: %v", err)
	}
	if b, err := s.Authorize(ctx, q.ID, "alice-elsewhere", walletA); err != nil || b.Wallet != a.Wallet {
		t.Errorf("second paywall: %+v, %v", b, err)
	}
	// Another wallet replaces the link.
	if c, err := s.Authorize(ctx, p.ID, "alice", walletB); err != nil || c.Wallet != walletB {
		t.Errorf("replace wallet: %+v, %v", c, err)
	}
	if got, _ := s.Authorization(ctx, p.ID, "alice"); got.Wallet != walletB {
		t.Errorf("after replacing: %+v", got)
	}
	// Revoke, then nothing; revoking twice says so; authorizing again works.
	if err := s.Revoke(ctx, p.ID, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authorization(ctx, p.ID, "alice"); !errors.Is(err, ErrNotAuthorized) {
		t.Errorf("after revoke: %v", err)
	}
	if err := s.Revoke(ctx, p.ID, "alice"); !errors.Is(err, ErrNotAuthorized) {
		t.Errorf("second revoke: %v", err)
	}
	if _, err := s.Authorize(ctx, p.ID, "alice", walletA); err != nil {
		t.Errorf("authorize after revoke: %v", err)
	}
}

func TestAuthorizationErrors(t *testing.T) {
	s, _ := newTestStore(t, Options{})
	ctx := t.Context()
	p, _ := mustCreate(t, s, builtinPaywall())
	tests := []struct {
		name string
		do   func() error
		want error
	}{
		{"lookup with an empty user", func() error { _, err := s.Authorization(ctx, p.ID, ""); return err }, ErrBadUserID},
		{"lookup with a long user", func() error { _, err := s.Authorization(ctx, p.ID, strings.Repeat("u", 129)); return err }, ErrBadUserID},
		{"lookup with a bad character", func() error { _, err := s.Authorization(ctx, p.ID, "a/b"); return err }, ErrBadUserID},
		{"lookup on a malformed paywall id", func() error { _, err := s.Authorization(ctx, "x", "u"); return err }, ErrNotAuthorized},
		{"authorize a bad user", func() error { _, err := s.Authorize(ctx, p.ID, "a b", walletA); return err }, ErrBadUserID},
		{"authorize a bad wallet", func() error { _, err := s.Authorize(ctx, p.ID, "u", "0x123"); return err }, ErrBadWallet},
		{"authorize on an unknown paywall", func() error {
			_, err := s.Authorize(ctx, "0b3c9c3e-8f47-4f43-9a4c-0e6f5c1d2a01", "u", walletA)
			return err
		}, ErrNotFound},
		{"revoke a bad user", func() error { return s.Revoke(ctx, p.ID, "") }, ErrBadUserID},
		{"revoke what was never authorized", func() error { return s.Revoke(ctx, p.ID, "nobody") }, ErrNotAuthorized},
		{"revoke on a malformed paywall id", func() error { return s.Revoke(ctx, "x", "u") }, ErrNotAuthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.do(); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestConcurrentFirstAuthorizations: the hosted page may be submitted twice at once; both
// succeed and one live link results.
func TestConcurrentFirstAuthorizations(t *testing.T) {
	s, db := newTestStore(t, Options{})
	p, _ := mustCreate(t, s, builtinPaywall())
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			_, err := s.Authorize(t.Context(), p.ID, "bob", walletA)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	var live int
	if err := db.Pool.QueryRow(t.Context(), `SELECT count(*) FROM paywall_authorizations WHERE paywall_id = $1 AND revoked_at IS NULL`, p.ID).Scan(&live); err != nil || live != 1 {
		t.Errorf("live authorizations = %d, %v", live, err)
	}
}

// TestStoreWithoutRedis: a command-line tool runs the store with no Redis at all.
func TestStoreWithoutRedis(t *testing.T) {
	s, db := newTestStore(t, Options{})
	local := NewStore(db.Pool, nil, "", Options{PlatformFeeBps: testFeeBps})
	defer func() { _ = local.Close() }()
	p, key := mustCreate(t, local, builtinPaywall())
	if got, err := local.ByKey(t.Context(), key); err != nil || got.ID != p.ID {
		t.Fatalf("ByKey = %+v, %v", got, err)
	}
	if _, err := local.Authorize(t.Context(), p.ID, "carol", walletA); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authorization(t.Context(), p.ID, "carol"); err != nil {
		t.Errorf("a Redis-backed replica does not see it: %v", err)
	}
}

func TestCheckMarkups(t *testing.T) {
	s, _ := newTestStore(t, Options{})
	ctx := t.Context()
	if err := s.CheckMarkups(ctx, 100); err != nil {
		t.Errorf("no paywalls: %v", err)
	}
	p, _ := mustCreate(t, s, builtinPaywall()) // 2000 bps covers up to a 16.66 % fee
	mustCreate(t, s, byokPaywall())            // BYOK: no provider share to cover
	if err := s.CheckMarkups(ctx, 1600); err != nil {
		t.Errorf("covered fee: %v", err)
	}
	err := s.CheckMarkups(ctx, 1700)
	if !errors.Is(err, ErrInvalid) || !errors.Is(err, pricing.ErrMarkupBelowFee) || !strings.Contains(err.Error(), p.ID) {
		t.Errorf("uncovered fee: %v", err)
	}
	if err := s.CheckMarkups(ctx, 10001); !errors.Is(err, pricing.ErrBadFee) {
		t.Errorf("bad fee: %v", err)
	}
}

// TestBuiltinUpstreamFollowsConfig: built-in paywalls route to the configured upstream, even
// those created under an earlier configuration.
func TestBuiltinUpstreamFollowsConfig(t *testing.T) {
	s, db := newTestStore(t, Options{})
	p, key := mustCreate(t, s, builtinPaywall())
	b, _ := mustCreate(t, s, byokPaywall())
	moved := NewStore(db.Pool, nil, "", Options{PlatformFeeBps: testFeeBps, BuiltinUpstream: "openrouter-eu", SecretsKey: testSecretsKey(t, 1)})
	defer func() { _ = moved.Close() }()
	if got, err := moved.ByKey(t.Context(), key); err != nil || got.Upstream != "openrouter-eu" {
		t.Errorf("built-in after a config change: %+v, %v", got, err)
	}
	if got, err := moved.Update(t.Context(), p); err != nil || got.Upstream != "openrouter-eu" {
		t.Errorf("Update of a paywall read before the change: %+v, %v", got, err)
	}
	if got, err := moved.Get(t.Context(), b.ID); err != nil || got.Upstream != "acme-gateway" {
		t.Errorf("BYOK keeps its upstream: %+v, %v", got, err)
	}
}
