package fakeupstream

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// post sends a chat completion and returns the status, the body and the error reading it.
func post(t *testing.T, url, body string, h map[string]string) (int, string, error) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer k")
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if cerr := resp.Body.Close(); err == nil {
		err = cerr
	}
	return resp.StatusCode, string(b), err
}

func TestFakeUpstream(t *testing.T) {
	f := New(Options{Name: "t", RequireKey: "k", CompletionTokens: 5})
	srv := httptest.NewServer(f)
	defer srv.Close()
	msgs := `"messages":[{"role":"user","content":"one two three"}]`
	tests := []struct {
		name, body string
		header     map[string]string
		check      func(t *testing.T, status int, body string, err error, rec Request)
	}{
		{"json with usage, capped by max_tokens", `{"model":"m","max_tokens":3,` + msgs + `}`, nil, func(t *testing.T, st int, b string, _ error, rec Request) {
			if st != 200 || !strings.Contains(b, `"content":"w1 w2 w3 "`) || !strings.Contains(b, `"finish_reason":"length"`) || rec.Usage != (Usage{PromptTokens: 6, CompletionTokens: 3}) {
				t.Fatalf("%d %s %+v", st, b, rec.Usage)
			}
		}},
		{"stream without usage", `{"model":"m","stream":true,` + msgs + `}`, nil, func(t *testing.T, st int, b string, _ error, rec Request) {
			if st != 200 || strings.Contains(b, `"usage"`) || !strings.HasSuffix(b, "data: [DONE]\n\n") || strings.Count(b, "data: ") != 8 {
				t.Fatalf("%d %q", st, b)
			}
		}},
		{"stream with usage", `{"model":"m","stream":true,"stream_options":{"include_usage":true},` + msgs + `}`, map[string]string{"x-fake-split-bytes": "5", "x-fake-comment": "1"}, func(t *testing.T, st int, b string, _ error, rec Request) {
			if !rec.IncludeUsage || !strings.Contains(b, `"usage":{`) || !strings.HasPrefix(b, ": OPENROUTER PROCESSING") {
				t.Fatalf("%q", b)
			}
		}},
		{"error status", `{"model":"m",` + msgs + `}`, map[string]string{"x-fake-status": "429"}, func(t *testing.T, st int, b string, _ error, rec Request) {
			if st != 429 || !strings.Contains(b, `"error"`) {
				t.Fatalf("%d %s", st, b)
			}
		}},
		{"wrong key", `{}`, map[string]string{"Authorization": "Bearer nope"}, func(t *testing.T, st int, _ string, _ error, rec Request) {
			if st != 401 || rec.Authorization != "Bearer nope" {
				t.Fatalf("%d %+v", st, rec)
			}
		}},
		{"mid-stream disconnect", `{"model":"m","stream":true,` + msgs + `}`, map[string]string{"x-fake-disconnect-after": "2"}, func(t *testing.T, st int, b string, err error, rec Request) {
			if err == nil || strings.Contains(b, "[DONE]") {
				t.Fatalf("stream not cut: %q", b)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.Reset()
			status, b, err := post(t, srv.URL, tc.body, tc.header)
			reqs := f.Requests()
			if len(reqs) != 1 {
				t.Fatalf("recorded %d requests", len(reqs))
			}
			tc.check(t, status, b, err, reqs[0])
		})
	}
}
