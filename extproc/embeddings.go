package extproc

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// Embeddings (POST /v1/embeddings) are billed by their input alone: the hold is the price of
// the input's estimate (with the margin) and no completion budget, the charge the usage the
// upstream reports (prompt_tokens). An embeddings response has no message to carry a link, so a
// user who must authorize or top up gets 402 with the link in the error's message and the
// action in x-tollgate-action.

// parseEmbeddingsRequest reads and checks an embeddings request body.
func parseEmbeddingsRequest(body []byte, lim requestLimits) (chatRequest, *apiError) {
	var input json.RawMessage
	r, bad := readRequest(body, lim, func(r *chatRequest, m member) *apiError {
		switch m.key {
		case "input":
			input = m.raw
		case "models":
			r.noteUnpriced(m)
		}
		return nil
	})
	if bad != nil {
		return r, bad
	}
	r.Choices = 1
	r.PromptTokens, bad = estimateEmbeddingsInput(input)
	return r, bad
}

// unpricedEmbeddingsOptions is unpricedOptions for embeddings.
const unpricedEmbeddingsOptions = "Tollgate charges the tokens of the one 'model' you name, so on this paywall it cannot accept 'models' (fallback models, billed at the fallback's price). Remove it."

// estimateEmbeddingsInput checks `input` — a string, an array of strings, an array of token ids,
// an array of token-id arrays, or (OpenRouter) an array of content parts — and estimates its
// tokens: at least one per input, so that a priced model never holds nothing.
func estimateEmbeddingsInput(raw json.RawMessage) (int64, *apiError) {
	const example = "'input' must be a string, an array of strings, or an array of token ids (or of arrays of them)."
	if len(raw) == 0 || isNull(raw) {
		return 0, badRequest("missing_input", "input", "The request has no 'input'. Send the text to embed, such as \"Hello\", or an array of texts.")
	}
	var s string
	if raw[0] == '"' && json.Unmarshal(raw, &s) == nil {
		return max(textTokens(s), 1), nil
	}
	var items []json.RawMessage
	if raw[0] != '[' || json.Unmarshal(raw, &items) != nil {
		return 0, badRequest("invalid_type", "input", example)
	}
	if len(items) == 0 {
		return 0, badRequest("missing_input", "input", "'input' is empty. Send at least one text to embed.")
	}
	var total int64
	for i, it := range items {
		n, ok := embeddingInputTokens(it)
		if !ok {
			return 0, badRequest("invalid_type", fmt.Sprintf("input[%d]", i), example)
		}
		total += n
	}
	return total, nil
}

// embeddingInputTokens estimates one element of an input array.
func embeddingInputTokens(raw json.RawMessage) (int64, bool) {
	var s string
	var ids []json.Number
	var part struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	switch {
	case raw[0] == '"' && json.Unmarshal(raw, &s) == nil:
		return max(textTokens(s), 1), true
	case raw[0] == '[' && json.Unmarshal(raw, &ids) == nil && len(ids) > 0:
		return int64(len(ids)), true // token ids: one each
	case raw[0] == '{' && json.Unmarshal(raw, &part) == nil:
		if part.Type == "text" {
			return max(textTokens(part.Text), 1), true
		}
		return tokensPerMediaPart, true
	default: // one token id
		var id json.Number
		isNumber := raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9')
		return 1, isNumber && json.Unmarshal(raw, &id) == nil
	}
}

// embeddingsPaywallMessage is the paywall message for embeddings: 402 Payment Required in
// OpenAI's error shape, the message (with its link) what a chat user would read.
func embeddingsPaywallMessage(a Action, text string) *apiError {
	code := "authorization_required"
	if a == ActionTopUp {
		code = "insufficient_funds"
	}
	return &apiError{Status: http.StatusPaymentRequired, Type: "invalid_request_error", Code: code, Message: text}
}
