package extproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tollgate-dev/tollgate/internal/testredis"
	"github.com/tollgate-dev/tollgate/paywall"
)

// startServer serves what s registers (Server.Register) on a real loopback listener and
// returns a client of it.
func startServer(t testing.TB, s registrar) extprocv3.ExternalProcessorClient {
	t.Helper()
	addr, _ := serve(t, s)
	return dial(t, addr)
}

type registrar interface{ Register(*grpc.Server) }

// serve serves what s registers on a real loopback listener until the test ends; it returns
// the listener's address and the gRPC server.
func serve(t testing.TB, s registrar) (string, *grpc.Server) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.MaxRecvMsgSize(64 << 20))
	s.Register(g)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return lis.Addr().String(), g
}

// dial returns a client of the ext_proc server at addr, closed when the test ends.
func dial(t testing.TB, addr string) extprocv3.ExternalProcessorClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return extprocv3.NewExternalProcessorClient(conn)
}

// exchange is one HTTP request as Envoy would run it through the filter: request headers,
// the buffered request body, response headers, response body chunks.
type exchange struct {
	path    string
	key     string
	user    string // X-Paywall-User
	headers map[string]string
	body    string
	noBody  bool
	status  string
	ctype   string
	chunks  []string
	// cancelAfter > 0 cancels the stream (the client went away) after that many chunks.
	cancelAfter int
	// pause is slept before each response chunk (a slow upstream).
	pause time.Duration
}

// result is what the server answered, and what the client would have seen.
type result struct {
	immediate   *extprocv3.ImmediateResponse
	reqHeaders  *extprocv3.HeadersResponse
	reqBody     *extprocv3.BodyResponse
	respHeaders *extprocv3.ProcessingResponse
	chunks      []*extprocv3.BodyResponse
	clientBody  string // the response body after the server's mutations
}

func headerMap(kv map[string]string) *corev3.HeaderMap {
	var hs []*corev3.HeaderValue
	for k, v := range kv {
		hs = append(hs, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
	}
	return &corev3.HeaderMap{Headers: hs}
}

// run drives one stream lock-step, as Envoy does, and waits for the server to finish it
// (and so to settle).
func run(t testing.TB, c extprocv3.ExternalProcessorClient, ex exchange) result {
	t.Helper()
	res, err := runE(c, ex)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// runE is run for goroutines other than the test's: it returns its failure.
func runE(c extprocv3.ExternalProcessorClient, ex exchange) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var res result
	st, err := c.Process(ctx)
	if err != nil {
		return res, err
	}
	send := func(r *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
		if err := st.Send(r); err != nil {
			return nil, fmt.Errorf("send: %w", err)
		}
		resp, err := st.Recv()
		if err != nil {
			return nil, fmt.Errorf("recv: %w", err)
		}
		if ir := resp.GetImmediateResponse(); ir != nil {
			res.immediate = ir
		}
		return resp, nil
	}
	path := ex.path
	if path == "" {
		path = chatPath
	}
	h := map[string]string{":method": "POST", ":path": path, "content-type": "application/json", "x-request-id": "envoy-1"}
	if ex.key != "" {
		h["authorization"] = "Bearer " + ex.key
	}
	if ex.user != "" {
		h["x-paywall-user"] = ex.user
	}
	for k, v := range ex.headers {
		h[k] = v
	}
	resp, err := send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: headerMap(h), EndOfStream: ex.noBody}}})
	if err != nil {
		return res, err
	}
	res.reqHeaders = resp.GetRequestHeaders()
	if res.immediate != nil || ex.noBody {
		return res, finish(st)
	}
	resp, err = send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{Body: []byte(ex.body), EndOfStream: true}}})
	if err != nil {
		return res, err
	}
	res.reqBody = resp.GetRequestBody()
	if res.immediate != nil {
		return res, finish(st)
	}
	status := ex.status
	if status == "" {
		status = "200"
	}
	ctype := ex.ctype
	if ctype == "" {
		ctype = "text/event-stream"
	}
	if res.respHeaders, err = send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{Headers: headerMap(map[string]string{":status": status, "content-type": ctype})}}}); err != nil {
		return res, err
	}
	for i, c := range ex.chunks {
		if ex.cancelAfter > 0 && i == ex.cancelAfter {
			cancel()
			_ = waitDone(st)
			return res, nil
		}
		if ex.pause > 0 {
			time.Sleep(ex.pause)
		}
		resp, err := send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
			ResponseBody: &extprocv3.HttpBody{Body: []byte(c), EndOfStream: i == len(ex.chunks)-1}}})
		if err != nil {
			return res, err
		}
		b := resp.GetResponseBody()
		res.chunks = append(res.chunks, b)
		switch m := b.GetResponse().GetBodyMutation().GetMutation().(type) {
		case nil:
			res.clientBody += c
		case *extprocv3.BodyMutation_Body:
			res.clientBody += string(m.Body)
		case *extprocv3.BodyMutation_ClearBody:
		}
	}
	return res, finish(st)
}

// finish half-closes the stream and waits for the server to return, as Envoy does when the
// HTTP stream completes.
func finish(st extprocv3.ExternalProcessor_ProcessClient) error {
	if err := st.CloseSend(); err != nil {
		return err
	}
	return waitDone(st)
}

// waitDone waits for the server to end the stream; an extra answer is an error.
func waitDone(st extprocv3.ExternalProcessor_ProcessClient) error {
	_, err := st.Recv()
	if err == nil {
		return errors.New("server answered a message that was never sent")
	}
	return nil
}

// header returns the value a mutation sets for key, and whether it sets it.
func header(m *extprocv3.HeaderMutation, key string) (string, bool) {
	for _, h := range m.GetSetHeaders() {
		if h.GetHeader().GetKey() == key {
			return string(h.GetHeader().GetRawValue()), true
		}
	}
	return "", false
}

func removes(m *extprocv3.HeaderMutation, key string) bool {
	for _, k := range m.GetRemoveHeaders() {
		if k == key {
			return true
		}
	}
	return false
}

// testPaywall is a built-in paywall with a 20 % markup.
func testPaywall() paywall.Paywall {
	return paywall.Paywall{ID: "pw1", Name: "Acme Chat", Mode: paywall.ModeBuiltin, Upstream: "openrouter",
		MarkupBps: 2000, DefaultMaxTokens: 100, MinCompletionTokens: 10}
}

// testRedis is the real Redis with a key prefix of the test's own.
func testRedis(t testing.TB) (*redis.Client, string) { return testredis.New(t) }
