package sse

import (
	"bytes"
	"encoding/json"
	"fmt"
)

var usageKey = []byte(`"usage"`)

// ParseEmbeddings reads the usage of an embeddings response:
// {"object":"list","data":[…],"model":…,"usage":{"prompt_tokens":…,"total_tokens":…}}. The
// vectors can be megabytes of numbers, so the usage is found by a byte search for its key from
// the end (it follows the vectors) and only it is decoded. Usage is nil when there is none.
//
// It can return: ErrBadUsage (wrapped), or a JSON syntax error.
func ParseEmbeddings(body []byte) (Completion, error) {
	for end := len(body); ; {
		i := bytes.LastIndex(body[:end], usageKey)
		if i < 0 {
			return Completion{}, nil
		}
		end = i
		v := skipSpace(body, i+len(usageKey))
		if v >= len(body) || body[v] != ':' {
			continue // a string "usage", not a key
		}
		v = skipSpace(body, v+1)
		if v >= len(body) || body[v] != '{' {
			return Completion{}, nil // "usage": null
		}
		var w struct {
			PromptTokens *int64 `json:"prompt_tokens"`
		}
		if err := json.NewDecoder(bytes.NewReader(body[v:])).Decode(&w); err != nil {
			return Completion{}, fmt.Errorf("sse: embeddings usage JSON: %w", err)
		}
		var none int64 // embeddings produce no tokens
		u := wireUsage{PromptTokens: w.PromptTokens, CompletionTokens: &none}
		var c Completion
		return c, c.read(nil, &u)
	}
}
