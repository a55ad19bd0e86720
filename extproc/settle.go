package extproc

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/tollgate-dev/tollgate/extproc/generation"
	"github.com/tollgate-dev/tollgate/internal/wait"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/pricing"
)

// maxSettleAttempts bounds the retries of one capture or void (same idempotency key) within
// the request's settle_timeout; the settler takes over after that.
const maxSettleAttempts = 3

// settle captures the hold once the response is over. reason is "" when the response ended
// normally, else why the stream stopped early (client_gone, stream_closed, …). The charge
// comes from the upstream's usage when it reported one, else from an estimate: the prompt
// estimate plus the output counted so far, marked estimated. It runs detached from the
// stream's context: the client leaving must not cancel its own charge.
func (p *processor) settle(reason string) {
	if !p.holdOpen {
		if p.outcome == OutcomeFree {
			p.end(OutcomeFree)
		}
		return
	}
	if !p.sent {
		// The rewritten request never left: nothing to charge.
		p.voidNow(reason)
		return
	}
	p.usageFromTail()
	usage, estimated := p.chargedUsage()
	why := reason
	if estimated && why == "" {
		why = reasonNoUsage
		if p.upErr != "" {
			why = reasonUpstreamErrorEvent
		}
	}
	charge, err := p.price.CostMicro(usage, p.pw.MarkupBps)
	var provider int64
	if err == nil && p.pw.Mode != paywall.ModeBYOK {
		provider, err = p.price.ProviderCostMicro(usage)
	}
	if err != nil {
		// Only absurd reported counts get here: charge the hold, the most the user agreed to.
		p.s.log.Error("cost of the usage could not be computed; charging the hold", "request_id", p.id, "err", err)
		charge, provider, estimated = p.hold.AmountMicro, 0, true
		why = reasonCostError
	}
	split, err := pricing.Split(charge, provider, p.s.cfg.FeeBps, p.s.cfg.Provider)
	if err != nil {
		p.s.log.Error("split failed; the hold will expire", "request_id", p.id, "err", err)
		p.end(OutcomeSettleFailed)
		return
	}
	meta := map[string]string{
		ledger.MetaRequestID: p.id,
		ledger.MetaAPI:       apis[p.api].label,
		ledger.MetaPaywall:   p.pw.ID, // the API shows a paywall only its own charges of a shared wallet
		ledger.MetaModel:     p.req.Model,
		ledger.MetaUser:      p.userID,
	}
	setUsageMeta(meta, usage)
	if p.envoyID != "" {
		meta[ledger.MetaEnvoyRequestID] = p.envoyID
	}
	if p.provID != "" {
		// For the built-in provider this is the generation id a reconciler can look up.
		meta[ledger.MetaProviderID] = p.provID
	}
	if estimated {
		meta[ledger.MetaEstimateReason] = why
	}
	if p.costReported && !estimated && p.pw.Mode != paywall.ModeBYOK {
		// What the provider says it charged, beside what the catalog priced (the provider's
		// share): a gap means the catalog is stale or the provider routed to a dearer host.
		meta[ledger.MetaProviderReportedCost] = strconv.FormatInt(p.reportedCost, 10)
		p.s.metrics.providerCost.WithLabelValues(costReported).Add(float64(p.reportedCost))
		p.s.metrics.providerCost.WithLabelValues(costPriced).Add(float64(provider))
	}
	st := &settlement{Op: opCapture, RequestID: p.id, HoldID: p.hold.ID, Deadline: p.retryDeadline(), Reason: why,
		Capture: &ledger.CaptureRequest{Key: "tg:capture:" + p.id, HoldID: p.hold.ID, Split: split, Estimated: estimated, Metadata: meta}}
	if estimated && p.provID != "" && apis[p.api].generations && p.pw.Mode != paywall.ModeBYOK && p.s.deps.Generations != nil && p.s.cfg.GenerationWait > 0 {
		// The built-in provider keeps a record of what the generation used, stream cut or not:
		// charge that, once it is there, rather than the estimate. (Its record is looked up by
		// a completion's generation id; a response's id is not known to name one.)
		st.refine, st.refineUntil = p.fromProviderRecord(st.Capture), time.Now().Add(p.s.cfg.GenerationWait)
		if st.refineUntil.After(st.Deadline) {
			st.refineUntil = st.Deadline
		}
		p.s.settler.start(st)
		return
	}
	background, res, err := p.runSettlement(st)
	switch {
	case background:
	case err == nil:
		p.holdOpen = false
		p.end(p.s.captured(res, estimated, why))
		p.s.log.Debug("captured", "request_id", p.id, "hold_id", p.hold.ID, "charged_micro", res.ChargedMicro,
			"released_micro", res.ReleasedMicro, "estimated", estimated, "reason", why)
	default:
		p.s.log.Error("capture failed", "request_id", p.id, "hold_id", p.hold.ID, "charge_micro", charge, "err", err)
		p.end(OutcomeSettleFailed)
	}
}

// fromProviderRecord returns the function that asks the built-in provider what the generation
// used and returns the capture of that usage, in place of est (the estimate's). The price,
// markup and fee are this request's. A record that cannot be read or priced is errNoRecord.
func (p *processor) fromProviderRecord(est *ledger.CaptureRequest) func(context.Context) (*ledger.CaptureRequest, error) {
	gens, genID, price, markup := p.s.deps.Generations, p.provID, p.price, p.pw.MarkupBps
	feeBps, providerName := p.s.cfg.FeeBps, p.s.cfg.Provider
	return func(ctx context.Context) (*ledger.CaptureRequest, error) {
		u, err := gens.Usage(ctx, genID)
		if errors.Is(err, generation.ErrBadAnswer) {
			return nil, fmt.Errorf("%w: %w", errNoRecord, err)
		}
		if err != nil {
			return nil, err
		}
		charge, err := price.CostMicro(u, markup)
		var provider int64
		if err == nil {
			provider, err = price.ProviderCostMicro(u)
		}
		var split ledger.Split
		if err == nil {
			split, err = pricing.Split(charge, provider, feeBps, providerName)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errNoRecord, err)
		}
		meta := maps.Clone(est.Metadata)
		delete(meta, ledger.MetaEstimateReason)
		meta[ledger.MetaUsageSource] = "provider_record"
		setUsageMeta(meta, u)
		return &ledger.CaptureRequest{Key: est.Key, HoldID: est.HoldID, Split: split, Metadata: meta}, nil
	}
}

// setUsageMeta writes u's token counts into a capture's metadata, the cached and reasoning ones
// only when there are any.
func setUsageMeta(meta map[string]string, u pricing.Usage) {
	meta[ledger.MetaPromptTokens] = strconv.FormatInt(u.PromptTokens, 10)
	meta[ledger.MetaCompletionTokens] = strconv.FormatInt(u.CompletionTokens, 10)
	delete(meta, ledger.MetaCachedTokens)
	delete(meta, ledger.MetaReasoningTokens)
	if u.CachedTokens > 0 {
		meta[ledger.MetaCachedTokens] = strconv.FormatInt(u.CachedTokens, 10)
	}
	if u.ReasoningTokens > 0 {
		meta[ledger.MetaReasoningTokens] = strconv.FormatInt(u.ReasoningTokens, 10)
	}
}

// captureFinal are the capture errors no retry can change.
var captureFinal = []error{ledger.ErrHoldExpired, ledger.ErrHoldFinished, ledger.ErrHoldNotFound, ledger.ErrInvalid, ledger.ErrIdempotencyConflict}

// voidFinal are the void errors no retry can change; all but ErrHoldNotFound mean there is
// nothing left to release.
var voidFinal = []error{ledger.ErrHoldFinished, ledger.ErrHoldExpired, ledger.ErrHoldNotFound}

// captured counts a capture in the metrics and returns the request's outcome.
func (s *Server) captured(res ledger.CaptureResult, estimated bool, why string) Outcome {
	m := s.metrics
	m.capturedMicro.Add(float64(res.ChargedMicro))
	m.shortfall.Add(float64(res.ShortfallMicro))
	if estimated {
		m.captures.WithLabelValues(usageEstimated).Inc()
		m.estimated.WithLabelValues(why).Inc()
		return OutcomeEstimated
	}
	m.captures.WithLabelValues(usageReported).Inc()
	return OutcomeCharged
}

// retryDeadline is when background retries of this request's settlement stop: shortly before
// the hold expires (a tenth of the hold's life before, at most 30s).
func (p *processor) retryDeadline() time.Time {
	exp := p.hold.ExpiresAt
	if exp.IsZero() {
		exp = p.s.deps.Clock.Now().Add(p.s.cfg.HoldTTL)
	}
	return exp.Add(-min(p.s.cfg.HoldTTL/10, 30*time.Second))
}

// chargedUsage is the usage to charge and whether it is an estimate.
func (p *processor) chargedUsage() (pricing.Usage, bool) {
	if p.usage != nil {
		return *p.usage, false
	}
	out := max(p.outEvents, (p.outBytes+3)/4)
	out = min(out, p.budget*max(p.req.Choices, 1))
	return pricing.Usage{PromptTokens: p.promptEst, CompletionTokens: out}, true
}

// voidNow releases the whole hold: the upstream failed, or the request never left.
func (p *processor) voidNow(why string) {
	if !p.holdOpen {
		return
	}
	// Nothing is charged either way, but until it is voided the hold keeps the user's money
	// from other requests, so a void that keeps failing goes on in the background too.
	background, _, err := p.runSettlement(&settlement{Op: opVoid, RequestID: p.id, HoldID: p.hold.ID, Deadline: p.retryDeadline()})
	switch {
	case background:
	case voided(err):
		p.holdOpen = false
		p.s.metrics.voids.Inc()
	default:
		p.s.log.Error("void failed", "request_id", p.id, "hold_id", p.hold.ID, "why", why, "err", err)
		p.end(OutcomeSettleFailed)
	}
}

// voided reports whether a void's result leaves nothing held: it succeeded, or the hold had
// already been captured or had expired.
func voided(err error) bool {
	return err == nil || errors.Is(err, ledger.ErrHoldFinished) || errors.Is(err, ledger.ErrHoldExpired)
}

// runSettlement runs one capture or void within the request's settle_timeout, retried a few
// times. When it still fails with an error retries may change (the ledger is unreachable or kept
// failing), it hands st to the settler, which keeps trying with the same request (so the same
// idempotency key) until the hold is about to expire: background is true and err the last
// failure. Otherwise res and err are the last attempt's.
func (p *processor) runSettlement(st *settlement) (background bool, res ledger.CaptureResult, err error) {
	defer p.s.metrics.observe(phaseSettle, time.Now())
	ctx, cancel := context.WithTimeout(context.WithoutCancel(p.ctx), p.s.cfg.SettleTimeout)
	defer cancel()
	err = retry(ctx, func(ctx context.Context) error {
		res, err = p.s.settleOnce(ctx, st)
		return err
	}, st.final())
	if err == nil || isFinal(err, st.final()) {
		return false, res, err
	}
	p.s.settler.start(st)
	return true, res, err
}

// retry runs try up to maxSettleAttempts times with a short backoff, stopping at success, at
// one of the final errors, or when ctx ends.
func retry(ctx context.Context, try func(context.Context) error, final []error) error {
	var err error
	for attempt := range maxSettleAttempts {
		if err = try(ctx); err == nil || isFinal(err, final) {
			return err
		}
		if attempt == maxSettleAttempts-1 {
			break
		}
		if werr := wait.Sleep(ctx, time.Duration(50<<(2*attempt))*time.Millisecond); werr != nil {
			return errors.Join(err, werr)
		}
	}
	return err
}
