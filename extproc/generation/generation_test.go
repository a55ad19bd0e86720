package generation_test

import (
	"errors"
	"testing"

	"github.com/tollgate-dev/tollgate/extproc/generation"
	"github.com/tollgate-dev/tollgate/extproc/generation/generationtest"
	"github.com/tollgate-dev/tollgate/pricing"
)

func TestUsage(t *testing.T) {
	fake := generationtest.Start(t, "sk-or-operator", "gen-1", 1, `{"data":{"id":"gen-1","total_cost":0.0021,"tokens_prompt":30,"tokens_completion":90,
		"native_tokens_prompt":31,"native_tokens_completion":95,"native_tokens_reasoning":10,"native_tokens_cached":4,"cancelled":true}}`)
	c := generation.New(fake.URL, "sk-or-operator", nil)
	if _, err := c.Usage(t.Context(), "gen-1"); !errors.Is(err, generation.ErrNotYet) {
		t.Fatalf("a fresh id: %v, want ErrNotYet", err)
	}
	u, err := c.Usage(t.Context(), "gen-1")
	want := pricing.Usage{PromptTokens: 31, CompletionTokens: 95, ReasoningTokens: 10, CachedTokens: 4}
	if err != nil || u != want {
		t.Fatalf("usage %+v, %v; want the native counts %+v", u, err, want)
	}
	if n := fake.Asks.Load(); n != 2 {
		t.Errorf("%d asks", n)
	}
	if _, err := generation.New(fake.URL, "sk-or-other", nil).Usage(t.Context(), "gen-1"); err == nil || errors.Is(err, generation.ErrNotYet) {
		t.Errorf("a refused key: %v, want an error other than ErrNotYet", err)
	}
}

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		name, body string
		want       pricing.Usage
		ok         bool
	}{
		{"only the required counts", `{"data":{"native_tokens_prompt":0,"native_tokens_completion":0}}`, pricing.Usage{}, true},
		{"nulls for the optional ones", `{"data":{"native_tokens_prompt":5,"native_tokens_completion":7,"native_tokens_reasoning":null,"native_tokens_cached":null}}`,
			pricing.Usage{PromptTokens: 5, CompletionTokens: 7}, true},
		{"no data", `{"error":{"message":"x"}}`, pricing.Usage{}, false},
		{"no completion count", `{"data":{"native_tokens_prompt":5}}`, pricing.Usage{}, false},
		{"a negative count", `{"data":{"native_tokens_prompt":-1,"native_tokens_completion":7}}`, pricing.Usage{}, false},
		{"a fraction", `{"data":{"native_tokens_prompt":1.5,"native_tokens_completion":7}}`, pricing.Usage{}, false},
		{"an absurd count", `{"data":{"native_tokens_prompt":1099511627777,"native_tokens_completion":7}}`, pricing.Usage{}, false},
		{"more reasoning than completion", `{"data":{"native_tokens_prompt":5,"native_tokens_completion":7,"native_tokens_reasoning":8}}`, pricing.Usage{}, false},
		{"more cached than prompt", `{"data":{"native_tokens_prompt":5,"native_tokens_completion":7,"native_tokens_cached":6}}`, pricing.Usage{}, false},
		{"not JSON", `<html>`, pricing.Usage{}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u, err := generation.Parse([]byte(tt.body))
			if tt.ok != (err == nil) || (tt.ok && u != tt.want) {
				t.Fatalf("Parse = %+v, %v; want %+v ok=%v", u, err, tt.want, tt.ok)
			}
			if !tt.ok && !errors.Is(err, generation.ErrBadAnswer) {
				t.Fatalf("error %v is not ErrBadAnswer", err)
			}
		})
	}
}

// FuzzParse: whatever OpenRouter (or anything in its place) answers, Parse either refuses it
// with ErrBadAnswer or returns counts in range, the parts within their wholes.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"data":{"native_tokens_prompt":31,"native_tokens_completion":95,"native_tokens_reasoning":10,"native_tokens_cached":4}}`))
	f.Add([]byte(`{"data":{"native_tokens_prompt":5,"native_tokens_completion":7,"native_tokens_reasoning":null}}`))
	f.Add([]byte(`{"data":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		u, err := generation.Parse(body)
		if err != nil {
			if !errors.Is(err, generation.ErrBadAnswer) {
				t.Fatalf("error %v is not ErrBadAnswer", err)
			}
			return
		}
		if u.PromptTokens < 0 || u.CompletionTokens < 0 || u.ReasoningTokens < 0 || u.CachedTokens < 0 ||
			u.ReasoningTokens > u.CompletionTokens || u.CachedTokens > u.PromptTokens || u.PromptTokens > 1<<40 || u.CompletionTokens > 1<<40 {
			t.Fatalf("accepted %+v", u)
		}
	})
}
