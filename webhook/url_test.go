package webhook_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/webhook"
)

func TestValidateURL(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"https://app.example.com/hook", true},
		{"http://127.0.0.1:8080/hook", true},
		{"http://localhost/hook", true},
		{"http://[::1]:9/hook", true},
		{"http://app.example.com/hook", false},
		{"http://10.0.0.1/hook", false},
		{"ftp://app.example.com/", false},
		{"app.example.com/hook", false},
		{"https:///hook", false},
		{"https://user:pw@app.example.com/", false},
		{"https://app.example.com/#x", false},
		{"https://app.example.com/" + strings.Repeat("a", 2048), false},
	} {
		err := webhook.ValidateURL(tc.url)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, webhook.ErrInvalidURL)) {
			t.Errorf("ValidateURL(%q) = %v, want ok=%v", tc.url, err, tc.ok)
		}
	}
}

// FuzzValidateURL: whatever is accepted parses as an http(s) URL with a host, no user info
// and no fragment, within 2,048 bytes. (Schemes are case-insensitive: "HTTPS://…" is accepted,
// so the check reads the parsed scheme, not the string's prefix.)
func FuzzValidateURL(f *testing.F) {
	f.Add("https://app.example.com/hook")
	f.Add("http://127.0.0.1:1/")
	f.Add("HTTPS://app.example.com/hook")
	f.Fuzz(func(t *testing.T, s string) {
		if webhook.ValidateURL(s) != nil {
			return
		}
		u, err := url.Parse(s)
		if err != nil || len(s) > 2048 || (u.Scheme != "https" && u.Scheme != "http") || u.Hostname() == "" ||
			u.User != nil || strings.Contains(s, "#") {
			t.Fatalf("accepted %q", s)
		}
	})
}
