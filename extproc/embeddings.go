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
// an array of token-id arrays, or (OpenRouter) an array of content parts (textInputs) — and
// estimates its tokens: at least one per input, so that a priced model never holds nothing.
func estimateEmbeddingsInput(raw json.RawMessage) (int64, *apiError) {
	const example = "'input' must be a string, an array of strings, or an array of token ids (or of arrays of them)."
	if len(raw) == 0 || isNull(raw) {
		return 0, badRequest("missing_input", "input", "The request has no 'input'. Send the text to embed, such as \"Hello\", or an array of texts.")
	}
	inputs, tokens, at, ok := textInputs(raw, true)
	switch {
	case !ok && at >= 0:
		return 0, badRequest("invalid_type", fmt.Sprintf("input[%d]", at), example)
	case !ok:
		return 0, badRequest("invalid_type", "input", example)
	case inputs == 0:
		return 0, badRequest("missing_input", "input", "'input' is empty. Send at least one text to embed.")
	}
	return tokens, nil
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
