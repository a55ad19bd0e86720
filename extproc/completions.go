package extproc

import (
	"encoding/json"
	"fmt"
	"time"
)

// Legacy text completions (POST /v1/completions) are billed as chat completions are: the hold
// is the prompt's estimate plus the completion budget for every completion the request makes,
// the charge the usage the upstream reports, and the usage chunk Tollgate asks a stream for is
// hidden from a client that did not. Their output is in each choice's "text" (counted for an
// estimate), and their paywall message is a text_completion.

// maxCompletionChoices bounds the completions one request makes: one per prompt × max(n,
// best_of), each held its whole budget.
const maxCompletionChoices = 128

// maxBestOf is the largest best_of accepted (OpenAI's own limit).
const maxBestOf = 20

// completionsDefaultMaxTokens is the budget of a legacy completion that names none: the API's
// own default (OpenAI's), which the rewrite then sets, so that the client gets, and pays for, no
// longer a completion than the API promises it — not the paywall's default for chat.
const completionsDefaultMaxTokens = 16

// parseCompletionsRequest reads and checks a legacy completions request body.
func parseCompletionsRequest(body []byte, lim requestLimits) (chatRequest, *apiError) {
	var prompt, suffix json.RawMessage
	var n, bestOf int64 = 1, 1
	r, bad := readRequest(body, lim, func(r *chatRequest, m member) *apiError {
		switch m.key {
		case "max_tokens":
			v, ok := parseMaxTokens(m.raw, lim.MaxTokens)
			if !ok {
				return badRequest("invalid_max_tokens", m.key, fmt.Sprintf("'max_tokens' must be a whole number from 1 to %d.", lim.MaxTokens))
			}
			r.MaxTokens = v
		case "max_completion_tokens":
			// Chat's budget key. The rewrite bounds max_tokens only, so this one would reach the
			// upstream unbounded by the hold.
			if !isNull(m.raw) {
				return badRequest("unsupported_parameter", m.key, "A legacy completion's budget is 'max_tokens'; 'max_completion_tokens' belongs to chat completions. Send 'max_tokens' instead.")
			}
		case "n":
			v, ok := parseMaxTokens(m.raw, maxChoices)
			if !ok {
				return badRequest("invalid_n", "n", fmt.Sprintf("'n' must be a whole number from 1 to %d: how many completions to return for each prompt.", maxChoices))
			}
			n = max(v, 1)
		case "best_of":
			v, ok := parseMaxTokens(m.raw, maxBestOf)
			if !ok {
				return badRequest("invalid_best_of", "best_of", fmt.Sprintf("'best_of' must be a whole number from 1 to %d: how many completions to generate for each prompt, of which the best 'n' are returned.", maxBestOf))
			}
			bestOf = max(v, 1)
		case "models", "plugins":
			r.noteUnpriced(m)
		case "stream_options":
			return r.readStreamOptions(m.raw)
		case "prompt":
			prompt = m.raw
		case "suffix":
			suffix = m.raw
		}
		return nil
	})
	if bad != nil {
		return r, bad
	}
	if bestOf > 1 && bestOf < n {
		return r, badRequest("invalid_best_of", "best_of", fmt.Sprintf("'best_of' (%d) must be at least 'n' (%d): it is how many completions are generated, of which 'n' are returned.", bestOf, n))
	}
	prompts, tokens, bad := estimatePrompt(prompt)
	if bad != nil {
		return r, bad
	}
	if suffix != nil && !isNull(suffix) {
		var s string
		if json.Unmarshal(suffix, &s) != nil {
			return r, badRequest("invalid_type", "suffix", "'suffix' must be a string: the text that comes after the completion.")
		}
		tokens += textTokens(s) * prompts
	}
	r.PromptTokens = tokens
	if r.MaxTokens == 0 {
		r.MaxTokens = min(completionsDefaultMaxTokens, lim.MaxTokens)
	}
	// Every generated completion may use the whole budget, and best_of generates that many.
	r.Choices = prompts * max(n, bestOf)
	if r.Choices > maxCompletionChoices {
		// Name what made them many: the larger of n and best_of, else the prompts.
		param := "prompt"
		switch {
		case bestOf > n:
			param = "best_of"
		case n > 1:
			param = "n"
		}
		return r, badRequest("too_many_completions", param, fmt.Sprintf("The request asks for %d completions (%d prompt(s) × %d); at most %d are accepted in one request. Send fewer prompts, or a smaller 'n' or 'best_of'.",
			r.Choices, prompts, max(n, bestOf), maxCompletionChoices))
	}
	return r, nil
}

// unpricedCompletionsOptions is unpricedOptions for legacy completions.
const unpricedCompletionsOptions = "Tollgate charges the tokens of the one 'model' you name, so on this paywall it cannot accept 'models' (fallback models, billed at the fallback's price) or 'plugins' (charged per request by the provider). Remove them, or name a priced model that includes what you need."

// estimatePrompt checks `prompt` — a string, an array of strings, an array of token ids, or an
// array of token-id arrays (textInputs) — and returns how many prompts it holds (each gets its
// own completions) and the estimate of their tokens, at least one per prompt.
func estimatePrompt(raw json.RawMessage) (prompts, tokens int64, bad *apiError) {
	const example = "'prompt' must be a string, an array of strings, or an array of token ids (or of arrays of them)."
	if len(raw) == 0 || isNull(raw) {
		return 0, 0, badRequest("missing_prompt", "prompt", "The request has no 'prompt'. Send the text to complete, such as \"Once upon a time\".")
	}
	prompts, tokens, at, ok := textInputs(raw, false)
	switch {
	case !ok && at >= 0:
		return 0, 0, badRequest("invalid_type", fmt.Sprintf("prompt[%d]", at), example)
	case !ok:
		return 0, 0, badRequest("invalid_type", "prompt", example)
	case prompts == 0:
		return 0, 0, badRequest("missing_prompt", "prompt", "'prompt' is empty. Send the text to complete.")
	}
	return prompts, tokens, nil
}

// textCompletionPaywallMessage is paywallMessage for legacy completions: a text_completion
// whose only choice is the message, or for streams its chunks ending in [DONE].
func textCompletionPaywallMessage(id, model, text string, stream bool, now time.Time) (contentType string, body []byte) {
	completion := func(text string, finish any, usage any) []byte {
		c := map[string]any{
			"id": id, "object": "text_completion", "created": now.Unix(), "model": model,
			"choices": []any{map[string]any{"index": 0, "text": text, "logprobs": nil, "finish_reason": finish}},
		}
		if usage != nil {
			c["usage"] = usage
		}
		b, _ := json.Marshal(c) // plain values always marshal
		return b
	}
	if !stream {
		return "application/json", completion(text, "stop", zeroUsage())
	}
	return "text/event-stream", dataStream(completion(text, nil, nil), completion("", "stop", zeroUsage()))
}
