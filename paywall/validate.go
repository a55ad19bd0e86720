package paywall

import (
	"errors"
	"fmt"
	"strings"

	"github.com/tollgate-dev/tollgate/pricing"
)

// Defaults applied by Create to settings left at zero.
const (
	DefaultMaxTokens           = 1024
	DefaultMinCompletionTokens = 32
)

// Bounds of the settings.
const (
	maxNameLen       = 200
	maxUpstreamLen   = 100
	maxCredentialLen = 4096
	maxTokensCap     = 10_000_000
	maxPerUserCap    = 1_000_000
)

// normalize fills defaults and checks every setting, reporting all problems at once.
// feeBps is the platform fee a built-in paywall's markup must cover.
func (p Paywall) normalize(builtinUpstream string, feeBps int64) (Paywall, error) {
	var probs []error
	bad := func(format string, args ...any) { probs = append(probs, fmt.Errorf(format, args...)) }

	p.Name = strings.TrimSpace(p.Name)
	p.Owner = strings.TrimSpace(p.Owner)
	if p.Name == "" || len(p.Name) > maxNameLen {
		bad("name: required, at most %d characters", maxNameLen)
	}
	if p.Owner == "" || len(p.Owner) > maxNameLen {
		bad("owner: required, at most %d characters", maxNameLen)
	}
	switch p.Mode {
	case ModeBuiltin:
		if p.Upstream == "" {
			p.Upstream = builtinUpstream
		}
		if p.Upstream != builtinUpstream {
			bad("upstream: a built-in paywall uses %q, not %q", builtinUpstream, p.Upstream)
		}
		if p.UpstreamKey != "" {
			bad("upstream_key: a built-in paywall uses the operator's key; leave it empty")
		}
		if err := pricing.CheckBuiltinMarkup(p.MarkupBps, feeBps); err != nil {
			bad("markup_bps: %w", err)
		}
	case ModeBYOK:
		if !upstreamName(p.Upstream) {
			bad("upstream: required for BYOK, 1 to %d characters of A-Z a-z 0-9 . _ - (an Envoy cluster name), got %q", maxUpstreamLen, p.Upstream)
		}
		if p.UpstreamKey == "" || len(p.UpstreamKey) > maxCredentialLen || !headerSafe(p.UpstreamKey) {
			bad("upstream_key: required for BYOK, at most %d printable characters without spaces", maxCredentialLen)
		}
		if p.MarkupBps < 0 || p.MarkupBps > pricing.MaxMarkupBps {
			bad("markup_bps: must be 0…%d, got %d", pricing.MaxMarkupBps, p.MarkupBps)
		}
	default:
		bad("mode: must be %q or %q, got %q", ModeBuiltin, ModeBYOK, p.Mode)
	}
	if p.DefaultMaxTokens == 0 {
		p.DefaultMaxTokens = DefaultMaxTokens
	}
	if p.MinCompletionTokens == 0 {
		p.MinCompletionTokens = min(DefaultMinCompletionTokens, p.DefaultMaxTokens)
	}
	if p.DefaultMaxTokens < 1 || p.DefaultMaxTokens > maxTokensCap {
		bad("default_max_tokens: must be 1…%d, got %d", maxTokensCap, p.DefaultMaxTokens)
	}
	if p.MinCompletionTokens < 1 || p.MinCompletionTokens > p.DefaultMaxTokens {
		bad("min_completion_tokens: must be 1…default_max_tokens (%d), got %d", p.DefaultMaxTokens, p.MinCompletionTokens)
	}
	for _, t := range [2][2]string{{"authorize", p.Templates.Authorize}, {"topup", p.Templates.TopUp}} {
		if t[1] != "" {
			if err := checkTemplate(t[0], t[1]); err != nil {
				probs = append(probs, err)
			}
		}
	}
	if p.PayoutAddress != "" {
		a, err := NormalizeWallet(p.PayoutAddress)
		if err != nil {
			bad("payout_address: %w", err)
		}
		p.PayoutAddress = a
	}
	if p.MaxConcurrent < 0 || p.MaxConcurrent > maxPerUserCap {
		bad("max_concurrent: must be 0 (no cap)…%d, got %d", maxPerUserCap, p.MaxConcurrent)
	}
	if p.RatePerMinute < 0 || p.RatePerMinute > maxPerUserCap {
		bad("rate_per_minute: must be 0 (no cap)…%d, got %d", maxPerUserCap, p.RatePerMinute)
	}
	if len(probs) > 0 {
		return Paywall{}, fmt.Errorf("%w: %w", ErrInvalid, errors.Join(probs...))
	}
	return p, nil
}

// NormalizeWallet checks a 0x-prefixed 20-byte hex address and returns it in lower case.
// (Checksums are the wallet software's business: the address has been proven by a signature
// before it reaches here.)
// It can return: ErrBadWallet.
func NormalizeWallet(a string) (string, error) {
	if len(a) != 42 || a[0] != '0' || (a[1] != 'x' && a[1] != 'X') {
		return "", fmt.Errorf("%w: want 0x and 40 hex digits, got %q", ErrBadWallet, a)
	}
	b := []byte(a)
	b[1] = 'x'
	for i := 2; i < len(b); i++ {
		c := b[i]
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
		case c >= 'A' && c <= 'F':
			b[i] = c + ('a' - 'A')
		default:
			return "", fmt.Errorf("%w: want 0x and 40 hex digits, got %q", ErrBadWallet, a)
		}
	}
	return string(b), nil
}

func upstreamName(s string) bool {
	if s == "" || len(s) > maxUpstreamLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !base64URLChar(c) && c != '.' {
			return false
		}
	}
	return true
}

// headerSafe reports whether s can travel in an HTTP header value after "Bearer ".
func headerSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}
