// Package fakeupstream is a fake OpenAI-compatible upstream (a process-boundary fake, named as
// one): chat completions (POST …/chat/completions), OpenAI's Responses API (POST …/responses)
// and legacy text completions (POST …/completions), each streamed or not, embeddings
// (POST …/embeddings, vectors of 4), the usage chunk when asked for with
// stream_options.include_usage, configurable chunk sizes and delays, error
// statuses, mid-stream disconnects. It records what it received (credentials, headers, body) so
// tests can prove a request reached the right upstream with the right key. It is also the demo
// upstream of `make run` and docker compose.
//
// Behaviour is set per server (Options) and can be changed per request with headers:
//
//	x-fake-status: 429              answer with this status and an OpenAI-shaped error
//	x-fake-completion-tokens: 40    words (= tokens) in the completion, before max_tokens (or
//	                                max_completion_tokens, max_output_tokens) caps it
//	x-fake-words-per-chunk: 3       words per streamed delta
//	x-fake-delay-ms: 5              pause between streamed events
//	x-fake-ttfb-ms: 50              pause before the response headers
//	x-fake-split-bytes: 7           write the SSE stream in writes of at most this many bytes
//	x-fake-disconnect-after: 4      cut the connection after this many content deltas
//	x-fake-comment: 1               start the stream with ": OPENROUTER PROCESSING"
//
// A streamed Response is OpenAI's sequence of named events (response.created … response.completed,
// or response.incomplete when max_output_tokens cut it), with no "data: [DONE]".
//
// Like OpenRouter, it keeps a record of every completion and Response it started
// (GET …/generation?id=, answering {"data": {"native_tokens_prompt", "native_tokens_completion",
// …}}), with the whole completion's counts even when the stream was cut: the generation ran to
// its end, as it does at providers that do not stop on a disconnect.
package fakeupstream

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options are a server's defaults; request headers override them.
type Options struct {
	Name             string // shown in the completions ("fake:<name>")
	CompletionTokens int    // default 16
	WordsPerChunk    int    // default 1
	Delay            time.Duration
	// RequireKey, if set, is the only bearer token accepted (401 otherwise), so a test proves
	// the credential the request path attached.
	RequireKey string
}

// Usage is what the fake reported for one completion.
type Usage struct {
	PromptTokens, CompletionTokens int64
}

// Request is one request the fake received.
type Request struct {
	Method, Path  string
	Host          string
	Header        http.Header
	Authorization string
	Body          []byte
	// Stream and IncludeUsage are what the body asked for.
	Stream, IncludeUsage bool
	// MaxTokens is max_tokens, max_completion_tokens or max_output_tokens from the body (0: none).
	MaxTokens int64
	User      string
	// Usage is what the fake answered with (zero for errors).
	Usage Usage
	// Status is the HTTP status it answered with.
	Status int
}

// Server is the fake upstream; it is an http.Handler.
type Server struct {
	opts Options
	mu   sync.Mutex
	reqs []Request
	seq  int
	gens map[string]Usage // the record of each completion, by id
	// answering counts the requests being answered, not recorded yet (see Requests).
	answering int
}

// New returns a fake upstream.
func New(opts Options) *Server {
	if opts.CompletionTokens <= 0 {
		opts.CompletionTokens = 16
	}
	if opts.WordsPerChunk <= 0 {
		opts.WordsPerChunk = 1
	}
	if opts.Name == "" {
		opts.Name = "upstream"
	}
	return &Server{opts: opts}
}

// Requests returns a copy of every request received so far, in order. It first waits, a second
// at most, for the requests being answered to be recorded: a client reads a stream's last event
// ("data: [DONE]") before the handler has returned and recorded its request, and a test that
// then asks what the fake received must find it.
func (s *Server) Requests() []Request {
	deadline := time.Now().Add(time.Second)
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.answering > 0 && time.Now().Before(deadline) {
		s.mu.Unlock()
		time.Sleep(time.Millisecond)
		s.mu.Lock()
	}
	return append([]Request(nil), s.reqs...)
}

// Reset forgets the recorded requests and the generation records (a long run keeps neither).
func (s *Server) Reset() { s.Take() }

// Take returns the requests received since the last Take or Reset and forgets them and the
// generation records, at once: a request recorded meanwhile is neither returned nor lost.
func (s *Server) Take() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	reqs := s.reqs
	s.reqs = nil
	clear(s.gens)
	return reqs
}

func (s *Server) record(r Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = append(s.reqs, r)
	s.answering--
}

type chatRequest struct {
	Model               string `json:"model"`
	Stream              bool   `json:"stream"`
	MaxTokens           *int64 `json:"max_tokens"`
	MaxCompletionTokens *int64 `json:"max_completion_tokens"`
	User                string `json:"user"`
	StreamOptions       *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	Messages []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rec := Request{Method: r.Method, Path: r.URL.Path, Host: r.Host, Header: r.Header.Clone(), Authorization: r.Header.Get("Authorization"), Body: body}
	s.mu.Lock()
	s.answering++
	s.mu.Unlock()
	// Deferred so that a cut stream (which aborts the handler) is recorded too.
	defer func() { s.record(rec) }()
	rec.Status = s.serve(w, r, body, &rec)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, body []byte, rec *Request) int {
	if s.opts.RequireKey != "" && rec.Authorization != "Bearer "+s.opts.RequireKey {
		return writeError(w, http.StatusUnauthorized, "invalid_api_key", "fake upstream "+s.opts.Name+": wrong or missing API key")
	}
	if d := headerInt(r, "x-fake-ttfb-ms", 0); d > 0 {
		time.Sleep(time.Duration(d) * time.Millisecond)
	}
	if st := headerInt(r, "x-fake-status", 0); st >= 400 {
		return writeError(w, st, "fake_error", fmt.Sprintf("fake upstream %s: status %d as asked", s.opts.Name, st))
	}
	switch {
	case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/models"):
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"object":"list","data":[{"id":"fake/model","object":"model","owned_by":"fake"}]}`)
		return http.StatusOK
	case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/generation"):
		s.mu.Lock()
		u, ok := s.gens[r.URL.Query().Get("id")]
		s.mu.Unlock()
		if !ok {
			return writeError(w, http.StatusNotFound, "not_found", "fake upstream: no generation "+r.URL.Query().Get("id"))
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"id": r.URL.Query().Get("id"),
			"native_tokens_prompt": u.PromptTokens, "native_tokens_completion": u.CompletionTokens,
			"native_tokens_reasoning": 0, "native_tokens_cached": 0}})
		return http.StatusOK
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/chat/completions"):
		return s.chat(w, r, body, rec)
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/completions"):
		return s.textCompletion(w, r, body, rec)
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/responses"):
		return s.responses(w, r, body, rec)
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/embeddings"):
		return s.embeddings(w, body, rec)
	default:
		return writeError(w, http.StatusNotFound, "not_found", "fake upstream: no such endpoint "+r.Method+" "+r.URL.Path)
	}
}

// completion is one generation the fake answers with.
type completion struct {
	id     string
	words  []string // "w1 ", "w2 ", …: one token each
	capped bool     // a max-tokens cap cut it short
}

func (c completion) text() string { return strings.Join(c.words, "") }

// complete sizes a completion (x-fake-completion-tokens or the default, cut by the body's caps),
// fills rec's MaxTokens and Usage (choices completions of it), and keeps the generation record
// under idPrefix plus the next sequence suffix.
func (s *Server) complete(r *http.Request, rec *Request, idPrefix string, prompt, choices int64, caps ...*int64) completion {
	n := int64(headerInt(r, "x-fake-completion-tokens", s.opts.CompletionTokens))
	capped := false
	for _, c := range caps {
		if c != nil {
			rec.MaxTokens = *c
			if *c < n {
				n, capped = *c, true
			}
		}
	}
	rec.Usage = Usage{PromptTokens: prompt, CompletionTokens: n * choices}
	s.mu.Lock()
	s.seq++
	id := fmt.Sprintf("%sfake-%s-%d", idPrefix, s.opts.Name, s.seq)
	if s.gens == nil {
		s.gens = map[string]Usage{}
	}
	s.gens[id] = rec.Usage
	s.mu.Unlock()
	words := make([]string, n)
	for i := range words {
		words[i] = fmt.Sprintf("w%d ", i+1)
	}
	return completion{id: id, words: words, capped: capped}
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request, body []byte, rec *Request) int {
	var req chatRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return writeError(w, http.StatusBadRequest, "invalid_json", "fake upstream: "+err.Error())
	}
	rec.Stream, rec.User = req.Stream, req.User
	rec.IncludeUsage = req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	c := s.complete(r, rec, "chatcmpl-", promptTokens(req), 1, req.MaxTokens, req.MaxCompletionTokens)
	finish := "stop"
	if c.capped {
		finish = "length"
	}
	prompt, n := rec.Usage.PromptTokens, rec.Usage.CompletionTokens
	usage := map[string]any{
		"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n,
		"prompt_tokens_details":     map[string]any{"cached_tokens": 0},
		"completion_tokens_details": map[string]any{"reasoning_tokens": 0},
	}
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"id": c.id, "object": "chat.completion", "created": 1700000000, "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "finish_reason": finish,
				"message": map[string]any{"role": "assistant", "content": c.text()}}},
			"usage": usage,
		})
		return http.StatusOK
	}
	rec.Status = http.StatusOK // the headers go out before any cut
	sse := s.startStream(w, r)
	chunk := func(delta map[string]any, finishReason any) map[string]any {
		return map[string]any{"id": c.id, "object": "chat.completion.chunk", "created": 1700000000, "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finishReason}}}
	}
	sse.event("", chunk(map[string]any{"role": "assistant", "content": ""}, nil))
	sse.deltas(c.words, func(text string) { sse.event("", chunk(map[string]any{"content": text}, nil)) })
	sse.event("", chunk(map[string]any{}, finish))
	if rec.IncludeUsage {
		sse.event("", map[string]any{"id": c.id, "object": "chat.completion.chunk", "created": 1700000000, "model": req.Model,
			"choices": []any{}, "usage": usage})
	}
	sse.out.write("data: [DONE]\n\n")
	return http.StatusOK
}

// textCompletion answers a legacy completion: one choice per prompt (a string or an array of
// strings), each the same words, streamed as text_completion chunks or whole.
func (s *Server) textCompletion(w http.ResponseWriter, r *http.Request, body []byte, rec *Request) int {
	var req struct {
		Model         string          `json:"model"`
		Prompt        json.RawMessage `json:"prompt"`
		Stream        bool            `json:"stream"`
		MaxTokens     *int64          `json:"max_tokens"`
		User          string          `json:"user"`
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return writeError(w, http.StatusBadRequest, "invalid_json", "fake upstream: "+err.Error())
	}
	var prompts []string
	if json.Unmarshal(req.Prompt, &prompts) != nil {
		var one string
		if json.Unmarshal(req.Prompt, &one) != nil {
			return writeError(w, http.StatusBadRequest, "invalid_prompt", "fake upstream: 'prompt' must be a string or an array of strings")
		}
		prompts = []string{one}
	}
	var prompt int64
	for _, p := range prompts {
		prompt += max(wordCount(p), 1)
	}
	rec.Stream, rec.User = req.Stream, req.User
	rec.IncludeUsage = req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	c := s.complete(r, rec, "cmpl-", prompt, int64(len(prompts)), req.MaxTokens) // every prompt's choice is the same words
	finish := "stop"
	if c.capped {
		finish = "length"
	}
	n := rec.Usage.CompletionTokens
	usage := map[string]any{"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n}
	object := func(choices []any) map[string]any {
		return map[string]any{"id": c.id, "object": "text_completion", "created": 1700000000, "model": req.Model, "choices": choices}
	}
	choices := func(text string, finishReason any) []any {
		out := make([]any, len(prompts))
		for i := range out {
			out[i] = map[string]any{"text": text, "index": i, "logprobs": nil, "finish_reason": finishReason}
		}
		return out
	}
	if !req.Stream {
		v := object(choices(c.text(), finish))
		v["usage"] = usage
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
		return http.StatusOK
	}
	rec.Status = http.StatusOK // the headers go out before any cut
	sse := s.startStream(w, r)
	sse.deltas(c.words, func(text string) { sse.event("", object(choices(text, nil))) })
	sse.event("", object(choices("", finish)))
	if rec.IncludeUsage {
		v := object([]any{})
		v["usage"] = usage
		sse.event("", v)
	}
	sse.out.write("data: [DONE]\n\n")
	return http.StatusOK
}

// responsesRequest is the part of a Responses API request body the fake reads.
type responsesRequest struct {
	Model           string          `json:"model"`
	Stream          bool            `json:"stream"`
	MaxOutputTokens *int64          `json:"max_output_tokens"`
	User            string          `json:"user"`
	Instructions    string          `json:"instructions"`
	Input           json.RawMessage `json:"input"` // a string or a list of items
}

// responses answers the Responses API: one assistant message, as a Response object or as the
// stream of named events that builds one.
func (s *Server) responses(w http.ResponseWriter, r *http.Request, body []byte, rec *Request) int {
	var req responsesRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return writeError(w, http.StatusBadRequest, "invalid_json", "fake upstream: "+err.Error())
	}
	rec.Stream, rec.User = req.Stream, req.User
	c := s.complete(r, rec, "resp_", inputTokens(req), 1, req.MaxOutputTokens)
	msgID := "msg_" + strings.TrimPrefix(c.id, "resp_")
	status, itemStatus, incomplete := "completed", "completed", any(nil)
	if c.capped {
		status, itemStatus, incomplete = "incomplete", "incomplete", map[string]any{"reason": "max_output_tokens"}
	}
	in, out := rec.Usage.PromptTokens, rec.Usage.CompletionTokens
	usage := map[string]any{
		"input_tokens": in, "output_tokens": out, "total_tokens": in + out,
		"input_tokens_details":  map[string]any{"cached_tokens": 0, "cache_write_tokens": 0},
		"output_tokens_details": map[string]any{"reasoning_tokens": 0},
	}
	item := outputMessage(msgID, itemStatus, outputText(c.text()))
	final := responseObject(req, c.id, status, []any{item}, usage, incomplete)
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(final)
		return http.StatusOK
	}
	rec.Status = http.StatusOK // the headers go out before any cut
	sse := s.startStream(w, r)
	seq := 0
	event := func(typ string, fields map[string]any) {
		fields["type"], fields["sequence_number"] = typ, seq
		seq++
		sse.event(typ, fields)
	}
	part := func(fields map[string]any) map[string]any {
		fields["item_id"], fields["output_index"], fields["content_index"] = msgID, 0, 0
		return fields
	}
	running := responseObject(req, c.id, "in_progress", []any{}, nil, nil)
	event("response.created", map[string]any{"response": running})
	event("response.in_progress", map[string]any{"response": running})
	event("response.output_item.added", map[string]any{"output_index": 0, "item": outputMessage(msgID, "in_progress")})
	event("response.content_part.added", part(map[string]any{"part": outputText("")}))
	sse.deltas(c.words, func(text string) {
		event("response.output_text.delta", part(map[string]any{"delta": text, "logprobs": []any{}}))
	})
	event("response.output_text.done", part(map[string]any{"text": c.text(), "logprobs": []any{}}))
	event("response.content_part.done", part(map[string]any{"part": outputText(c.text())}))
	event("response.output_item.done", map[string]any{"output_index": 0, "item": item})
	event("response."+status, map[string]any{"response": final})
	return http.StatusOK
}

// responseObject is a Response as the API sends it, with every member the SDK requires.
func responseObject(req responsesRequest, id, status string, output []any, usage, incomplete any) map[string]any {
	return map[string]any{
		"id": id, "object": "response", "created_at": 1700000000, "status": status, "model": req.Model,
		"error": nil, "incomplete_details": incomplete, "output": output, "usage": usage,
		"instructions": nullIfEmpty(req.Instructions), "user": nullIfEmpty(req.User),
		"max_output_tokens": req.MaxOutputTokens, "previous_response_id": nil,
		"access_programs": map[string]any{"cyber": "standard"}, "metadata": map[string]any{},
		"parallel_tool_calls": true, "temperature": 1.0, "top_p": 1.0, "tool_choice": "auto", "tools": []any{},
		"text": map[string]any{"format": map[string]any{"type": "text"}}, "truncation": "disabled",
	}
}

func outputMessage(id, status string, content ...any) map[string]any {
	return map[string]any{"type": "message", "id": id, "status": status, "role": "assistant", "content": append([]any{}, content...)}
}

func outputText(text string) map[string]any {
	return map[string]any{"type": "output_text", "text": text, "annotations": []any{}, "logprobs": []any{}}
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// sseWriter writes one streamed reply shaped by the request's x-fake-* headers.
type sseWriter struct {
	out      *splitWriter
	delay    time.Duration // after each event
	perChunk int           // words per delta
	cutAfter int           // deltas before the connection is cut; -1: never
}

// startStream sends the event-stream headers, and the OpenRouter comment when asked for.
func (s *Server) startStream(w http.ResponseWriter, r *http.Request) *sseWriter {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	sse := &sseWriter{
		out:      &splitWriter{w: w, rc: http.NewResponseController(w), max: headerInt(r, "x-fake-split-bytes", 0)},
		delay:    s.opts.Delay,
		perChunk: max(headerInt(r, "x-fake-words-per-chunk", s.opts.WordsPerChunk), 1),
		cutAfter: headerInt(r, "x-fake-disconnect-after", -1),
	}
	if d := headerInt(r, "x-fake-delay-ms", -1); d >= 0 {
		sse.delay = time.Duration(d) * time.Millisecond
	}
	if headerInt(r, "x-fake-comment", 0) == 1 {
		sse.out.write(": OPENROUTER PROCESSING\n\n")
	}
	return sse
}

// event writes one event; a name goes in an "event:" line, as the Responses API names its events
// and chat completions do not.
func (e *sseWriter) event(name string, v any) {
	b, _ := json.Marshal(v)
	frame := "data: " + string(b) + "\n\n"
	if name != "" {
		frame = "event: " + name + "\n" + frame
	}
	e.out.write(frame)
	if e.delay > 0 {
		time.Sleep(e.delay)
	}
}

// deltas hands send the words perChunk at a time, and cuts the connection after cutAfter deltas.
func (e *sseWriter) deltas(words []string, send func(text string)) {
	for sent, i := 0, 0; i < len(words); sent, i = sent+1, i+e.perChunk {
		if e.cutAfter >= 0 && sent >= e.cutAfter {
			e.out.flush()
			panic(http.ErrAbortHandler) // the connection is cut mid-stream
		}
		send(strings.Join(words[i:min(i+e.perChunk, len(words))], ""))
	}
}

type splitWriter struct {
	w   io.Writer
	rc  *http.ResponseController
	max int
}

func (s *splitWriter) write(text string) {
	for text != "" {
		n := len(text)
		if s.max > 0 && n > s.max {
			n = s.max
		}
		_, _ = io.WriteString(s.w, text[:n])
		s.flush()
		text = text[n:]
	}
}

func (s *splitWriter) flush() { _ = s.rc.Flush() }

// promptTokens is the fake's deterministic token count: words in the string contents plus 3
// per message.
func promptTokens(req chatRequest) int64 {
	var n int64
	for _, m := range req.Messages {
		n += 3
		var text string
		if json.Unmarshal(m.Content, &text) == nil {
			n += wordCount(text)
		}
	}
	return max(n, 1)
}

// inputTokens is promptTokens for the Responses API: the words of the instructions and of a
// string input, or, for a list of items, 3 per item plus the words of its content.
func inputTokens(req responsesRequest) int64 {
	n := wordCount(req.Instructions)
	var items []struct {
		Content json.RawMessage `json:"content"`
	}
	if json.Unmarshal(req.Input, &items) == nil {
		for _, it := range items {
			n += 3 + contentWords(it.Content)
		}
	} else {
		n += contentWords(req.Input)
	}
	return max(n, 1)
}

// contentWords counts the words of a string, or of the text of each part in a list of parts.
func contentWords(raw json.RawMessage) int64 {
	var text string
	if json.Unmarshal(raw, &text) == nil {
		return wordCount(text)
	}
	var parts []struct {
		Text string `json:"text"`
	}
	_ = json.Unmarshal(raw, &parts)
	var n int64
	for _, p := range parts {
		n += wordCount(p.Text)
	}
	return n
}

func wordCount(s string) int64 { return int64(len(strings.Fields(s))) }

// embeddingDims is the length of the fake's vectors.
const embeddingDims = 4

// embeddings answers an embeddings request: one small vector per input, as floats or (with
// "encoding_format":"base64") as little-endian float32s in base64, and the usage: the words of
// each text input (at least 1), or the number of token ids.
func (s *Server) embeddings(w http.ResponseWriter, body []byte, rec *Request) int {
	var req struct {
		Model          string          `json:"model"`
		Input          json.RawMessage `json:"input"`
		User           string          `json:"user"`
		EncodingFormat string          `json:"encoding_format"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return writeError(w, http.StatusBadRequest, "invalid_json", "fake upstream: "+err.Error())
	}
	// One input: a string or a list of token ids; else a list of either.
	var ids []int64
	var inputs []json.RawMessage
	if json.Unmarshal(req.Input, &ids) == nil || json.Unmarshal(req.Input, &inputs) != nil {
		inputs = []json.RawMessage{req.Input}
	}
	var tokens int64
	data := make([]any, 0, len(inputs))
	for i, in := range inputs {
		var text string
		if json.Unmarshal(in, &text) == nil {
			tokens += max(wordCount(text), 1)
		} else if json.Unmarshal(in, &ids) == nil {
			tokens += int64(len(ids))
		}
		data = append(data, embeddingObject(i, req.EncodingFormat))
	}
	rec.User = req.User
	rec.Usage = Usage{PromptTokens: tokens}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"object": "list", "data": data, "model": req.Model,
		"usage": map[string]any{"prompt_tokens": tokens, "total_tokens": tokens}})
	return http.StatusOK
}

// embeddingObject is the i-th input's vector: 0.1, 0.2, … in the encoding asked for.
func embeddingObject(i int, format string) map[string]any {
	vec := make([]float32, embeddingDims)
	for d := range vec {
		vec[d] = float32(d+1) / 10
	}
	var embedding any = vec
	if format == "base64" {
		b := make([]byte, 0, 4*embeddingDims)
		for _, f := range vec {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
		}
		embedding = base64.StdEncoding.EncodeToString(b)
	}
	return map[string]any{"object": "embedding", "index": i, "embedding": embedding}
}

func writeError(w http.ResponseWriter, status int, code, msg string) int {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": "upstream_error", "code": code}})
	return status
}

func headerInt(r *http.Request, name string, def int) int {
	if v := r.Header.Get(name); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	return def
}
