package pricing

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/internal/testredis"
)

const (
	paywallA = "0b3c9c3e-8f47-4f43-9a4c-0e6f5c1d2a01"
	paywallB = "7d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6"
)

func fixtureModels(t *testing.T) []ModelPrice {
	t.Helper()
	f, err := os.Open("testdata/openrouter_models.json")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	ms, err := ParseOpenRouterModels(f)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func newCatalog(t *testing.T, db *testdb.DB, opts CatalogOptions) *Catalog {
	t.Helper()
	rdb, prefix := testredis.New(t)
	return newCatalogOn(t, db, rdb, prefix, opts)
}

func TestCatalogImportAndLookup(t *testing.T) {
	db := testdb.New(t, Migrations)
	c := newCatalog(t, db, CatalogOptions{})
	ctx := t.Context()
	models := fixtureModels(t)
	if err := c.Import(ctx, models); err != nil {
		t.Fatal(err)
	}
	// Every rate survives the database exactly, unset rates stay unset.
	for _, m := range models {
		got, err := c.Lookup(ctx, paywallA, m.Model)
		if err != nil || !got.Equal(m.Price) {
			t.Errorf("Lookup(%q) = %+v, %v; want %+v", m.Model, got, err, m.Price)
		}
	}
	listed, err := c.List(ctx)
	if err != nil || len(listed) != len(models) {
		t.Fatalf("List = %d models, %v", len(listed), err)
	}

	// A second import replaces the prices it names and keeps the others.
	newer := ModelPrice{Model: "openai/gpt-4o-mini", Price: Price{Input: dec(t, "0.2"), Output: dec(t, "0.8")}}
	if err := c.Import(ctx, []ModelPrice{newer}); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Lookup(ctx, "", newer.Model); err != nil || !got.Equal(newer.Price) {
		t.Errorf("after re-import: %+v, %v", got, err)
	}
	if _, err := c.Lookup(ctx, "", "anthropic/claude-sonnet-4"); err != nil {
		t.Errorf("a model left out of the re-import lost its price: %v", err)
	}
}

func TestCatalogLookupErrors(t *testing.T) {
	db := testdb.New(t, Migrations)
	c := newCatalog(t, db, CatalogOptions{})
	if err := c.Import(t.Context(), fixtureModels(t)); err != nil {
		t.Fatal(err)
	}
	for _, model := range []string{"no/such-model", "", string(make([]byte, 300)), "openrouter/auto"} {
		if _, err := c.Lookup(t.Context(), paywallA, model); !errors.Is(err, ErrUnpricedModel) {
			t.Errorf("Lookup(%.20q) = %v, want ErrUnpricedModel", model, err)
		}
	}
}

func TestCatalogOverrides(t *testing.T) {
	db := testdb.New(t, Migrations)
	c := newCatalog(t, db, CatalogOptions{})
	ctx := t.Context()
	if err := c.Import(ctx, fixtureModels(t)); err != nil {
		t.Fatal(err)
	}
	base, err := c.Lookup(ctx, paywallA, "openai/gpt-4o-mini")
	if err != nil {
		t.Fatal(err)
	}
	own := Price{Input: dec(t, "1"), Output: dec(t, "2"), Request: dec(t, "0.01")}
	if err := c.SetOverride(ctx, paywallA, "openai/gpt-4o-mini", own); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Lookup(ctx, paywallA, "openai/gpt-4o-mini"); !got.Equal(own) {
		t.Errorf("override not applied: %+v", got)
	}
	if got, _ := c.Lookup(ctx, paywallB, "openai/gpt-4o-mini"); !got.Equal(base) {
		t.Errorf("another paywall sees the override: %+v", got)
	}
	// An override may price a model the catalog does not have; upper-case ids are the same id.
	custom := Price{Input: dec(t, "5"), Output: dec(t, "5")}
	if err := c.SetOverride(ctx, "0B3C9C3E-8F47-4F43-9A4C-0E6F5C1D2A01", "acme/private-model", custom); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Lookup(ctx, paywallA, "acme/private-model"); err != nil || !got.Equal(custom) {
		t.Errorf("custom model: %+v, %v", got, err)
	}
	if ov, err := c.Overrides(ctx, paywallA); err != nil || len(ov) != 2 || ov[0].Model != "acme/private-model" {
		t.Errorf("Overrides = %+v, %v", ov, err)
	}
	if err := c.DeleteOverride(ctx, paywallA, "openai/gpt-4o-mini"); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Lookup(ctx, paywallA, "openai/gpt-4o-mini"); !got.Equal(base) {
		t.Errorf("after delete: %+v, want the catalog's price", got)
	}
}

func TestCatalogErrors(t *testing.T) {
	db := testdb.New(t, Migrations)
	c := newCatalog(t, db, CatalogOptions{})
	ctx := t.Context()
	ok := Price{Input: dec(t, "1"), Output: dec(t, "1")}
	bad := Price{Input: dec(t, "-1")}
	tests := []struct {
		name string
		do   func() error
		want error
	}{
		{"import with a negative price", func() error {
			return c.Import(ctx, []ModelPrice{{Model: "a", Price: ok}, {Model: "b", Price: bad}})
		}, ErrBadPrice},
		{"import with a duplicate", func() error {
			return c.Import(ctx, []ModelPrice{{Model: "a", Price: ok}, {Model: "a", Price: ok}})
		}, ErrBadModelID},
		{"import with an empty model id", func() error { return c.Import(ctx, []ModelPrice{{Model: "", Price: ok}}) }, ErrBadModelID},
		{"override without a paywall", func() error { return c.SetOverride(ctx, "", "a", ok) }, ErrBadPaywallID},
		{"override with an overlong paywall id", func() error { return c.SetOverride(ctx, string(make([]byte, 65)), "a", ok) }, ErrBadPaywallID},
		{"override with an empty model", func() error { return c.SetOverride(ctx, paywallA, "", ok) }, ErrBadModelID},
		{"override with a negative price", func() error { return c.SetOverride(ctx, paywallA, "a", bad) }, ErrBadPrice},
		{"delete a missing override", func() error { return c.DeleteOverride(ctx, paywallA, "a") }, ErrNoOverride},
		{"overrides of no paywall", func() error { _, err := c.Overrides(ctx, ""); return err }, ErrBadPaywallID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.do(); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
	// Nothing of the refused import was stored.
	if ms, err := c.List(ctx); err != nil || len(ms) != 0 {
		t.Errorf("List after refused imports = %+v, %v", ms, err)
	}
}

// TestCatalogImportInChunks imports more models than one INSERT carries.
func TestCatalogImportInChunks(t *testing.T) {
	db := testdb.New(t, Migrations)
	c := newCatalog(t, db, CatalogOptions{})
	var ms []ModelPrice
	for i := range 2*importChunk + 7 {
		ms = append(ms, ModelPrice{Model: fmt.Sprintf("m/%04d", i), Price: Price{Input: NewDecimal(int64(i), -3), Output: NewDecimal(1, 0)}})
	}
	if err := c.Import(t.Context(), ms); err != nil {
		t.Fatal(err)
	}
	got, err := c.Lookup(t.Context(), "", "m/1006")
	if err != nil || got.Input.String() != "1.006" {
		t.Errorf("m/1006 = %+v, %v", got, err)
	}
}

// TestCatalogChangesReachOtherReplicas: two catalogs share the database and Redis, with a
// cache TTL of an hour, so only the invalidation message can make the second one see a change.
func TestCatalogChangesReachOtherReplicas(t *testing.T) {
	db := testdb.New(t, Migrations)
	rdb, prefix := testredis.New(t)
	a := newCatalogOn(t, db, rdb, prefix, CatalogOptions{TTL: time.Hour})
	b := newCatalogOn(t, db, rdb, prefix, CatalogOptions{TTL: time.Hour})
	ctx := t.Context()
	if _, err := b.Lookup(ctx, paywallA, "x/model"); !errors.Is(err, ErrUnpricedModel) {
		t.Fatalf("before import: %v", err)
	}
	p1 := Price{Input: dec(t, "1"), Output: dec(t, "2")}
	if err := a.Import(ctx, []ModelPrice{{Model: "x/model", Price: p1}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an imported price", func() bool { got, err := b.Lookup(ctx, paywallA, "x/model"); return err == nil && got.Equal(p1) })
	p2 := Price{Input: dec(t, "3"), Output: dec(t, "4")}
	if err := a.SetOverride(ctx, paywallA, "x/model", p2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an override", func() bool { got, err := b.Lookup(ctx, paywallA, "x/model"); return err == nil && got.Equal(p2) })
	if err := a.DeleteOverride(ctx, paywallA, "x/model"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a deleted override", func() bool { got, err := b.Lookup(ctx, paywallA, "x/model"); return err == nil && got.Equal(p1) })
}

// TestCatalogWithoutRedis: a change through another process is seen after the TTL; through
// the same catalog, at once.
func TestCatalogWithoutRedis(t *testing.T) {
	db := testdb.New(t, Migrations)
	a := NewCatalog(db.Pool, nil, "", CatalogOptions{TTL: 200 * time.Millisecond})
	b := NewCatalog(db.Pool, nil, "")
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	ctx := t.Context()
	if _, err := a.Lookup(ctx, "", "x/model"); !errors.Is(err, ErrUnpricedModel) {
		t.Fatal(err)
	}
	p := Price{Input: dec(t, "1"), Output: dec(t, "2")}
	if err := b.Import(ctx, []ModelPrice{{Model: "x/model", Price: p}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Lookup(ctx, "", "x/model"); err != nil {
		t.Errorf("the importing catalog does not see its own import: %v", err)
	}
	if _, err := a.Lookup(ctx, "", "x/model"); !errors.Is(err, ErrUnpricedModel) {
		t.Errorf("a cached miss was not served from the cache: %v", err)
	}
	waitFor(t, "the TTL to end", func() bool { _, err := a.Lookup(ctx, "", "x/model"); return err == nil })
}

func newCatalogOn(t *testing.T, db *testdb.DB, rdb *redis.Client, prefix string, opts CatalogOptions) *Catalog {
	t.Helper()
	c := NewCatalog(db.Pool, rdb, prefix, opts)
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitFor polls cond for up to a second: the promise made to operators.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	start := time.Now()
	for time.Since(start) < time.Second {
		if cond() {
			t.Logf("%s took effect after %s", what, time.Since(start).Round(time.Millisecond))
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s did not take effect within a second", what)
}
