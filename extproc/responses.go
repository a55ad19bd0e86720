package extproc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// The Responses API (POST /v1/responses) is billed as chat completions are — a hold sized from
// the input and max_output_tokens, a capture from the usage the upstream reports — with these
// differences: the usage is part of the response itself (there is no stream option to set and
// nothing to hide from the client), a stream is a sequence of typed events, and some requests
// name work whose cost the request does not show:
//   - background: the response would be fetched later, on another connection, where nothing
//     meters it. Refused on every paywall.
//   - previous_response_id, conversation, prompt: context stored at the upstream. The built-in
//     provider keeps none (and its store would be every app's), so they are refused there; on
//     BYOK they are forwarded, the hold covering what the request shows and the capture the
//     usage reported (an overrun is taken from the wallet's available balance, ledger.Capture).
//   - hosted tools (web search, file search, code interpreter, image generation, MCP …) are
//     charged per call by the provider: refused on the built-in provider, as chat's plugins are.

// unpricedResponsesOptions is unpricedOptions for the Responses API.
const unpricedResponsesOptions = "Tollgate charges the tokens of the one 'model' you name, so on this paywall it cannot accept hosted tools (web search, file search, code interpreter, image generation, MCP: charged per call by the provider), 'models' (fallback models, billed at the fallback's price) or 'plugins'. Use function tools, or remove them."

// storedContextMessage refuses context stored upstream on the built-in provider.
const storedContextMessage = "The built-in provider keeps no responses, conversations or prompts, so '%s' cannot be used on this paywall: send the earlier turns and the instructions in 'input' and 'instructions'."

const backgroundMessage = "Tollgate charges a response as it comes back on this request, so it cannot run one in the background to be fetched later. Send the request without 'background' (with \"stream\": true a long response stays alive)."

// clientTools are the tool types the client runs itself: they cost only tokens. Every other
// type (web_search, file_search, code_interpreter, image_generation, mcp, OpenRouter's server
// tools …) is run and charged for by the provider.
var clientTools = map[string]bool{"function": true, "custom": true, "local_shell": true, "shell": true,
	"apply_patch": true, "computer_use_preview": true}

// minOutputTokens is the least max_output_tokens OpenAI accepts: a budget clamped below it
// gets the top-up message rather than the upstream's refusal.
const minOutputTokens = 16

// parseResponsesRequest reads and checks a Responses API request body, as parseChatRequest
// does a chat completion's.
func parseResponsesRequest(body []byte, lim requestLimits) (chatRequest, *apiError) {
	var input json.RawMessage
	var extra int64 // instructions and tool definitions, counted as input
	r, bad := readRequest(body, lim, func(r *chatRequest, m member) *apiError {
		switch m.key {
		case "max_output_tokens":
			n, ok := parseMaxTokens(m.raw, lim.MaxTokens)
			switch {
			case !ok:
				return badRequest("invalid_max_tokens", m.key, fmt.Sprintf("'max_output_tokens' must be a whole number from 1 to %d.", lim.MaxTokens))
			case n > 0:
				r.MaxTokens, r.MaxTokensKeys = n, []string{m.key}
			}
		case "background":
			var on bool
			switch {
			case !isNull(m.raw) && json.Unmarshal(m.raw, &on) != nil:
				return badRequest("invalid_type", m.key, "'background' must be true or false.")
			case on:
				return badRequest("unsupported_parameter", m.key, backgroundMessage)
			}
		case "previous_response_id", "conversation", "prompt":
			if !isNull(m.raw) {
				r.Stored = append(r.Stored, m.key)
			}
		case "models", "plugins", "web_search_options":
			r.noteUnpriced(m)
		case "tools":
			extra += textTokens(string(m.raw))
			return r.noteHostedTool(m.raw)
		case "instructions":
			var s string
			if !isNull(m.raw) && json.Unmarshal(m.raw, &s) != nil {
				return badRequest("invalid_type", m.key, "'instructions' must be a string.")
			}
			extra += textTokens(s)
		case "input":
			input = m.raw
		}
		return nil
	})
	if bad != nil {
		return r, bad
	}
	r.Choices = 1
	if len(input) == 0 && len(r.Stored) > 0 {
		// The input may be all stored (a prompt, an earlier response): only what is sent counts.
		r.PromptTokens = tokensPerRequest + extra
		return r, nil
	}
	n, bad := estimateInput(input)
	if bad != nil {
		return r, bad
	}
	r.PromptTokens = n + extra
	return r, nil
}

// noteHostedTool records in Unpriced the param ("tools[i]") of the first tool the provider
// runs and charges for, if any; `tools` that is not an array of tool objects is refused.
func (r *chatRequest) noteHostedTool(raw json.RawMessage) *apiError {
	if isNull(raw) {
		return nil
	}
	var tools []struct {
		Type string `json:"type"`
	}
	if raw[0] != '[' || json.Unmarshal(raw, &tools) != nil {
		return badRequest("invalid_type", "tools", "'tools' must be an array of tool objects, each with a 'type' such as \"function\".")
	}
	for i, t := range tools {
		if !clientTools[t.Type] {
			r.Unpriced = append(r.Unpriced, fmt.Sprintf("tools[%d]", i))
			return nil
		}
	}
	return nil
}

// estimateInput checks `input` (a string, or an array of input items) and estimates its
// tokens: messages as chat messages are, other items (function calls and their output,
// reasoning) from their JSON text.
func estimateInput(raw json.RawMessage) (int64, *apiError) {
	if len(raw) == 0 || isNull(raw) {
		return 0, badRequest("missing_input", "input", "The request has no 'input'. Send the user's message, such as \"Hi\", or an array of input items.")
	}
	var s string
	if raw[0] == '"' && json.Unmarshal(raw, &s) == nil {
		return tokensPerRequest + tokensPerMessage + textTokens(s), nil
	}
	var items []json.RawMessage
	if raw[0] != '[' || json.Unmarshal(raw, &items) != nil {
		return 0, badRequest("invalid_type", "input", "'input' must be a string or an array of input items.")
	}
	if len(items) == 0 {
		return 0, badRequest("missing_input", "input", "'input' is empty. Send at least one input item, such as {\"role\":\"user\",\"content\":\"Hi\"}.")
	}
	total := int64(tokensPerRequest)
	for i, it := range items {
		var w struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		}
		if len(it) == 0 || it[0] != '{' || json.Unmarshal(it, &w) != nil {
			return 0, badRequest("invalid_type", fmt.Sprintf("input[%d]", i),
				fmt.Sprintf("input[%d] must be an input item object, such as {\"role\":\"user\",\"content\":\"Hi\"}.", i))
		}
		total += tokensPerMessage
		if len(w.Content) > 0 {
			total += textTokens(w.Role) + contentTokens(w.Content)
		} else {
			total += textTokens(string(it))
		}
	}
	return total, nil
}

// responsesPaywallMessage is paywallMessage for the Responses API: a completed response whose
// one output is an assistant message, or for streams the events that build it, from
// response.created to response.completed, with zero usage.
func responsesPaywallMessage(id, model, text string, stream bool, now time.Time) (contentType string, body []byte) {
	msgID := "msg_" + id
	part := func(text string) map[string]any {
		return map[string]any{"type": "output_text", "text": text, "annotations": []any{}, "logprobs": []any{}}
	}
	item := func(status string, content ...any) map[string]any {
		return map[string]any{"type": "message", "id": msgID, "status": status, "role": "assistant", "content": append([]any{}, content...)}
	}
	response := func(status string, usage any, output ...any) map[string]any {
		return map[string]any{
			"id": "resp_" + id, "object": "response", "created_at": now.Unix(), "status": status,
			"error": nil, "incomplete_details": nil, "instructions": nil, "model": model,
			"output": append([]any{}, output...), "parallel_tool_calls": true, "tool_choice": "auto",
			"tools": []any{}, "metadata": map[string]any{}, "usage": usage,
		}
	}
	usage := map[string]any{
		"input_tokens": 0, "input_tokens_details": map[string]any{"cached_tokens": 0},
		"output_tokens": 0, "output_tokens_details": map[string]any{"reasoning_tokens": 0}, "total_tokens": 0,
	}
	done := response("completed", usage, item("completed", part(text)))
	if !stream {
		b, _ := json.Marshal(done) // maps of plain values always marshal
		return "application/json", b
	}
	at := func(more map[string]any) map[string]any {
		more["item_id"], more["output_index"], more["content_index"] = msgID, 0, 0
		return more
	}
	var b bytes.Buffer
	for seq, ev := range []map[string]any{
		{"type": "response.created", "response": response("in_progress", nil)},
		{"type": "response.in_progress", "response": response("in_progress", nil)},
		{"type": "response.output_item.added", "output_index": 0, "item": item("in_progress")},
		at(map[string]any{"type": "response.content_part.added", "part": part("")}),
		at(map[string]any{"type": "response.output_text.delta", "delta": text, "logprobs": []any{}}),
		at(map[string]any{"type": "response.output_text.done", "text": text, "logprobs": []any{}}),
		at(map[string]any{"type": "response.content_part.done", "part": part(text)}),
		{"type": "response.output_item.done", "output_index": 0, "item": item("completed", part(text))},
		{"type": "response.completed", "response": done},
	} {
		ev["sequence_number"] = seq
		data, _ := json.Marshal(ev)
		fmt.Fprintf(&b, "event: %s\ndata: %s\n\n", ev["type"], data)
	}
	return "text/event-stream", b.Bytes()
}
