// Package fakeupstream is a fake OpenAI-compatible upstream (a process-boundary fake, named as
// one): chat completions streamed or not, the usage chunk when asked for with
// stream_options.include_usage, configurable chunk sizes and delays, error statuses, mid-stream
// disconnects. It records what it received (credentials, headers, body) so tests can prove a
// request reached the right upstream with the right key. It is also the demo upstream of
// `make run` and docker compose.
//
// Behaviour is set per server (Options) and can be changed per request with headers:
//
//	x-fake-status: 429              answer with this status and an OpenAI-shaped error
//	x-fake-completion-tokens: 40    words (= tokens) in the completion, before max_tokens caps it
//	x-fake-words-per-chunk: 3       words per streamed delta
//	x-fake-delay-ms: 5              pause between streamed events
//	x-fake-ttfb-ms: 50              pause before the response headers
//	x-fake-split-bytes: 7           write the SSE stream in writes of at most this many bytes
//	x-fake-disconnect-after: 4      cut the connection after this many content deltas
//	x-fake-comment: 1               start the stream with ": OPENROUTER PROCESSING"
//
// Like OpenRouter, it keeps a record of every completion it started (GET …/generation?id=,
// answering {"data": {"native_tokens_prompt", "native_tokens_completion", …}}), with the whole
// completion's counts even when the stream was cut: the generation ran to its end, as it does
// at providers that do not stop on a disconnect.
package fakeupstream

import (
	"encoding/json"
	"fmt"
	"io"
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
	// MaxTokens is max_tokens or max_completion_tokens from the body (0: none).
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

// Requests returns a copy of every request received so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

// Reset forgets the recorded requests and the generation records (a long run keeps neither).
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = nil
	clear(s.gens)
}

func (s *Server) record(r Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = append(s.reqs, r)
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
	default:
		return writeError(w, http.StatusNotFound, "not_found", "fake upstream: no such endpoint "+r.Method+" "+r.URL.Path)
	}
	var req chatRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return writeError(w, http.StatusBadRequest, "invalid_json", "fake upstream: "+err.Error())
	}
	rec.Stream, rec.User = req.Stream, req.User
	rec.IncludeUsage = req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	n := int64(headerInt(r, "x-fake-completion-tokens", s.opts.CompletionTokens))
	finish := "stop"
	for _, cap := range []*int64{req.MaxTokens, req.MaxCompletionTokens} {
		if cap != nil {
			rec.MaxTokens = *cap
			if *cap < n {
				n, finish = *cap, "length"
			}
		}
	}
	prompt := promptTokens(req)
	rec.Usage = Usage{PromptTokens: prompt, CompletionTokens: n}
	s.mu.Lock()
	s.seq++
	id := fmt.Sprintf("chatcmpl-fake-%s-%d", s.opts.Name, s.seq)
	if s.gens == nil {
		s.gens = map[string]Usage{}
	}
	s.gens[id] = rec.Usage
	s.mu.Unlock()
	words := make([]string, n)
	for i := range words {
		words[i] = fmt.Sprintf("w%d ", i+1)
	}
	usage := map[string]any{
		"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n,
		"prompt_tokens_details":     map[string]any{"cached_tokens": 0},
		"completion_tokens_details": map[string]any{"reasoning_tokens": 0},
	}
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"id": id, "object": "chat.completion", "created": 1700000000, "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "finish_reason": finish,
				"message": map[string]any{"role": "assistant", "content": strings.Join(words, "")}}},
			"usage": usage,
		})
		return http.StatusOK
	}
	rec.Status = http.StatusOK // the headers go out before any cut
	return s.stream(w, r, id, req, words, finish, usage, rec.IncludeUsage)
}

// stream writes the SSE reply; the writer splits it into writes of at most split bytes.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, id string, req chatRequest, words []string, finish string, usage map[string]any, includeUsage bool) int {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	out := &splitWriter{w: w, rc: http.NewResponseController(w), max: headerInt(r, "x-fake-split-bytes", 0)}
	delay := s.opts.Delay
	if d := headerInt(r, "x-fake-delay-ms", -1); d >= 0 {
		delay = time.Duration(d) * time.Millisecond
	}
	perChunk := headerInt(r, "x-fake-words-per-chunk", s.opts.WordsPerChunk)
	cutAfter := headerInt(r, "x-fake-disconnect-after", -1)
	event := func(v any) {
		b, _ := json.Marshal(v)
		out.write("data: " + string(b) + "\n\n")
		if delay > 0 {
			time.Sleep(delay)
		}
	}
	chunk := func(delta map[string]any, finishReason any) map[string]any {
		return map[string]any{"id": id, "object": "chat.completion.chunk", "created": 1700000000, "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finishReason}}}
	}
	if headerInt(r, "x-fake-comment", 0) == 1 {
		out.write(": OPENROUTER PROCESSING\n\n")
	}
	event(chunk(map[string]any{"role": "assistant", "content": ""}, nil))
	sent := 0
	for i := 0; i < len(words); i += perChunk {
		if cutAfter >= 0 && sent >= cutAfter {
			out.flush()
			panic(http.ErrAbortHandler) // the connection is cut mid-stream
		}
		end := min(i+perChunk, len(words))
		event(chunk(map[string]any{"content": strings.Join(words[i:end], "")}, nil))
		sent++
	}
	event(chunk(map[string]any{}, finish))
	if includeUsage {
		event(map[string]any{"id": id, "object": "chat.completion.chunk", "created": 1700000000, "model": req.Model,
			"choices": []any{}, "usage": usage})
	}
	out.write("data: [DONE]\n\n")
	out.flush()
	return http.StatusOK
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
			n += int64(len(strings.Fields(text)))
		}
	}
	return max(n, 1)
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
