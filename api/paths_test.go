package api

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestNonCanonicalPathsAnswerJSON: paths http.ServeMux would redirect (with an HTML body) or
// answer in plain text get the API's JSON 404 instead, over a real listener, with the
// canonical path named; a POST to such a path moves no money.
func TestNonCanonicalPathsAnswerJSON(t *testing.T) {
	e := newEnv(t)
	pw, key := e.newPaywall("Demo")
	e.earn(pw, key, "10")
	for _, tt := range []struct{ method, path, hint string }{
		{"GET", "//api/v1/earnings", "did you mean /api/v1/earnings?"},
		{"GET", "/api//v1/earnings", "did you mean /api/v1/earnings?"},
		{"GET", "/api/v1/./earnings", "did you mean /api/v1/earnings?"},
		{"GET", "/api/v1/x/../earnings", "did you mean /api/v1/earnings?"},
		{"GET", "/api/v1/earnings/.", "did you mean /api/v1/earnings?"},
		{"GET", "//connect?t=x", "did you mean /connect?"},
		{"GET", "/assets/../connect", "did you mean /connect?"},
		{"GET", "/pages/v1//connect", "did you mean /pages/v1/connect?"},
		{"POST", "//api/v1/payouts", "did you mean /api/v1/payouts?"},
		{"DELETE", "/api/v1/users/alice/../bob/authorization", "did you mean /api/v1/users/bob/authorization?"},
		{"GET", "/api/v1/earnings/", "No such endpoint"},       // canonical to the mux: a plain unknown route
		{"GET", "/%2e%2e/api/v1/earnings", "No such endpoint"}, // escaped dots are not segments
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			var body io.Reader
			if tt.method == "POST" {
				body = strings.NewReader(`{"amount":"2"}`)
			}
			req, err := http.NewRequestWithContext(t.Context(), tt.method, e.url+tt.path, body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+key)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Idempotency-Key", "noncanonical")
			client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = resp.Body.Close() }()
			raw, _ := io.ReadAll(resp.Body)
			checkJSONError(t, resp.StatusCode, resp.Header, raw, http.StatusNotFound, "not_found", tt.hint)
		})
	}
	if ps, err := e.ledger.Payouts(t.Context(), pw.ID, "", 10); err != nil || len(ps) != 0 {
		t.Errorf("a POST to a non-canonical path made payouts: %v %v", ps, err)
	}
}

// TestRequestsWithoutPathAnswerJSON: OPTIONS * and CONNECT host:port reach the handler with no
// path; they get the JSON 404 too (`tollgate serve` turns off net/http's own OPTIONS * answer).
func TestRequestsWithoutPathAnswerJSON(t *testing.T) {
	e := newEnv(t)
	srv := httptest.NewUnstartedServer(e.api)
	srv.Config.DisableGeneralOptionsHandler = true
	srv.Start()
	t.Cleanup(srv.Close)
	for _, tt := range []struct {
		line         string
		status       int
		code, saying string
	}{
		{"OPTIONS * HTTP/1.1", 404, "not_found", "No such endpoint"},
		{"CONNECT pay.example.com:443 HTTP/1.1", 404, "not_found", "No such endpoint"},
		{"CONNECT /api/v1/earnings HTTP/1.1", 405, "method_not_allowed", "use GET"},
	} {
		t.Run(tt.line, func(t *testing.T) {
			conn, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = conn.Close() }()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(conn, tt.line+"\r\nHost: pay.example.com\r\nConnection: close\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = resp.Body.Close() }()
			raw, _ := io.ReadAll(resp.Body)
			checkJSONError(t, resp.StatusCode, resp.Header, raw, tt.status, tt.code, tt.saying)
		})
	}
}

// checkJSONError checks an answer is the API's JSON error with that status and code, saying
// hint, and no redirect.
func checkJSONError(t *testing.T, status int, h http.Header, raw []byte, wantStatus int, code, hint string) {
	t.Helper()
	var b struct {
		Error struct{ Code, Message string }
	}
	if status != wantStatus || !strings.HasPrefix(h.Get("Content-Type"), "application/json") || h.Get("Location") != "" {
		t.Fatalf("status %d, Content-Type %q, Location %q: %s", status, h.Get("Content-Type"), h.Get("Location"), raw)
	}
	if err := json.Unmarshal(raw, &b); err != nil || b.Error.Code != code || !strings.Contains(b.Error.Message, hint) {
		t.Errorf("body %s (%v); want code %s saying %q", raw, err, code, hint)
	}
}
