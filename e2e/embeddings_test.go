package e2e

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

func embeddingParams(texts ...string) openai.EmbeddingNewParams {
	return openai.EmbeddingNewParams{Model: model, Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: texts}}
}

// TestEmbeddingsLifecycle walks one user through embeddings with the official SDK: an error
// carrying the authorize link (402), then the top-up link, then vectors charged exactly the
// usage × the input price, in float and base64 form.
func TestEmbeddingsLifecycle(t *testing.T) {
	s := newStack(t)
	pw, key := s.createPaywall(t, byokPaywall())
	wallet := newWallet()
	c := s.client(key, "alice")

	paywallError := func(t *testing.T, code, link string) bool {
		t.Helper()
		_, err := c.Embeddings.New(t.Context(), embeddingParams("hello there"))
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) {
			t.Fatalf("got %v, want an API error", err)
		}
		return apiErr.StatusCode == http.StatusPaymentRequired && apiErr.Code == code && strings.Contains(apiErr.Message, link) &&
			apiErr.Response.Header.Get("x-tollgate-action") != ""
	}
	if !paywallError(t, "authorization_required", "/connect?t=") {
		t.Fatal("no authorize error")
	}
	if _, err := s.paywalls.Authorize(t.Context(), pw.ID, "alice", wallet); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the top-up error after authorizing", 3*time.Second, func() bool {
		return paywallError(t, "insufficient_funds", "/topup?t=")
	})
	if n := len(s.demo.Requests()); n != 0 {
		t.Fatalf("the upstream was called %d times before the wallet could pay", n)
	}

	const depositMicro = 1_000_000
	s.deposit(t, wallet, depositMicro)
	left := int64(depositMicro) // what the wallet should hold
	for _, format := range []openai.EmbeddingNewParamsEncodingFormat{openai.EmbeddingNewParamsEncodingFormatFloat, openai.EmbeddingNewParamsEncodingFormatBase64} {
		t.Run(string(format), func(t *testing.T) {
			params := embeddingParams("hello there", "how are you today")
			params.EncodingFormat = format
			var raw *http.Response
			res, err := c.Embeddings.New(t.Context(), params, option.WithResponseInto(&raw))
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Data) != 2 || len(res.Data[1].Embedding) != 4 || res.Data[1].Embedding[0] < 0.09 || raw.Header.Get("x-tollgate-action") != "" {
				t.Fatalf("got %+v", res)
			}
			reqs := s.demo.Requests()
			last := reqs[len(reqs)-1]
			if last.Path != "/v1/embeddings" || last.User != "alice" || res.Usage.PromptTokens != last.Usage.PromptTokens || last.Usage.PromptTokens != 6 {
				t.Errorf("upstream got %+v; client usage %+v", last, res.Usage)
			}
			left = s.chargedLast(t, pw, wallet, left)
		})
	}
}
