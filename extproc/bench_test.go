package extproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"

	"github.com/tollgate-dev/tollgate/paywall"
)

// noopServer is the baseline: an ext_proc server that answers CONTINUE to every message.
type noopServer struct {
	extprocv3.UnimplementedExternalProcessorServer
}

func (noopServer) Process(st extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		req, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		var resp *extprocv3.ProcessingResponse
		switch req.Request.(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			resp = continueRequestHeaders()
		case *extprocv3.ProcessingRequest_RequestBody:
			resp = continueRequestBody()
		case *extprocv3.ProcessingRequest_ResponseHeaders:
			resp = continueResponseHeaders()
		default:
			resp = continueResponseBody()
		}
		if err := st.Send(resp); err != nil {
			return err
		}
	}
}

// benchMessages is the message sequence of one streamed request, as Envoy sends it:
// request headers, request body, response headers, 50 SSE chunks, the usage chunk (with
// [DONE], ending the stream).
func benchMessages() []*extprocv3.ProcessingRequest {
	msgs := []*extprocv3.ProcessingRequest{
		{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: headerMap(map[string]string{
			":method": "POST", ":path": chatPath, ":authority": "gateway.example", ":scheme": "https",
			"authorization": "Bearer " + testKey, "x-paywall-user": testUser, "content-type": "application/json",
			"x-request-id": "5d0c8c6e-9c3a-4b8e-9d7f-2f1f3c1e0a11", "user-agent": "OpenAI/Go 3.0"})}}},
		{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{EndOfStream: true, Body: []byte(
			`{"model":"m1","stream":true,"temperature":0.7,"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write a haiku about metered APIs and wallets, then explain it in two sentences."}]}`)}}},
		{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: headerMap(map[string]string{
			":status": "200", "content-type": "text/event-stream", "x-generation-id": "gen-42"})}}},
	}
	for i := range 50 {
		msgs = append(msgs, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{
			Body: fmt.Appendf(nil, "data: {\"id\":\"gen-42\",\"object\":\"chat.completion.chunk\",\"created\":1764200000,\"model\":\"m1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" word%02d\"},\"finish_reason\":null}],\"usage\":null}\n\n", i)}}})
	}
	msgs = append(msgs, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{
		EndOfStream: true,
		Body:        []byte(usageChunk(40, 50) + "data: [DONE]\n\n")}}})
	return msgs
}

// drive sends the sequence lock-step on one stream, as Envoy does.
func drive(c extprocv3.ExternalProcessorClient, msgs []*extprocv3.ProcessingRequest) error {
	st, err := c.Process(context.Background())
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if err := st.Send(m); err != nil {
			return err
		}
		r, err := st.Recv()
		if err != nil {
			return err
		}
		if r.GetImmediateResponse() != nil {
			return fmt.Errorf("immediate response: %s", r.GetImmediateResponse().GetBody())
		}
	}
	if err := st.CloseSend(); err != nil {
		return err
	}
	if _, err := st.Recv(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("end of stream: %w", err)
	}
	return nil
}

// benchServer is Tollgate with the ledger, paywalls and prices faked in memory, and a wallet
// that never runs dry.
func benchServer(b *testing.B) *Server {
	l := newFakeLedger()
	l.deposit(testWallet, 1<<60)
	pw := testPaywall()
	pw.DefaultMaxTokens = 256
	s, err := NewServer(Config{FeeBps: 500, ProviderKey: "sk-or-operator"}, Deps{
		Ledger:   l,
		Paywalls: &fakePaywalls{keys: map[string]paywall.Paywall{testKey: pw}, auths: map[string]string{pw.ID + "/" + testUser: testWallet}},
		Prices:   fakePrices{"m1": price(1, 2)},
		Links:    fakeLinks{},
	})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// noopRegistrar registers the baseline server the way Server.Register does.
type noopRegistrar struct{}

func (noopRegistrar) Register(g *grpc.Server) {
	extprocv3.RegisterExternalProcessorServer(g, noopServer{})
}

// benchTarget is a server to measure: the no-op baseline or Tollgate.
type benchTarget struct {
	name string
	srv  registrar
}

func benchTargets(b *testing.B) []benchTarget {
	return []benchTarget{{"baseline=noop", noopRegistrar{}}, {"tollgate", benchServer(b)}}
}

// BenchmarkRequest compares one whole streamed request through Tollgate (ledger faked in
// memory) with the same messages through a server that answers CONTINUE to everything, both
// over real gRPC on loopback. x-noop is Tollgate's time per request over the baseline's;
// the goal is at most 1.5.
func BenchmarkRequest(b *testing.B) {
	msgs := benchMessages()
	var baseline float64
	for _, tc := range benchTargets(b) {
		b.Run(tc.name, func(b *testing.B) {
			c := startServer(b, tc.srv)
			if err := drive(c, msgs); err != nil { // warm the connection
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := drive(c, msgs); err != nil {
					b.Fatal(err)
				}
			}
			perOp := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			b.ReportMetric(perOp/float64(len(msgs)), "ns/msg")
			if tc.name == "baseline=noop" {
				baseline = perOp
			} else if baseline > 0 {
				b.ReportMetric(perOp/baseline, "x-noop")
			}
		})
	}
}

// BenchmarkRequestPaired drives a no-op stream and a Tollgate stream alternately in every
// iteration and times each, so that load from elsewhere on the machine hits both alike. It
// reports both times per request and x-noop, their ratio (goal: at most 1.5).
func BenchmarkRequestPaired(b *testing.B) {
	msgs := benchMessages()
	targets := benchTargets(b)
	noop, tollgate := startServer(b, targets[0].srv), startServer(b, targets[1].srv)
	for _, c := range []extprocv3.ExternalProcessorClient{noop, tollgate} {
		if err := drive(c, msgs); err != nil {
			b.Fatal(err)
		}
	}
	var tNoop, tToll time.Duration
	for b.Loop() {
		t0 := time.Now()
		if err := drive(noop, msgs); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := drive(tollgate, msgs); err != nil {
			b.Fatal(err)
		}
		tNoop += t1.Sub(t0)
		tToll += time.Since(t1)
	}
	b.ReportMetric(float64(tNoop.Nanoseconds())/float64(b.N), "noop-ns/req")
	b.ReportMetric(float64(tToll.Nanoseconds())/float64(b.N), "tollgate-ns/req")
	b.ReportMetric(float64(tToll)/float64(tNoop), "x-noop")
}

// BenchmarkChunk measures the processor's own work on one content chunk of a stream, without
// gRPC: the scan, the metering and the answer. The goal is 0 allocs/op. The hide variant
// is a stream whose usage chunk must be hidden (the client did not ask for it).
func BenchmarkChunk(b *testing.B) {
	chunk := benchMessages()[10].GetResponseBody()
	for _, hide := range []bool{false, true} {
		b.Run("hide="+strconv.FormatBool(hide), func(b *testing.B) {
			p := newProcessor(context.Background(), benchServer(b))
			p.holdOpen, p.streaming, p.dropUsage = true, true, hide
			b.ReportAllocs()
			b.SetBytes(int64(len(chunk.Body)))
			for b.Loop() {
				_ = p.ResponseBody(chunk)
			}
		})
	}
}

// BenchmarkOpenStreams holds 1,000 streams open mid-response (headers, body, response
// headers and one chunk answered) and reports the heap and resident memory they take, beside
// the same streams on the no-op server. The client's side of the streams lives in the same
// process, so the difference between the two is Tollgate's own state.
func BenchmarkOpenStreams(b *testing.B) {
	const streams = 1000
	msgs := benchMessages()[:4]
	for _, tc := range benchTargets(b) {
		b.Run(tc.name, func(b *testing.B) {
			c := startServer(b, tc.srv)
			for b.Loop() {
				heap0, rss0 := memory()
				ctx, cancel := context.WithCancel(context.Background())
				open := make([]extprocv3.ExternalProcessor_ProcessClient, 0, streams)
				for range streams {
					st, err := c.Process(ctx)
					if err != nil {
						b.Fatal(err)
					}
					for _, m := range msgs {
						if err := st.Send(m); err != nil {
							b.Fatal(err)
						}
						if _, err := st.Recv(); err != nil {
							b.Fatal(err)
						}
					}
					open = append(open, st)
				}
				heap1, rss1 := memory()
				b.ReportMetric(float64(heap1-heap0)/streams, "heap-B/stream")
				b.ReportMetric(float64(rss1-rss0)/streams, "rss-B/stream")
				b.ReportMetric(float64(rss1)/(1<<20), "rss-MiB")
				cancel()
				for _, st := range open {
					_, _ = st.Recv()
				}
				time.Sleep(50 * time.Millisecond) // let the servers settle the cancelled streams
			}
		})
	}
}

// memory returns the live heap after a GC and the resident set size, in bytes.
func memory() (heap, rss int64) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	if raw, err := os.ReadFile("/proc/self/status"); err == nil {
		for l := range strings.SplitSeq(string(raw), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				rss = kb << 10
			}
		}
	}
	return int64(m.HeapAlloc), rss
}
