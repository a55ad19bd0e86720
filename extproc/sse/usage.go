package sse

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// Usage is the token usage an OpenAI-compatible upstream reports: in a chat stream's usage
// chunk or a completion's body (prompt_tokens, completion_tokens …), or in a Responses API
// response (input_tokens, output_tokens …).
type Usage struct {
	PromptTokens     int64
	CompletionTokens int64
	CachedTokens     int64 // part of PromptTokens read from the provider's cache
	CacheWriteTokens int64 // part of PromptTokens written to the provider's cache
	ReasoningTokens  int64 // part of CompletionTokens spent on reasoning
	// CostMicro is what the provider says it charged, in micro-USD (OpenRouter's usage.cost),
	// when CostReported; it is telemetry, never what the user is charged.
	CostMicro    int64
	CostReported bool
}

// maxTokenCount is far above any real request, and keeps sums of counts from overflowing.
const maxTokenCount = 1 << 40

// ErrBadUsage reports a usage object with missing, negative or inconsistent counts.
var ErrBadUsage = errors.New("sse: malformed usage")

type wireUsage struct {
	PromptTokens            *int64             `json:"prompt_tokens"`
	CompletionTokens        *int64             `json:"completion_tokens"`
	PromptTokensDetails     *promptDetails     `json:"prompt_tokens_details"`
	CompletionTokensDetails *completionDetails `json:"completion_tokens_details"`
	Cost                    json.RawMessage    `json:"cost"`
}

// maxCostUSD bounds a reported cost read as one (a billion dollars for one request is not).
const maxCostUSD = 1e9

// costMicro reads a reported cost in USD, leniently: a cost that is not a non-negative number
// within maxCostUSD is not reported (it must not cost the request its usage).
func costMicro(raw json.RawMessage) (int64, bool) {
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > maxCostUSD {
		return 0, false
	}
	return int64(math.Round(f * 1e6)), true
}

type promptDetails struct {
	CachedTokens     int64 `json:"cached_tokens"`
	CacheWriteTokens int64 `json:"cache_write_tokens"`
}

type completionDetails struct {
	ReasoningTokens int64 `json:"reasoning_tokens"`
}

// Completion is what metering reads from one chunk or event, or one whole body.
type Completion struct {
	ID      string
	Usage   *Usage // nil when absent or null
	Choices int    // number of entries in "choices" (chat and text completions)
	Error   string // the message of an "error" member or an error event, if any
	// OutputBytes is, for a whole body, the bytes of its output (a completion's content and
	// reasoning strings as written; a response's output text and tool-call arguments): what an
	// estimate counts when the usage is missing.
	OutputBytes int
}

type wireCompletion struct {
	ID      string            `json:"id"`
	Usage   *wireUsage        `json:"usage"`
	Choices []json.RawMessage `json:"choices"`
	Error   json.RawMessage   `json:"error"`
}

// ParseCompletion decodes the fields metering needs from a chat.completion or
// chat.completion.chunk JSON object. It allocates, so callers use it only for the events that
// the byte scan flagged (HasUsage, HasError) and for non-streamed bodies.
//
// It can return: ErrBadUsage (wrapped), or a JSON syntax error.
func ParseCompletion(data []byte) (Completion, error) { return parseCompletion(data, false) }

// ParseTextCompletion is ParseCompletion for the legacy completions API (text_completion
// objects and chunks), whose choices carry their output in "text".
//
// It can return: ErrBadUsage (wrapped), or a JSON syntax error.
func ParseTextCompletion(data []byte) (Completion, error) { return parseCompletion(data, true) }

func parseCompletion(data []byte, countText bool) (Completion, error) {
	c := Completion{OutputBytes: contentBytes(data, countText)} // counted even in a body cut short
	var w wireCompletion
	if err := json.Unmarshal(data, &w); err != nil {
		return c, fmt.Errorf("sse: completion JSON: %w", err)
	}
	c.ID, c.Choices = w.ID, len(w.Choices)
	return c, c.read(w.Error, w.Usage)
}

// read sets c's Error from an "error" member and its Usage from a usage object (nil: none).
func (c *Completion) read(errRaw json.RawMessage, w *wireUsage) error {
	if len(errRaw) > 0 && string(errRaw) != "null" {
		c.Error = errorMessage(errRaw)
	}
	if w == nil {
		return nil
	}
	u, err := w.usage()
	if err != nil {
		return err
	}
	c.Usage = &u
	return nil
}

func (w *wireUsage) usage() (Usage, error) {
	if w.PromptTokens == nil || w.CompletionTokens == nil {
		return Usage{}, fmt.Errorf("%w: the prompt and completion token counts are required", ErrBadUsage)
	}
	u := Usage{PromptTokens: *w.PromptTokens, CompletionTokens: *w.CompletionTokens}
	u.CostMicro, u.CostReported = costMicro(w.Cost)
	if d := w.PromptTokensDetails; d != nil {
		u.CachedTokens, u.CacheWriteTokens = d.CachedTokens, d.CacheWriteTokens
	}
	if d := w.CompletionTokensDetails; d != nil {
		u.ReasoningTokens = d.ReasoningTokens
	}
	switch {
	case u.PromptTokens > maxTokenCount, u.CompletionTokens > maxTokenCount, u.CachedTokens > maxTokenCount,
		u.CacheWriteTokens > maxTokenCount, u.ReasoningTokens > maxTokenCount:
		return Usage{}, fmt.Errorf("%w: token count over %d", ErrBadUsage, int64(maxTokenCount))
	case u.PromptTokens < 0, u.CompletionTokens < 0, u.CachedTokens < 0, u.CacheWriteTokens < 0, u.ReasoningTokens < 0:
		return Usage{}, fmt.Errorf("%w: negative token count", ErrBadUsage)
	case u.CachedTokens+u.CacheWriteTokens > u.PromptTokens:
		return Usage{}, fmt.Errorf("%w: cached tokens exceed prompt tokens", ErrBadUsage)
	case u.ReasoningTokens > u.CompletionTokens:
		return Usage{}, fmt.Errorf("%w: reasoning tokens exceed completion tokens", ErrBadUsage)
	}
	return u, nil
}

// errorMessage reads {"message": "..."} or a plain string.
func errorMessage(raw json.RawMessage) string {
	var obj struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(raw, &obj) == nil && obj.Message != "" {
		return obj.Message
	}
	var s string
	if json.Unmarshal(raw, &s) == nil && s != "" {
		return s
	}
	return "upstream error"
}
