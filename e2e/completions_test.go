package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

func completionParams(prompts ...string) openai.CompletionNewParams {
	p := openai.CompletionNewParams{Model: openai.CompletionNewParamsModel(model)}
	if len(prompts) == 1 {
		p.Prompt = openai.CompletionNewParamsPromptUnion{OfString: openai.String(prompts[0])}
	} else {
		p.Prompt = openai.CompletionNewParamsPromptUnion{OfArrayOfStrings: prompts}
	}
	return p
}

// completeStream streams a legacy completion and returns the text of its first choice and the
// usage of its last chunk (zero if none came).
func completeStream(t *testing.T, c openai.Client, params openai.CompletionNewParams) (string, openai.CompletionUsage, error) {
	t.Helper()
	st := c.Completions.NewStreaming(t.Context(), params)
	defer func() { _ = st.Close() }()
	var text strings.Builder
	var usage openai.CompletionUsage
	for st.Next() {
		ch := st.Current()
		for _, choice := range ch.Choices {
			if choice.Index == 0 {
				text.WriteString(choice.Text)
			}
		}
		if ch.Usage.TotalTokens > 0 {
			usage = ch.Usage
		}
	}
	return text.String(), usage, st.Err()
}

// TestCompletionsLifecycle walks one user through legacy text completions with the official SDK:
// the authorize message (as a completion, and as a stream), the top-up message, a charged
// completion of two prompts (exactly usage × prices), and a charged stream whose usage chunk,
// asked for by Tollgate, the client never sees.
func TestCompletionsLifecycle(t *testing.T) {
	s := newStack(t)
	pw, key := s.createPaywall(t, byokPaywall())
	wallet := newWallet()
	c := s.client(key, "alice")

	complete := func(t *testing.T, params openai.CompletionNewParams) (*openai.Completion, http.Header) {
		t.Helper()
		var raw *http.Response
		res, err := c.Completions.New(t.Context(), params, option.WithResponseInto(&raw))
		if err != nil {
			t.Fatalf("completion: %v", err)
		}
		return res, raw.Header
	}
	t.Run("unknown user gets the authorize message", func(t *testing.T) {
		res, hdr := complete(t, completionParams("Once upon a time"))
		if hdr.Get("x-tollgate-action") != "authorize" || len(res.Choices) != 1 || !strings.Contains(res.Choices[0].Text, "/connect?t=") {
			t.Fatalf("got %+v (action %q)", res.Choices, hdr.Get("x-tollgate-action"))
		}
		text, _, err := completeStream(t, c, completionParams("Once upon a time"))
		if err != nil || !strings.Contains(text, "/connect?t=") {
			t.Fatalf("streamed: %q, %v", text, err)
		}
		if n := len(s.demo.Requests()); n != 0 {
			t.Fatalf("the upstream was called %d times for an unauthorized user", n)
		}
	})

	if _, err := s.paywalls.Authorize(t.Context(), pw.ID, "alice", wallet); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the top-up message after authorizing", 3*time.Second, func() bool {
		res, hdr := complete(t, completionParams("Once upon a time"))
		return hdr.Get("x-tollgate-action") == "topup" && strings.Contains(res.Choices[0].Text, "/topup?t=")
	})

	const depositMicro = 1_000_000
	s.deposit(t, wallet, depositMicro)
	left := int64(depositMicro) // what the wallet should hold

	t.Run("two prompts are charged exactly usage × prices", func(t *testing.T) {
		params := completionParams("Once upon a time", "In a galaxy far away")
		params.MaxTokens = openai.Int(5)
		res, hdr := complete(t, params)
		if hdr.Get("x-tollgate-action") != "" || len(res.Choices) != 2 || res.Choices[1].Text != "w1 w2 w3 w4 w5 " || res.Choices[1].FinishReason != "length" {
			t.Fatalf("not served: %+v", res.Choices)
		}
		reqs := s.demo.Requests()
		last := reqs[len(reqs)-1]
		if last.Path != "/v1/completions" || last.User != "alice" || last.MaxTokens != 5 ||
			res.Usage.PromptTokens != last.Usage.PromptTokens || res.Usage.CompletionTokens != 10 {
			t.Errorf("upstream got %+v; client usage %+v", last, res.Usage)
		}
		left = s.chargedLast(t, pw, wallet, left)
	})

	t.Run("a stream is charged exactly, its usage chunk hidden", func(t *testing.T) {
		text, usage, err := completeStream(t, c, completionParams("Once upon a time"))
		if err != nil || !strings.HasPrefix(text, "w1 ") {
			t.Fatalf("stream: %q, %v", text, err)
		}
		reqs := s.demo.Requests()
		if last := reqs[len(reqs)-1]; !last.Stream || !last.IncludeUsage || usage.TotalTokens != 0 {
			t.Errorf("upstream got %+v; the client saw usage %+v", last, usage)
		}
		left = s.chargedLast(t, pw, wallet, left)
	})
}
