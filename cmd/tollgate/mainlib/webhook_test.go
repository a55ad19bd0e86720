package mainlib

import (
	"errors"
	"strings"
	"testing"
)

// TestPaywallSetWebhook sets a webhook (the secret printed once, stored sealed), refuses bad
// URLs as usage errors, and turns it off.
func TestPaywallSetWebhook(t *testing.T) {
	c := newCLI(t)
	pw := c.createPaywall()
	for _, bad := range []string{"http://app.example.com/hook", "ftp://x/", "not a url", "https://u:p@app.example.com/"} {
		if _, err := c.run("paywall", "set-webhook", pw.ID, "-url", bad); !errors.Is(err, errUsage) {
			t.Errorf("-url %q: %v, want a usage error", bad, err)
		}
	}
	if _, err := c.run("paywall", "set-webhook", pw.ID); !errors.Is(err, errUsage) {
		t.Errorf("no -url: %v, want a usage error", err)
	}
	out := c.mustRun("paywall", "set-webhook", pw.ID, "-url", "https://app.example.com/hook")
	_, rest, ok := strings.Cut(out, "Signing secret: ")
	secret, _, _ := strings.Cut(rest, "\n")
	if !ok || !strings.HasPrefix(secret, "whsec_") {
		t.Fatalf("no secret printed:\n%s", out)
	}
	var sealed string
	if err := c.db.Pool.QueryRow(t.Context(), `SELECT secret_sealed FROM webhook_endpoints WHERE paywall = $1`, pw.ID).Scan(&sealed); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(sealed, secret) || !strings.HasPrefix(sealed, "v1:") {
		t.Fatalf("secret stored as %q", sealed)
	}
	if out := c.mustRun("paywall", "set-webhook", pw.ID, "-url", ""); !strings.Contains(out, "off") {
		t.Fatalf("turning off: %s", out)
	}
	if out := c.mustRun("paywall", "set-webhook", pw.ID, "-url", ""); !strings.Contains(out, "had no webhook") {
		t.Fatalf("turning off again (the first removed it): %s", out)
	}
	if _, err := c.run("paywall", "set-webhook", "no-such-paywall", "-url", "https://a.example/"); err == nil {
		t.Error("unknown paywall accepted")
	}
}
