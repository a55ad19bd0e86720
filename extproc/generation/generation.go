// Package generation asks OpenRouter what a generation really used: GET
// /api/v1/generation?id=gen-…, the authoritative record of a request whose stream ended before
// its usage chunk (the client went away). Counts are the model's native tokens, as in the
// usage chunk the stream would have carried.
package generation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/tollgate-dev/tollgate/pricing"
)

// Errors of Usage; callers decide with errors.Is.
var (
	// ErrNotYet: OpenRouter does not know the generation yet (a fresh id answers 404 for a
	// short while). Ask again later.
	ErrNotYet = errors.New("generation: not recorded yet")
	// ErrBadAnswer: the answer is not a generation record with token counts.
	ErrBadAnswer = errors.New("generation: unreadable answer")
)

// maxAnswer bounds how much of an answer is read; a record is a few hundred bytes.
const maxAnswer = 1 << 20

// maxTokens bounds a count; anything larger is not a real generation's.
const maxTokens = 1 << 40

// Client reads generation records with the operator's key. It is safe for concurrent use.
type Client struct {
	url  string
	key  string
	http *http.Client
}

// New returns a Client of the endpoint (serve.provider.generation_url, whose default is
// OpenRouter's) with the operator's key, over hc (nil: a client with a 10 s timeout).
func New(endpoint, key string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	return &Client{url: endpoint, key: key, http: hc}
}

// Usage returns the usage of generation id.
// It can return: ErrNotYet, ErrBadAnswer, or a transport error (wrapped).
func (c *Client) Usage(ctx context.Context, id string) (pricing.Usage, error) {
	u, err := url.Parse(c.url)
	if err != nil {
		return pricing.Usage{}, fmt.Errorf("generation: endpoint: %w", err)
	}
	q := u.Query()
	q.Set("id", id)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return pricing.Usage{}, fmt.Errorf("generation: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	resp, err := c.http.Do(req)
	if err != nil {
		return pricing.Usage{}, fmt.Errorf("generation: ask for %s: %w", id, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return pricing.Usage{}, fmt.Errorf("generation: read the answer for %s: %w", id, err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return pricing.Usage{}, fmt.Errorf("%w: %s", ErrNotYet, id)
	case resp.StatusCode != http.StatusOK:
		return pricing.Usage{}, fmt.Errorf("generation: %s: HTTP %d", id, resp.StatusCode)
	}
	return Parse(body)
}

// record is the part of a generation record that is used.
type record struct {
	Data *struct {
		Prompt     *int64 `json:"native_tokens_prompt"`
		Completion *int64 `json:"native_tokens_completion"`
		Reasoning  *int64 `json:"native_tokens_reasoning"`
		Cached     *int64 `json:"native_tokens_cached"`
	} `json:"data"`
}

// Parse reads a generation record: {"data": {"native_tokens_prompt": …,
// "native_tokens_completion": …, "native_tokens_reasoning": …, "native_tokens_cached": …, …}}.
// The prompt and completion counts are required; reasoning and cached ones default to 0. A
// count must be a whole number from 0 to 2^40, and reasoning tokens may not exceed the
// completion's, nor cached ones the prompt's.
// It can return: ErrBadAnswer.
func Parse(body []byte) (pricing.Usage, error) {
	var r record
	if err := json.Unmarshal(body, &r); err != nil {
		return pricing.Usage{}, fmt.Errorf("%w: %w", ErrBadAnswer, err)
	}
	d := r.Data
	if d == nil || d.Prompt == nil || d.Completion == nil {
		return pricing.Usage{}, fmt.Errorf("%w: no native token counts", ErrBadAnswer)
	}
	var reasoning, cached int64
	if d.Reasoning != nil {
		reasoning = *d.Reasoning
	}
	if d.Cached != nil {
		cached = *d.Cached
	}
	for _, n := range []int64{*d.Prompt, *d.Completion, reasoning, cached} {
		if n < 0 || n > maxTokens {
			return pricing.Usage{}, fmt.Errorf("%w: token count %d out of range", ErrBadAnswer, n)
		}
	}
	if reasoning > *d.Completion || cached > *d.Prompt {
		return pricing.Usage{}, fmt.Errorf("%w: more reasoning or cached tokens than completion or prompt tokens", ErrBadAnswer)
	}
	return pricing.Usage{PromptTokens: *d.Prompt, CompletionTokens: *d.Completion, ReasoningTokens: reasoning, CachedTokens: cached}, nil
}
