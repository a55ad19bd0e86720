package mainlib

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-dev/tollgate/internal/schema"
	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/internal/testredis"
	"github.com/tollgate-dev/tollgate/paywall"
)

// TestServeHTTPAPI runs the real `tollgate serve` in-process with settlement chains configured
// and checks that serve.http_addr serves the API, the pages and the OpenAPI document, with a
// paywall made by `tollgate paywall create` and links signed with serve.link_secret, and that
// the serve.api settings (charge and withdrawal bounds, idempotency retention) take effect.
func TestServeHTTPAPI(t *testing.T) {
	db := testdb.New(t, schema.All()...)
	_, prefix := testredis.New(t)
	secret := strings.Repeat("k", 32)
	config := filepath.Join(t.TempDir(), "tollgate.yaml")
	body := fmt.Sprintf(`database: {url: %q}
redis: {addr: %q, prefix: %q}
log: {level: warn}
serve:
  grpc_addr: 127.0.0.1:0
  http_addr: 127.0.0.1:0
  admin_addr: 127.0.0.1:0
  public_url: https://pay.example.test
  link_secret: %q
  shutdown_grace: 1s
  api: {max_charge_micro: 2000000, min_payout_micro: 5000000, daily_payout_micro: 6000000, idempotency_retention: 1h}
settle:
  treasury: "0x00000000000000000000000000000000000000a1"
  chains:
    - {id: "31337", name: anvil, rpc_url: "http://127.0.0.1:1", usdc: "0x00000000000000000000000000000000000000b2"}
`, db.URL, testredis.Addr(), prefix, secret)
	if err := os.WriteFile(config, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &cli{t: t, config: config, db: db, prefix: prefix}
	var created paywallJSON
	if err := json.Unmarshal([]byte(c.mustRun("paywall", "create", "-name", "Demo", "-owner", "o", "-markup-bps", "600",
		"-payout-address", "0x00000000000000000000000000000000000000d3", "-json")), &created); err != nil {
		t.Fatal(err)
	}

	// Answers older and younger than serve.api.idempotency_retention (1h): serve's pruner
	// deletes the old one only.
	if _, err := db.Pool.Exec(t.Context(), `
		INSERT INTO api_idempotency (paywall_id, operation, idempotency_key, request_hash, status, response, created_at)
		VALUES ($1, 'charge', 'old', 'h', 201, '\x7b7d'::BYTEA, now() - INTERVAL '2 hours'),
		       ($1, 'charge', 'recent', 'h', 201, '\x7b7d'::BYTEA, now() - INTERVAL '30 minutes')`, created.ID); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	var stderr lockedBuffer
	done := make(chan error, 1)
	go func() { done <- Main(ctx, []string{"serve", "-config", config}, io.Discard, &stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(15 * time.Second): // or waitReady already took its early exit
		}
	})
	base := "http://" + waitReady(t, &stderr, done)["http"]

	get := func(path string, headers ...string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		var m map[string]any
		raw, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(raw, &m)
		return resp.StatusCode, m
	}

	if code, doc := get("/api/v1/openapi.json"); code != 200 || doc["openapi"] != "3.1.0" {
		t.Errorf("openapi.json: %d", code)
	}
	code, m := get("/api/v1/users/alice/authorization", "Authorization", "Bearer "+created.APIKey)
	if link, _ := m["link"].(string); code != 200 || m["authorized"] != false || !strings.HasPrefix(link, "https://pay.example.test/connect?t=") {
		t.Errorf("authorization: %d %v", code, m)
	}
	links := paywall.Links{BaseURL: "https://pay.example.test", Secret: []byte(secret)}
	code, m = get("/pages/v1/topup", "X-Tollgate-Link", links.Token(created.ID, "alice", paywall.PurposeTopUp))
	if chains, _ := m["chains"].([]any); code != 200 || m["enabled"] != true || len(chains) != 1 {
		t.Errorf("top-up page info: %d %v", code, m)
	}
	code, m = get("/pages/v1/connect", "X-Tollgate-Link", links.Token(created.ID, "alice", paywall.PurposeAuthorize))
	if ids, _ := m["chain_ids"].([]any); code != 200 || len(ids) != 1 || ids[0] != "31337" {
		t.Errorf("connect page info: %d %v", code, m)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		rows, err := db.Pool.Query(t.Context(), `SELECT idempotency_key FROM api_idempotency ORDER BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) == 1 && keys[0] == "recent" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve with a 1h retention left %v; want only the recent answer", keys)
		}
	}
	post := func(path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+created.APIKey)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", path+body)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}
	for _, tt := range []struct {
		path, body string
		status     int
		says       string
	}{
		{"/api/v1/users/alice/charges", `{"amount":"2.000001"}`, 400, "at most 2.00 USDC"},
		{"/api/v1/payouts", `{"amount":"4.99"}`, 400, "at least 5.00 USDC"},
		{"/api/v1/payouts", `{"amount":"6.01"}`, 429, "capped at 6.00 USDC per 24 hours"},
		{"/api/v1/payouts", `{"amount":"5","chain_id":"137"}`, 400, "paid on these chains (chain_id): 31337;"},
	} {
		if code, body := post(tt.path, tt.body); code != tt.status || !strings.Contains(body, tt.says) {
			t.Errorf("POST %s %s: %d %s; want %d saying %q", tt.path, tt.body, code, body, tt.status, tt.says)
		}
	}
	// Every answer is JSON, also to a non-canonical path and to OPTIONS * (which net/http
	// would answer itself).
	if code, m := get("//api/v1/openapi.json"); code != http.StatusNotFound || m["error"] == nil {
		t.Errorf("non-canonical path: %d %v", code, m)
	}
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	if _, err := io.WriteString(conn, "OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil {
		t.Fatal(err)
	} else {
		raw, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Errorf("OPTIONS *: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), raw)
		}
	}
	resp, err := http.Get(base + "/connect?t=x")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("connect page: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// waitReady waits for serve's readiness line and returns its addresses by name.
func waitReady(t *testing.T, stderr *lockedBuffer, done <-chan error) map[string]string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for l := range strings.SplitSeq(stderr.String(), "\n") {
			if rest, ok := strings.CutPrefix(l, readyLine); ok {
				addr := map[string]string{}
				for _, f := range strings.Fields(rest) {
					k, v, _ := strings.Cut(f, "=")
					addr[k] = v
				}
				return addr
			}
		}
		select {
		case err := <-done:
			t.Fatalf("serve exited early: %v\n%s", err, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no readiness line:\n%s", stderr.String())
		}
	}
}
