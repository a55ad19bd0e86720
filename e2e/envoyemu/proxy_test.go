package envoyemu

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const chatBody = `{"model":"m","messages":[{"role":"user","content":"hello there"}]}`
const chatPath = "/v1/chat/completions"

// TestUnroutedRequestEndsAtTheDirectResponse: a server that only CONTINUEs sets no routing
// header, so the request stays on the route it started on (the local 404), which still goes
// through the response phases; the client's own routing header is stripped before ext_proc.
func TestUnroutedRequestEndsAtTheDirectResponse(t *testing.T) {
	h := newHarness(t, serve(func(*extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse { return nil }))
	resp, body := h.do(t, http.MethodPost, chatPath, chatBody, map[string]string{"x-tollgate-upstream": "demo", "content-type": "application/json"})
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "no_upstream") {
		t.Fatalf("status %d body %q, want the unrouted 404", resp.StatusCode, body)
	}
	l := h.log(t)
	if l.Route != "unrouted" || l.Details != "direct_response" {
		t.Errorf("route %q details %q", l.Route, l.Details)
	}
	_, msgs := h.end(t)
	if got, want := kinds(msgs), []string{"request_headers", "request_body", "response_headers", "response_body"}; !slices.Equal(got, want) {
		t.Errorf("messages %v, want %v", got, want)
	}
	if _, ok := header(msgs[0].GetRequestHeaders().GetHeaders(), "x-tollgate-upstream"); ok {
		t.Error("the client's x-tollgate-upstream reached the ext_proc server")
	}
	for _, k := range []string{":path", ":method", ":authority", ":scheme", "x-request-id", "content-length"} {
		if _, ok := header(msgs[0].GetRequestHeaders().GetHeaders(), k); !ok {
			t.Errorf("request_headers lacks %s", k)
		}
	}
	if msgs[0].GetProtocolConfig().GetRequestBodyMode() != extprocfilterv3.ProcessingMode_BUFFERED || msgs[1].GetProtocolConfig() != nil {
		t.Error("protocol_config must be in the first message only")
	}
	if !msgs[1].GetRequestBody().GetEndOfStream() || string(msgs[1].GetRequestBody().GetBody()) != chatBody {
		t.Error("BUFFERED request body must arrive whole, with end_of_stream")
	}
	if len(h.demo.Requests()) != 0 {
		t.Error("the demo upstream was called")
	}
}

// TestRouteCache: the routing header takes effect only when the same answer carries a header
// mutation and clear_route_cache; the built-in route rewrites the path and host and uses TLS.
func TestRouteCache(t *testing.T) {
	tests := []struct {
		name     string
		answer   *extprocv3.ProcessingResponse
		atBody   bool
		wantCode int
		wantUp   string // "demo", "openrouter" or ""
	}{
		{"header and clear at request headers", routeTo("demo", true), false, 200, "demo"},
		{"header and clear at request body", bodyCont(true, &extprocv3.CommonResponse{HeaderMutation: setHeaders("x-tollgate-upstream", "demo"), ClearRouteCache: true}), true, 200, "demo"},
		{"header without clear: route kept", routeTo("demo", false), false, 404, ""},
		{"clear without a header mutation: ignored", headersCont(true, &extprocv3.CommonResponse{ClearRouteCache: true}), false, 404, ""},
		{"built-in provider", routeTo("openrouter", true), false, 200, "openrouter"},
		{"unknown upstream name", routeTo("elsewhere", true), false, 404, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, serve(func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
				if (m.GetRequestHeaders() != nil && !tc.atBody) || (m.GetRequestBody() != nil && tc.atBody) {
					return tc.answer
				}
				return nil
			}))
			resp, body := h.do(t, http.MethodPost, chatPath, chatBody, nil)
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.wantCode)
			}
			d, o := h.demo.Requests(), h.openrouter.Requests()
			switch tc.wantUp {
			case "demo":
				if len(d) != 1 || len(o) != 0 || d[0].Path != chatPath {
					t.Fatalf("demo %v openrouter %v", d, o)
				}
			case "openrouter":
				if len(o) != 1 || len(d) != 0 || o[0].Path != "/api/v1/chat/completions" || o[0].Host != "openrouter.ai" {
					t.Fatalf("openrouter got %+v", o)
				}
			default:
				if len(d)+len(o) != 0 {
					t.Fatal("an upstream was called")
				}
			}
		})
	}
}

// TestHeaderMutationRules: x-envoy-*, :method, :authority, host and :scheme are not settable;
// ":" headers and host are not removable; values come from raw_value; an invalid mutation is a
// 500.
func TestHeaderMutationRules(t *testing.T) {
	t.Run("ignored and applied", func(t *testing.T) {
		h := newHarness(t, serve(func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
			if m.GetRequestHeaders() == nil {
				return nil
			}
			mut := setHeaders("x-tollgate-upstream", "demo", "authorization", "Bearer upstream-key", "x-custom", "yes",
				"x-envoy-evil", "1", ":method", "DELETE", ":authority", "evil.example", "host", "evil.example", ":scheme", "https")
			mut.SetHeaders = append(mut.SetHeaders, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "x-via-value", Value: "lost"}})
			mut.RemoveHeaders = []string{":path", "host", "x-drop-me"}
			return headersCont(true, &extprocv3.CommonResponse{HeaderMutation: mut, ClearRouteCache: true})
		}))
		resp, body := h.do(t, http.MethodPost, chatPath, chatBody, map[string]string{"authorization": "Bearer tg_key", "x-drop-me": "1"})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d %s", resp.StatusCode, body)
		}
		got := h.demo.Requests()[0]
		checks := map[string]bool{
			"authorization replaced":     got.Authorization == "Bearer upstream-key",
			"x-custom set":               got.Header.Get("x-custom") == "yes",
			"x-envoy-* ignored":          got.Header.Get("x-envoy-evil") == "",
			":method ignored":            got.Method == http.MethodPost,
			":authority/host ignored":    !strings.Contains(got.Host, "evil"),
			":path not removable":        got.Path == chatPath,
			"x-drop-me removed":          got.Header.Get("x-drop-me") == "",
			"value (not raw_value) → ''": len(got.Header.Values("x-via-value")) == 1 && got.Header.Get("x-via-value") == "",
		}
		for what, ok := range checks {
			if !ok {
				t.Errorf("%s: upstream saw %+v", what, got)
			}
		}
	})
	t.Run("value and raw_value both set: 500", func(t *testing.T) {
		h := newHarness(t, serve(func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
			if m.GetRequestHeaders() == nil {
				return nil
			}
			return headersCont(true, &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
				{Header: &corev3.HeaderValue{Key: "x-a", Value: "1", RawValue: []byte("1")}}}}})
		}))
		resp, _ := h.do(t, http.MethodPost, chatPath, chatBody, nil)
		if resp.StatusCode != http.StatusInternalServerError {
			t.Fatalf("status %d, want 500", resp.StatusCode)
		}
	})
}

// TestContentLength: in BUFFERED mode with headers SEND, a body mutation must come with the
// mutated length in content-length, or the request fails; a correct one reaches upstream.
func TestContentLength(t *testing.T) {
	newBody := `{"model":"m","max_tokens":7,"messages":[{"role":"user","content":"hello there"}]}`
	for _, tc := range []struct {
		name     string
		setCL    bool
		wantCode int
	}{{"mutated length set", true, 200}, {"stale length", false, 500}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, routed("demo", func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
				if m.GetRequestBody() == nil {
					return nil
				}
				cr := &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: []byte(newBody)}}}
				if tc.setCL {
					cr.HeaderMutation = setHeaders("content-length", strconv.Itoa(len(newBody)))
				}
				return bodyCont(true, cr)
			}))
			resp, _ := h.do(t, http.MethodPost, chatPath, chatBody, nil)
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.wantCode)
			}
			if tc.wantCode == 200 {
				got := h.demo.Requests()[0]
				if string(got.Body) != newBody || got.MaxTokens != 7 {
					t.Fatalf("upstream got %q", got.Body)
				}
			} else if len(h.demo.Requests()) != 0 {
				t.Fatal("a rejected mutation still reached the upstream")
			}
			if l := h.log(t); tc.wantCode == 500 && l.Details != "mismatch_between_content_length_and_the_length_of_the_mutated_body" {
				t.Errorf("details %q", l.Details)
			}
		})
	}
}

// TestContentLengthResponse: the same rule for a BUFFERED response body: a body mutation with
// the upstream's content-length still in place fails with 500; with it removed the mutated
// body reaches the client.
func TestContentLengthResponse(t *testing.T) {
	newBody := `{"replaced":true,"by":"the ext_proc server"}`
	for _, tc := range []struct {
		name     string
		removeCL bool
		wantCode int
	}{{"length removed", true, 200}, {"stale length", false, 500}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, routed("demo", func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
				switch {
				case m.GetResponseHeaders() != nil:
					cr := &extprocv3.CommonResponse{}
					if tc.removeCL {
						cr.HeaderMutation = &extprocv3.HeaderMutation{RemoveHeaders: []string{"content-length"}}
					}
					return headersCont(false, cr)
				case m.GetResponseBody() != nil:
					return bodyCont(false, &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: []byte(newBody)}}})
				}
				return nil
			}))
			resp, body := h.do(t, http.MethodPost, chatPath, chatBody, nil)
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, tc.wantCode, body)
			}
			if tc.wantCode == 200 && body != newBody {
				t.Errorf("client got %q, want the mutated body", body)
			}
			if l := h.log(t); tc.wantCode == 500 && l.Details != "mismatch_between_content_length_and_the_length_of_the_mutated_body" {
				t.Errorf("details %q", l.Details)
			}
		})
	}
}

var streamedOverride = &extprocfilterv3.ProcessingMode{ResponseBodyMode: extprocfilterv3.ProcessingMode_STREAMED}

// upperChunks answers response headers with a STREAMED override (when override is set) and
// upper-cases each response body chunk.
func upperChunks(override *extprocfilterv3.ProcessingMode, overrideOnBody bool) script {
	return routed("demo", func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
		switch {
		case m.GetResponseHeaders() != nil:
			a := headersCont(false, &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{RemoveHeaders: []string{"content-length"}}})
			if !overrideOnBody {
				a.ModeOverride = override
			}
			return a
		case m.GetResponseBody() != nil:
			a := bodyCont(false, &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{
				Body: bytes.ToUpper(m.GetResponseBody().GetBody())}}})
			if overrideOnBody {
				a.ModeOverride = override
			}
			return a
		}
		return nil
	})
}

// TestModeOverride: STREAMED only through an override on a header answer, only when
// allow_mode_override is on and the result is in allowed_override_modes; in STREAMED every
// chunk is its own message and its own mutation.
func TestModeOverride(t *testing.T) {
	tests := []struct {
		name         string
		script       script
		replacements []string
		wantStreamed bool
	}{
		{"override at response headers", upperChunks(streamedOverride, false), nil, true},
		{"override on a body answer is ignored", upperChunks(streamedOverride, true), nil, false},
		{"allow_mode_override off", upperChunks(streamedOverride, false), []string{"allow_mode_override: true", "allow_mode_override: false"}, false},
		{"not in allowed_override_modes", upperChunks(&extprocfilterv3.ProcessingMode{ResponseBodyMode: extprocfilterv3.ProcessingMode_STREAMED,
			ResponseTrailerMode: extprocfilterv3.ProcessingMode_SEND}, false), nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.script, tc.replacements...)
			resp, body := h.do(t, http.MethodPost, chatPath, `{"model":"m","stream":true,"messages":[]}`, map[string]string{"x-fake-split-bytes": "40", "x-fake-delay-ms": "2"})
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if !strings.Contains(body, "DATA: [DONE]") {
				t.Fatalf("body not mutated: %q", body)
			}
			_, msgs := h.end(t)
			n := strings.Count(strings.Join(kinds(msgs), ","), "response_body")
			if tc.wantStreamed && n < 10 {
				t.Fatalf("STREAMED: %d response_body messages, want one per chunk", n)
			}
			if !tc.wantStreamed && n != 1 {
				t.Fatalf("BUFFERED: %d response_body messages, want 1", n)
			}
			last := msgs[len(msgs)-1].GetResponseBody()
			if !last.GetEndOfStream() {
				t.Error("the last response_body must carry end_of_stream")
			}
			if tc.wantStreamed && resp.Header.Get("Content-Length") != "" {
				t.Error("STREAMED reply kept a content-length")
			}
		})
	}
}

// TestImmediateResponse: at request headers it answers the client and nothing reaches the
// upstream; at a BUFFERED response body it replaces the reply cleanly; in STREAMED, after the
// headers went out, it resets the stream.
func TestImmediateResponse(t *testing.T) {
	imm := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode_PaymentRequired},
		Headers: setHeaders("content-type", "application/json", "x-tollgate-action", "topup"),
		Body:    []byte(`{"error":{"message":"top up"}}`),
		Details: "tollgate topup",
	}}}
	t.Run("at request headers", func(t *testing.T) {
		h := newHarness(t, serve(func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
			if m.GetRequestHeaders() != nil {
				return imm
			}
			t.Errorf("message after an ImmediateResponse: %v", kinds([]*extprocv3.ProcessingRequest{m}))
			return nil
		}))
		resp, body := h.do(t, http.MethodPost, chatPath, chatBody, nil)
		if resp.StatusCode != http.StatusPaymentRequired || resp.Header.Get("x-tollgate-action") != "topup" || resp.Header.Get("content-type") != "application/json" || body != `{"error":{"message":"top up"}}` {
			t.Fatalf("got %d %v %q", resp.StatusCode, resp.Header, body)
		}
		if l := h.log(t); l.Details != "tollgate_topup" {
			t.Errorf("details %q", l.Details)
		}
		if len(h.demo.Requests()) != 0 {
			t.Error("upstream called")
		}
	})
	t.Run("at a buffered response body", func(t *testing.T) {
		h := newHarness(t, routed("demo", func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
			if m.GetResponseBody() != nil {
				return imm
			}
			return nil
		}))
		resp, body := h.do(t, http.MethodPost, chatPath, chatBody, nil)
		if resp.StatusCode != http.StatusPaymentRequired || !strings.Contains(body, "top up") {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	})
	t.Run("in a streamed response", func(t *testing.T) {
		h := newHarness(t, routed("demo", func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
			if m.GetResponseHeaders() != nil {
				return &extprocv3.ProcessingResponse{Response: headersCont(false, nil).Response, ModeOverride: streamedOverride}
			}
			if m.GetResponseBody() != nil {
				return imm
			}
			return nil
		}))
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, h.url+chatPath, strings.NewReader(`{"model":"m","stream":true,"messages":[]}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		if _, err := io.ReadAll(resp.Body); err == nil {
			t.Fatal("the stream ended cleanly; want a reset")
		}
		if l := h.log(t); !l.Reset {
			t.Errorf("log %+v: want Reset", l)
		}
	})
}

// TestOneAnswerPerMessage: a second answer, an answer of the wrong type, or no answer at all
// fails the request (500, 500, 504: fail closed).
func TestOneAnswerPerMessage(t *testing.T) {
	tests := []struct {
		name         string
		script       script
		replacements []string
		wantCode     int
		wantDetails  string
	}{
		{"two answers to one message", func(s *scripted) error {
			s.recv()
			s.send(routeTo("demo", true))
			s.send(routeTo("demo", true))
			for s.recv() != nil {
			}
			return nil
		}, nil, 500, "spurious_message"},
		{"wrong answer type", func(s *scripted) error {
			s.recv()
			s.send(headersCont(false, nil))
			for s.recv() != nil {
			}
			return nil
		}, nil, 500, "spurious_message"},
		{"no answer", func(s *scripted) error {
			for s.recv() != nil {
			}
			return nil
		}, []string{"message_timeout: 2s", "message_timeout: 0.3s"}, 504, "ext_proc_error_per-message_timeout_exceeded"},
		{"gRPC error", func(s *scripted) error {
			s.recv()
			return status.Error(codes.Internal, "ledger down")
		}, nil, 500, "ext_proc_error_gRPC_error_13{ledger_down}"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.script, tc.replacements...)
			resp, _ := h.do(t, http.MethodPost, chatPath, chatBody, nil)
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.wantCode)
			}
			if l := h.log(t); l.Details != tc.wantDetails {
				t.Errorf("details %q, want %q", l.Details, tc.wantDetails)
			}
			if len(h.demo.Requests()) != 0 {
				t.Error("the upstream was called")
			}
		})
	}
}

// TestServerCloseContinuesWithoutIt: a server that ends the stream cleanly without answering
// lets Envoy go on unprocessed (documented Envoy behaviour); with our routes that is the local
// 404, never an upstream.
func TestServerCloseContinuesWithoutIt(t *testing.T) {
	h := newHarness(t, func(s *scripted) error { s.recv(); return nil })
	resp, _ := h.do(t, http.MethodPost, chatPath, chatBody, nil)
	if resp.StatusCode != http.StatusNotFound || len(h.demo.Requests()) != 0 {
		t.Fatalf("status %d, demo calls %d", resp.StatusCode, len(h.demo.Requests()))
	}
}

// TestStreamEnds: after the last answer the stream is half-closed (the server sees EOF, not a
// cancel); a client that goes away mid-stream cancels it; so does an upstream that cuts the
// stream, and the client sees the cut.
func TestStreamEnds(t *testing.T) {
	streamed := func(s *scripted) error {
		return routed("demo", func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
			if m.GetResponseHeaders() != nil {
				return &extprocv3.ProcessingResponse{Response: headersCont(false, nil).Response, ModeOverride: streamedOverride}
			}
			return nil
		})(s)
	}
	t.Run("completed", func(t *testing.T) {
		h := newHarness(t, streamed)
		resp, _ := h.do(t, http.MethodPost, chatPath, `{"model":"m","stream":true,"messages":[]}`, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatal(resp.StatusCode)
		}
		if end, _ := h.end(t); !end.eof || end.cancelled {
			t.Fatalf("end %+v, want EOF without cancel", end)
		}
	})
	t.Run("client goes away", func(t *testing.T) {
		h := newHarness(t, streamed)
		ctx, cancel := context.WithCancel(t.Context())
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.url+chatPath, strings.NewReader(`{"model":"m","stream":true,"messages":[]}`))
		req.Header.Set("x-fake-delay-ms", "50")
		req.Header.Set("x-fake-completion-tokens", "100")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		_, _ = resp.Body.Read(buf)
		cancel()
		_ = resp.Body.Close()
		if end, _ := h.end(t); !end.cancelled {
			t.Fatalf("end %+v, want the stream cancelled", end)
		}
		if l := h.log(t); !l.ClientGone {
			t.Errorf("log %+v", l)
		}
	})
	t.Run("upstream cuts the stream", func(t *testing.T) {
		h := newHarness(t, streamed)
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, h.url+chatPath, strings.NewReader(`{"model":"m","stream":true,"messages":[]}`))
		req.Header.Set("x-fake-disconnect-after", "3")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err == nil {
			t.Fatal("client saw a clean end of a cut stream")
		}
		if end, _ := h.end(t); !end.cancelled || end.eof {
			t.Fatalf("end %+v, want a cancel", end)
		}
	})
}

// TestBufferLimit: a request body over per_connection_buffer_limit_bytes is refused with 413
// before the body reaches the processor.
func TestBufferLimit(t *testing.T) {
	h := newHarness(t, serve(func(*extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse { return nil }),
		"per_connection_buffer_limit_bytes: 16777216", "per_connection_buffer_limit_bytes: 1024")
	resp, _ := h.do(t, http.MethodPost, chatPath, `{"x":"`+strings.Repeat("a", 2048)+`"}`, nil)
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413", resp.StatusCode)
	}
	_, msgs := h.end(t)
	if slices.Contains(kinds(msgs), "request_body") {
		t.Error("an over-limit body was sent to the processor")
	}
}

// TestAPIRoutesSkipExtProc: the API and hosted pages go to tollgate_http with the filter
// disabled: no stream is opened.
func TestAPIRoutesSkipExtProc(t *testing.T) {
	h := newHarness(t, func(s *scripted) error {
		t.Error("ext_proc stream opened for an API route")
		return nil
	})
	for _, path := range []string{"/api/v1/balance", "/connect?t=abc", "/assets/app.js", "/pages/v1/topup?t=x"} {
		resp, _ := h.do(t, http.MethodGet, path, "", nil)
		if resp.StatusCode != http.StatusNotFound { // the fake answers 404 for paths it does not serve
			t.Fatalf("%s: status %d", path, resp.StatusCode)
		}
		if l := h.log(t); l.Cluster != "tollgate_http" || len(l.Sent) != 0 {
			t.Fatalf("%s: log %+v", path, l)
		}
	}
	if n := len(h.api.Requests()); n != 4 {
		t.Fatalf("api got %d requests", n)
	}
}

// TestContinueAndReplace: CONTINUE_AND_REPLACE at request headers replaces the body and ends
// the request direction (no request_body message).
func TestContinueAndReplace(t *testing.T) {
	h := newHarness(t, serve(func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
		if m.GetRequestHeaders() != nil {
			return headersCont(true, &extprocv3.CommonResponse{Status: extprocv3.CommonResponse_CONTINUE_AND_REPLACE,
				HeaderMutation: setHeaders("x-tollgate-upstream", "demo"), ClearRouteCache: true,
				BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: []byte(`{"model":"r","messages":[]}`)}}})
		}
		return nil
	}))
	resp, _ := h.do(t, http.MethodPost, chatPath, chatBody, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatal(resp.StatusCode)
	}
	var got struct{ Model string }
	_ = json.Unmarshal(h.demo.Requests()[0].Body, &got)
	if got.Model != "r" {
		t.Fatalf("upstream body %s", h.demo.Requests()[0].Body)
	}
	_, msgs := h.end(t)
	if slices.Contains(kinds(msgs), "request_body") {
		t.Error("request_body sent after CONTINUE_AND_REPLACE")
	}
}

// TestOverrideMessageTimeout: without max_message_timeout the server cannot extend the timer.
func TestOverrideMessageTimeout(t *testing.T) {
	h := newHarness(t, func(s *scripted) error {
		s.recv()
		s.send(&extprocv3.ProcessingResponse{OverrideMessageTimeout: durationpbOf(5 * time.Second)})
		for s.recv() != nil {
		}
		return nil
	}, "message_timeout: 2s", "message_timeout: 0.3s")
	resp, _ := h.do(t, http.MethodPost, chatPath, chatBody, nil)
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504", resp.StatusCode)
	}
}

// TestMessageWaits: the request log says how long each message waited for its answer, from
// send to receipt, streamed chunks included (each from its own send, while others are in flight).
func TestMessageWaits(t *testing.T) {
	// bodyDelay is long beside a loopback round trip, so that a request_headers wait reaching it
	// can only be another message's.
	const bodyDelay, chunkDelay = 100 * time.Millisecond, 5 * time.Millisecond
	upper := upperChunks(streamedOverride, false)
	h := newHarness(t, func(s *scripted) error {
		return upper(&scripted{t: s.t, st: &delayingStream{ExternalProcessor_ProcessServer: s.st, delay: func(m *extprocv3.ProcessingRequest) time.Duration {
			switch {
			case m.GetRequestBody() != nil:
				return bodyDelay
			case m.GetResponseBody() != nil:
				return chunkDelay
			}
			return 0
		}}})
	})
	resp, _ := h.do(t, http.MethodPost, chatPath, `{"model":"m","stream":true,"messages":[]}`, map[string]string{"x-fake-split-bytes": "40", "x-fake-delay-ms": "1"})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	l := h.log(t)
	h.end(t)
	if len(l.Waits) != len(l.Sent) {
		t.Fatalf("%d waits for %d messages", len(l.Waits), len(l.Sent))
	}
	chunks := 0
	for i, kind := range l.Sent {
		w := l.Waits[i]
		switch {
		case w <= 0:
			t.Errorf("%s (#%d): no wait recorded", kind, i)
		case kind == "request_body" && w < bodyDelay:
			t.Errorf("request_body waited %v, answered after %v", w, bodyDelay)
		case kind == "request_headers" && w >= bodyDelay:
			t.Errorf("request_headers waited %v: another message's wait", w)
		case kind == "response_body":
			chunks++
			if w < chunkDelay {
				t.Errorf("response_body #%d waited %v, answered after %v", i, w, chunkDelay)
			}
		}
	}
	if chunks < 10 {
		t.Fatalf("%d response_body messages, want one per chunk (%v)", chunks, l.Sent)
	}
}

// delayingStream answers each message after delay(message): it remembers the last message
// received and sleeps before sending its answer.
type delayingStream struct {
	extprocv3.ExternalProcessor_ProcessServer
	delay func(*extprocv3.ProcessingRequest) time.Duration
	last  *extprocv3.ProcessingRequest
}

func (d *delayingStream) Recv() (*extprocv3.ProcessingRequest, error) {
	m, err := d.ExternalProcessor_ProcessServer.Recv()
	d.last = m
	return m, err
}

func (d *delayingStream) Send(r *extprocv3.ProcessingResponse) error {
	if d.last != nil {
		time.Sleep(d.delay(d.last))
	}
	return d.ExternalProcessor_ProcessServer.Send(r)
}
