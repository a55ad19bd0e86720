package sse

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParseEmbeddings(t *testing.T) {
	vectors := `"data":[{"object":"embedding","index":0,"embedding":[0.1,-0.2]},{"object":"embedding","index":1,"embedding":"zczMPc3MTL4="}]`
	for _, tt := range []struct {
		name    string
		in      string
		prompt  int64 // -1: no usage
		errWant error
	}{
		{"usage last", `{"object":"list",` + vectors + `,"model":"m","usage":{"prompt_tokens":12,"total_tokens":12}}`, 12, nil},
		{"usage first, spaced", `{"usage" : { "prompt_tokens": 7, "total_tokens": 7 }, "model":"usage",` + vectors + `}`, 7, nil},
		{"a model called usage after it", `{"usage":{"prompt_tokens":3,"total_tokens":3},"model":"usage"}`, 3, nil},
		{"no usage", `{"object":"list",` + vectors + `}`, -1, nil},
		{"usage null", `{"object":"list",` + vectors + `,"usage":null}`, -1, nil},
		{"no prompt tokens", `{"usage":{"total_tokens":3}}`, 0, ErrBadUsage},
		{"negative", `{"usage":{"prompt_tokens":-3}}`, 0, ErrBadUsage},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseEmbeddings([]byte(tt.in))
			if tt.errWant != nil {
				if !errors.Is(err, tt.errWant) {
					t.Fatalf("err %v, want %v", err, tt.errWant)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tt.prompt < 0 && c.Usage != nil:
				t.Errorf("usage %+v from nothing", c.Usage)
			case tt.prompt >= 0 && (c.Usage == nil || *c.Usage != Usage{PromptTokens: tt.prompt}):
				t.Errorf("usage %+v, want %d prompt tokens", c.Usage, tt.prompt)
			}
		})
	}
	if _, err := ParseEmbeddings([]byte(`{"usage":{"prompt_tokens":`)); err == nil {
		t.Error("a cut usage parsed")
	}
}

// BenchmarkParseEmbeddings: the usage of a 4 MB reply (100 vectors of 3,072 floats) against
// decoding the whole reply with encoding/json, the baseline it replaces.
func BenchmarkParseEmbeddings(b *testing.B) {
	vec := "[" + strings.TrimSuffix(strings.Repeat("-0.0123456789,", 3072), ",") + "]"
	items := strings.TrimSuffix(strings.Repeat(`{"object":"embedding","index":0,"embedding":`+vec+`},`, 100), ",")
	body := []byte(`{"object":"list","data":[` + items + `],"model":"m","usage":{"prompt_tokens":500,"total_tokens":500}}`)
	b.Run("tail", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if c, err := ParseEmbeddings(body); err != nil || c.Usage.PromptTokens != 500 {
				b.Fatal(c, err)
			}
		}
	})
	b.Run("baseline=json.Unmarshal", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var w struct {
				Usage *wireUsage `json:"usage"`
			}
			if err := json.Unmarshal(body, &w); err != nil || *w.Usage.PromptTokens != 500 {
				b.Fatal(err)
			}
		}
	})
}

// FuzzParseEmbeddings: any bytes, no panic; a usage found is within bounds and produces nothing.
func FuzzParseEmbeddings(f *testing.F) {
	f.Add([]byte(`{"data":[{"embedding":[1]}],"usage":{"prompt_tokens":2,"total_tokens":2}}`))
	f.Add([]byte(`{"model":"usage","usage" :null}`))
	f.Add([]byte(`"usage""usage":{`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseEmbeddings(data)
		if err != nil || c.Usage == nil {
			return
		}
		if u := *c.Usage; u.PromptTokens < 0 || u.PromptTokens > maxTokenCount || u.CompletionTokens != 0 || u.CachedTokens != 0 {
			t.Fatalf("usage %+v from %q", u, data)
		}
	})
}
