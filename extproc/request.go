package extproc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"
)

// chatRequest is what Tollgate reads from a billed request's body: a chat completion
// (/v1/chat/completions), a response (/v1/responses, responses.go), embeddings
// (embeddings.go) or a legacy completion (/v1/completions, completions.go). The body's other
// members are kept as they came (fields), so the rewrite changes only what it must.
type chatRequest struct {
	Model  string
	Stream bool
	User   string
	// MaxTokens is the completion budget the client asked for (0: none). MaxTokensKeys says
	// which of max_tokens and max_completion_tokens it used.
	MaxTokens     int64
	MaxTokensKeys []string
	// Choices is how many completions the request makes (n; for a legacy completion, prompts
	// × max(n, best_of); 1 when it says nothing): the completion budget is held once per choice.
	Choices int64
	// Unpriced lists the members that make the built-in provider charge for more than the
	// tokens of `model` (see unpricedOptions).
	Unpriced []string
	// Stored lists the members that name context stored at the upstream (Responses API:
	// previous_response_id, conversation, prompt).
	Stored []string
	// IncludeUsage reports whether the client itself asked for the usage chunk.
	IncludeUsage bool
	// StreamOptions is the client's stream_options object, if any.
	StreamOptions json.RawMessage
	// PromptTokens is the estimate of the prompt's tokens, before the margin.
	PromptTokens int64
	fields       []member
}

type member struct {
	key string
	raw json.RawMessage
}

// unpricedOptions explains the request members the built-in provider (OpenRouter) bills for
// beyond the tokens of `model`, which is all Tollgate prices: "models" lets it answer with a
// fallback model, billed at that model's price; "plugins" (web search, file parsing),
// "web_search_options" and server tools (a tool whose type is not "function") add per-request
// charges. Built-in paywalls refuse them, since the
// operator would pay what the user is not charged.
const unpricedOptions = "Tollgate charges the tokens of the one 'model' you name, so on this paywall it cannot accept 'models' (fallback models, billed at the fallback's price), 'plugins', 'web_search_options' or server tools (charged per request by the provider). Remove them, use function tools, or name a priced model that includes what you need."

// maxChoices is the largest n accepted (OpenAI's own limit).
const maxChoices = 128

// requestLimits bound what parseChatRequest accepts.
type requestLimits struct {
	MaxBodyBytes int
	MaxTokens    int64 // the largest max_tokens accepted
}

// parseChatRequest reads and checks a chat completion request body. Every refusal is an
// OpenAI-shaped 400 that says what is wrong and how to fix it.
func parseChatRequest(body []byte, lim requestLimits) (chatRequest, *apiError) {
	var messages json.RawMessage
	r, bad := readRequest(body, lim, func(r *chatRequest, m member) *apiError {
		switch m.key {
		case "max_tokens", "max_completion_tokens":
			n, ok := parseMaxTokens(m.raw, lim.MaxTokens)
			switch {
			case !ok:
				return badRequest("invalid_max_tokens", m.key,
					fmt.Sprintf("'%s' must be a whole number from 1 to %d.", m.key, lim.MaxTokens))
			case n > 0:
				r.MaxTokensKeys = append(r.MaxTokensKeys, m.key)
				if r.MaxTokens == 0 || n < r.MaxTokens {
					r.MaxTokens = n
				}
			}
		case "n":
			n, ok := parseMaxTokens(m.raw, maxChoices)
			if !ok {
				return badRequest("invalid_n", "n", fmt.Sprintf("'n' must be a whole number from 1 to %d: how many completions to generate.", maxChoices))
			}
			r.Choices = n
		case "models", "plugins", "web_search_options":
			r.noteUnpriced(m)
		case "tools":
			return r.noteHostedTool(m.raw)
		case "stream_options":
			return r.readStreamOptions(m.raw)
		case "messages":
			messages = m.raw
		}
		return nil
	})
	if bad != nil {
		return r, bad
	}
	r.Choices = max(r.Choices, 1)
	n, bad := estimateMessages(messages)
	if bad != nil {
		return r, bad
	}
	r.PromptTokens = n
	return r, nil
}

// readStreamOptions reads a stream_options member: whether the client asked for the usage
// chunk, and the object, which the rewrite keeps.
func (r *chatRequest) readStreamOptions(raw json.RawMessage) *apiError {
	if isNull(raw) {
		return nil
	}
	var so struct {
		IncludeUsage *bool `json:"include_usage"`
	}
	if raw[0] != '{' || json.Unmarshal(raw, &so) != nil {
		return badRequest("invalid_type", "stream_options", "'stream_options' must be an object such as {\"include_usage\": true}.")
	}
	r.StreamOptions = raw
	r.IncludeUsage = so.IncludeUsage != nil && *so.IncludeUsage
	return nil
}

// readRequest checks a billed request's body and reads its members: model, stream and user
// here, the API's own through each, which may refuse one. A request without a model is refused.
func readRequest(body []byte, lim requestLimits, each func(r *chatRequest, m member) *apiError) (chatRequest, *apiError) {
	var r chatRequest
	fields, bad := readObject(body, lim)
	if bad != nil {
		return r, bad
	}
	r.fields = fields
	for _, m := range fields {
		if bad := r.readCommon(m); bad != nil {
			return r, bad
		}
		if bad := each(&r, m); bad != nil {
			return r, bad
		}
	}
	if r.Model == "" {
		return r, missingModel
	}
	return r, nil
}

// noteUnpriced records m when it asks for something priced beyond the tokens of `model`: any
// value but null or an empty array.
func (r *chatRequest) noteUnpriced(m member) {
	if !isNull(m.raw) && string(bytes.TrimSpace(m.raw)) != "[]" {
		r.Unpriced = append(r.Unpriced, m.key)
	}
}

// readObject checks a request body's size and encoding and splits it into its members.
func readObject(body []byte, lim requestLimits) ([]member, *apiError) {
	if lim.MaxBodyBytes > 0 && len(body) > lim.MaxBodyBytes {
		return nil, badRequest("request_too_large", "",
			fmt.Sprintf("The request body is %d bytes; at most %d bytes are accepted. Shorten the conversation.", len(body), lim.MaxBodyBytes))
	}
	if !utf8.Valid(body) {
		return nil, badRequest("invalid_utf8", "", "The request body is not valid UTF-8. Send JSON encoded as UTF-8.")
	}
	fields, err := members(body)
	if err != nil {
		return nil, badRequest("invalid_json", "", "The request body is not a valid JSON object: "+err.Error()+".")
	}
	return fields, nil
}

// readCommon reads the members both billed APIs share: model, stream and user.
func (r *chatRequest) readCommon(m member) *apiError {
	switch m.key {
	case "model":
		if json.Unmarshal(m.raw, &r.Model) != nil || r.Model == "" {
			return badRequest("invalid_model", "model", "'model' must be a non-empty string naming the model, such as \"openai/gpt-4o-mini\".")
		}
	case "stream":
		if !isNull(m.raw) && json.Unmarshal(m.raw, &r.Stream) != nil {
			return badRequest("invalid_type", "stream", "'stream' must be true or false.")
		}
	case "user":
		if !isNull(m.raw) && json.Unmarshal(m.raw, &r.User) != nil {
			return badRequest("invalid_user", "user", "'user' must be a string: the end user's id.")
		}
	}
	return nil
}

var missingModel = badRequest("missing_model", "model", "The request has no 'model'. Name the model to use, such as \"openai/gpt-4o-mini\".")

// members splits a JSON object into its members, in order, refusing duplicate keys (an
// upstream might read a different copy than we did) and anything after the object.
func members(body []byte) ([]member, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	t, err := dec.Token()
	if err != nil {
		return nil, errors.New("it is empty or malformed")
	}
	if d, ok := t.(json.Delim); !ok || d != '{' {
		return nil, errors.New("it is not an object")
	}
	var out []member
	seen := make(map[string]bool, 16)
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, syntaxError(err)
		}
		key, _ := t.(string)
		if seen[key] {
			return nil, fmt.Errorf("the key %q appears twice", key)
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, syntaxError(err)
		}
		out = append(out, member{key: key, raw: raw})
	}
	if _, err := dec.Token(); err != nil {
		return nil, syntaxError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("there is more after the object")
	}
	return out, nil
}

func syntaxError(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("%s at byte %d", se.Error(), se.Offset)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return errors.New("it ends too early")
	}
	return err
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

// parseMaxTokens accepts null (0: unset) or a whole number 1…limit (also for n).
func parseMaxTokens(raw json.RawMessage, limit int64) (int64, bool) {
	if isNull(raw) {
		return 0, true
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || n < 1 || n > limit {
		return 0, false
	}
	return n, true
}

// Token estimates. No tokenizer ships with Tollgate (a BPE table per model family would have
// to be fetched), so the prompt is estimated from its text: a token per 4 ASCII bytes (English
// averages about 4.5 per token with OpenAI's encodings), a token per non-ASCII character
// (CJK characters take 1–2), a fixed amount per non-text part, and OpenAI's per-message
// framing. The margin in Config is added on top. The estimate only sizes the hold: the charge
// comes from the usage the upstream reports.
const (
	tokensPerMessage   = 4
	tokensPerRequest   = 3
	tokensPerMediaPart = 1000
)

type wireMessage struct {
	Role       json.RawMessage `json:"role"`
	Content    json.RawMessage `json:"content"`
	Name       string          `json:"name"`
	ToolCalls  json.RawMessage `json:"tool_calls"`
	ToolCallID string          `json:"tool_call_id"`
}

// estimateMessages checks the messages array and estimates its tokens.
func estimateMessages(raw json.RawMessage) (int64, *apiError) {
	if len(raw) == 0 || isNull(raw) {
		return 0, badRequest("missing_messages", "messages", "The request has no 'messages'. Send at least one message, such as {\"role\":\"user\",\"content\":\"Hi\"}.")
	}
	var msgs []json.RawMessage
	if raw[0] != '[' || json.Unmarshal(raw, &msgs) != nil {
		return 0, badRequest("invalid_type", "messages", "'messages' must be an array of message objects.")
	}
	if len(msgs) == 0 {
		return 0, badRequest("missing_messages", "messages", "'messages' is empty. Send at least one message.")
	}
	total := int64(tokensPerRequest)
	for i, m := range msgs {
		var w wireMessage
		if len(m) == 0 || m[0] != '{' || json.Unmarshal(m, &w) != nil {
			return 0, badRequest("invalid_type", fmt.Sprintf("messages[%d]", i),
				fmt.Sprintf("messages[%d] must be an object with a 'role' and a 'content'.", i))
		}
		var role string
		if json.Unmarshal(w.Role, &role) != nil || role == "" {
			return 0, badRequest("invalid_type", fmt.Sprintf("messages[%d].role", i),
				fmt.Sprintf("messages[%d] needs a 'role' string such as \"user\".", i))
		}
		total += tokensPerMessage + textTokens(role) + textTokens(w.Name) + textTokens(w.ToolCallID) +
			contentTokens(w.Content) + textTokens(string(w.ToolCalls))
	}
	return total, nil
}

// contentTokens estimates a message's content: a string, or an array of parts.
func contentTokens(raw json.RawMessage) int64 {
	if len(raw) == 0 || isNull(raw) {
		return 0
	}
	var s string
	if raw[0] == '"' && json.Unmarshal(raw, &s) == nil {
		return textTokens(s)
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if raw[0] == '[' && json.Unmarshal(raw, &parts) == nil {
		var n int64
		for _, p := range parts {
			if p.Type == "text" || p.Text != "" {
				n += textTokens(p.Text)
			} else {
				n += tokensPerMediaPart
			}
		}
		return n
	}
	return textTokens(string(raw))
}

// textInputs reads the input forms the legacy completions and embeddings APIs share: a string,
// an array of strings, an array of token ids (one input), or an array of token-id arrays — and,
// with parts, OpenRouter's content parts (a text part's text; tokensPerMediaPart for others).
// It returns how many inputs raw (not empty) holds and their estimate, at least one token per
// input. ok is false for any other shape; at is then the index of the element at fault, or -1
// when the whole value is.
func textInputs(raw json.RawMessage, parts bool) (inputs, tokens int64, at int, ok bool) {
	var s string
	if raw[0] == '"' && json.Unmarshal(raw, &s) == nil {
		return 1, max(textTokens(s), 1), 0, true
	}
	var items []json.RawMessage
	if raw[0] != '[' || json.Unmarshal(raw, &items) != nil {
		return 0, 0, -1, false
	}
	if len(items) > 0 && isNumber(items[0]) {
		for i, it := range items {
			if !isTokenID(it) {
				return 0, 0, i, false
			}
		}
		return 1, int64(len(items)), 0, true
	}
	for i, it := range items {
		n, ok := inputTokens(it, parts)
		if !ok {
			return 0, 0, i, false
		}
		tokens += n
	}
	return int64(len(items)), tokens, 0, true
}

// inputTokens estimates one element of an input array of texts, token-id arrays or (with
// parts) content parts.
func inputTokens(raw json.RawMessage, parts bool) (int64, bool) {
	var s string
	var ids []json.Number
	var part struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	switch {
	case raw[0] == '"' && json.Unmarshal(raw, &s) == nil:
		return max(textTokens(s), 1), true
	case raw[0] == '[' && json.Unmarshal(raw, &ids) == nil && len(ids) > 0 && allTokenIDs(ids):
		return int64(len(ids)), true
	case parts && raw[0] == '{' && json.Unmarshal(raw, &part) == nil:
		if part.Type == "text" {
			return max(textTokens(part.Text), 1), true
		}
		return tokensPerMediaPart, true
	}
	return 0, false
}

func isNumber(raw json.RawMessage) bool { return raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9') }

// isTokenID reports whether raw is a JSON number that is a whole number ≥ 0.
func isTokenID(raw json.RawMessage) bool {
	var id json.Number
	return isNumber(raw) && json.Unmarshal(raw, &id) == nil && allTokenIDs([]json.Number{id})
}

func allTokenIDs(ids []json.Number) bool {
	for _, id := range ids {
		if v, err := id.Int64(); err != nil || v < 0 {
			return false
		}
	}
	return true
}

// textTokens estimates the tokens of a text.
func textTokens(s string) int64 {
	var ascii, other int64
	for i := 0; i < len(s); {
		if s[i] < utf8.RuneSelf {
			ascii++
			i++
			continue
		}
		_, size := utf8.DecodeRuneInString(s[i:])
		other++
		i += size
	}
	return (ascii+3)/4 + other
}

// withMargin adds pct percent to n, rounding up.
func withMargin(n, pct int64) int64 { return n + (n*pct+99)/100 }

// rewrite is what the body mutation sets.
type rewrite struct {
	User       string
	MaxTokens  int64
	ForceUsage bool // stream: set stream_options.include_usage
	OpenRouter bool // built-in OpenRouter: also set usage.include
	// MaxTokenKey are the members set to MaxTokens (none for a request without a budget).
	MaxTokenKey []string
}

// rewriteBody returns the request body with Tollgate's changes: every member the client sent
// stays, in order, except those rewritten, which are set once at the end.
func (r *chatRequest) rewriteBody(w rewrite) ([]byte, error) {
	keys := w.MaxTokenKey
	replaced := map[string]bool{"user": true}
	for _, k := range keys {
		replaced[k] = true
	}
	if w.ForceUsage {
		replaced["stream_options"] = true
	}
	if w.OpenRouter {
		replaced["usage"] = true
	}
	out := make([]byte, 0, 64+sumLen(r.fields))
	out = append(out, '{')
	for _, m := range r.fields {
		if replaced[m.key] {
			continue
		}
		out = appendMember(out, m.key, m.raw)
	}
	for _, k := range keys {
		out = appendMember(out, k, strconv.AppendInt(nil, w.MaxTokens, 10))
	}
	user, err := json.Marshal(w.User)
	if err != nil {
		return nil, err
	}
	out = appendMember(out, "user", user)
	if w.ForceUsage {
		so := map[string]json.RawMessage{}
		if len(r.StreamOptions) > 0 {
			if err := json.Unmarshal(r.StreamOptions, &so); err != nil {
				return nil, err
			}
		}
		so["include_usage"] = json.RawMessage("true")
		raw, err := json.Marshal(so)
		if err != nil {
			return nil, err
		}
		out = appendMember(out, "stream_options", raw)
	}
	if w.OpenRouter {
		out = appendMember(out, "usage", json.RawMessage(`{"include":true}`))
	}
	out[len(out)-1] = '}'
	if len(r.fields) == 0 && len(out) == 1 {
		out = append(out, '}')
	}
	return out, nil
}

func appendMember(out []byte, key string, raw []byte) []byte {
	k, _ := json.Marshal(key) // a string always marshals
	out = append(out, k...)
	out = append(out, ':')
	out = append(out, raw...)
	return append(out, ',')
}

func sumLen(ms []member) int {
	n := 0
	for _, m := range ms {
		n += len(m.key) + len(m.raw) + 4
	}
	return n
}
