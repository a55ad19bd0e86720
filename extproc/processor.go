package extproc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/tollgate-dev/tollgate/extproc/limits"
	"github.com/tollgate-dev/tollgate/extproc/sse"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/pricing"
)

// processor handles one ext_proc stream: one HTTP request and its response. Its fields are the
// state that spans phases; only the stream's goroutine touches them.
type processor struct {
	s   *Server
	ctx context.Context // the stream's context

	// id is Tollgate's id for the request: idempotency keys derive from it.
	id string
	// envoyID is Envoy's x-request-id, for logs and ledger metadata.
	envoyID string

	// passThrough: nothing to bill (a path outside /v1/, or a model listing already routed);
	// every later message is answered CONTINUE.
	passThrough bool
	// finished: an ImmediateResponse was sent, or the outcome is final and only pass-through
	// answers remain.
	finished bool

	// From the request headers.
	apiKey     string
	headerUser string
	pathUser   string
	query      string // of :path, kept when the user prefix is stripped
	// upstreamPath replaces :path when the user prefix is stripped ("": unchanged).
	upstreamPath string
	pw           paywall.Paywall
	// api is the billed request's API, from its path.
	api api

	// From the request body.
	req       chatRequest
	userID    string
	price     pricing.Price
	wallet    string
	promptEst int64 // prompt estimate, without margin: what an estimated charge uses
	budget    int64 // completion tokens held for per choice (max_tokens sent upstream)

	// The money: an open hold, and the concurrency slot taken for the request.
	hold     ledger.Hold
	holdOpen bool
	release  func(context.Context)

	// From the response.
	status    int
	streaming bool
	// windowed: a body whose usage is read from its ends (embeddings, and any body too large
	// to keep whole).
	windowed bool
	// head and tail are the first and last windowBytes of a windowed body, or tail the last of
	// a Responses stream the scanner could not split (an event over its limit).
	head, tail []byte
	dropUsage  bool // only Tollgate asked for the usage chunk: hide it from the client
	scan       sse.Scanner
	oversized  bool   // an event over the scanner's limit passed unread (logged once)
	out        []byte // the rewritten chunk when events are dropped or carried over
	jsonBody   []byte // a buffered body that arrived in several messages
	usage      *pricing.Usage
	// reportedCost is what the upstream said it charged (micro-USD), when costReported.
	reportedCost int64
	costReported bool
	outBytes     int64 // content bytes streamed, for the estimate
	outEvents    int64 // content events streamed, for the estimate
	provID       string
	upErr        string
	ended        bool // the response's last body chunk was answered: settle now
	// sent: the answer carrying the rewritten request went out, so the upstream may be working.
	sent bool

	outcome Outcome

	// Answers to streamed chunks, reused (see chunkAnswer).
	chunkContinue, chunkMutate *extprocv3.ProcessingResponse
	mutation                   *extprocv3.BodyMutation
	mutateBody                 *extprocv3.BodyMutation_Body
}

func newProcessor(ctx context.Context, s *Server) *processor {
	p := &processor{s: s, ctx: ctx}
	p.scan.MaxEventBytes = s.cfg.MaxEventBytes
	return p
}

// handle answers one message.
func (p *processor) handle(req *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
	start := time.Now()
	switch r := req.Request.(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		defer p.s.metrics.observe(phaseRequestHeaders, start)
		return p.RequestHeaders(r.RequestHeaders), nil
	case *extprocv3.ProcessingRequest_RequestBody:
		defer p.s.metrics.observe(phaseRequestBody, start)
		return p.RequestBody(r.RequestBody), nil
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		defer p.s.metrics.observe(phaseResponseHeaders, start)
		return p.ResponseHeaders(r.ResponseHeaders), nil
	case *extprocv3.ProcessingRequest_ResponseBody:
		defer p.s.metrics.observe(phaseResponseBody, start)
		return p.ResponseBody(r.ResponseBody), nil
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
			RequestTrailers: &extprocv3.TrailersResponse{}}}, nil
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{
			ResponseTrailers: &extprocv3.TrailersResponse{}}}, nil
	default:
		return nil, fmt.Errorf("unexpected message %T", req.Request)
	}
}

// RequestHeaders classifies the request by method and path (routes.go) and finds the paywall.
// A model listing is routed to the paywall's upstream here, unbilled; a billed request waits
// for its body.
func (p *processor) RequestHeaders(h *extprocv3.HttpHeaders) *extprocv3.ProcessingResponse {
	var method, path, auth string
	for _, hv := range h.GetHeaders().GetHeaders() {
		switch hv.Key {
		case ":method":
			method = headerValue(hv)
		case ":path":
			path = headerValue(hv)
		case "authorization":
			auth = headerValue(hv)
		case "x-paywall-user":
			p.headerUser = headerValue(hv)
		case "x-request-id":
			p.envoyID = headerValue(hv)
		}
	}
	p.id = newRequestID()
	path, p.query, _ = strings.Cut(path, "?")
	rt := classifyRoute(method, path)
	switch rt.kind {
	case routeNotOurs:
		p.passThrough = true
		p.end(OutcomePassThrough)
		return continueRequestHeaders()
	case routeUnsupported:
		return p.fail(OutcomeUnsupported, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error",
			Code: "unsupported_endpoint", Message: fmt.Sprintf("%s %s is not supported. %s", method, path, supportedEndpoints)})
	case routeWrongMethod:
		e := &apiError{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error", Code: "method_not_allowed",
			Message: fmt.Sprintf("%s needs %s, not %s. %s", path, rt.allow, method, supportedEndpoints)}
		p.end(OutcomeUnsupported)
		p.finished = true
		return immediate(e.Status, "application/json", e.body(), []*corev3.HeaderValueOption{setHeader("allow", []byte(rt.allow))})
	case routeBadModelID:
		return p.fail(OutcomeBadRequest, &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "invalid_model", Param: "model",
			Message: "The model id in the path is not a plain model id (such as openai/gpt-4o-mini): no empty, '.' or '..' segments, percent-encoded slashes or dots, or unusual characters."})
	}
	p.pathUser = rt.user

	if resp := p.findPaywall(auth); resp != nil {
		return resp
	}
	if rt.kind == routeModels {
		// Not billed: send it to the paywall's upstream now and let everything after pass.
		p.passThrough = true
		p.end(OutcomeUnbilled)
		set, remove := p.upstreamHeaders(rt.upstreamPath)
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{
			Response: &extprocv3.CommonResponse{
				HeaderMutation:  &extprocv3.HeaderMutation{SetHeaders: set, RemoveHeaders: remove},
				ClearRouteCache: true,
			},
		}}}
	}
	p.upstreamPath = rt.upstreamPath
	p.api = rt.api
	if h.GetEndOfStream() {
		return p.fail(OutcomeBadRequest, badRequest("missing_body", "", "The request has no body. Send the request as JSON."))
	}
	return continueRequestHeaders()
}

// findPaywall finds the paywall of the request's `Authorization: Bearer tg_…` key; it
// answers 401 for a missing, unknown or rotated key, and nil when p.pw is set.
func (p *processor) findPaywall(auth string) *extprocv3.ProcessingResponse {
	key, ok := strings.CutPrefix(auth, "Bearer ")
	key = strings.TrimSpace(key)
	if !ok || !strings.HasPrefix(key, "tg_") {
		return p.fail(OutcomeUnauthenticated, &apiError{Status: http.StatusUnauthorized, Type: "invalid_request_error",
			Code: "missing_api_key", Message: "Send your Tollgate API key as 'Authorization: Bearer tg_…'."})
	}
	p.apiKey = key
	ctx, cancel := p.phaseContext()
	defer cancel()
	start := time.Now()
	pw, err := p.s.deps.Paywalls.ByKey(ctx, key)
	p.s.metrics.storeCall(callPaywallKey, start)
	switch {
	case errors.Is(err, paywall.ErrUnknownKey):
		return p.fail(OutcomeUnauthenticated, &apiError{Status: http.StatusUnauthorized, Type: "invalid_request_error",
			Code: "invalid_api_key", Message: "The API key is unknown or was revoked. Use the key shown when the paywall was created, or rotate it."})
	case err != nil:
		return p.unavailable("look up the API key", err)
	}
	p.pw = pw
	return nil
}

// RequestBody checks the request, the user's authorization and money, reserves the hold and
// rewrites the request for the upstream.
func (p *processor) RequestBody(b *extprocv3.HttpBody) *extprocv3.ProcessingResponse {
	if p.passThrough || p.finished {
		return continueRequestBody()
	}
	if !b.GetEndOfStream() {
		// Only a BUFFERED request body can be checked and rewritten whole.
		return p.fail(OutcomeUnavailable, &apiError{Status: http.StatusInternalServerError, Type: "server_error",
			Code: "misconfigured", Message: "Tollgate needs the whole request body: configure the ext_proc filter's request_body_mode as BUFFERED."})
	}
	rules := &apis[p.api]
	req, bad := rules.parse(b.GetBody(), requestLimits{MaxBodyBytes: p.s.cfg.MaxBodyBytes, MaxTokens: p.s.cfg.MaxTokensLimit})
	if bad != nil {
		return p.fail(OutcomeBadRequest, bad)
	}
	p.req = req
	if p.pw.Mode != paywall.ModeBYOK {
		switch {
		case len(req.Unpriced) > 0:
			return p.fail(OutcomeBadRequest, badRequest("unsupported_parameter", req.Unpriced[0], rules.unpriced))
		case len(req.Stored) > 0:
			return p.fail(OutcomeBadRequest, badRequest("unsupported_parameter", req.Stored[0], fmt.Sprintf(storedContextMessage, req.Stored[0])))
		}
	}
	p.userID = firstNonEmpty(p.headerUser, p.pathUser, req.User)
	if p.userID == "" {
		return p.fail(OutcomeBadRequest, badRequest("missing_user", "user",
			"The request does not say which end user it is for. Set the 'X-Paywall-User' header, the body's 'user', or call /v1/{user}/"+rules.path[len("/v1/"):]+"."))
	}
	if err := paywall.ValidUserID(p.userID); err != nil {
		return p.fail(OutcomeBadRequest, badRequest("invalid_user", "user", userMessage(err)))
	}

	ctx, cancel := p.phaseContext()
	defer cancel()
	start := time.Now()
	price, err := p.s.deps.Prices.Lookup(ctx, p.pw.ID, req.Model)
	p.s.metrics.storeCall(callPrice, start)
	switch {
	case errors.Is(err, pricing.ErrUnpricedModel):
		return p.fail(OutcomeBadRequest, badRequest("model_not_priced", "model",
			fmt.Sprintf("The model %q has no price on this paywall, so it cannot be used. Pick a priced model or ask the app's developer to price it.", req.Model)))
	case err != nil:
		return p.unavailable("look up the price", err)
	}
	p.price = price

	start = time.Now()
	auth, err := p.s.deps.Paywalls.Authorization(ctx, p.pw.ID, p.userID)
	p.s.metrics.storeCall(callAuthorization, start)
	switch {
	case errors.Is(err, paywall.ErrNotAuthorized):
		return p.paywallMessage(ActionAuthorize, 0)
	case errors.Is(err, paywall.ErrBadUserID):
		return p.fail(OutcomeBadRequest, badRequest("invalid_user", "user", userMessage(err)))
	case err != nil:
		return p.unavailable("look up the authorization", err)
	}
	p.wallet = auth.Wallet

	if resp := p.acquireSlot(ctx); resp != nil {
		return resp
	}
	resp := p.reserve(ctx)
	if !p.holdOpen && p.release != nil && p.outcome != OutcomeFree {
		// Not forwarded: give the concurrency slot back now.
		p.releaseSlot()
	}
	return resp
}

// acquireSlot applies the paywall's per-user caps; it answers 429 over a cap.
func (p *processor) acquireSlot(ctx context.Context) *extprocv3.ProcessingResponse {
	lim := p.s.deps.Limiter
	if lim == nil || (p.pw.MaxConcurrent <= 0 && p.pw.RatePerMinute <= 0) {
		return nil
	}
	start := time.Now()
	rel, err := lim.Acquire(ctx, p.pw.ID+":"+p.userID, p.pw.MaxConcurrent, p.pw.RatePerMinute, p.id)
	p.s.metrics.storeCall(callCaps, start)
	switch {
	case errors.Is(err, limits.ErrTooManyConcurrent):
		return p.fail(OutcomeRateLimited, &apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "too_many_concurrent_requests",
			Message: fmt.Sprintf("This user already has %d requests in progress, the most this app allows. Wait for one to finish and retry.", p.pw.MaxConcurrent)})
	case errors.Is(err, limits.ErrRateLimited):
		return p.fail(OutcomeRateLimited, &apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "rate_limit_exceeded",
			Message: fmt.Sprintf("This user sent %d requests in the last minute, the most this app allows. Retry in a minute.", p.pw.RatePerMinute)})
	case err != nil:
		// Caps protect capacity, not money (the ledger does): admit the request.
		p.s.metrics.limitErrors.Inc()
		p.s.log.Warn("caps unavailable; admitting the request", "request_id", p.id, "err", err)
		return nil
	}
	p.release = rel
	return nil
}

// maxHoldAttempts bounds the sized holds of one request: after the optimistic hold was
// refused, each one reads the balance, clamps the budget to it, and holds; another request of
// the same wallet may take the money in between, so a refused one sizes again.
const maxHoldAttempts = 3

// clampBudget is the affordability clamp: the completion budget per choice, at most want, whose
// worst case for all choices the available balance covers; ok is false when that is below
// minTokens (the top-up message). With n choices every choice may use the whole budget, so the
// wallet must cover n of them.
func clampBudget(price pricing.Price, markup, available, prompt, choices, want, minTokens int64) (budget int64, ok bool) {
	afford := pricing.AffordableTokens(price, markup, available, prompt) / choices
	if afford >= want {
		return want, true
	}
	return afford, afford >= minTokens
}

// reserve sizes the completion budget to what the wallet can afford, reserves the hold and
// forwards the rewritten request; or answers with the top-up message.
//
// Most requests are affordable, so attempt 0 holds the whole budget without reading the
// balance: one ledger write before the request can leave. Only when the ledger refuses that
// hold for lack of funds do the later attempts read the balance and apply the affordability
// clamp. The outcome is the clamp's either way: the ledger refuses a hold exactly when its
// amount exceeds the available balance, which is exactly when the clamp lowers the budget below
// what was asked (pricing.AffordableTokens inverts CostMicro). Each attempt has its own hold
// key, tg:hold:<request id>:<attempt>.
func (p *processor) reserve(ctx context.Context) *extprocv3.ProcessingResponse {
	markup := p.pw.MarkupBps
	prompt := withMargin(p.req.PromptTokens, p.s.cfg.PromptMarginPct)
	p.promptEst = p.req.PromptTokens
	want := p.req.MaxTokens
	if want == 0 {
		want = p.pw.DefaultMaxTokens
	}
	if want <= 0 {
		want = p.s.cfg.DefaultMaxTokens
	}
	if p.api == apiEmbeddings {
		want = 0 // the input is all there is to pay for
	}
	minTokens := p.pw.MinCompletionTokens
	if minTokens <= 0 {
		minTokens = p.s.cfg.MinCompletionTokens
	}
	if p.api == apiResponses {
		minTokens = max(minTokens, minOutputTokens)
	}
	minTokens = min(minTokens, want)
	choices := max(p.req.Choices, 1)

	var available int64
	for attempt := range maxHoldAttempts + 1 {
		budget := want
		if attempt > 0 {
			bal, err := p.balance(ctx)
			switch {
			case errors.Is(err, ledger.ErrUnknownAccount):
				bal = ledger.WalletBalance{}
			case err != nil:
				return p.unavailable("read the balance", err)
			}
			available = bal.AvailableMicro
			if want == 0 {
				// Nothing to clamp: hold the input's price again if the wallet now covers it
				// (another request's hold was released), else it cannot pay for the input.
				if a, err := p.holdAmount(prompt, 0, markup); err != nil || a > available {
					return p.paywallMessage(ActionTopUp, available)
				}
			}
			var ok bool
			if budget, ok = clampBudget(p.price, markup, available, prompt, choices, want, minTokens); !ok {
				return p.paywallMessage(ActionTopUp, available)
			}
		}
		amount, err := p.holdAmount(prompt, budget*choices, markup)
		switch {
		case err != nil && attempt == 0:
			// Too expensive to price whole: the clamp may lower it to what the wallet affords.
			continue
		case err != nil:
			// A guard only: the clamped budget always prices within the balance, so this is
			// never reached (extproc/clamp_test.go shows why, and tests it).
			p.s.log.Error("the clamped budget could not be priced", "request_id", p.id, "err", err)
			return p.fail(OutcomeBadRequest, badRequest("request_too_expensive", "max_tokens",
				"The request's worst-case cost is too large to reserve. Lower 'max_tokens'."))
		}
		p.budget = budget
		if amount == 0 {
			// A free model: nothing to hold or charge.
			p.outcome = OutcomeFree
			return p.forward()
		}
		if resp, refused := p.tryHold(ctx, attempt, amount); !refused {
			return resp
		}
		// The wallet could not cover it (or another request of the same wallet took the money
		// first): size again.
	}
	return p.paywallMessage(ActionTopUp, available)
}

// tryHold reserves amount for p.budget and forwards the request. refused reports that the
// wallet could not cover the amount (the caller sizes the hold again); otherwise resp is the
// answer: the forwarded request, the top-up message for a wallet that was never funded, or
// 503 when the ledger failed.
func (p *processor) tryHold(ctx context.Context, attempt int, amount int64) (resp *extprocv3.ProcessingResponse, refused bool) {
	start := time.Now()
	hold, err := p.s.deps.Ledger.Hold(ctx, ledger.HoldRequest{
		Key:         fmt.Sprintf("tg:hold:%s:%d", p.id, attempt),
		Wallet:      p.wallet,
		AmountMicro: amount,
		Paywall:     p.pw.ID,
		TTL:         p.s.cfg.HoldTTL,
		Metadata: map[string]string{ledger.MetaRequestID: p.id, ledger.MetaEnvoyRequestID: p.envoyID, ledger.MetaAPI: apis[p.api].label,
			ledger.MetaModel: p.req.Model, ledger.MetaUser: p.userID},
	})
	p.s.metrics.storeCall(callHold, start)
	switch {
	case err == nil:
		p.hold, p.holdOpen = hold, true
		p.s.metrics.holds.WithLabelValues(holdReserved).Inc()
		p.s.metrics.heldMicro.Add(float64(amount))
		return p.forward(), false
	case errors.Is(err, ledger.ErrInsufficientFunds):
		p.s.metrics.holds.WithLabelValues(holdInsufficient).Inc()
		return nil, true
	case errors.Is(err, ledger.ErrUnknownAccount):
		p.s.metrics.holds.WithLabelValues(holdInsufficient).Inc()
		return p.paywallMessage(ActionTopUp, 0), false
	default:
		p.s.metrics.holds.WithLabelValues(holdError).Inc()
		return p.unavailable("reserve the hold", err), false
	}
}

// balance reads the wallet's balance, timed.
func (p *processor) balance(ctx context.Context) (ledger.WalletBalance, error) {
	defer p.s.metrics.storeCall(callBalance, time.Now())
	return p.s.deps.Ledger.Balance(ctx, p.wallet)
}

// holdAmount is the worst case of a request: the prompt estimate plus completion tokens (the
// budget times the choices), each priced at the dearer of output and reasoning.
func (p *processor) holdAmount(prompt, budget, markup int64) (int64, error) {
	u := pricing.Usage{PromptTokens: prompt, CompletionTokens: budget}
	if p.price.Reasoning.IsSet() && p.price.Reasoning.Cmp(p.price.Output) > 0 {
		u.ReasoningTokens = budget
	}
	return p.price.CostMicro(u, markup)
}

// forward answers the request body with the rewritten request: body, content-length,
// upstream credentials, routing header, and a recomputed route.
func (p *processor) forward() *extprocv3.ProcessingResponse {
	w := rewrite{User: p.userID, MaxTokens: p.budget}
	switch p.api {
	case apiChat, apiCompletions: // a legacy completion reads no max_completion_tokens: max_tokens alone
		builtin := p.pw.Mode != paywall.ModeBYOK
		keys := p.req.MaxTokensKeys
		if len(keys) == 0 || (builtin && !slices.Contains(keys, "max_tokens")) {
			// OpenRouter documents max_tokens; a max_completion_tokens alone might not bound it.
			keys = append(slices.Clip(keys), "max_tokens")
		}
		// A chat stream reports its usage only when asked; a response always does.
		w.MaxTokenKey, w.ForceUsage, w.OpenRouter = keys, p.req.Stream, builtin
		p.dropUsage = p.req.Stream && !p.req.IncludeUsage
	case apiResponses:
		w.MaxTokenKey = []string{"max_output_tokens"}
		// A response's events repeat the request (its instructions and tools), and the last
		// one carries the whole output too: the scanner must be able to hold one.
		p.scan.MaxEventBytes = p.s.cfg.MaxEventBytes + 2*sumLen(p.req.fields) + 16*int(p.budget)
	case apiEmbeddings:
		// No budget: embeddings produce no tokens.
	}
	p.scan.CountText = apis[p.api].countText
	body, err := p.req.rewriteBody(w)
	if err != nil {
		p.voidNow("rewrite failed")
		return p.unavailable("rewrite the request", err)
	}

	p.s.metrics.forwarded.WithLabelValues(apis[p.api].label).Inc()
	set, remove := p.upstreamHeaders(p.upstreamPath)
	set = append(set, setHeader("content-length", contentLength(len(body))))
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{
		Response: &extprocv3.CommonResponse{
			HeaderMutation:  &extprocv3.HeaderMutation{SetHeaders: set, RemoveHeaders: remove},
			BodyMutation:    &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: body}},
			ClearRouteCache: true,
		},
	}}}
}

// upstreamHeaders are the header changes that send the request to the paywall's upstream: the
// routing header; Authorization set to the operator's key (built-in) or the paywall's own
// (BYOK), or removed when there is none, so the Tollgate key never leaves; x-paywall-user
// removed; and, when path is not empty, :path replaced by it (the query kept).
func (p *processor) upstreamHeaders(path string) (set []*corev3.HeaderValueOption, remove []string) {
	upstream, key := p.pw.Upstream, p.pw.UpstreamKey
	if p.pw.Mode != paywall.ModeBYOK {
		key = p.s.cfg.ProviderKey
		if upstream == "" {
			upstream = p.s.cfg.BuiltinUpstream
		}
	}
	set = []*corev3.HeaderValueOption{setHeader(p.s.cfg.RoutingHeader, []byte(upstream))}
	remove = []string{"x-paywall-user"}
	if key != "" {
		set = append(set, setHeader("authorization", []byte("Bearer "+key)))
	} else {
		remove = append(remove, "authorization")
	}
	if path != "" {
		if p.query != "" {
			path += "?" + p.query
		}
		set = append(set, setHeader(":path", []byte(path)))
	}
	return set, remove
}

// ResponseHeaders voids the hold of a failed request and switches SSE replies to STREAMED.
func (p *processor) ResponseHeaders(h *extprocv3.HttpHeaders) *extprocv3.ProcessingResponse {
	if p.passThrough || p.finished || (!p.holdOpen && p.outcome != OutcomeFree) {
		return continueResponseHeaders()
	}
	var contentType string
	for _, hv := range h.GetHeaders().GetHeaders() {
		switch hv.Key {
		case ":status":
			p.status, _ = strconv.Atoi(headerValue(hv))
		case "content-type":
			contentType = headerValue(hv)
		}
	}
	if p.status < 200 || p.status > 299 {
		// The upstream refused or failed: nothing is charged.
		p.voidNow(fmt.Sprintf("upstream status %d", p.status))
		p.end(OutcomeUpstreamError)
		p.finished = true
		return continueResponseHeaders()
	}
	if h.GetEndOfStream() {
		p.ended = true
		return continueResponseHeaders()
	}
	if p.api == apiEmbeddings {
		// The vectors can be tens of megabytes, more than Envoy would buffer: they stream
		// through unchanged, and only the body's ends, where the usage is, are kept.
		p.windowed = true
		return streamResponseBody(nil)
	}
	if !strings.HasPrefix(strings.ToLower(strings.TrimSpace(contentType)), "text/event-stream") {
		return continueResponseHeaders()
	}
	p.streaming = true
	// Events may be cut out of a chunk, so its length changes.
	return streamResponseBody(&extprocv3.HeaderMutation{RemoveHeaders: []string{"content-length"}})
}

// streamResponseBody answers the response headers switching the body to STREAMED, with the
// header changes given.
func streamResponseBody(h *extprocv3.HeaderMutation) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{
			Response: &extprocv3.CommonResponse{HeaderMutation: h},
		}},
		ModeOverride: &extprocfilterv3.ProcessingMode{
			RequestHeaderMode:   extprocfilterv3.ProcessingMode_SEND,
			RequestBodyMode:     extprocfilterv3.ProcessingMode_BUFFERED,
			ResponseHeaderMode:  extprocfilterv3.ProcessingMode_SEND,
			ResponseBodyMode:    extprocfilterv3.ProcessingMode_STREAMED,
			RequestTrailerMode:  extprocfilterv3.ProcessingMode_SKIP,
			ResponseTrailerMode: extprocfilterv3.ProcessingMode_SKIP,
		},
	}
}

// ResponseBody meters the response: SSE chunk by chunk, or a JSON body whole.
func (p *processor) ResponseBody(b *extprocv3.HttpBody) *extprocv3.ProcessingResponse {
	if p.passThrough || p.finished || p.ended || (!p.holdOpen && p.outcome != OutcomeFree) {
		return continueResponseBody()
	}
	eos := b.GetEndOfStream()
	if !p.streaming && !p.windowed && len(p.jsonBody)+len(b.GetBody()) > p.s.cfg.MaxBodyBytes*4 {
		// Too large to read whole (Envoy buffers less than this; a body sent in pieces can
		// be more): only its ends are kept, as embeddings' are, and its usage looked for there.
		p.windowed = true
		p.keepEnds(p.jsonBody)
		p.jsonBody = nil
	}
	if p.windowed {
		p.keepEnds(b.GetBody())
		if eos {
			p.readEnds()
			p.ended = true
		}
		return continueResponseBody()
	}
	if !p.streaming {
		p.jsonBody = append(p.jsonBody, b.GetBody()...)
		if eos {
			p.readCompletion(p.jsonBody)
			p.ended = true
		}
		return continueResponseBody()
	}
	out, mutated := p.scanChunk(b.GetBody(), eos)
	if eos {
		p.ended = true
	}
	return p.chunkAnswer(out, mutated)
}

// chunkAnswer answers a streamed chunk. The answers are reused from chunk to chunk: a chunk
// costs a gRPC round trip already, and Send has marshalled an answer before it returns (no
// stats handler or binary log keeps it), so the next chunk may overwrite it.
func (p *processor) chunkAnswer(out []byte, mutated bool) *extprocv3.ProcessingResponse {
	if !mutated {
		if p.chunkContinue == nil {
			p.chunkContinue = continueResponseBody()
		}
		return p.chunkContinue
	}
	if p.chunkMutate == nil {
		p.mutateBody = &extprocv3.BodyMutation_Body{}
		p.mutation = &extprocv3.BodyMutation{}
		p.chunkMutate = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{
			Response: &extprocv3.CommonResponse{BodyMutation: p.mutation},
		}}}
	}
	if len(out) == 0 {
		p.mutation.Mutation = clearBody
	} else {
		p.mutateBody.Body = out
		p.mutation.Mutation = p.mutateBody
	}
	return p.chunkMutate
}

// clearBody is never modified.
var clearBody = &extprocv3.BodyMutation_ClearBody{ClearBody: true}

// scanChunk meters one SSE chunk. When the usage chunk must be hidden, the chunk is rewritten
// to whole events only (an event cut by the chunk boundary is held back and sent with the
// next chunk), minus that event; otherwise the chunk passes unchanged.
func (p *processor) scanChunk(chunk []byte, eos bool) (out []byte, mutated bool) {
	if eos {
		p.scan.ResetLast(chunk)
	} else {
		p.scan.Reset(chunk)
	}
	if !p.dropUsage {
		for p.scan.Next() {
			p.observe(p.scan.Event())
		}
		if eos {
			p.scan.Flush()
		}
		return nil, false
	}
	p.out = p.out[:0]
	plain := true
	for p.scan.Next() {
		ev := p.scan.Event()
		if !p.observe(ev) {
			plain = false
			continue
		}
		if ev.Carried {
			plain = false
		}
		p.out = append(p.out, ev.Raw...)
	}
	if eos {
		p.out = append(p.out, p.scan.Flush()...)
	}
	if plain && len(p.out) == len(chunk) {
		return nil, false
	}
	return p.out, true
}

// observe meters one event and reports whether the client should see it.
func (p *processor) observe(ev *sse.Event) bool {
	if ev.Kind == sse.KindInvalid {
		if !p.oversized {
			p.oversized = true
			p.s.log.Info("an SSE event over the scanner's limit passes unread; its output is not counted toward an estimate (serve.max_event_bytes)",
				"request_id", p.id, "limit_bytes", p.scan.MaxEventBytes)
		}
		if p.api == apiResponses {
			// An event over the scanner's limit (a response repeats the request's instructions
			// and tools in its events): the final event's usage is looked for in the last bytes.
			p.keepTail(ev.Raw)
		}
	}
	if ev.Kind != sse.KindData {
		return true
	}
	if ev.ContentBytes > 0 {
		p.outBytes += int64(ev.ContentBytes)
		p.outEvents++
	}
	if p.provID == "" {
		if id := sse.StringValue(ev.Data, `"id"`); len(id) > 0 {
			p.provID = string(id[:min(len(id), 200)])
		}
	}
	if !ev.HasUsage && !ev.HasError {
		return true
	}
	c, err := p.parse(ev.Data)
	if c.Error != "" {
		p.upErr = c.Error
	}
	if err != nil {
		p.s.log.Warn("unreadable usage from the upstream; the charge will be estimated", "request_id", p.id, "err", err)
		return true
	}
	if c.Usage == nil {
		return true
	}
	p.setUsage(*c.Usage)
	return !p.dropUsage || c.Choices != 0
}

func (p *processor) setUsage(u sse.Usage) {
	p.usage = &pricing.Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens,
		CachedTokens: u.CachedTokens, CacheWriteTokens: u.CacheWriteTokens, ReasoningTokens: u.ReasoningTokens}
	p.reportedCost, p.costReported = u.CostMicro, u.CostReported
}

// parse reads the usage, error and id of an event or a whole body, in the request's API.
func (p *processor) parse(data []byte) (sse.Completion, error) { return apis[p.api].usage(data) }

// readCompletion meters a buffered (non-streamed) completion or response.
func (p *processor) readCompletion(body []byte) {
	c, err := p.parse(body)
	p.outBytes = int64(c.OutputBytes)
	if p.outBytes > 0 {
		p.outEvents = 1
	}
	if c.ID != "" {
		p.provID = c.ID[:min(len(c.ID), 200)]
	}
	p.upErr = c.Error
	if err != nil {
		p.s.log.Warn("unreadable completion from the upstream; the charge will be estimated", "request_id", p.id, "err", err)
		return
	}
	if c.Usage != nil {
		p.setUsage(*c.Usage)
	}
}

// windowBytes is how much of each end of a body too large to keep whole is kept: a usage
// object is a few hundred bytes, a final response event's members after it a few kilobytes.
const windowBytes = 64 << 10

// keepEnds keeps the first and the last windowBytes of a body streamed through.
func (p *processor) keepEnds(chunk []byte) {
	if n := min(len(chunk), windowBytes-len(p.head)); n > 0 {
		p.head = append(p.head, chunk[:n]...)
	}
	p.keepTail(chunk)
}

// keepTail keeps the last windowBytes of what it is given, across calls.
func (p *processor) keepTail(b []byte) {
	if len(b) >= windowBytes {
		p.tail = append(p.tail[:0], b[len(b)-windowBytes:]...)
		return
	}
	if over := len(p.tail) + len(b) - windowBytes; over > 0 {
		p.tail = p.tail[:copy(p.tail, p.tail[over:])]
	}
	p.tail = append(p.tail, b...)
}

// readEnds meters a windowed body from its ends: the usage is usually last, after the vectors,
// else first.
func (p *processor) readEnds() {
	for _, w := range [][]byte{p.tail, p.head} {
		c, err := p.parse(w)
		if err != nil {
			p.s.log.Warn("unreadable usage from the upstream; the charge will be estimated", "request_id", p.id, "err", err)
		}
		if c.Usage != nil {
			p.setUsage(*c.Usage)
			return
		}
	}
}

// usageFromTail reads the usage of a Responses stream that ended normally but whose final
// event the scanner could not split.
func (p *processor) usageFromTail() {
	if p.usage != nil || len(p.tail) == 0 || !p.ended {
		return
	}
	c, err := sse.ParseResponseTail(p.tail)
	switch {
	case err != nil:
		p.s.log.Warn("unreadable usage from the upstream; the charge will be estimated", "request_id", p.id, "err", err)
	case c.Usage != nil:
		p.setUsage(*c.Usage)
	}
}

// afterSend runs once an answer is on its way: the last chunk's answer triggers settlement,
// so the client is not kept waiting on the ledger.
func (p *processor) afterSend() {
	if p.holdOpen {
		p.sent = true
	}
	if p.ended && !p.finished {
		p.finished = true
		p.settle("")
	}
}

// abort ends a stream that stopped before its response did (client gone, EOF, error).
func (p *processor) abort(reason string) {
	if p.finished {
		return
	}
	p.finished = true
	p.settle(reason)
}

// close gives back what the stream still holds, on every path.
func (p *processor) close() {
	p.releaseSlot()
}

func (p *processor) releaseSlot() {
	if p.release == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(p.ctx), p.s.cfg.SettleTimeout)
	defer cancel()
	p.release(ctx)
	p.release = nil
}

// fail ends the request with an OpenAI-shaped error.
func (p *processor) fail(o Outcome, e *apiError) *extprocv3.ProcessingResponse {
	p.end(o)
	p.finished = true
	return immediate(e.Status, "application/json", e.body(), nil)
}

func (p *processor) unavailable(what string, err error) *extprocv3.ProcessingResponse {
	p.s.log.Error("store unavailable", "request_id", p.id, "step", what, "err", err)
	return p.fail(OutcomeUnavailable, &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "billing_unavailable",
		Message: "Billing is temporarily unavailable, so the request was not sent. Retry in a few seconds."})
}

// paywallMessage answers with the authorize or top-up message: an ordinary completion or
// response (embeddings: a 402 error carrying the same text).
func (p *processor) paywallMessage(a Action, availableMicro int64) *extprocv3.ProcessingResponse {
	link := p.s.deps.Links.URL(p.pw.ID, p.userID, purposeOf(a))
	var text string
	if a == ActionAuthorize {
		text = p.pw.AuthorizeMessage(link)
		p.end(OutcomeAuthorize)
	} else {
		text = p.pw.TopUpMessage(link, availableMicro)
		p.end(OutcomeTopUp)
	}
	p.finished = true
	message := apis[p.api].message
	if message == nil { // embeddings: no message to carry the link
		e := embeddingsPaywallMessage(a, text)
		return immediate(e.Status, "application/json", e.body(), []*corev3.HeaderValueOption{setHeader(ActionHeader, []byte(a))})
	}
	ct, body := message("tg-"+p.id, p.req.Model, text, p.req.Stream, p.s.deps.Clock.Now())
	return immediate(http.StatusOK, ct, body, []*corev3.HeaderValueOption{setHeader(ActionHeader, []byte(a))})
}

// end records the request's outcome once.
func (p *processor) end(o Outcome) {
	if p.outcome != "" && p.outcome != OutcomeFree {
		return
	}
	p.outcome = o
	p.s.metrics.requests.WithLabelValues(string(o)).Inc()
}

func (p *processor) phaseContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(p.ctx, p.s.cfg.PhaseTimeout)
}

func immediate(code int, contentType string, body []byte, extra []*corev3.HeaderValueOption) *extprocv3.ProcessingResponse {
	set := append([]*corev3.HeaderValueOption{setHeader("content-type", []byte(contentType))}, extra...)
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(code)}, //nolint:gosec // an HTTP status fits in int32
		Headers: &extprocv3.HeaderMutation{SetHeaders: set},
		Body:    body,
		Details: "tollgate",
	}}}
}

func continueRequestHeaders() *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}}
}

func continueRequestBody() *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}}
}

func continueResponseHeaders() *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}}
}

func continueResponseBody() *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}}
}

func setHeader(key string, value []byte) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: key, RawValue: value},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// headerValue reads a header; Envoy sends raw_value, older versions value.
func headerValue(h *corev3.HeaderValue) string {
	if len(h.RawValue) > 0 {
		return string(h.RawValue)
	}
	return h.Value
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// userMessage turns a paywall.ErrBadUserID into its user-facing text.
func userMessage(err error) string {
	msg := strings.TrimPrefix(err.Error(), paywall.ErrBadUserID.Error()+": ")
	return "Bad user id: " + msg + "."
}
