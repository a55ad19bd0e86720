package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/tollgate-dev/tollgate/e2e/fakeupstream"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/pricing"
)

func newWallet() string {
	var b [20]byte
	_, _ = rand.Read(b[:])
	return "0x" + hex.EncodeToString(b[:])
}

// client is the official SDK pointed at the emulator, as an app would configure it: the
// paywall key as the API key, the end user in X-Paywall-User.
func (s *stack) client(key, user string, opts ...option.RequestOption) openai.Client {
	return openai.NewClient(append([]option.RequestOption{
		option.WithBaseURL(s.url + "/v1/"), option.WithAPIKey(key),
		option.WithHeader("X-Paywall-User", user), option.WithMaxRetries(0),
	}, opts...)...)
}

func chatParams() openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{Model: model, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello there, how are you")}}
}

// ask sends a non-streamed completion and returns it with the HTTP response's headers.
func ask(t *testing.T, c openai.Client, opts ...option.RequestOption) (*openai.ChatCompletion, http.Header) {
	t.Helper()
	var raw *http.Response
	res, err := c.Chat.Completions.New(t.Context(), chatParams(), append(opts, option.WithResponseInto(&raw))...)
	if err != nil {
		t.Fatalf("chat completion: %v", err)
	}
	_ = raw.Body.Close() // the SDK has read it
	return res, raw.Header
}

// askStream sends a streamed completion and returns the text, the usage the client saw and
// the stream's error.
func askStream(ctx context.Context, c openai.Client, opts ...option.RequestOption) (string, openai.CompletionUsage, error) {
	st := c.Chat.Completions.NewStreaming(ctx, chatParams(), opts...)
	defer func() { _ = st.Close() }()
	var text strings.Builder
	var usage openai.CompletionUsage
	for st.Next() {
		ch := st.Current()
		for _, choice := range ch.Choices {
			text.WriteString(choice.Delta.Content)
		}
		if ch.Usage.TotalTokens > 0 {
			usage = ch.Usage
		}
	}
	return text.String(), usage, st.Err()
}

// settled waits until the wallet has no money held (every hold captured or voided) and
// returns its balance.
func (s *stack) settled(t *testing.T, wallet string) ledger.WalletBalance {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := s.ledger.Balance(t.Context(), wallet)
		if err != nil && !errors.Is(err, ledger.ErrUnknownAccount) {
			t.Fatal(err)
		}
		if b.HeldMicro == 0 {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("wallet %s still holds %d µUSDC", wallet, b.HeldMicro)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *stack) deposit(t *testing.T, wallet string, micro int64) {
	t.Helper()
	if _, err := s.ledger.Deposit(t.Context(), ledger.DepositRequest{Key: "e2e:" + newWallet(), ChainID: "31337", Wallet: wallet, AmountMicro: micro}); err != nil {
		t.Fatalf("deposit: %v", err)
	}
}

// cost is what the last request to up should cost at the paywall's markup.
func (s *stack) cost(t *testing.T, pw paywall.Paywall, r int) int64 {
	t.Helper()
	price, err := s.prices.Lookup(t.Context(), pw.ID, model)
	if err != nil {
		t.Fatal(err)
	}
	u := s.demo.Requests()[r].Usage
	c, err := price.CostMicro(pricing.Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens}, pw.MarkupBps)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// chargedLast checks that the upstream's latest request was charged exactly its usage × the
// paywall's prices: once settled, the wallet holds that much less than before. It returns what
// the wallet holds now.
func (s *stack) chargedLast(t *testing.T, pw paywall.Paywall, wallet string, before int64) int64 {
	t.Helper()
	want := before - s.cost(t, pw, len(s.demo.Requests())-1)
	if b := s.settled(t, wallet); b.PostedMicro != want {
		t.Fatalf("balance %d, want %d (charge %d)", b.PostedMicro, want, before-want)
	}
	return want
}

// TestPaywallLifecycle walks one user through everything: the authorize message (JSON and
// streamed), authorizing, the top-up message, a deposit, a charged completion (exactly usage ×
// prices), a charged stream, and a stream cut mid-way charged from an estimate.
func TestPaywallLifecycle(t *testing.T) {
	s := newStack(t)
	pw, key := s.createPaywall(t, byokPaywall())
	wallet := newWallet()
	c := s.client(key, "alice")

	t.Run("unknown user gets the authorize message", func(t *testing.T) {
		res, hdr := ask(t, c)
		if hdr.Get("x-tollgate-action") != "authorize" || !strings.Contains(res.Choices[0].Message.Content, "/connect?t=") {
			t.Fatalf("got %q (action %q)", res.Choices[0].Message.Content, hdr.Get("x-tollgate-action"))
		}
		text, _, err := askStream(t.Context(), c)
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

	t.Run("authorized without funds gets the top-up message", func(t *testing.T) {
		deadline := time.Now().Add(3 * time.Second) // caches learn of the authorization within a second
		for {
			res, hdr := ask(t, c)
			if hdr.Get("x-tollgate-action") == "topup" && strings.Contains(res.Choices[0].Message.Content, "/topup?t=") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("got %q (action %q)", res.Choices[0].Message.Content, hdr.Get("x-tollgate-action"))
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	const depositMicro = 2_000_000
	s.deposit(t, wallet, depositMicro)
	left := int64(depositMicro) // what the wallet should hold

	t.Run("a completion is charged exactly usage × prices", func(t *testing.T) {
		res, hdr := ask(t, c)
		if hdr.Get("x-tollgate-action") != "" || !strings.HasPrefix(res.Choices[0].Message.Content, "w1 ") {
			t.Fatalf("not served: %q", res.Choices[0].Message.Content)
		}
		reqs := s.demo.Requests()
		want := s.cost(t, pw, len(reqs)-1)
		if res.Usage.PromptTokens != reqs[len(reqs)-1].Usage.PromptTokens {
			t.Errorf("client usage %+v, upstream %+v", res.Usage, reqs[len(reqs)-1].Usage)
		}
		left = s.chargedLast(t, pw, wallet, left)
		// The app's history of the user lists the charge (the capture), not only the deposit.
		h := s.history(t, key, "alice")
		if len(h.Items) != 2 || h.Items[1].Kind != "deposit" || h.Items[1].AmountMicro != depositMicro {
			t.Fatalf("history %+v: want the capture, then the deposit of %d", h.Items, depositMicro)
		}
		capture := h.Items[0]
		if capture.Kind != "capture" || capture.AmountMicro != -want || capture.Metadata["paywall"] != pw.ID ||
			capture.Metadata["user"] != "alice" || capture.Metadata["model"] != model {
			t.Fatalf("history's newest item %+v: want the capture of %d µUSDC by paywall %s", capture, want, pw.ID)
		}
	})

	t.Run("a stream is charged exactly, and the usage chunk we asked for is hidden", func(t *testing.T) {
		text, usage, err := askStream(t.Context(), c)
		if err != nil || !strings.HasPrefix(text, "w1 ") {
			t.Fatalf("stream: %q, %v", text, err)
		}
		reqs := s.demo.Requests()
		last := reqs[len(reqs)-1]
		if !last.IncludeUsage || usage.TotalTokens != 0 {
			t.Errorf("upstream asked for usage: %v; client saw usage %+v", last.IncludeUsage, usage)
		}
		left = s.chargedLast(t, pw, wallet, left)
	})

	t.Run("a stream cut mid-way is charged an estimate", func(t *testing.T) {
		_, _, err := askStream(t.Context(), c, option.WithHeader("x-fake-disconnect-after", "3"), option.WithHeader("x-fake-completion-tokens", "50"))
		if err == nil {
			t.Log("the SDK reported no error for a cut stream (it ends at EOF); the charge is what matters")
		}
		b := s.settled(t, wallet)
		charged := left - b.PostedMicro
		full := s.cost(t, pw, len(s.demo.Requests())-1) // what all 50 tokens would have cost
		if charged <= 0 || charged > full {
			t.Fatalf("cut stream charged %d µUSDC; want an estimate in (0, %d]", charged, full)
		}
		left -= charged
	})
}

// TestBuiltinCutStreamChargedFromTheProviderRecord: a built-in paywall's stream cut mid-way is
// charged what the provider's record of the generation says — the fake OpenRouter, like a
// provider that does not stop on a disconnect, ran the whole completion — not an estimate of
// the part the client saw; the capture says where its figures came from.
func TestBuiltinCutStreamChargedFromTheProviderRecord(t *testing.T) {
	s := newStack(t)
	pw, key := s.createPaywall(t, paywall.Paywall{Mode: paywall.ModeBuiltin, MarkupBps: 2000})
	wallet := newWallet()
	if _, err := s.paywalls.Authorize(t.Context(), pw.ID, "alice", wallet); err != nil {
		t.Fatal(err)
	}
	const depositMicro = 2_000_000
	s.deposit(t, wallet, depositMicro)
	c := s.client(key, "alice")
	_, _, _ = askStream(t.Context(), c, option.WithHeader("x-fake-disconnect-after", "3"), option.WithHeader("x-fake-completion-tokens", "50"))
	b := s.settled(t, wallet)

	var completion *fakeupstream.Request
	for _, r := range s.openrouter.Requests() {
		if strings.HasSuffix(r.Path, "/chat/completions") {
			completion = &r
		}
	}
	if completion == nil || completion.Usage.CompletionTokens != 50 {
		t.Fatalf("the built-in upstream's completion: %+v", completion)
	}
	price, err := s.prices.Lookup(t.Context(), pw.ID, model)
	if err != nil {
		t.Fatal(err)
	}
	want, err := price.CostMicro(pricing.Usage{PromptTokens: completion.Usage.PromptTokens, CompletionTokens: 50}, pw.MarkupBps)
	if err != nil {
		t.Fatal(err)
	}
	if charged := depositMicro - b.PostedMicro; charged != want {
		t.Fatalf("cut stream charged %d µUSDC; want %d, the provider's record of all 50 tokens", charged, want)
	}
	h := s.history(t, key, "alice")
	if len(h.Items) == 0 || h.Items[0].Kind != "capture" || h.Items[0].Metadata["usage_source"] != "provider_record" ||
		h.Items[0].Metadata["estimate_reason"] != "" {
		t.Fatalf("history %+v: want the capture from the provider's record first", h.Items)
	}
}

// TestRoutesReachTheirOwnUpstreams: a built-in paywall reaches OpenRouter (TLS, /api/v1,
// the operator's key) and a BYOK paywall its own upstream with its own key; the tollgate key
// reaches neither.
func TestRoutesReachTheirOwnUpstreams(t *testing.T) {
	s := newStack(t)
	builtin, bkey := s.createPaywall(t, paywall.Paywall{Mode: paywall.ModeBuiltin, MarkupBps: 2000})
	byok, ykey := s.createPaywall(t, byokPaywall())
	wallet := newWallet()
	for _, pw := range []paywall.Paywall{builtin, byok} {
		if _, err := s.paywalls.Authorize(t.Context(), pw.ID, "bob", wallet); err != nil {
			t.Fatal(err)
		}
	}
	s.deposit(t, wallet, 5_000_000)

	for _, tc := range []struct {
		name, key string
		up        func() []fakeupstreamRequest
		wantAuth  string
		wantPath  string
	}{
		{"built-in", bkey, func() []fakeupstreamRequest { return s.openrouter.Requests() }, "Bearer " + operatorKey, "/api/v1/chat/completions"},
		{"byok", ykey, func() []fakeupstreamRequest { return s.demo.Requests() }, "Bearer " + byokKey, "/v1/chat/completions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, _ := ask(t, s.client(tc.key, "bob"))
			if !strings.HasPrefix(res.Choices[0].Message.Content, "w1 ") {
				t.Fatalf("not served: %q", res.Choices[0].Message.Content)
			}
			reqs := tc.up()
			if len(reqs) != 1 {
				t.Fatalf("%d requests reached this upstream", len(reqs))
			}
			r := reqs[0]
			if r.Authorization != tc.wantAuth || r.Path != tc.wantPath || r.Status != 200 {
				t.Fatalf("upstream saw auth %q path %q status %d", r.Authorization, r.Path, r.Status)
			}
			for k, vs := range r.Header {
				for _, v := range vs {
					if strings.Contains(v, "tg_") {
						t.Errorf("the tollgate key reached the upstream in %s", k)
					}
				}
			}
		})
	}
}

// TestConcurrentStreamsCannotOverspend: one wallet that can pay for a few completions, many
// concurrent streams through the whole path: the wallet never goes negative, what is charged
// never exceeds the deposit, and every hold ends.
func TestConcurrentStreamsCannotOverspend(t *testing.T) {
	s := newStack(t)
	pw, key := s.createPaywall(t, byokPaywall())
	wallet := newWallet()
	if _, err := s.paywalls.Authorize(t.Context(), pw.ID, "carol", wallet); err != nil {
		t.Fatal(err)
	}
	price, err := s.prices.Lookup(t.Context(), pw.ID, model)
	if err != nil {
		t.Fatal(err)
	}
	one, err := price.CostMicro(pricing.Usage{PromptTokens: 10, CompletionTokens: 16}, pw.MarkupBps)
	if err != nil {
		t.Fatal(err)
	}
	deposit := 4 * one
	s.deposit(t, wallet, deposit)
	c := s.client(key, "carol")
	const n = 24
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			if _, _, err := askStream(t.Context(), c, option.WithHeader("x-fake-delay-ms", "2")); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("stream: %v", err)
	}
	b := s.settled(t, wallet)
	if b.PostedMicro < 0 {
		t.Fatalf("balance %d after a deposit of %d", b.PostedMicro, deposit)
	}
	served := s.demo.Requests()
	if len(served) == 0 || len(served) == n {
		t.Errorf("%d of %d streams reached the upstream; want some but not all", len(served), n)
	}
	// Every served stream is charged exactly its usage, except what the wallet could not cover
	// (a recorded shortfall): no more, and nothing for the streams that were refused.
	var owed int64
	for _, r := range served {
		c, err := price.CostMicro(pricing.Usage{PromptTokens: r.Usage.PromptTokens, CompletionTokens: r.Usage.CompletionTokens}, pw.MarkupBps)
		if err != nil {
			t.Fatal(err)
		}
		owed += c
	}
	var shortfall int64
	if err := s.db.Pool.QueryRow(t.Context(), `SELECT COALESCE(sum(shortfall_micro), 0)::BIGINT FROM ledger_holds WHERE wallet = $1`,
		strings.ToLower(wallet)).Scan(&shortfall); err != nil {
		t.Fatal(err)
	}
	if charged := deposit - b.PostedMicro; charged+shortfall != owed {
		t.Errorf("charged %d + shortfall %d, want the served streams' cost %d", charged, shortfall, owed)
	}
}

type fakeupstreamRequest = fakeupstream.Request

// historyJSON is the answer of GET /api/v1/user/history (docs/api.md).
type historyJSON struct {
	User   string `json:"user"`
	Wallet string `json:"wallet"`
	Items  []struct {
		ID          string            `json:"id"`
		Kind        string            `json:"kind"`
		Amount      string            `json:"amount"`
		AmountMicro int64             `json:"amount_micro"`
		Metadata    map[string]string `json:"metadata"`
	} `json:"items"`
}

// history reads a user's history through Envoy's API route, as the app would.
func (s *stack) history(t *testing.T, key, user string) historyJSON {
	t.Helper()
	var h historyJSON
	apiCall(t, "GET", s.url+"/api/v1/user/history", key, user, "", nil).decode(t, http.StatusOK, &h)
	return h
}

// apiAnswer is one answer of the tollgate API.
type apiAnswer struct {
	Status int
	Header http.Header
	Body   []byte
}

// decode fails the test unless the answer has the status, then decodes its JSON into out.
func (a apiAnswer) decode(t *testing.T, status int, out any) {
	t.Helper()
	if a.Status != status {
		t.Fatalf("status %d, want %d: %s", a.Status, status, a.Body)
	}
	if err := json.Unmarshal(a.Body, out); err != nil {
		t.Fatalf("%v in %s", err, a.Body)
	}
}

// apiCall sends one request to the tollgate API or the hosted pages' calls: the app's key
// (if any), the user in X-Paywall-User (if any), a JSON body (if any) and extra headers.
func apiCall(t *testing.T, method, url, key, user, body string, header map[string]string) apiAnswer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if user != "" {
		req.Header.Set("X-Paywall-User", user)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return apiAnswer{Status: resp.StatusCode, Header: resp.Header, Body: raw}
}

// TestManualChargeIdempotent: the app's manual charge, through Envoy's API route, replayed
// with the same Idempotency-Key, charges once and answers the same.
func TestManualChargeIdempotent(t *testing.T) {
	s := newStack(t)
	pw, key := s.createPaywall(t, byokPaywall())
	wallet := newWallet()
	if _, err := s.paywalls.Authorize(t.Context(), pw.ID, "dave", wallet); err != nil {
		t.Fatal(err)
	}
	s.deposit(t, wallet, 1_000_000)
	charge := func(idem string) apiAnswer {
		return apiCall(t, "POST", s.url+"/api/v1/user/charges", key, "dave", `{"amount":"0.25","description":"e2e"}`,
			map[string]string{"Idempotency-Key": idem})
	}
	first, replay := charge("order-42"), charge("order-42")
	if first.Status != http.StatusCreated || replay.Status != first.Status || string(replay.Body) != string(first.Body) ||
		replay.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("first %d %s; replay %d %s (replayed %q)", first.Status, first.Body, replay.Status, replay.Body, replay.Header.Get("Idempotent-Replayed"))
	}
	if b := s.settled(t, wallet); b.PostedMicro != 750_000 {
		t.Fatalf("balance %d after one 0.25 charge replayed, want 750000", b.PostedMicro)
	}
	if again := charge("order-43"); again.Status != http.StatusCreated {
		t.Fatalf("a new key: %d %s", again.Status, again.Body)
	}
	if b := s.settled(t, wallet); b.PostedMicro != 500_000 {
		t.Fatalf("balance %d after a second charge, want 500000", b.PostedMicro)
	}
}
