package envoyemu

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tollgate-dev/tollgate/e2e/fakeupstream"
)

const envoyYAML = "../../envoy/envoy.yaml"

// script plays the ext_proc server's side of one stream.
type script func(s *scripted) error

// scripted is one stream as the scripted ext_proc server sees it.
type scripted struct {
	t  *testing.T
	st extprocv3.ExternalProcessor_ProcessServer
}

// recv returns the next message, or nil at the end of the stream.
func (s *scripted) recv() *extprocv3.ProcessingRequest {
	m, err := s.st.Recv()
	if err != nil {
		return nil
	}
	return m
}

func (s *scripted) send(r *extprocv3.ProcessingResponse) { _ = s.st.Send(r) }

// streamEnd is how a stream ended, seen from the server.
type streamEnd struct {
	// eof reports whether the client half-closed (Recv returned io.EOF) before the end.
	eof bool
	// cancelled reports whether the stream's context was cancelled (Envoy reset it).
	cancelled bool
}

// scriptedServer is a real gRPC ext_proc server on loopback whose streams run a script.
type scriptedServer struct {
	extprocv3.UnimplementedExternalProcessorServer
	t      *testing.T
	mu     sync.Mutex
	script script
	ends   chan streamEnd
	seen   chan []*extprocv3.ProcessingRequest
}

func (s *scriptedServer) Process(st extprocv3.ExternalProcessor_ProcessServer) error {
	s.mu.Lock()
	sc := s.script
	s.mu.Unlock()
	rec := &recordingStream{ExternalProcessor_ProcessServer: st}
	err := sc(&scripted{t: s.t, st: rec})
	// A script that returns ends the stream from the server's side; scripts that want the
	// emulator to end it read until recv returns nil.
	end := streamEnd{eof: rec.eof}
	select {
	case <-st.Context().Done():
		end.cancelled = true
	case <-time.After(50 * time.Millisecond):
	}
	s.ends <- end
	s.seen <- rec.msgs
	return err
}

type recordingStream struct {
	extprocv3.ExternalProcessor_ProcessServer
	msgs []*extprocv3.ProcessingRequest
	eof  bool
}

func (r *recordingStream) Recv() (*extprocv3.ProcessingRequest, error) {
	m, err := r.ExternalProcessor_ProcessServer.Recv()
	if errors.Is(err, io.EOF) {
		r.eof = true
	}
	if m != nil {
		r.msgs = append(r.msgs, m)
	}
	return m, err
}

// harness is the emulator in front of a scripted ext_proc server, the fake "demo" BYOK
// upstream, a fake TLS "openrouter" and a fake tollgate_http.
type harness struct {
	url        string
	server     *scriptedServer
	demo       *fakeupstream.Server
	openrouter *fakeupstream.Server
	api        *fakeupstream.Server
	logs       chan RequestLog
}

// newHarness starts everything with envoy.yaml, edited by the replacements (old, new, …).
func newHarness(t *testing.T, sc script, replacements ...string) *harness {
	t.Helper()
	raw, err := os.ReadFile(envoyYAML)
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	for i := 0; i+1 < len(replacements); i += 2 {
		if !strings.Contains(text, replacements[i]) {
			t.Fatalf("envoy.yaml has no %q to replace", replacements[i])
		}
		text = strings.Replace(text, replacements[i], replacements[i+1], 1)
	}
	cfgPath := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}

	h := &harness{
		demo:       fakeupstream.New(fakeupstream.Options{Name: "demo"}),
		openrouter: fakeupstream.New(fakeupstream.Options{Name: "openrouter"}),
		api:        fakeupstream.New(fakeupstream.Options{Name: "api"}),
		logs:       make(chan RequestLog, 64),
	}
	h.server = &scriptedServer{t: t, script: sc, ends: make(chan streamEnd, 64), seen: make(chan []*extprocv3.ProcessingRequest, 64)}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(64 << 20))
	extprocv3.RegisterExternalProcessorServer(gs, h.server)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)

	demo := httptest.NewServer(h.demo)
	t.Cleanup(demo.Close)
	api := httptest.NewServer(h.api)
	t.Cleanup(api.Close)
	or := httptest.NewTLSServer(h.openrouter)
	t.Cleanup(or.Close)
	roots := x509.NewCertPool()
	roots.AddCert(or.Certificate())

	p, err := New(Options{
		Config: cfgPath,
		Endpoints: map[string][]string{
			"tollgate_extproc": {lis.Addr().String()},
			"tollgate_http":    {hostPort(api.URL)},
			"demo":             {hostPort(demo.URL)},
			"openrouter":       {hostPort(or.URL)},
		},
		// httptest's certificate names example.com; the cluster's sni is openrouter.ai.
		UpstreamTLS: &tls.Config{RootCAs: roots, InsecureSkipVerify: true, //nolint:gosec // test server certificate
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				c, err := x509.ParseCertificate(raw[0])
				if err != nil {
					return err
				}
				_, err = c.Verify(x509.VerifyOptions{Roots: roots})
				return err
			}},
		OnRequest: func(l RequestLog) { h.logs <- l },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	front := httptest.NewServer(p)
	t.Cleanup(front.Close)
	h.url = front.URL
	return h
}

func hostPort(u string) string {
	return strings.TrimPrefix(strings.TrimPrefix(u, "http://"), "https://")
}

// log returns the emulator's record of the next request.
func (h *harness) log(t *testing.T) RequestLog {
	t.Helper()
	select {
	case l := <-h.logs:
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("no request log")
		return RequestLog{}
	}
}

// end returns how the next stream ended and what the server received on it.
func (h *harness) end(t *testing.T) (streamEnd, []*extprocv3.ProcessingRequest) {
	t.Helper()
	select {
	case e := <-h.server.ends:
		return e, <-h.server.seen
	case <-time.After(10 * time.Second):
		t.Fatal("the ext_proc stream did not end")
		return streamEnd{}, nil
	}
}

// reply is what the client got back; do has read and closed the body.
type reply struct {
	StatusCode int
	Header     http.Header
}

// do sends a request through the emulator and returns the answer and its body.
func (h *harness) do(t *testing.T, method, path, body string, header map[string]string) (reply, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, h.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, readErr := io.ReadAll(resp.Body)
	if err := resp.Body.Close(); err != nil && readErr == nil {
		readErr = err
	}
	if readErr != nil {
		t.Logf("%s %s: reading the answer: %v", method, path, readErr) // resets are answers some tests expect
	}
	return reply{StatusCode: resp.StatusCode, Header: resp.Header}, string(b)
}

// Answers.

func headersCont(req bool, cr *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	if req {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{Response: cr}}}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{Response: cr}}}
}

func bodyCont(req bool, cr *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	if req {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{Response: cr}}}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{Response: cr}}}
}

// continueFor is the plain CONTINUE answer to any message.
func continueFor(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	switch m.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return headersCont(true, nil)
	case *extprocv3.ProcessingRequest_RequestBody:
		return bodyCont(true, nil)
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return headersCont(false, nil)
	default:
		return bodyCont(false, nil)
	}
}

func setHeaders(kv ...string) *extprocv3.HeaderMutation {
	m := &extprocv3.HeaderMutation{}
	for i := 0; i+1 < len(kv); i += 2 {
		m.SetHeaders = append(m.SetHeaders, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])}})
	}
	return m
}

// routeTo is the request-headers answer that sends the request to an upstream.
func routeTo(upstream string, clear bool) *extprocv3.ProcessingResponse {
	return headersCont(true, &extprocv3.CommonResponse{HeaderMutation: setHeaders("x-tollgate-upstream", upstream), ClearRouteCache: clear})
}

// serve answers each message with answer(m) (nil: CONTINUE) until the stream ends.
func serve(answer func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse) script {
	return func(s *scripted) error {
		for {
			m := s.recv()
			if m == nil {
				return nil
			}
			a := answer(m)
			if a == nil {
				a = continueFor(m)
			}
			s.send(a)
		}
	}
}

// routed is serve that routes every request to upstream and otherwise continues.
func routed(upstream string, more func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse) script {
	return serve(func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
		if m.GetRequestHeaders() != nil {
			return routeTo(upstream, true)
		}
		if more != nil {
			return more(m)
		}
		return nil
	})
}

func kinds(msgs []*extprocv3.ProcessingRequest) []string {
	var out []string
	for _, m := range msgs {
		switch m.GetRequest().(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			out = append(out, "request_headers")
		case *extprocv3.ProcessingRequest_RequestBody:
			out = append(out, "request_body")
		case *extprocv3.ProcessingRequest_ResponseHeaders:
			out = append(out, "response_headers")
		case *extprocv3.ProcessingRequest_ResponseBody:
			out = append(out, "response_body")
		default:
			out = append(out, "other")
		}
	}
	return out
}

func header(hm *corev3.HeaderMap, key string) (string, bool) {
	for _, h := range hm.GetHeaders() {
		if h.GetKey() == key {
			return string(h.GetRawValue()), true
		}
	}
	return "", false
}

func durationpbOf(d time.Duration) *durationpb.Duration { return durationpb.New(d) }
