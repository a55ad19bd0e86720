package envoyemu

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// field is one header, key lower-cased as Envoy keeps them.
type field struct{ key, value string }

// headerMap is an ordered header map with Envoy's semantics: lower-case keys, pseudo-headers
// (":path", ":status", …) held beside the others.
type headerMap []field

func (h headerMap) get(key string) (string, bool) {
	for _, f := range h {
		if f.key == key {
			return f.value, true
		}
	}
	return "", false
}

// set replaces every value of key with one value, keeping the first position.
func (h *headerMap) set(key, value string) {
	out := (*h)[:0]
	done := false
	for _, f := range *h {
		if f.key != key {
			out = append(out, f)
		} else if !done {
			out = append(out, field{key, value})
			done = true
		}
	}
	if !done {
		out = append(out, field{key, value})
	}
	*h = out
}

func (h *headerMap) add(key, value string) { *h = append(*h, field{key, value}) }

func (h *headerMap) del(key string) {
	out := (*h)[:0]
	for _, f := range *h {
		if f.key != key {
			out = append(out, f)
		}
	}
	*h = out
}

// proto is what Envoy sends the server: every header, values in raw_value (Envoy's default
// since send_header_raw_value).
func (h headerMap) proto() *corev3.HeaderMap {
	out := &corev3.HeaderMap{Headers: make([]*corev3.HeaderValue, 0, len(h))}
	for _, f := range h {
		out.Headers = append(out.Headers, &corev3.HeaderValue{Key: f.key, RawValue: []byte(f.value)})
	}
	return out
}

// httpHeader returns the regular (non-pseudo) headers as net/http wants them.
func (h headerMap) httpHeader() http.Header {
	out := http.Header{}
	for _, f := range h {
		if !strings.HasPrefix(f.key, ":") {
			out[http.CanonicalHeaderKey(f.key)] = append(out[http.CanonicalHeaderKey(f.key)], f.value)
		}
	}
	return out
}

func fromHTTP(h http.Header, into *headerMap) {
	for k, vs := range h {
		for _, v := range vs {
			into.add(strings.ToLower(k), v)
		}
	}
}

// checkResult is the outcome of a mutation rule check.
type checkResult int

const (
	checkOK     checkResult = iota
	checkIgnore             // the mutation is skipped (counted as rejected_header_mutations)
	checkFail               // the request fails (disallow_is_error)
)

type checkOp int

const (
	opSet checkOp = iota
	opAppend
	opRemove
)

// checker is Envoy's HeaderMutationRules checker
// (source/extensions/filters/common/mutation_rules/mutation_rules.cc).
type checker struct {
	allowAllRouting, allowEnvoy, disallowSystem, disallowAll, disallowIsError bool
	allowExpr, disallowExpr                                                   *regexp.Regexp
}

func newChecker(r *mutationrulesv3.HeaderMutationRules) (checker, error) {
	c := checker{
		allowAllRouting: r.GetAllowAllRouting().GetValue(),
		allowEnvoy:      r.GetAllowEnvoy().GetValue(),
		disallowSystem:  r.GetDisallowSystem().GetValue(),
		disallowAll:     r.GetDisallowAll().GetValue(),
		disallowIsError: r.GetDisallowIsError().GetValue(),
	}
	var err error
	if e := r.GetAllowExpression(); e != nil {
		if c.allowExpr, err = regexp.Compile("^(?:" + e.GetRegex() + ")$"); err != nil {
			return c, fmt.Errorf("mutation_rules.allow_expression: %w", err)
		}
	}
	if e := r.GetDisallowExpression(); e != nil {
		if c.disallowExpr, err = regexp.Compile("^(?:" + e.GetRegex() + ")$"); err != nil {
			return c, fmt.Errorf("mutation_rules.disallow_expression: %w", err)
		}
	}
	return c, nil
}

// permissiveChecker is the one Envoy uses for an ImmediateResponse's headers.
var permissiveChecker = checker{allowAllRouting: true, allowEnvoy: true}

func (c checker) check(op checkOp, name, value string) checkResult {
	if c.allowed(op, name) && (op == opRemove || validValue(name, value)) {
		return checkOK
	}
	if c.disallowIsError {
		return checkFail
	}
	return checkIgnore
}

func (c checker) allowed(op checkOp, name string) bool {
	if op == opRemove && (strings.HasPrefix(name, ":") || name == "host") {
		return false // ":" headers and host can never be removed
	}
	if c.disallowExpr != nil && c.disallowExpr.MatchString(name) {
		return false
	}
	if c.allowExpr != nil && c.allowExpr.MatchString(name) {
		return true
	}
	if c.disallowAll {
		return false
	}
	if !c.allowAllRouting && (name == "host" || name == ":authority" || name == ":method" || name == ":scheme") {
		return false
	}
	if strings.HasPrefix(name, ":") && (op == opAppend || c.disallowSystem) {
		return false
	}
	if !c.allowEnvoy && strings.HasPrefix(name, "x-envoy") {
		return false
	}
	return true
}

func validValue(name, value string) bool {
	if !strings.HasPrefix(name, ":") && !headerValueValid(value) {
		return false
	}
	switch name {
	case ":scheme":
		return value == "http" || value == "https"
	case ":status":
		n, err := strconv.ParseUint(value, 10, 32)
		return err == nil && n >= 200
	}
	return true
}

func headerValueValid(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == 0 || c == '\r' || c == '\n' {
			return false
		}
	}
	return true
}

func headerNameValid(n string) bool {
	if n == "" {
		return false
	}
	body := strings.TrimPrefix(n, ":")
	if body == "" {
		return false
	}
	for i := 0; i < len(body); i++ {
		c := body[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

// errMutation is a header mutation Envoy refuses with a 500.
var errMutation = errors.New("header mutation rejected")

// applyMutation applies a HeaderMutation the way Envoy's MutationUtils::applyHeaderMutations
// does: removals first, then sets; values from raw_value (a header set through the
// deprecated `value` field ends up empty); content-length skipped when the body mode lets
// Envoy drop it. A mutation the checker ignores is skipped; an error means Envoy answers 500.
func applyMutation(m *extprocv3.HeaderMutation, h *headerMap, c checker, replacingMessage, removeContentLength bool) error {
	for _, name := range m.GetRemoveHeaders() {
		if !headerNameValid(name) {
			return fmt.Errorf("%w: invalid character in remove_headers mutation", errMutation)
		}
		name = strings.ToLower(name)
		switch c.check(opRemove, name, "") {
		case checkOK:
			h.del(name)
		case checkIgnore:
			// skipped, as Envoy does
		case checkFail:
			return fmt.Errorf("%w: invalid attempt to remove %s", errMutation, name)
		}
	}
	for _, sh := range m.GetSetHeaders() {
		hv := sh.GetHeader()
		if hv == nil {
			continue
		}
		name := strings.ToLower(hv.GetKey())
		if removeContentLength && name == "content-length" {
			continue
		}
		if hv.GetValue() != "" && len(hv.GetRawValue()) > 0 {
			return fmt.Errorf("%w: only one of value or raw_value in the HeaderValue message should be set", errMutation)
		}
		value := string(hv.GetRawValue())
		if !headerNameValid(hv.GetKey()) || !headerValueValid(value) {
			return fmt.Errorf("%w: invalid character in set_headers mutation", errMutation)
		}
		// Only the deprecated `append` flag is emulated, not append_action. Tollgate's server
		// sends append_action OVERWRITE_IF_EXISTS_OR_ADD with `append` unset, which sets the
		// header either way.
		appendValue := sh.GetAppend().GetValue() //nolint:staticcheck // SA1019, see above
		_, exists := h.get(name)
		op := opSet
		if appendValue && exists {
			op = opAppend
		}
		res := c.check(op, name, value)
		if replacingMessage && name == ":method" {
			res = checkOK
		}
		switch res {
		case checkOK:
			if appendValue {
				h.add(name, value)
			} else {
				h.set(name, value)
			}
		case checkIgnore:
			// skipped, as Envoy does
		case checkFail:
			return fmt.Errorf("%w: invalid attempt to modify %s", errMutation, name)
		}
	}
	return nil
}

// applyBodyMutation returns the body after a BodyMutation.
func applyBodyMutation(m *extprocv3.BodyMutation, body []byte) []byte {
	switch {
	case m == nil:
		return body
	case m.GetClearBody():
		return nil
	case m.GetMutation() != nil:
		if b, ok := m.GetMutation().(*extprocv3.BodyMutation_Body); ok {
			return b.Body
		}
	}
	return body
}
