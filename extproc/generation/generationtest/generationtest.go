// Package generationtest is a fake of OpenRouter's generation endpoint (a process-boundary
// fake, named as one) for tests of the code that asks it.
package generationtest

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// Fake answers GET …?id=ID with the operator's Key: 404 ("not recorded yet") for the first
// NotYet asks — every ask if NotYet < 0 — then Record; any other key or id gets 401.
type Fake struct {
	URL  string       // the endpoint
	Asks atomic.Int32 // how many asks it answered
}

// Start starts a Fake that the test stops when it ends.
func Start(t testing.TB, key, id string, notYet int32, record string) *Fake {
	t.Helper()
	f := &Fake{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := f.Asks.Add(1)
		if r.Header.Get("Authorization") != "Bearer "+key || r.URL.Query().Get("id") != id {
			http.Error(w, `{"error":{"message":"unknown key or id"}}`, http.StatusUnauthorized)
			return
		}
		if notYet < 0 || n <= notYet {
			http.Error(w, `{"error":{"message":"Generation not found"}}`, http.StatusNotFound)
			return
		}
		_, _ = w.Write([]byte(record))
	}))
	t.Cleanup(srv.Close)
	f.URL = srv.URL + "/api/v1/generation"
	return f
}
