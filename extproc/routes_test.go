package extproc

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/e2e/envoyemu"
	"github.com/tollgate-dev/tollgate/e2e/fakeupstream"
	"github.com/tollgate-dev/tollgate/paywall"
)

func TestClassifyRoute(t *testing.T) {
	tests := []struct {
		method, path string
		kind         routeKind
		user, up     string
	}{
		{"POST", "/v1/chat/completions", routeChat, "", ""},
		{"POST", "/v1/alice/chat/completions", routeChat, "alice", chatPath},
		{"POST", "/v1/models/chat/completions", routeChat, "models", chatPath}, // a user called "models"
		{"GET", "/v1/chat/completions", routeWrongMethod, "", ""},
		{"GET", "/v1/models", routeModels, "", ""},
		{"GET", "/v1/models/gpt-4o", routeModels, "", ""},
		{"GET", "/v1/models/openai/gpt-4o:free", routeModels, "", ""},
		{"GET", "/v1/models/openai%2Fgpt-4o", routeModels, "", ""},
		{"GET", "/v1/alice/models", routeModels, "alice", "/v1/models"},
		{"GET", "/v1/alice/models/openai/gpt-4o", routeModels, "alice", "/v1/models/openai/gpt-4o"},
		{"POST", "/v1/models", routeWrongMethod, "", ""},
		{"DELETE", "/v1/models/ft:gpt-4o:acme", routeWrongMethod, "", ""},
		{"HEAD", "/v1/models", routeWrongMethod, "", ""},
		{"GET", "/v1/models/", routeBadModelID, "", ""},
		{"GET", "/v1/models/../embeddings", routeBadModelID, "", ""},
		{"GET", "/v1/models/./x", routeBadModelID, "", ""},
		{"GET", "/v1/models/a//b", routeBadModelID, "", ""},
		{"GET", "/v1/models/..%2Fembeddings", routeBadModelID, "", ""},
		{"GET", "/v1/models/%2e%2e/embeddings", routeBadModelID, "", ""},
		{"GET", "/v1/models/%252e%252e/embeddings", routeBadModelID, "", ""},
		{"GET", "/v1/models/a%5Cb", routeBadModelID, "", ""},
		{"GET", "/v1/models/a%zz", routeBadModelID, "", ""},
		{"GET", "/v1/alice/models/../../embeddings", routeBadModelID, "alice", ""},
		{"POST", "/v1/embeddings", routeEmbeddings, "", ""},
		{"POST", "/v1/alice/embeddings", routeEmbeddings, "alice", embeddingsPath},
		{"GET", "/v1/embeddings", routeWrongMethod, "", ""},
		{"GET", "/v1/models/embeddings", routeModels, "", ""},
		{"POST", "/v1/embeddings/x", routeUnsupported, "", ""},
		{"POST", "/v1/completions", routeCompletions, "", ""},
		{"POST", "/v1/alice/completions", routeCompletions, "alice", completionsPath},
		{"GET", "/v1/completions", routeWrongMethod, "", ""},
		{"GET", "/v1/models/completions", routeModels, "", ""}, // a model id, not a user called "models"
		{"POST", "/v1/completions/x", routeUnsupported, "", ""},
		{"POST", "/v1/responses", routeResponses, "", ""},
		{"POST", "/v1/alice/responses", routeResponses, "alice", responsesPath},
		{"GET", "/v1/responses", routeWrongMethod, "", ""},
		{"GET", "/v1/alice/responses", routeWrongMethod, "alice", responsesPath},
		{"GET", "/v1/responses/resp_123", routeUnsupported, "", ""},
		{"DELETE", "/v1/responses/resp_123", routeUnsupported, "", ""},
		{"POST", "/v1/responses/resp_123/cancel", routeUnsupported, "", ""},
		{"GET", "/v1/responses/resp_123/input_items", routeUnsupported, "", ""},
		{"POST", "/v1/responses/input_tokens", routeUnsupported, "", ""},
		{"GET", "/v1/models/responses", routeModels, "", ""}, // a model id, not a user called "models"
		{"POST", "/v1//responses", routeUnsupported, "", ""},
		{"POST", "/v1/responses/", routeUnsupported, "", ""},
		{"POST", "/v1/images/generations", routeUnsupported, "", ""},
		{"POST", "/v1/audio/speech", routeUnsupported, "", ""},
		{"POST", "/v1/a/b/chat/completions", routeUnsupported, "", ""},
		{"POST", "/v1//chat/completions", routeUnsupported, "", ""},
		{"POST", "/v1/chat/completions/", routeUnsupported, "", ""},
		{"GET", "/v1/", routeUnsupported, "", ""},
		{"GET", "/v1", routeUnsupported, "", ""},
		{"GET", "/healthz", routeNotOurs, "", ""},
		{"POST", "/api/v1/chat/completions", routeNotOurs, "", ""},
		{"GET", "/v10/models", routeNotOurs, "", ""},
		{"GET", "/", routeNotOurs, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := classifyRoute(tt.method, tt.path)
			if r.kind != tt.kind || r.user != tt.user || r.upstreamPath != tt.up {
				t.Errorf("got %+v, want kind %d user %q upstream path %q", r, tt.kind, tt.user, tt.up)
			}
		})
	}
}

// FuzzClassifyRoute: whatever the path, what is forwarded is a billed request sent to its API's
// path, or a model listing whose upstream path cannot name another endpoint after decoding.
func FuzzClassifyRoute(f *testing.F) {
	for _, p := range []string{"/v1/chat/completions", "/v1/u/chat/completions", "/v1/responses", "/v1/u/responses", "/v1/responses/r/cancel", "/v1/models", "/v1/models/openai/gpt-4o",
		"/v1/u/models/x", "/v1/models/..%2f..%2fembeddings", "/v1/embeddings", "/v1/u/completions", "/healthz", "/v1/models/%25252e"} {
		f.Add("GET", p)
		f.Add("POST", p)
	}
	f.Fuzz(func(t *testing.T, method, path string) {
		r := classifyRoute(method, path)
		switch r.kind {
		case routeChat, routeResponses, routeEmbeddings, routeCompletions:
			if method != http.MethodPost {
				t.Fatalf("%s %s billed", method, path)
			}
			want := apis[r.api].path
			if apis[r.api].kind != r.kind {
				t.Fatalf("%s billed as %d with the API of %d", path, r.kind, apis[r.api].kind)
			}
			if up := r.upstreamPath; (up != "" || path != want) && up != want {
				t.Fatalf("%s billed as %d and forwarded to %q", path, r.kind, up)
			}
		case routeModels:
			if method != http.MethodGet {
				t.Fatalf("%s %s forwarded", method, path)
			}
			up := path
			if r.upstreamPath != "" {
				up = r.upstreamPath
			}
			if up != modelsPath && !strings.HasPrefix(up, modelsPath+"/") {
				t.Fatalf("%s forwarded as %q", path, up)
			}
			dec := up
			for range 3 { // however often the upstream decodes
				if d, err := url.PathUnescape(dec); err == nil {
					dec = d
				}
			}
			for _, seg := range strings.FieldsFunc(dec, func(c rune) bool { return c == '/' || c == '\\' }) {
				if seg == "." || seg == ".." {
					t.Fatalf("%s forwarded as %q, which decodes to %q", path, up, dec)
				}
			}
		case routeNotOurs:
			if strings.HasPrefix(path, "/v1/") {
				t.Fatalf("%s not handled", path)
			}
		}
	})
}

// TestModelsRoutedUnbilled: GET /v1/models with a valid key goes to the paywall's upstream
// with its credentials (the operator's key for built-in, the paywall's own for BYOK), the
// Tollgate key gone, the routing header set and the route recomputed; nothing is held.
func TestModelsRoutedUnbilled(t *testing.T) {
	byok := testPaywall()
	byok.Mode, byok.Upstream, byok.UpstreamKey = paywall.ModeBYOK, "demo", "sk-dev-own"
	keyless := byok
	keyless.UpstreamKey = ""
	tests := []struct {
		name     string
		pw       paywall.Paywall
		path     string
		auth     string // "" means the Authorization header is removed
		upstream string
		newPath  string // "" means :path is not rewritten
	}{
		{"built-in list", testPaywall(), "/v1/models", "Bearer sk-or-operator", "openrouter", ""},
		{"built-in one model", testPaywall(), "/v1/models/openai/gpt-4o", "Bearer sk-or-operator", "openrouter", ""},
		{"user prefix and query", testPaywall(), "/v1/alice/models?supported_parameters=tools", "Bearer sk-or-operator", "openrouter",
			"/v1/models?supported_parameters=tools"},
		{"byok", byok, "/v1/models", "Bearer sk-dev-own", "demo", ""},
		{"byok without a key", keyless, "/v1/models/m1", "", "demo", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, s := newFakeEnv(t, tt.pw, 1_000_000)
			c := startServer(t, s)
			res := run(t, c, exchange{path: tt.path, key: testKey, user: testUser, noBody: true,
				headers: map[string]string{":method": "GET"}})
			if res.immediate != nil {
				t.Fatalf("refused: %d %s", res.immediate.GetStatus().GetCode(), res.immediate.GetBody())
			}
			cr := res.reqHeaders.GetResponse()
			if !cr.GetClearRouteCache() {
				t.Error("route cache not cleared")
			}
			m := cr.GetHeaderMutation()
			if u, _ := header(m, "x-tollgate-upstream"); u != tt.upstream {
				t.Errorf("routing header %q, want %q", u, tt.upstream)
			}
			a, set := header(m, "authorization")
			switch {
			case tt.auth == "" && (set || !removes(m, "authorization")):
				t.Errorf("authorization set to %q / not removed: the Tollgate key would leave", a)
			case tt.auth != "" && a != tt.auth:
				t.Errorf("authorization %q, want %q", a, tt.auth)
			}
			if !removes(m, "x-paywall-user") {
				t.Error("x-paywall-user not removed")
			}
			if p, ok := header(m, ":path"); p != tt.newPath || ok != (tt.newPath != "") {
				t.Errorf(":path %q (set %v), want %q", p, ok, tt.newPath)
			}
			if _, ok := header(m, "content-length"); ok {
				t.Error("content-length set on a request whose body is untouched")
			}
			if len(env.ledger.holds) != 0 || len(env.ledger.captures) != 0 {
				t.Error("money moved for a model listing")
			}
		})
	}

	// The response passes through untouched, also when a GET carries a body.
	env, s := newFakeEnv(t, testPaywall(), 1_000_000)
	c := startServer(t, s)
	res := run(t, c, exchange{path: "/v1/models", key: testKey, headers: map[string]string{":method": "GET"}, body: "{}",
		ctype: "application/json", chunks: []string{`{"object":"list","data":[]}`}})
	if res.immediate != nil || res.reqBody.GetResponse() != nil || res.respHeaders.GetModeOverride() != nil ||
		res.respHeaders.GetResponseHeaders().GetResponse() != nil || res.clientBody != `{"object":"list","data":[]}` {
		t.Errorf("a model listing's body or response was touched: %+v", res)
	}
	if len(env.ledger.holds) != 0 {
		t.Error("money held for a model listing")
	}
}

// TestUnsupportedEndpointsRefused: every other /v1/ endpoint gets an OpenAI-shaped 404 (or 405
// for a method the path does not take) before any key lookup, so nothing unbilled reaches an
// upstream with the operator's credentials; paths outside /v1/ stay untouched.
func TestUnsupportedEndpointsRefused(t *testing.T) {
	env, s := newFakeEnv(t, testPaywall(), 1_000_000)
	c := startServer(t, s)
	tests := []struct {
		method, path, key string
		status            int
		code              string
	}{
		{"POST", "/v1/completions/x", testKey, 404, "unsupported_endpoint"},
		{"GET", "/v1/completions", testKey, 405, "method_not_allowed"},
		{"GET", "/v1/responses/resp_1", testKey, 404, "unsupported_endpoint"},
		{"GET", "/v1/responses", testKey, 405, "method_not_allowed"},
		{"POST", "/v1/images/generations", testKey, 404, "unsupported_endpoint"},
		{"POST", "/v1/audio/transcriptions", testKey, 404, "unsupported_endpoint"},
		{"POST", "/v1/moderations", "", 404, "unsupported_endpoint"},
		{"POST", "/v1/alice/images/generations", testKey, 404, "unsupported_endpoint"},
		{"GET", "/v1/embeddings", testKey, 405, "method_not_allowed"},
		{"POST", "/v1/a/b/chat/completions", testKey, 404, "unsupported_endpoint"},
		{"GET", "/v1/chat/completions", testKey, 405, "method_not_allowed"},
		{"POST", "/v1/models", testKey, 405, "method_not_allowed"},
		{"GET", "/v1/models/..%2Fembeddings", testKey, 400, "invalid_model"},
		{"GET", "/v1/models", "", 401, "missing_api_key"},
		{"GET", "/v1/models", "tg_unknown", 401, "invalid_api_key"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			res := run(t, c, exchange{path: tt.path, key: tt.key, headers: map[string]string{":method": tt.method}, body: `{"model":"m1","input":"x"}`})
			ir := res.immediate
			if ir == nil || int(ir.GetStatus().GetCode()) != tt.status {
				t.Fatalf("got %v, want %d", ir, tt.status)
			}
			var e struct {
				Error struct{ Message, Type, Code string }
			}
			if err := json.Unmarshal(ir.GetBody(), &e); err != nil || e.Error.Code != tt.code || e.Error.Message == "" || e.Error.Type == "" {
				t.Errorf("body %s (%v), want code %s", ir.GetBody(), err, tt.code)
			}
			if tt.status == 404 && !strings.Contains(e.Error.Message, "POST /v1/chat/completions, POST /v1/responses, POST /v1/embeddings and POST /v1/completions") {
				t.Errorf("the message does not say what is supported: %q", e.Error.Message)
			}
			if a, _ := header(ir.GetHeaders(), "allow"); tt.status == 405 && a == "" {
				t.Error("405 without an allow header")
			}
		})
	}
	for _, path := range []string{"/healthz", "/api/v1/user/charges"} {
		res := run(t, c, exchange{path: path, key: testKey, body: "{}", ctype: "application/json", chunks: []string{`{}`}})
		if res.immediate != nil || res.reqHeaders.GetResponse() != nil || res.reqBody.GetResponse() != nil {
			t.Errorf("%s touched: %v %v", path, res.reqHeaders, res.reqBody)
		}
	}
	if len(env.ledger.holds) != 0 {
		t.Error("money held for a refused request")
	}
}

// TestModelsThroughEnvoyEmulator runs the real server behind the Envoy emulator reading
// envoy/envoy.yaml, with fake upstreams: a model listing reaches the built-in provider with
// the operator's key (or the BYOK upstream with the paywall's key), and an images call
// reaches no upstream at all.
func TestModelsThroughEnvoyEmulator(t *testing.T) {
	byok := testPaywall()
	byok.ID, byok.Mode, byok.Upstream, byok.UpstreamKey = "pw2", paywall.ModeBYOK, "demo", "sk-dev-own"
	env, s := newFakeEnv(t, testPaywall(), 1_000_000)
	env.paywalls.keys["tg_byok"] = byok

	addr, _ := serve(t, s)
	or := fakeupstream.New(fakeupstream.Options{Name: "openrouter", RequireKey: "sk-or-operator"})
	demo := fakeupstream.New(fakeupstream.Options{Name: "demo", RequireKey: "sk-dev-own"})
	orSrv := httptest.NewTLSServer(or)
	t.Cleanup(orSrv.Close)
	demoSrv := httptest.NewServer(demo)
	t.Cleanup(demoSrv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(orSrv.Certificate())
	hostPort := func(u string) string { return strings.TrimPrefix(strings.TrimPrefix(u, "https://"), "http://") }
	p, err := envoyemu.New(envoyemu.Options{
		Config: "../envoy/envoy.yaml",
		Endpoints: map[string][]string{
			"tollgate_extproc": {addr}, "tollgate_http": {hostPort(demoSrv.URL)},
			"demo": {hostPort(demoSrv.URL)}, "openrouter": {hostPort(orSrv.URL)},
		},
		// httptest's certificate names example.com, the cluster's sni openrouter.ai.
		UpstreamTLS: &tls.Config{RootCAs: roots, InsecureSkipVerify: true, //nolint:gosec // checked below against the test root
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				c, err := x509.ParseCertificate(raw[0])
				if err != nil {
					return err
				}
				_, err = c.Verify(x509.VerifyOptions{Roots: roots})
				return err
			}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	front := httptest.NewServer(p)
	t.Cleanup(front.Close)

	do := func(method, path, key string) (int, string) {
		req, err := http.NewRequestWithContext(t.Context(), method, front.URL+path, strings.NewReader(""))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	if code, body := do("GET", "/v1/models", testKey); code != 200 || !strings.Contains(body, "fake/model") {
		t.Fatalf("built-in GET /v1/models: %d %s", code, body)
	}
	if reqs := or.Requests(); len(reqs) != 1 || reqs[0].Path != "/api/v1/models" || reqs[0].Authorization != "Bearer sk-or-operator" {
		t.Errorf("the built-in provider got %+v", reqs)
	}
	if code, body := do("GET", "/v1/alice/models", "tg_byok"); code != 200 || !strings.Contains(body, "fake/model") {
		t.Fatalf("BYOK GET /v1/alice/models: %d %s", code, body)
	}
	if reqs := demo.Requests(); len(reqs) != 1 || reqs[0].Path != "/v1/models" || reqs[0].Authorization != "Bearer sk-dev-own" ||
		reqs[0].Header.Get("X-Tollgate-Upstream") != "demo" {
		t.Errorf("the BYOK upstream got %+v", reqs)
	}
	if code, body := do("POST", "/v1/images/generations", testKey); code != 404 || !strings.Contains(body, "unsupported_endpoint") {
		t.Errorf("POST /v1/images/generations: %d %s", code, body)
	}
	if len(or.Requests()) != 1 || len(demo.Requests()) != 1 {
		t.Error("an unsupported endpoint reached an upstream")
	}
	if len(env.ledger.holds) != 0 {
		t.Error("money held")
	}
}
