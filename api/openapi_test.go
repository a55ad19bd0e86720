package api

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// contract is the OpenAPI document, ready to check answers against.
type contract struct {
	doc   map[string]any
	mu    sync.Mutex
	comp  *jsonschema.Compiler
	cache map[string]*jsonschema.Schema
	n     int
}

const docURL = "mem://openapi.json"

func loadContract(t *testing.T) *contract {
	t.Helper()
	raw, err := OpenAPIJSON()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	c := &contract{doc: doc.(map[string]any), comp: jsonschema.NewCompiler(), cache: map[string]*jsonschema.Schema{}}
	c.comp.AssertFormat()
	if err := c.comp.AddResource(docURL, doc); err != nil {
		t.Fatal(err)
	}
	return c
}

// operation returns the documented operation of a route, if any.
func (c *contract) operation(method, route string) (map[string]any, bool) {
	paths, _ := c.doc["paths"].(map[string]any)
	item, ok := paths[route].(map[string]any)
	if !ok {
		return nil, false
	}
	op, ok := item[strings.ToLower(method)].(map[string]any)
	return op, ok
}

// resolve follows a local $ref.
func (c *contract) resolve(v map[string]any) map[string]any {
	ref, ok := v["$ref"].(string)
	if !ok {
		return v
	}
	var cur any = c.doc
	for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		cur = cur.(map[string]any)[part]
	}
	return cur.(map[string]any)
}

// absolutize rewrites local $refs of a copied sub-schema to point into the document.
func absolutize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, val := range x {
			if s, ok := val.(string); ok && k == "$ref" && strings.HasPrefix(s, "#") {
				out[k] = docURL + s
				continue
			}
			out[k] = absolutize(val)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, val := range x {
			out[i] = absolutize(val)
		}
		return out
	}
	return v
}

// check fails the test when an answer's status is not documented for the route, or its JSON
// body does not match the documented schema.
func (c *contract) check(t *testing.T, method, route string, r reply) {
	t.Helper()
	op, ok := c.operation(method, route)
	if !ok {
		t.Errorf("%s %s is served but not documented", method, route)
		return
	}
	responses, _ := op["responses"].(map[string]any)
	resp, ok := responses[strconv.Itoa(r.status)].(map[string]any)
	if !ok {
		t.Errorf("%s %s answered %d, which the document does not list: %s", method, route, r.status, r.body)
		return
	}
	resp = c.resolve(resp)
	content, _ := resp["content"].(map[string]any)
	media, ok := content["application/json"].(map[string]any)
	if !ok {
		return // HTML pages and assets
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s %s answered %d with Content-Type %q, want JSON", method, route, r.status, ct)
		return
	}
	sch, err := c.schema(method, route, r.status, media["schema"])
	if err != nil {
		t.Fatalf("compile the schema of %s %s %d: %v", method, route, r.status, err)
	}
	body, err := jsonschema.UnmarshalJSON(bytes.NewReader(r.body))
	if err != nil {
		t.Errorf("%s %s answered %d with a body that is not JSON: %s", method, route, r.status, r.body)
		return
	}
	if err := sch.Validate(body); err != nil {
		t.Errorf("%s %s answered %d with a body that does not match the document:\n%s\n%v", method, route, r.status, r.body, err)
	}
}

func (c *contract) schema(method, route string, status int, s any) (*jsonschema.Schema, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := fmt.Sprintf("%s %s %d", method, route, status)
	if sch, ok := c.cache[key]; ok {
		return sch, nil
	}
	c.n++
	url := fmt.Sprintf("mem://response/%d.json", c.n)
	if err := c.comp.AddResource(url, absolutize(s)); err != nil {
		return nil, err
	}
	sch, err := c.comp.Compile(url)
	if err != nil {
		return nil, err
	}
	c.cache[key] = sch
	return sch, nil
}

// TestOpenAPIMatchesRoutes checks the document against the mux both ways: every route the mux
// serves is documented, and every documented operation is served — a request to it, without
// credentials, reaches its handler (not the 404/405 of unknown routes) and gets an answer the
// document lists, with a body of the documented shape.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	e := newEnv(t)
	served := map[string]bool{}
	for _, rt := range e.api.routes {
		served[rt.method+" "+rt.pattern] = true
		if _, ok := e.contract.operation(rt.method, rt.pattern); !ok {
			t.Errorf("route %s %s is not in openapi.yaml", rt.method, rt.pattern)
		}
	}
	paths, _ := e.contract.doc["paths"].(map[string]any)
	documented := 0
	for route, item := range paths {
		for method := range item.(map[string]any) {
			if method == "parameters" {
				continue
			}
			documented++
			m := strings.ToUpper(method)
			t.Run(m+" "+route, func(t *testing.T) {
				if !served[m+" "+route] {
					t.Fatalf("documented but not served")
				}
				path := strings.NewReplacer("{user}", "user-1", "{id}", "5c7b5d3e-8c1f-4b8e-9a55-3f0c1a2b3c4d",
					"{file}", "tollgate.js").Replace(route)
				req := httptest.NewRequest(m, path, nil)
				if _, pattern := e.api.mux.Handler(req); pattern != m+" "+route {
					t.Fatalf("the mux sends %s %s to %q", m, path, pattern)
				}
				// The call checks the answer's status and body against the document.
				if r := e.call(m, path, nil, nil); r.status >= 500 {
					t.Errorf("%s %s: %d %s", m, path, r.status, r.body)
				}
			})
		}
	}
	if documented != len(served) {
		t.Errorf("%d operations documented, %d routes served", documented, len(served))
	}
}

func TestOpenAPIServed(t *testing.T) {
	e := newEnv(t)
	r := e.call("GET", "/api/v1/openapi.json", nil, nil)
	expectStatus(t, r, http.StatusOK)
	doc := r.json(t)
	if doc["openapi"] != "3.1.0" {
		t.Errorf("openapi = %v", doc["openapi"])
	}
	// The served document is the one the tests check against.
	want, _ := OpenAPIJSON()
	if !bytes.Equal(bytes.TrimSpace(r.body), want) {
		t.Error("served document differs from OpenAPIJSON()")
	}
}

// TestUnknownRoutesAnswerJSON: unknown paths get a JSON 404, known paths with another method
// a JSON 405 with Allow.
func TestUnknownRoutesAnswerJSON(t *testing.T) {
	e := newEnv(t)
	r := e.call("GET", "/api/v1/nothing-here", nil, nil)
	expectStatus(t, r, http.StatusNotFound)
	if r.errorCode(t) != "not_found" {
		t.Errorf("code %q", r.errorCode(t))
	}
	r = e.call("PUT", "/api/v1/earnings", nil, nil)
	expectStatus(t, r, http.StatusMethodNotAllowed)
	if got := r.header.Get("Allow"); got != "GET" {
		t.Errorf("Allow = %q, want GET", got)
	}
	r = e.call("PATCH", "/api/v1/payouts", nil, nil)
	expectStatus(t, r, http.StatusMethodNotAllowed)
	allow := strings.Split(r.header.Get("Allow"), ", ")
	slices.Sort(allow)
	if !slices.Equal(allow, []string{"GET", "POST"}) {
		t.Errorf("Allow = %v, want GET, POST", allow)
	}
}
