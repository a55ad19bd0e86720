package webhook_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/webhook"
)

// BEGIN docs/api.md verify example
// verifyTollgateSignature checks a webhook's Tollgate-Signature header against the raw body.
func verifyTollgateSignature(secret, header string, body []byte, now time.Time) error {
	var ts, sig string
	for part := range strings.SplitSeq(header, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sig == "" {
		return errors.New("malformed Tollgate-Signature")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return errors.New("timestamp too old or in the future: a replay?")
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "." + string(body)))
	want := hex.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(sig), []byte(want)) {
		return errors.New("signature does not match")
	}
	return nil
}

// END docs/api.md verify example

// TestDocsVerifyExample: the Go in docs/api.md is this file's verifyTollgateSignature, which
// accepts Signature's header and refuses a changed body, another secret and an old timestamp.
func TestDocsVerifyExample(t *testing.T) {
	src, err := os.ReadFile("verify_doc_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, code, _ := strings.Cut(string(src), "// BEGIN docs/api.md verify example\n")
	code, _, _ = strings.Cut(code, "\n// END docs/api.md verify example")
	doc, err := os.ReadFile("../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), "```go\n"+code+"```\n") {
		t.Fatalf("docs/api.md's verification example differs from verifyTollgateSignature; copy it:\n%s", code)
	}
	now := time.Now()
	body := []byte(`{"id":"charge.created:x"}`)
	h := webhook.Signature("whsec_a", now, body)
	if err := verifyTollgateSignature("whsec_a", h, body, now); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"body":   verifyTollgateSignature("whsec_a", h, []byte(`{"id":"y"}`), now),
		"secret": verifyTollgateSignature("whsec_b", h, body, now),
		"old":    verifyTollgateSignature("whsec_a", h, body, now.Add(10*time.Minute)),
		"empty":  verifyTollgateSignature("whsec_a", "", body, now),
	} {
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
