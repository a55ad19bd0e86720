package ledger

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

const (
	// maxMicro bounds every amount (10^9 USDC) so that no sum of a few of them overflows int64.
	maxMicro = 1_000_000_000_000_000
	// maxRefLen bounds keys, paywall ids, chain ids and other names.
	maxRefLen = 256
	// maxTTL bounds a hold's life.
	maxTTL = 30 * 24 * time.Hour
	// reservedKeyPrefix marks the keys the ledger derives itself (payout settle/fail).
	reservedKeyPrefix = "ledger:"
)

func invalid(format string, args ...any) error { return wrapf(ErrInvalid, format, args...) }

func validKey(k string) error {
	switch {
	case k == "":
		return invalid("idempotency key is empty")
	case len(k) > maxRefLen:
		return invalid("idempotency key is longer than %d bytes", maxRefLen)
	case !utf8.ValidString(k):
		return invalid("idempotency key is not UTF-8")
	case strings.HasPrefix(k, reservedKeyPrefix):
		return invalid("idempotency keys starting with %q are reserved", reservedKeyPrefix)
	}
	return nil
}

func validRef(what, s string) error {
	switch {
	case strings.TrimSpace(s) == "":
		return invalid("%s is empty", what)
	case len(s) > maxRefLen:
		return invalid("%s is longer than %d bytes", what, maxRefLen)
	case !utf8.ValidString(s):
		return invalid("%s is not UTF-8", what)
	}
	return nil
}

// validAddress checks a 0x-prefixed 20-byte hex address (any case).
func validAddress(what, a string) error {
	a = normalizeAddress(a)
	if len(a) != 42 || a[:2] != "0x" {
		return invalid("%s %q is not a 0x-prefixed 40-hex-digit address", what, a)
	}
	for _, c := range a[2:] {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return invalid("%s %q is not a 0x-prefixed 40-hex-digit address", what, a)
		}
	}
	return nil
}

func validAmount(what string, v int64) error {
	if v <= 0 || v > maxMicro {
		return invalid("%s must be between 1 and %d micro-USDC, got %d", what, int64(maxMicro), v)
	}
	return nil
}

// ValidUUID reports whether s is a UUID in its canonical 8-4-4-4-12 hex form, either case (the
// ledger stores ids in lower case). Ids that are not cannot name anything, so lookups answer
// "not found" without asking the database; the API and the CLI refuse them with the same test.
func ValidUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') && (c < 'A' || c > 'F') {
				return false
			}
		}
	}
	return true
}

// validate checks a split: every share ≥ 0 and bounded, a provider named when it is owed money.
func (s Split) validate() error {
	for _, v := range []struct {
		name string
		v    int64
	}{{"provider share", s.ProviderMicro}, {"fee share", s.FeeMicro}, {"developer share", s.DeveloperMicro}} {
		if v.v < 0 || v.v > maxMicro {
			return invalid("%s must be between 0 and %d micro-USDC, got %d", v.name, int64(maxMicro), v.v)
		}
	}
	if s.ProviderMicro > 0 {
		if err := validRef("provider", s.Provider); err != nil {
			return err
		}
	}
	return nil
}

// withShortfall takes shortfall out of the split: from the developer's share first, then the
// fee, then the provider's (the provider is a real bill the operator must pay).
func (s Split) withShortfall(shortfall int64) Split {
	take := func(v *int64) {
		n := min(*v, shortfall)
		*v -= n
		shortfall -= n
	}
	take(&s.DeveloperMicro)
	take(&s.FeeMicro)
	take(&s.ProviderMicro)
	return s
}

// holdHash is the request hash of a hold of r on wallet (normalized).
func holdHash(wallet string, r HoldRequest) []byte {
	return requestHash("hold", wallet, r.Paywall, itoa(r.AmountMicro))
}

// captureHash is the request hash of a capture.
func captureHash(r CaptureRequest) []byte {
	return requestHash("capture", append([]string{r.HoldID}, splitFields(r.Split)...)...)
}

// requestHash fingerprints what a request asks the ledger to do with money, so that a replay of
// its key can be told apart from a different request. Each field is length-prefixed.
func requestHash(op string, fields ...string) []byte {
	h := sha256.New()
	writeField(h, op)
	for _, f := range fields {
		writeField(h, f)
	}
	return h.Sum(nil)
}

func writeField(h hash.Hash, s string) {
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(s)))])
	h.Write([]byte(s))
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

func splitFields(s Split) []string {
	provider := s.Provider
	if s.ProviderMicro == 0 {
		provider = ""
	}
	return []string{itoa(s.ProviderMicro), provider, itoa(s.FeeMicro), itoa(s.DeveloperMicro)}
}

// wrapf wraps a sentinel error with details.
func wrapf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))
}
