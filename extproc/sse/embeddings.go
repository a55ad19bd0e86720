package sse

import (
	"bytes"
	"encoding/json"
	"fmt"
)

var usageKey = []byte(`"usage"`)

// lastUsage returns the object value of the last "usage" key in data, found by a byte search
// from the end, so that a large body is not decoded: nil when the last one is null or there is
// none. data may be a window of a larger body: only the object must be whole.
func lastUsage(data []byte) (json.RawMessage, error) {
	for end := len(data); ; {
		i := bytes.LastIndex(data[:end], usageKey)
		if i < 0 {
			return nil, nil
		}
		end = i
		v := skipSpace(data, i+len(usageKey))
		if v >= len(data) || data[v] != ':' {
			continue // a string "usage", not a key
		}
		v = skipSpace(data, v+1)
		if v >= len(data) || data[v] != '{' {
			return nil, nil // "usage": null
		}
		var obj json.RawMessage
		if err := json.NewDecoder(bytes.NewReader(data[v:])).Decode(&obj); err != nil {
			return nil, fmt.Errorf("sse: usage JSON: %w", err)
		}
		return obj, nil
	}
}

// ParseEmbeddings reads the usage of an embeddings response:
// {"object":"list","data":[…],"model":…,"usage":{"prompt_tokens":…,"total_tokens":…}}. The
// vectors can be megabytes of numbers, so only the usage is decoded (lastUsage); data may be the
// start or the end of the body. Usage is nil when there is none.
//
// It can return: ErrBadUsage (wrapped), or a JSON syntax error.
func ParseEmbeddings(data []byte) (Completion, error) {
	obj, err := lastUsage(data)
	if obj == nil {
		return Completion{}, err
	}
	var w struct {
		PromptTokens *int64 `json:"prompt_tokens"`
	}
	if err := json.Unmarshal(obj, &w); err != nil {
		return Completion{}, fmt.Errorf("sse: embeddings usage JSON: %w", err)
	}
	var none int64 // embeddings produce no tokens
	var c Completion
	return c, c.read(nil, &wireUsage{PromptTokens: w.PromptTokens, CompletionTokens: &none})
}
