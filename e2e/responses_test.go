package e2e

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/tollgate-dev/tollgate/paywall"
)

func responseParams() responses.ResponseNewParams {
	return responses.ResponseNewParams{Model: model, Instructions: openai.String("Be brief."),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hello there, how are you")}}
}

// respond sends a non-streamed response request and returns it with the HTTP response's headers.
func respond(t *testing.T, c openai.Client, params responses.ResponseNewParams, opts ...option.RequestOption) (*responses.Response, http.Header) {
	t.Helper()
	var raw *http.Response
	res, err := c.Responses.New(t.Context(), params, append(opts, option.WithResponseInto(&raw))...)
	if err != nil {
		t.Fatalf("response: %v", err)
	}
	_ = raw.Body.Close() // the SDK has read it
	return res, raw.Header
}

// respondStream streams a response and returns the text of its deltas, the response its last
// event carried (zero if none came), and the stream's error.
func respondStream(t *testing.T, c openai.Client, opts ...option.RequestOption) (string, responses.Response, error) {
	t.Helper()
	st := c.Responses.NewStreaming(t.Context(), responseParams(), opts...)
	defer func() { _ = st.Close() }()
	var text strings.Builder
	var final responses.Response
	for st.Next() {
		switch ev := st.Current(); ev.Type {
		case "response.output_text.delta":
			text.WriteString(ev.Delta)
		case "response.completed", "response.incomplete":
			final = ev.Response
		}
	}
	return text.String(), final, st.Err()
}

// TestResponsesLifecycle walks one user through the Responses API with the official SDK: the
// authorize message (as a response, and as a stream of events), the top-up message, a charged
// response (exactly usage × prices), a charged stream, a response cut short by
// max_output_tokens, and a stream cut mid-way charged from an estimate.
func TestResponsesLifecycle(t *testing.T) {
	s := newStack(t)
	pw, key := s.createPaywall(t, byokPaywall())
	wallet := newWallet()
	c := s.client(key, "alice")

	t.Run("unknown user gets the authorize message", func(t *testing.T) {
		res, hdr := respond(t, c, responseParams())
		if hdr.Get("x-tollgate-action") != "authorize" || !strings.Contains(res.OutputText(), "/connect?t=") || res.Status != "completed" {
			t.Fatalf("got %q, status %q (action %q)", res.OutputText(), res.Status, hdr.Get("x-tollgate-action"))
		}
		text, final, err := respondStream(t, c)
		if err != nil || !strings.Contains(text, "/connect?t=") || final.OutputText() != text {
			t.Fatalf("streamed: %q (final %q), %v", text, final.OutputText(), err)
		}
		if n := len(s.demo.Requests()); n != 0 {
			t.Fatalf("the upstream was called %d times for an unauthorized user", n)
		}
	})

	if _, err := s.paywalls.Authorize(t.Context(), pw.ID, "alice", wallet); err != nil {
		t.Fatal(err)
	}
	t.Run("authorized without funds gets the top-up message", func(t *testing.T) {
		// Caches learn of the authorization within a second.
		eventually(t, "the top-up message after authorizing", 3*time.Second, func() bool {
			res, hdr := respond(t, c, responseParams())
			return hdr.Get("x-tollgate-action") == "topup" && strings.Contains(res.OutputText(), "/topup?t=")
		})
	})

	const depositMicro = 2_000_000
	s.deposit(t, wallet, depositMicro)
	left := int64(depositMicro) // what the wallet should hold

	t.Run("a response is charged exactly usage × prices", func(t *testing.T) {
		res, hdr := respond(t, c, responseParams())
		if hdr.Get("x-tollgate-action") != "" || !strings.HasPrefix(res.OutputText(), "w1 ") || res.Status != "completed" {
			t.Fatalf("not served: %q", res.OutputText())
		}
		reqs := s.demo.Requests()
		last := reqs[len(reqs)-1]
		if last.Path != "/v1/responses" || last.User != "alice" || last.MaxTokens <= 0 || res.Usage.InputTokens != last.Usage.PromptTokens {
			t.Errorf("upstream got %+v; client usage %+v", last, res.Usage)
		}
		left = s.chargedLast(t, pw, wallet, left)
		h := s.history(t, key, "alice")
		if capture := h.Items[0]; capture.Kind != "capture" || capture.Metadata["provider_id"] != res.ID || capture.Metadata["api"] != "responses" {
			t.Errorf("history's newest item %+v: want the capture of %s", capture, res.ID)
		}
	})

	t.Run("a stream is charged exactly, and the client sees the usage", func(t *testing.T) {
		text, final, err := respondStream(t, c)
		if err != nil || !strings.HasPrefix(text, "w1 ") || final.OutputText() != text {
			t.Fatalf("stream: %q (final %q), %v", text, final.OutputText(), err)
		}
		reqs := s.demo.Requests()
		if u := reqs[len(reqs)-1].Usage; final.Usage.OutputTokens != u.CompletionTokens || final.Usage.InputTokens != u.PromptTokens {
			t.Errorf("client saw usage %+v, upstream reported %+v", final.Usage, u)
		}
		left = s.chargedLast(t, pw, wallet, left)
	})

	t.Run("max_output_tokens reaches the upstream and its incomplete response is charged", func(t *testing.T) {
		params := responseParams()
		params.MaxOutputTokens = openai.Int(3)
		res, _ := respond(t, c, params, option.WithHeader("x-fake-completion-tokens", "50"))
		reqs := s.demo.Requests()
		if res.Status != "incomplete" || res.Usage.OutputTokens != 3 || reqs[len(reqs)-1].MaxTokens != 3 {
			t.Fatalf("status %q, usage %+v, upstream max %d", res.Status, res.Usage, reqs[len(reqs)-1].MaxTokens)
		}
		left = s.chargedLast(t, pw, wallet, left)
	})

	t.Run("a stream cut mid-way is charged an estimate", func(t *testing.T) {
		_, final, _ := respondStream(t, c, option.WithHeader("x-fake-disconnect-after", "3"), option.WithHeader("x-fake-completion-tokens", "50"))
		if final.Status != "" {
			t.Fatalf("the cut stream ended with %q", final.Status)
		}
		b := s.settled(t, wallet)
		charged := left - b.PostedMicro
		full := s.cost(t, pw, len(s.demo.Requests())-1) // what all 50 tokens would have cost
		if charged <= 0 || charged >= full {
			t.Fatalf("cut stream charged %d µUSDC; want an estimate in (0, %d)", charged, full)
		}
	})
}

// TestResponsesRefusals: what the built-in provider cannot price or keep is refused before
// anything is held or sent, as an OpenAI error the SDK reads; reading a stored response is not
// a Tollgate endpoint.
func TestResponsesRefusals(t *testing.T) {
	s := newStack(t)
	pw, key := s.createPaywall(t, paywall.Paywall{Mode: paywall.ModeBuiltin})
	wallet := newWallet()
	if _, err := s.paywalls.Authorize(t.Context(), pw.ID, "alice", wallet); err != nil {
		t.Fatal(err)
	}
	s.deposit(t, wallet, 1_000_000)
	c := s.client(key, "alice")

	webSearch := responseParams()
	webSearch.Tools = []responses.ToolUnionParam{{OfWebSearch: &responses.WebSearchToolParam{Type: responses.WebSearchToolTypeWebSearch}}}
	stored := responseParams()
	stored.PreviousResponseID = openai.String("resp_earlier")
	background := responseParams()
	background.Background = openai.Bool(true)
	for name, tt := range map[string]struct {
		params responses.ResponseNewParams
		param  string
	}{
		"hosted web search": {webSearch, "tools[0]"},
		"stored context":    {stored, "previous_response_id"},
		"background":        {background, "background"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := c.Responses.New(t.Context(), tt.params)
			var apiErr *openai.Error
			if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest || apiErr.Code != "unsupported_parameter" || apiErr.Param != tt.param {
				t.Fatalf("got %v", err)
			}
		})
	}
	_, err := c.Responses.Get(t.Context(), "resp_earlier", responses.ResponseGetParams{})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound || apiErr.Code != "unsupported_endpoint" {
		t.Fatalf("reading a stored response: %v", err)
	}
	if n := len(s.openrouter.Requests()); n != 0 {
		t.Fatalf("the upstream was called %d times", n)
	}
	if b := s.settled(t, wallet); b.PostedMicro != 1_000_000 {
		t.Fatalf("money moved: %+v", b)
	}
}
