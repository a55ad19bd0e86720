package extproc

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tollgate-dev/tollgate/extproc/limits"
)

// fakeStream is a hand-written ExternalProcessor_ProcessServer: Recv hands out the queued
// messages and then end (io.EOF, a cancellation, an error); Send records the answers.
type fakeStream struct {
	grpc.ServerStream
	ctx  context.Context
	in   []*extprocv3.ProcessingRequest
	end  error
	sent []*extprocv3.ProcessingResponse
}

func (f *fakeStream) Context() context.Context { return f.ctx }

func (f *fakeStream) Recv() (*extprocv3.ProcessingRequest, error) {
	if len(f.in) == 0 {
		return nil, f.end
	}
	m := f.in[0]
	f.in = f.in[1:]
	return m, nil
}

func (f *fakeStream) Send(r *extprocv3.ProcessingResponse) error {
	f.sent = append(f.sent, r)
	return nil
}

func (f *fakeStream) SetHeader(metadata.MD) error  { return nil }
func (f *fakeStream) SendHeader(metadata.MD) error { return nil }
func (f *fakeStream) SetTrailer(metadata.MD)       {}

func requestMessages(body string) []*extprocv3.ProcessingRequest {
	return []*extprocv3.ProcessingRequest{
		{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: headerMap(map[string]string{
			":method": "POST", ":path": chatPath, "authorization": "Bearer " + testKey, "x-paywall-user": testUser})}}},
		{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(body), EndOfStream: true}}},
	}
}

// TestProcessEnds covers how a stream can end: each answer is sent once, and a hold is
// voided when the request never left, or settled from an estimate when it may have.
func TestProcessEnds(t *testing.T) {
	respHeaders := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
		Headers: headerMap(map[string]string{":status": "200", "content-type": "text/event-stream"})}}}
	chunk := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: []byte(sseChunk("hello world"))}}}
	trailers := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{}}}
	tests := []struct {
		name      string
		in        []*extprocv3.ProcessingRequest
		end       error
		wantErr   codes.Code
		estimated string // estimate_reason of the capture, "" for none
		voids     int
	}{
		{name: "EOF after the rewrite: the upstream may be working", in: requestMessages(streamBody), end: io.EOF, estimated: "stream_closed"},
		{name: "cancelled mid-stream", in: append(requestMessages(streamBody), respHeaders, chunk), end: status.Error(codes.Canceled, "gone"), estimated: "client_gone"},
		{name: "transport error mid-stream", in: append(requestMessages(streamBody), respHeaders, chunk), end: errors.New("connection reset"),
			wantErr: codes.Unknown, estimated: "stream_error"},
		{name: "trailers are answered", in: append(requestMessages(streamBody), respHeaders, chunk, trailers), end: io.EOF, estimated: "stream_closed"},
		{name: "EOF before the body: nothing held", in: requestMessages(streamBody)[:1], end: io.EOF},
		{name: "unknown message", in: []*extprocv3.ProcessingRequest{{}}, end: io.EOF, wantErr: codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, s := newFakeEnv(t, testPaywall(), 1_000_000)
			n := len(tt.in)
			st := &fakeStream{ctx: t.Context(), in: tt.in, end: tt.end}
			err := s.Process(st)
			if status.Code(err) != tt.wantErr {
				t.Fatalf("Process returned %v, want code %v", err, tt.wantErr)
			}
			wantSent := n
			if tt.wantErr == codes.Internal {
				wantSent = 0
			}
			if len(st.sent) != wantSent {
				t.Errorf("%d answers to %d messages", len(st.sent), n)
			}
			capt, captured := env.ledger.onlyCapture()
			if tt.estimated == "" && captured {
				t.Errorf("captured %+v", capt)
			}
			if tt.estimated != "" && (!captured || !capt.Estimated || capt.Metadata["estimate_reason"] != tt.estimated) {
				t.Errorf("capture %+v (captured %v), want estimated for %s", capt, captured, tt.estimated)
			}
			if _, held, open := env.ledger.state(testWallet); held != 0 || open != 0 {
				t.Errorf("held %d in %d open holds", held, open)
			}
		})
	}
}

func TestRequestBodyMustBeBuffered(t *testing.T) {
	env, s := newFakeEnv(t, testPaywall(), 1_000_000)
	in := requestMessages(streamBody)
	in[1].GetRequestBody().EndOfStream = false
	st := &fakeStream{ctx: t.Context(), in: in, end: io.EOF}
	if err := s.Process(st); err != nil {
		t.Fatal(err)
	}
	ir := st.sent[1].GetImmediateResponse()
	if ir == nil || ir.GetStatus().GetCode() != 500 || !strings.Contains(string(ir.GetBody()), "BUFFERED") {
		t.Fatalf("answer %v", st.sent[1])
	}
	if len(env.ledger.holds) != 0 {
		t.Error("held money for a request it could not read")
	}
}

// TestLedgerDown: a hold that fails is a 503 that moves nothing and gives the concurrency
// slot back.
func TestLedgerDown(t *testing.T) {
	pw := testPaywall()
	pw.MaxConcurrent = 1
	env, _ := newFakeEnv(t, pw, 1_000_000)
	env.ledger.failHold = errors.New("connection refused")
	rdb, prefix := testRedis(t)
	lim := limits.New(rdb, prefix, time.Minute)
	s, err := NewServer(Config{}, Deps{Ledger: env.ledger, Paywalls: env.paywalls, Prices: fakePrices{"m1": price(1, 2)}, Links: fakeLinks{}, Limiter: lim})
	if err != nil {
		t.Fatal(err)
	}
	c := startServer(t, s)
	for range 2 { // the second would be refused by the cap if the slot leaked
		res := run(t, c, exchange{key: testKey, user: testUser, body: streamBody})
		if ir := res.immediate; ir == nil || ir.GetStatus().GetCode() != 503 || !strings.Contains(string(ir.GetBody()), "billing_unavailable") {
			t.Fatalf("answer %v", res.immediate)
		}
	}
	if n, err := lim.InFlight(t.Context(), pw.ID+":"+testUser); err != nil || n != 0 {
		t.Errorf("%d slots leaked (%v)", n, err)
	}
}

// TestCapsFailOpen: when Redis is unreachable, caps cannot be checked; the request is served
// (the ledger, not Redis, protects the money).
func TestCapsFailOpen(t *testing.T) {
	pw := testPaywall()
	pw.MaxConcurrent, pw.RatePerMinute = 1, 1
	env, _ := newFakeEnv(t, pw, 1_000_000)
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	t.Cleanup(func() { _ = dead.Close() })
	s, err := NewServer(Config{}, Deps{Ledger: env.ledger, Paywalls: env.paywalls, Prices: fakePrices{"m1": price(1, 2)},
		Links: fakeLinks{}, Limiter: limits.New(dead, "x:", time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	c := startServer(t, s)
	res := run(t, c, exchange{key: testKey, user: testUser, body: streamBody, chunks: []string{usageChunk(3, 3), "data: [DONE]\n\n"}})
	if res.immediate != nil {
		t.Fatalf("refused: %s", res.immediate.GetBody())
	}
	if _, ok := env.ledger.onlyCapture(); !ok {
		t.Error("not charged")
	}
}

func TestNewServerNeedsDeps(t *testing.T) {
	_, err := NewServer(Config{}, Deps{})
	if err == nil || !strings.Contains(err.Error(), "Deps.Ledger") || !strings.Contains(err.Error(), "Deps.Links") {
		t.Fatalf("got %v", err)
	}
}
