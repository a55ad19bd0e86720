package paywall

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/internal/testredis"
)

// storedCredential reads a paywall's upstream_key column as it is.
func storedCredential(t *testing.T, db *testdb.DB, id string) string {
	t.Helper()
	var v string
	if err := db.Pool.QueryRow(t.Context(), `SELECT upstream_key FROM paywalls WHERE id = $1`, id).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// redisDump returns every value under prefix, by key.
func redisDump(t *testing.T, rdb *redis.Client, prefix string) map[string]string {
	t.Helper()
	ctx := t.Context()
	out := map[string]string{}
	iter := rdb.Scan(ctx, 0, prefix+"*", 100).Iterator()
	for iter.Next(ctx) {
		if v, err := rdb.Get(ctx, iter.Val()).Result(); err == nil {
			out[iter.Val()] = v
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// newSealingEnv returns a database, a Redis prefix and a store (with the test secrets key) on them.
func newSealingEnv(t *testing.T) (*testdb.DB, *redis.Client, string, *Store) {
	t.Helper()
	db := testdb.New(t, Migrations)
	rdb, prefix := testredis.New(t)
	return db, rdb, prefix, storeOn(t, db, rdb, prefix, Options{})
}

// redisCopyKey is where the paywall of apiKey is cached in Redis.
func redisCopyKey(prefix, apiKey string) string {
	h := sha256.Sum256([]byte(apiKey))
	return prefix + "paywall:c:key:v:{" + hex.EncodeToString(h[:]) + "}"
}

// flipBit changes one bit of byte i of a sealed value's bytes, keeping the format.
func flipBit(t *testing.T, sealed string, i int) string {
	t.Helper()
	raw, err := sealedEncoding.DecodeString(strings.TrimPrefix(sealed, sealedPrefix))
	if err != nil {
		t.Fatal(err)
	}
	raw[(i+len(raw))%len(raw)] ^= 1
	return sealedPrefix + sealedEncoding.EncodeToString(raw)
}

// TestCredentialSealedAtRest: the database column and the Redis copy hold the BYOK credential
// sealed, never in plaintext, and every read returns it opened — after an update too.
func TestCredentialSealedAtRest(t *testing.T) {
	db, rdb, prefix, s := newSealingEnv(t)
	ctx := t.Context()
	const secret = "sk-acme-very-secret-0123456789"
	p, key := mustCreate(t, s, with(byokPaywall(), func(p *Paywall) { p.UpstreamKey = secret }))
	if p.UpstreamKey != secret {
		t.Errorf("Create returned credential %q", p.UpstreamKey)
	}

	col := storedCredential(t, db, p.ID)
	if !strings.HasPrefix(col, "v1:") || strings.Contains(col, secret) {
		t.Errorf("column upstream_key = %q; want the sealed form", col)
	}
	var dump string
	if err := db.Pool.QueryRow(ctx, `SELECT p::TEXT FROM paywalls p WHERE id = $1`, p.ID).Scan(&dump); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(dump, secret) {
		t.Errorf("the row holds the credential: %s", dump)
	}

	got, err := s.ByKey(ctx, key)
	if err != nil || got.UpstreamKey != secret {
		t.Fatalf("ByKey = %+v, %v", got, err)
	}
	copyKey := redisCopyKey(prefix, key)
	values := redisDump(t, rdb, prefix)
	if _, ok := values[copyKey]; !ok {
		t.Fatalf("no Redis copy at %s; keys: %v", copyKey, values)
	}
	for k, v := range values {
		if strings.Contains(v, secret) {
			t.Errorf("Redis %s holds the credential: %s", k, v)
		}
	}
	if !strings.Contains(values[copyKey], col) {
		t.Errorf("the Redis copy does not carry the sealed column value: %s", values[copyKey])
	}

	// Another replica reads the Redis copy and opens it.
	other := storeOn(t, db, rdb, prefix, Options{})
	if got, err := other.ByKey(ctx, key); err != nil || got.UpstreamKey != secret {
		t.Fatalf("other replica's ByKey = %+v, %v", got, err)
	}
	if got, err := s.Get(ctx, p.ID); err != nil || got != p {
		t.Errorf("Get = %+v, %v; want %+v", got, err, p)
	}
	if list, err := s.List(ctx); err != nil || len(list) != 1 || list[0] != with(p, func(q *Paywall) { q.UpstreamKey = "" }) {
		t.Errorf("List = %+v, %v; want the paywall without its credential", list, err)
	}

	// An update seals the new credential; a markup change seals the same one anew.
	const rotated = "sk-acme-rotated-9876543210"
	p.UpstreamKey = rotated
	if _, err := s.Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	if col2 := storedCredential(t, db, p.ID); !strings.HasPrefix(col2, "v1:") || strings.Contains(col2, rotated) || col2 == col {
		t.Errorf("column after update = %q", col2)
	}
	// The other replica learns of the update through the invalidation message (milliseconds).
	waitFor(t, "the other replica to send the updated credential", func() bool {
		got, err := other.ByKey(ctx, key)
		return err == nil && got.UpstreamKey == rotated
	})
	before := storedCredential(t, db, p.ID)
	if err := s.SetMarkup(ctx, p.ID, 700); err != nil {
		t.Fatal(err)
	}
	if after := storedCredential(t, db, p.ID); after == before || !strings.HasPrefix(after, "v1:") {
		t.Errorf("column after SetMarkup = %q (before %q)", after, before)
	}
	if got, err := s.ByKey(ctx, key); err != nil || got.UpstreamKey != rotated || got.MarkupBps != 700 {
		t.Errorf("ByKey after SetMarkup = %+v, %v", got, err)
	}
	for k, v := range redisDump(t, rdb, prefix) {
		if strings.Contains(v, secret) || strings.Contains(v, rotated) {
			t.Errorf("Redis %s holds a credential: %s", k, v)
		}
	}
}

func with(base Paywall, change func(*Paywall)) Paywall { change(&base); return base }

// TestCredentialWithoutSecretsKey: without a key, built-in paywalls work and BYOK ones can be
// neither stored nor read; the error names the setting.
func TestCredentialWithoutSecretsKey(t *testing.T) {
	db := testdb.New(t, Migrations)
	keyed := storeOn(t, db, nil, "", Options{})
	b, key := mustCreate(t, keyed, byokPaywall())

	s := NewStore(db.Pool, nil, "", Options{PlatformFeeBps: testFeeBps})
	ctx := t.Context()
	if _, _, err := s.Create(ctx, builtinPaywall()); err != nil {
		t.Errorf("a built-in paywall needs no key: %v", err)
	}
	if _, _, err := s.Create(ctx, byokPaywall()); !errors.Is(err, ErrNoSecretsKey) || !strings.Contains(err.Error(), "paywall.secrets_key") {
		t.Errorf("Create = %v; want ErrNoSecretsKey naming paywall.secrets_key", err)
	}
	checks := map[string]error{}
	_, checks["ByKey"] = s.ByKey(ctx, key)
	_, checks["Get"] = s.Get(ctx, b.ID)
	checks["SetMarkup"] = s.SetMarkup(ctx, b.ID, 10)
	checks["CheckCredentials"] = s.CheckCredentials(ctx)
	for name, err := range checks {
		if !errors.Is(err, ErrNoSecretsKey) || !strings.Contains(err.Error(), "paywall.secrets_key") || !strings.Contains(err.Error(), b.ID) {
			t.Errorf("%s = %v; want ErrNoSecretsKey naming paywall.secrets_key and the paywall", name, err)
		}
	}
	if err := keyed.CheckCredentials(ctx); err != nil {
		t.Errorf("CheckCredentials with the key = %v", err)
	}
	// Listing needs no key: credentials are left out.
	if list, err := s.List(ctx); err != nil || len(list) != 2 || list[0].ID != b.ID || list[0].UpstreamKey != "" {
		t.Errorf("List without the key = %+v, %v; want both paywalls, no credential", list, err)
	}
	// Built-in paywalls alone need no key.
	builtinOnly := NewStore(testdb.New(t, Migrations).Pool, nil, "", Options{PlatformFeeBps: testFeeBps})
	if err := builtinOnly.CheckCredentials(ctx); err != nil {
		t.Errorf("CheckCredentials without BYOK paywalls = %v", err)
	}
}

// TestCredentialThatDoesNotOpen: another secrets key, a value moved from another paywall's
// row, and every kind of tampering are refused with ErrSealedCredential, never garbage.
func TestCredentialThatDoesNotOpen(t *testing.T) {
	db, rdb, prefix, s := newSealingEnv(t)
	ctx := t.Context()
	a, _ := mustCreate(t, s, byokPaywall())
	sealedA := storedCredential(t, db, a.ID)

	// Another key.
	wrong := storeOn(t, db, nil, "", Options{SecretsKey: testSecretsKey(t, 2)})
	if _, err := wrong.Get(ctx, a.ID); !errors.Is(err, ErrSealedCredential) || !strings.Contains(err.Error(), "paywall.secrets_key") ||
		!strings.Contains(err.Error(), a.ID) {
		t.Errorf("Get with another key = %v; want ErrSealedCredential naming the setting and the paywall", err)
	}
	b, _ := mustCreate(t, s, byokPaywall())
	if err := wrong.CheckCredentials(ctx); !errors.Is(err, ErrSealedCredential) || !strings.Contains(err.Error(), a.ID) ||
		!strings.Contains(err.Error(), b.ID) {
		t.Errorf("CheckCredentials with another key = %v; want ErrSealedCredential naming both paywalls", err)
	}

	raw, err := sealedEncoding.DecodeString(strings.TrimPrefix(sealedA, "v1:"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, stored string }{
		{"moved from another paywall", sealedA},
		{"nonce changed", flipBit(t, sealedA, 0)},
		{"ciphertext changed", flipBit(t, sealedA, gcmNonceSize)},
		{"tag changed", flipBit(t, sealedA, -1)},
		{"truncated", sealedA[:len(sealedA)-4]},
		{"too short", "v1:" + sealedEncoding.EncodeToString(raw[:gcmNonceSize+gcmTagSize-1])},
		{"another version", "v2:" + sealedA[3:]},
		{"not base64url", sealedA[:10] + "+" + sealedA[11:]},
		{"padded", sealedA + "="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, key := mustCreate(t, s, byokPaywall())
			db.Must(t, `UPDATE paywalls SET upstream_key = $2 WHERE id = $1`, b.ID, tt.stored)
			// A fresh replica, so nothing comes from a cache.
			fresh := storeOn(t, db, rdb, prefix, Options{})
			if got, err := fresh.ByKey(ctx, key); !errors.Is(err, ErrSealedCredential) {
				t.Errorf("ByKey = %+v, %v; want ErrSealedCredential", got, err)
			}
			if got, err := fresh.Get(ctx, b.ID); !errors.Is(err, ErrSealedCredential) {
				t.Errorf("Get = %+v, %v; want ErrSealedCredential", got, err)
			}
		})
	}
}

// TestTamperedRedisCopy: a sealed value changed in Redis does not open either.
func TestTamperedRedisCopy(t *testing.T) {
	db, rdb, prefix, s := newSealingEnv(t)
	ctx := t.Context()
	_, key := mustCreate(t, s, byokPaywall())
	if _, err := s.ByKey(ctx, key); err != nil {
		t.Fatal(err)
	}
	copyKey := redisCopyKey(prefix, key)
	var cached Paywall
	if err := json.Unmarshal([]byte(rdb.Get(ctx, copyKey).Val()), &cached); err != nil {
		t.Fatal(err)
	}
	cached.UpstreamKey = flipBit(t, cached.UpstreamKey, gcmNonceSize)
	tampered, _ := json.Marshal(cached)
	if err := rdb.Set(ctx, copyKey, tampered, 0).Err(); err != nil {
		t.Fatal(err)
	}
	fresh := storeOn(t, db, rdb, prefix, Options{})
	if got, err := fresh.ByKey(ctx, key); !errors.Is(err, ErrSealedCredential) {
		t.Errorf("ByKey of a tampered Redis copy = %+v, %v; want ErrSealedCredential", got, err)
	}
}

// TestSetUpstreamKey: a credential that no longer opens (the secrets key was replaced) is set
// again without opening it, sealed under the new key; every replica then sends the new one.
// Built-in paywalls, bad credentials and a store without a key are refused, changing nothing.
func TestSetUpstreamKey(t *testing.T) {
	db, rdb, prefix, old := newSealingEnv(t)
	ctx := t.Context()
	p, key := mustCreate(t, old, byokPaywall())
	reader := storeOn(t, db, rdb, prefix, Options{SecretsKey: testSecretsKey(t, 2)}) // a replica on the new key
	if _, err := reader.ByKey(ctx, key); !errors.Is(err, ErrSealedCredential) {
		t.Fatalf("ByKey under the new key before the reset = %v; want ErrSealedCredential", err)
	}

	s := storeOn(t, db, rdb, prefix, Options{SecretsKey: testSecretsKey(t, 2)})
	if err := s.SetMarkup(ctx, p.ID, 900); !errors.Is(err, ErrSealedCredential) {
		t.Errorf("SetMarkup with a credential that does not open = %v; want ErrSealedCredential", err)
	}
	const fresh = "sk-acme-set-again-42"
	if err := s.SetUpstreamKey(ctx, p.ID, fresh); err != nil {
		t.Fatal(err)
	}
	if col := storedCredential(t, db, p.ID); !strings.HasPrefix(col, "v1:") || strings.Contains(col, fresh) {
		t.Errorf("column upstream_key = %q; want the sealed form", col)
	}
	waitFor(t, "the other replica to send the new credential", func() bool {
		got, err := reader.ByKey(ctx, key)
		return err == nil && got.UpstreamKey == fresh
	})
	if got, err := s.Get(ctx, p.ID); err != nil || got != with(p, func(q *Paywall) { q.UpstreamKey = fresh }) {
		t.Errorf("Get = %+v, %v; want the paywall with only its credential changed", got, err)
	}

	b, _ := mustCreate(t, s, builtinPaywall())
	noKey := NewStore(db.Pool, nil, "", Options{PlatformFeeBps: testFeeBps})
	for _, tt := range []struct {
		name     string
		store    *Store
		id, cred string
		want     error
	}{
		{"built-in paywall", s, b.ID, "sk-x", ErrInvalid},
		{"spaces", s, p.ID, "sk with spaces", ErrInvalid},
		{"empty", s, p.ID, "", ErrInvalid},
		{"unknown paywall", s, "6f1c0b8e-0000-4000-8000-000000000000", "sk-x", ErrNotFound},
		{"no secrets key", noKey, p.ID, "sk-x", ErrNoSecretsKey},
	} {
		if err := tt.store.SetUpstreamKey(ctx, tt.id, tt.cred); !errors.Is(err, tt.want) {
			t.Errorf("%s: SetUpstreamKey = %v; want %v", tt.name, err, tt.want)
		}
	}
	if got, err := s.Get(ctx, p.ID); err != nil || got.UpstreamKey != fresh {
		t.Errorf("after the refused calls Get = %+v, %v; want the credential unchanged", got, err)
	}

	// Update replaces the credential too, so it need not open the stored one either.
	q, _ := mustCreate(t, old, byokPaywall())
	q.UpstreamKey = "sk-acme-updated-7"
	if _, err := s.Update(ctx, q); err != nil {
		t.Fatalf("Update of a credential that does not open = %v", err)
	}
	if got, err := s.Get(ctx, q.ID); err != nil || got != q {
		t.Errorf("Get after Update = %+v, %v; want %+v", got, err, q)
	}
}

// TestSealCredentials: a plaintext credential stored by a version before sealing is never
// served or cached until `tollgate migrate` seals it (which needs the key); an old Redis copy
// holding the plaintext is dropped on first read.
func TestSealCredentials(t *testing.T) {
	db, rdb, prefix, s := newSealingEnv(t)
	ctx := t.Context()
	b, key := mustCreate(t, s, byokPaywall())
	builtin, _ := mustCreate(t, s, builtinPaywall())
	const legacy = "sk-legacy-plaintext"
	db.Must(t, `UPDATE paywalls SET upstream_key = $2 WHERE id = $1`, b.ID, legacy)

	fresh := storeOn(t, db, rdb, prefix, Options{})
	if _, err := fresh.ByKey(ctx, key); !errors.Is(err, ErrSealedCredential) || !strings.Contains(err.Error(), "tollgate migrate") {
		t.Errorf("ByKey of a plaintext row = %v; want ErrSealedCredential telling to run tollgate migrate", err)
	}
	for k, v := range redisDump(t, rdb, prefix) {
		if strings.Contains(v, legacy) {
			t.Errorf("Redis %s holds the plaintext: %s", k, v)
		}
	}

	if n, err := NewStore(db.Pool, nil, "", Options{}).SealCredentials(ctx); n != (SealResult{}) || !errors.Is(err, ErrNoSecretsKey) ||
		!strings.Contains(err.Error(), b.ID) || !strings.Contains(err.Error(), "paywall.secrets_key") {
		t.Errorf("SealCredentials without a key = %+v, %v; want ErrNoSecretsKey naming the paywall and the setting", n, err)
	}
	if n, err := s.SealCredentials(ctx); n != (SealResult{Sealed: 1}) || err != nil {
		t.Fatalf("SealCredentials = %+v, %v; want 1 sealed", n, err)
	}
	if col := storedCredential(t, db, b.ID); !strings.HasPrefix(col, "v1:") || strings.Contains(col, legacy) {
		t.Errorf("column after sealing = %q", col)
	}
	if col := storedCredential(t, db, builtin.ID); col != "" {
		t.Errorf("built-in paywall's column = %q", col)
	}
	if n, err := s.SealCredentials(ctx); n != (SealResult{}) || err != nil {
		t.Errorf("SealCredentials again = %+v, %v; want nothing to do", n, err)
	}

	// A Redis copy written by an older version, credential in plaintext.
	copyKey := redisCopyKey(prefix, key)
	old := b
	old.UpstreamKey = legacy
	raw, _ := json.Marshal(old)
	if err := rdb.Set(ctx, copyKey, raw, 0).Err(); err != nil {
		t.Fatal(err)
	}
	fresh = storeOn(t, db, rdb, prefix, Options{})
	if got, err := fresh.ByKey(ctx, key); err != nil || got.UpstreamKey != legacy {
		t.Errorf("ByKey past an old Redis copy = %+v, %v; want the credential", got, err)
	}
	for k, v := range redisDump(t, rdb, prefix) {
		if strings.Contains(v, legacy) {
			t.Errorf("Redis %s still holds the plaintext: %s", k, v)
		}
	}
}

func TestSealOpen(t *testing.T) {
	k := testSecretsKey(t, 1)
	a, b := k.seal(testPaywallID, "sk-1"), k.seal(testPaywallID, "sk-1")
	if a == b {
		t.Error("two seals of one credential are equal: the nonce is not fresh")
	}
	for _, s := range []string{a, b} {
		if got, err := k.open(testPaywallID, s); err != nil || got != "sk-1" {
			t.Errorf("open(%q) = %q, %v", s, got, err)
		}
	}
	long := strings.Repeat("x", maxCredentialLen)
	if s := k.seal(testPaywallID, long); len(s) != maxSealedLen {
		t.Errorf("the longest credential seals to %d characters, maxSealedLen is %d", len(s), maxSealedLen)
	} else if got, err := k.open(testPaywallID, s); err != nil || got != long {
		t.Errorf("open of the longest credential: %v", err)
	}
	if _, err := k.open("00000000-0000-4000-8000-000000000000", a); !errors.Is(err, ErrSealedCredential) {
		t.Errorf("open for another paywall = %v", err)
	}
	for _, s := range []string{"", "31 bytes", strings.Repeat("A", 44), "AAAA"} {
		if _, err := ParseSecretsKey(s); err == nil && s != "" {
			t.Errorf("ParseSecretsKey(%q) accepted", s)
		}
	}
	if k, err := ParseSecretsKey("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="); err != nil || k == nil {
		t.Errorf("ParseSecretsKey of 32 bytes = %v, %v", k, err)
	}
}

// FuzzSealedCredential fuzzes the sealed format's parser and opener: nothing opens but the
// value sealed here, and every refusal is ErrSealedCredential.
func FuzzSealedCredential(f *testing.F) {
	k, err := NewSecretsKey([]byte(strings.Repeat("k", SecretsKeySize)))
	if err != nil {
		f.Fatal(err)
	}
	// A fixed nonce: every fuzzing worker process must make the same value.
	good := k.sealWith([gcmNonceSize]byte{1, 2, 3}, testPaywallID, "sk-fuzz")
	f.Add(good)
	f.Add("")
	f.Add("v1:")
	f.Add("v1:" + strings.Repeat("A", 38))
	f.Add(good[:len(good)-1])
	f.Add("v2:" + good[3:])
	f.Fuzz(func(t *testing.T, s string) {
		got, err := k.open(testPaywallID, s)
		if err == nil && (s != good || got != "sk-fuzz") {
			t.Fatalf("opened a value it did not seal %q: %q", s, got)
		}
		if err != nil && !errors.Is(err, ErrSealedCredential) {
			t.Fatalf("unexpected error kind: %v", err)
		}
	})
}

// TestSecretsKeyRotation: with a new secrets key and the old one among the previous keys,
// credentials sealed with the old key still open (request path and the start check), new
// seals use the new key, and SealCredentials (`tollgate migrate`) seals every old value again
// with the new key — after which the old key is not needed, and no replica is left with a
// cached copy only the old key opens. A credential no key opens (among the others, read before
// some of them) stops nothing: every other one is sealed, and it alone is named, run after run.
func TestSecretsKeyRotation(t *testing.T) {
	db, rdb, prefix, old := newSealingEnv(t) // sealing with key 1
	ctx := t.Context()
	a, keyA := mustCreate(t, old, byokPaywall())
	lost, _ := mustCreate(t, storeOn(t, db, nil, "", Options{SecretsKey: testSecretsKey(t, 3)}), byokPaywall())
	bp := byokPaywall()
	bp.UpstreamKey = "sk-acme-456"
	b, _ := mustCreate(t, old, bp)
	c, _ := mustCreate(t, old, byokPaywall())
	const legacy = "sk-legacy-plaintext"
	db.Must(t, `UPDATE paywalls SET upstream_key = $2 WHERE id = $1`, c.ID, legacy)
	sealedA, sealedLost := storedCredential(t, db, a.ID), storedCredential(t, db, lost.ID)

	rotating := Options{SecretsKey: testSecretsKey(t, 2), PreviousSecretsKeys: []*SecretsKey{testSecretsKey(t, 4), testSecretsKey(t, 1)}}
	rot := storeOn(t, db, rdb, prefix, rotating)
	if got, err := rot.ByKey(ctx, keyA); err != nil || got.UpstreamKey != "sk-acme-123" {
		t.Fatalf("ByKey of a credential sealed with the previous key = %+v, %v", got, err)
	}
	err := rot.CheckCredentials(ctx)
	if !errors.Is(err, ErrSealedCredential) || !strings.Contains(err.Error(), lost.ID) || strings.Contains(err.Error(), a.ID) ||
		strings.Contains(err.Error(), b.ID) || !strings.Contains(err.Error(), "paywall.previous_secrets_keys") {
		t.Errorf("CheckCredentials while rotating = %v; want only the paywall no key opens, naming both settings", err)
	}

	// New seals use the new key.
	e, _ := mustCreate(t, rot, byokPaywall())
	newOnly := storeOn(t, db, nil, "", Options{SecretsKey: testSecretsKey(t, 2)})
	oldOnly := storeOn(t, db, nil, "", Options{SecretsKey: testSecretsKey(t, 1)})
	if _, err := newOnly.Get(ctx, e.ID); err != nil {
		t.Errorf("a paywall created while rotating does not open with the new key: %v", err)
	}
	if _, err := oldOnly.Get(ctx, e.ID); !errors.Is(err, ErrSealedCredential) {
		t.Errorf("a paywall created while rotating opens with the old key: %v", err)
	}

	// onlyLost checks SealCredentials' error names the paywall no key opens, and it alone.
	onlyLost := func(call string, err error) {
		t.Helper()
		noKey, ok := errors.AsType[*NoKeyOpensError](err)
		if !ok || !errors.Is(err, ErrSealedCredential) || !slices.Equal(noKey.Paywalls, []string{lost.ID}) ||
			!strings.Contains(err.Error(), lost.ID) || !strings.Contains(err.Error(), "paywall.previous_secrets_keys") {
			t.Fatalf("%s: error %v; want a NoKeyOpensError (ErrSealedCredential) naming %s alone", call, err, lost.ID)
		}
		for _, id := range []string{a.ID, b.ID, c.ID, e.ID} {
			if strings.Contains(err.Error(), id) {
				t.Errorf("%s: error %v names %s, which opens", call, err, id)
			}
		}
	}
	res, err := rot.SealCredentials(ctx)
	onlyLost("SealCredentials", err)
	if res != (SealResult{Sealed: 1, Resealed: 2}) {
		t.Fatalf("SealCredentials = %+v; want c sealed, a and b sealed again", res)
	}
	if col := storedCredential(t, db, lost.ID); col != sealedLost {
		t.Errorf("the credential no key opens was changed: %q (was %q)", col, sealedLost)
	}
	if col := storedCredential(t, db, a.ID); col == sealedA || !strings.HasPrefix(col, sealedPrefix) {
		t.Errorf("a's column after the rotation = %q (was %q)", col, sealedA)
	}
	for _, want := range []struct {
		id, credential string
	}{{a.ID, "sk-acme-123"}, {b.ID, "sk-acme-456"}, {c.ID, legacy}, {e.ID, "sk-acme-123"}} {
		if got, err := newOnly.Get(ctx, want.id); err != nil || got.UpstreamKey != want.credential {
			t.Errorf("after the rotation, Get(%s) with the new key alone = %q, %v; want %q", want.id, got.UpstreamKey, err, want.credential)
		}
		if _, err := oldOnly.Get(ctx, want.id); !errors.Is(err, ErrSealedCredential) {
			t.Errorf("after the rotation, Get(%s) with the old key alone = %v; want ErrSealedCredential", want.id, err)
		}
	}
	if _, err := newOnly.Get(ctx, lost.ID); !errors.Is(err, ErrSealedCredential) {
		t.Errorf("the credential no key opens: Get = %v; want ErrSealedCredential, left as it was", err)
	}
	res, err = rot.SealCredentials(ctx)
	onlyLost("SealCredentials again", err)
	if res != (SealResult{}) {
		t.Errorf("SealCredentials again = %+v; want nothing sealed", res)
	}

	// The Redis copy the rotating replica cached before was dropped: a replica with the new key
	// alone reads the paywall by its API key.
	fresh := storeOn(t, db, rdb, prefix, Options{SecretsKey: testSecretsKey(t, 2)})
	if got, err := fresh.ByKey(ctx, keyA); err != nil || got.UpstreamKey != "sk-acme-123" {
		t.Errorf("ByKey after the rotation with the new key alone = %+v, %v", got, err)
	}
}
