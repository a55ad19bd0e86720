package webhook_test

import (
	"errors"
	"net/url"
	"strconv"
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
		{"https://app.example.com:8443/hook", true},
		{"https://app.example.com:/hook", true}, // an empty port is the scheme's
		{"https://app.example.com:0/hook", false},
		{"https://app.example.com:99999/hook", false},
	} {
		err := webhook.ValidateURL(tc.url)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, webhook.ErrInvalidURL)) {
			t.Errorf("ValidateURL(%q) = %v, want ok=%v", tc.url, err, tc.ok)
		}
	}
}

// TestValidateURLErrors: each refused URL's error says what is wrong with it.
func TestValidateURLErrors(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"https://app.example.com:99999/hook", `webhook: invalid URL: "https://app.example.com:99999/hook" has port 99999; a port is 1 to 65535`},
		{"https://app.example.com:0/hook", `webhook: invalid URL: "https://app.example.com:0/hook" has port 0; a port is 1 to 65535`},
		{"https://app.example.com:abc/hook", `webhook: invalid URL: "https://app.example.com:abc/hook" does not parse (invalid port ":abc" after host); use one such as https://app.example.com/tollgate/webhook`},
		{"https://app example.com/hook", `webhook: invalid URL: "https://app example.com/hook" does not parse (invalid character " " in host name); use one such as https://app.example.com/tollgate/webhook`},
		{"app.example.com/hook", `webhook: invalid URL: "app.example.com/hook" is not an absolute URL such as https://app.example.com/tollgate/webhook`},
	} {
		if err := webhook.ValidateURL(tc.url); err == nil || err.Error() != tc.want {
			t.Errorf("ValidateURL(%q) = %v\nwant %s", tc.url, err, tc.want)
		}
	}
}

// FuzzValidateURL: whatever is accepted parses as an http(s) URL with a host, no user info,
// no fragment and no port outside 1–65535, within 2,048 bytes. (Schemes are case-insensitive: "HTTPS://…" is accepted,
// so the check reads the parsed scheme, not the string's prefix.)
func FuzzValidateURL(f *testing.F) {
	f.Add("https://app.example.com/hook")
	f.Add("http://127.0.0.1:1/")
	f.Add("HTTPS://app.example.com/hook")
	f.Add("https://app.example.com:65536/hook")
	f.Fuzz(func(t *testing.T, s string) {
		if webhook.ValidateURL(s) != nil {
			return
		}
		u, err := url.Parse(s)
		if err != nil || len(s) > 2048 || (u.Scheme != "https" && u.Scheme != "http") || u.Hostname() == "" ||
			u.User != nil || strings.Contains(s, "#") || !validPort(u.Port()) {
			t.Fatalf("accepted %q", s)
		}
	})
}

// validPort reports whether p is empty (the scheme's port) or a port number.
func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return p == "" || (err == nil && n >= 1 && n <= 65535)
}
