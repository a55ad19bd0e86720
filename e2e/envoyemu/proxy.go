// Package envoyemu is an Envoy emulator for tests and `make run`: an HTTP proxy that reads the
// listener, routes, clusters and ext_proc filter from envoy/envoy.yaml and drives a real
// ext_proc gRPC server the way Envoy's ext_proc filter does (../shared/reference/envoy-extproc.md
// §1): processing modes and mode_override, exactly one answer per message, header-mutation
// rules, content-length rules, clear_route_cache, ImmediateResponse, message_timeout → 504,
// errors → 500, client disconnect → stream reset, STREAMED bodies chunk by chunk.
//
// It exists because no Envoy binary can be installed on our machines. What it does not
// implement it refuses when loading the config; docs/e2e.md lists what it leaves out.
package envoyemu

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tollgate-dev/tollgate/envoy"
)

// Options configure a Proxy.
type Options struct {
	// Config is the Envoy bootstrap to emulate (envoy/envoy.yaml).
	Config string
	// Endpoints replaces the endpoints of the named clusters ("host:port" each), to point
	// tollgate_extproc, tollgate_http and the upstreams at local processes.
	Endpoints map[string][]string
	// UpstreamTLS is used for clusters with a TLS transport socket (nil: the system roots);
	// ServerName is set from the cluster's sni.
	UpstreamTLS *tls.Config
	Logger      *slog.Logger
	// OnRequest, if set, receives one record per request: Envoy's access log.
	OnRequest func(RequestLog)
}

// RequestLog is what happened to one request.
type RequestLog struct {
	Method, Path string
	Route        string // the route that served it ("" when none matched)
	Cluster      string
	UpstreamURL  string
	Status       int
	// Details is Envoy's %RESPONSE_CODE_DETAILS%: via_upstream, direct_response,
	// route_not_found, ext_proc_error_gRPC_error_N{…}, ext_proc_error_per-message_timeout_exceeded,
	// spurious_message, the ImmediateResponse's details, …
	Details string
	// Sent lists the ext_proc messages sent, in order (request_headers, request_body, …).
	Sent []string
	// Waits[i] is how long Sent[i] waited for its answer, from send to receipt (0 when none
	// came). Streamed chunks are in flight together; each waits from its own send.
	Waits []time.Duration
	// Modes records each accepted mode_override ("response_body_mode=STREAMED").
	Modes []string
	// Reset reports whether the downstream stream was reset after its response had started.
	Reset bool
	// ClientGone reports whether the client went away before the end.
	ClientGone bool
}

// Proxy is the emulated Envoy: an http.Handler.
type Proxy struct {
	cfg       *config
	log       *slog.Logger
	onRequest func(RequestLog)
	endpoints map[string][]string
	rr        atomic.Uint64
	conns     []*grpc.ClientConn
	clients   []extprocv3.ExternalProcessorClient
	upstreams map[string]*http.Client // by cluster
}

// next returns the index of the next of n endpoints, round robin (Envoy's default policy).
func (p *Proxy) next(n int) int {
	return int((p.rr.Add(1) - 1) % uint64(n)) //nolint:gosec // G115: the remainder is below n, an int
}

// New loads and validates the config (the same checks as envoy's config test) and connects
// to the ext_proc servers.
func New(opts Options) (*Proxy, error) {
	b, err := envoy.Load(opts.Config)
	if err != nil {
		return nil, err
	}
	if err := envoy.Validate(b); err != nil {
		return nil, err
	}
	cfg, err := compile(b)
	if err != nil {
		return nil, err
	}
	p := &Proxy{cfg: cfg, log: opts.Logger, onRequest: opts.OnRequest, endpoints: map[string][]string{}, upstreams: map[string]*http.Client{}}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	for name, c := range cfg.clusters {
		p.endpoints[name] = c.endpoints
		if eps, ok := opts.Endpoints[name]; ok {
			p.endpoints[name] = eps
		}
		var tc *tls.Config
		if c.tls {
			tc = &tls.Config{MinVersion: tls.VersionTLS12}
			if opts.UpstreamTLS != nil {
				tc = opts.UpstreamTLS.Clone()
			}
			tc.ServerName = c.sni
		}
		p.upstreams[name] = &http.Client{
			Transport: &http.Transport{
				Proxy:               nil,
				DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
				TLSClientConfig:     tc,
				DisableCompression:  true, // pass accept-encoding through untouched
				MaxIdleConnsPerHost: 1024,
				IdleConnTimeout:     time.Minute,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	for name := range opts.Endpoints {
		if _, ok := cfg.clusters[name]; !ok {
			return nil, fmt.Errorf("emulator: endpoints given for cluster %q, which the config does not define", name)
		}
	}
	if cfg.extProc != nil {
		eps := p.endpoints[cfg.extProc.cluster]
		if len(eps) == 0 {
			return nil, fmt.Errorf("emulator: ext_proc cluster %q has no endpoints", cfg.extProc.cluster)
		}
		for _, ep := range eps {
			// Envoy's gRPC client has no receive limit by default.
			conn, err := grpc.NewClient(ep, grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30), grpc.MaxCallSendMsgSize(1<<30)))
			if err != nil {
				_ = p.Close()
				return nil, fmt.Errorf("emulator: ext_proc endpoint %s: %w", ep, err)
			}
			p.conns = append(p.conns, conn)
			p.clients = append(p.clients, extprocv3.NewExternalProcessorClient(conn))
		}
	}
	return p, nil
}

// Close closes the gRPC connections and idle upstream connections.
func (p *Proxy) Close() error {
	var errs []error
	for _, c := range p.conns {
		errs = append(errs, c.Close())
	}
	for _, c := range p.upstreams {
		c.CloseIdleConnections()
	}
	return errors.Join(errs...)
}

// ServeHTTP proxies one request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x := &exchange{p: p, w: w, r: r, log: RequestLog{Method: r.Method, Path: r.URL.RequestURI()}}
	defer func() {
		rec := recover() // reset() aborts the response with http.ErrAbortHandler
		x.finish()
		if p.onRequest != nil {
			p.onRequest(x.log)
		}
		if rec != nil {
			panic(rec)
		}
	}()
	x.run()
}

// mode is one direction pair's processing state (ProcessorState::setProcessingMode).
type mode struct {
	reqHeaders, respHeaders bool
	reqBody, respBody       extprocfilterv3.ProcessingMode_BodySendMode
}

func modeOf(pm *extprocfilterv3.ProcessingMode) mode {
	return mode{
		reqHeaders:  pm.GetRequestHeaderMode() != extprocfilterv3.ProcessingMode_SKIP,
		respHeaders: pm.GetResponseHeaderMode() != extprocfilterv3.ProcessingMode_SKIP,
		reqBody:     pm.GetRequestBodyMode(),
		respBody:    pm.GetResponseBodyMode(),
	}
}

// exchange is one HTTP request going through the emulated Envoy.
type exchange struct {
	p   *Proxy
	w   http.ResponseWriter
	r   *http.Request
	log RequestLog

	ep       *extProcConfig
	side     *sideStream
	mode     mode
	complete bool // processing_complete_: no more messages for this request
	// graceful reports whether the last expected answer arrived, so the stream is half-closed
	// rather than reset.
	graceful     bool
	routeCleared bool
	replaced     bool // CONTINUE_AND_REPLACE on request headers
	started      bool // response headers went downstream
	clientGone   chan struct{}
	stopWatch    func() bool
}

// upstreamResponse is what the router produced: an upstream reply or a router local reply.
type upstreamResponse struct {
	status  int
	headers headerMap
	body    io.ReadCloser
	details string
}

func (x *exchange) run() {
	x.clientGone = make(chan struct{})
	var once atomic.Bool
	x.stopWatch = context.AfterFunc(x.r.Context(), func() {
		if once.CompareAndSwap(false, true) {
			close(x.clientGone)
		}
	})

	req := x.requestHeaders()
	vh, rt := x.p.cfg.match(req)
	x.ep = x.p.cfg.extProc
	if x.ep != nil && (rt == nil || !rt.extProcDisabled) {
		x.mode = modeOf(x.ep.mode)
	} else {
		x.complete = true // filter disabled on this route: all modes off
	}
	hasBody := x.r.ContentLength != 0

	// decodeHeaders
	var replacement []byte
	if !x.complete && x.mode.reqHeaders {
		ans, ok := x.exchangeMessage("request_headers", &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
			RequestHeaders: &extprocv3.HttpHeaders{Headers: req.proto(), EndOfStream: !hasBody}}}, true)
		// Envoy drops content-length right after sending the headers when the body mode
		// cannot keep it exact.
		if x.shouldRemoveContentLength(x.mode.reqBody, x.mode.reqHeaders) {
			req.del("content-length")
		}
		if !ok {
			return
		}
		if ans != nil {
			hr, isHeaders := ans.GetResponse().(*extprocv3.ProcessingResponse_RequestHeaders)
			if !isHeaders {
				x.spurious()
				return
			}
			cr := hr.RequestHeaders.GetResponse()
			replacing := cr.GetStatus() == extprocv3.CommonResponse_CONTINUE_AND_REPLACE
			if cr.GetHeaderMutation() != nil {
				if err := x.mutate(cr.GetHeaderMutation(), &req, replacing, x.shouldRemoveContentLength(x.mode.reqBody, x.mode.reqHeaders)); err != nil {
					return
				}
			}
			x.clearRouteCache(cr)
			if replacing {
				x.replaced = true
				if cr.GetBodyMutation() != nil {
					req.del("content-length")
					replacement = applyBodyMutation(cr.GetBodyMutation(), nil)
				}
				x.mode.reqBody = extprocfilterv3.ProcessingMode_NONE
			}
		}
	} else if !x.complete && x.shouldRemoveContentLength(x.mode.reqBody, x.mode.reqHeaders) {
		req.del("content-length")
	}

	// decodeData
	var body io.Reader = x.r.Body
	bodyLen := int64(-1)
	switch {
	case x.replaced:
		body, bodyLen = bytes.NewReader(replacement), int64(len(replacement))
	case !hasBody:
		body, bodyLen = http.NoBody, 0
	case !x.complete && x.mode.reqBody == extprocfilterv3.ProcessingMode_BUFFERED:
		buf, err := io.ReadAll(io.LimitReader(x.r.Body, x.p.cfg.bufferLimit+1))
		if err != nil {
			x.clientLeft()
			return
		}
		if int64(len(buf)) > x.p.cfg.bufferLimit {
			// The filter manager's 413 goes back through the encoder filters.
			x.respond(vh, rt, req, x.routerReply(http.StatusRequestEntityTooLarge, "Payload Too Large", "request_payload_too_large"))
			return
		}
		ans, ok := x.exchangeMessage("request_body", &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
			RequestBody: &extprocv3.HttpBody{Body: buf, EndOfStream: true}}}, false)
		if !ok {
			return
		}
		if ans != nil {
			br, isBody := ans.GetResponse().(*extprocv3.ProcessingResponse_RequestBody)
			if !isBody {
				x.spurious()
				return
			}
			cr := br.RequestBody.GetResponse()
			if buf, ok = x.applyBodyAnswer(cr, &req, buf); !ok {
				return
			}
			x.clearRouteCache(cr)
		}
		body, bodyLen = bytes.NewReader(buf), int64(len(buf))
	case !x.complete && x.mode.reqBody != extprocfilterv3.ProcessingMode_NONE:
		x.unimplemented("request body mode " + x.mode.reqBody.String())
		return
	}
	if !x.checkIdle() {
		return
	}

	// router
	if x.routeCleared {
		vh, rt = x.p.cfg.match(req)
	}
	x.respond(vh, rt, req, x.route(rt, req, body, bodyLen))
}

func bodyMutationBytes(bm *extprocv3.BodyMutation) []byte {
	if b, ok := bm.GetMutation().(*extprocv3.BodyMutation_Body); ok {
		return b.Body
	}
	return nil
}

// requestHeaders builds the request header map as Envoy's HCM hands it to the filters,
// after the header_mutation filter.
func (x *exchange) requestHeaders() headerMap {
	r := x.r
	h := headerMap{
		{":authority", r.Host},
		{":path", r.URL.RequestURI()},
		{":method", r.Method},
		{":scheme", "http"},
	}
	fromHTTP(r.Header, &h)
	if r.ContentLength > 0 {
		h.set("content-length", strconv.FormatInt(r.ContentLength, 10))
	}
	h.set("x-forwarded-proto", "http")
	if _, ok := h.get("x-request-id"); !ok {
		var id [16]byte
		_, _ = rand.Read(id[:])
		h.set("x-request-id", hex.EncodeToString(id[:]))
	}
	for _, name := range x.p.cfg.requestRemoves {
		h.del(name)
	}
	return h
}

// shouldRemoveContentLength is ProcessorState::shouldRemoveContentLength.
func (x *exchange) shouldRemoveContentLength(body extprocfilterv3.ProcessingMode_BodySendMode, sendHeaders bool) bool {
	return body == extprocfilterv3.ProcessingMode_STREAMED ||
		body == extprocfilterv3.ProcessingMode_BUFFERED_PARTIAL ||
		body == extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED ||
		(body == extprocfilterv3.ProcessingMode_BUFFERED && !sendHeaders)
}

// sentMessage is a message in the request's log, waiting for its answer.
type sentMessage struct {
	i  int // in log.Sent
	at time.Time
}

// sent logs a message about to be sent.
func (x *exchange) sent(kind string) sentMessage {
	x.log.Sent = append(x.log.Sent, kind)
	x.log.Waits = append(x.log.Waits, 0)
	return sentMessage{len(x.log.Sent) - 1, time.Now()}
}

// answered logs the answer to a message.
func (x *exchange) answered(m sentMessage) { x.log.Waits[m.i] = time.Since(m.at) }

// exchangeMessage sends one message and waits for its answer. It returns (nil, true) when the
// server closed the stream cleanly (Envoy then continues without it), and ok=false when the
// request is over (a local reply was sent or the client left).
func (x *exchange) exchangeMessage(kind string, req *extprocv3.ProcessingRequest, headerState bool) (*extprocv3.ProcessingResponse, bool) {
	if !x.checkIdle() {
		return nil, false
	}
	if x.complete {
		return nil, true
	}
	if !x.openSide() {
		return nil, false
	}
	if !x.side.sentAny {
		req.ProtocolConfig = &extprocv3.ProtocolConfiguration{RequestBodyMode: x.ep.mode.GetRequestBodyMode(), ResponseBodyMode: x.ep.mode.GetResponseBodyMode()}
		x.side.sentAny = true
	}
	sent := x.sent(kind)
	x.side.send(req)
	ans, ev, err := x.waiter().await()
	if ev == evAnswer {
		x.answered(sent)
	}
	switch ev {
	case evClosed:
		x.complete = true
		return nil, true
	case evGRPCError:
		x.grpcFailed(err)
		return nil, false
	case evTimeout:
		x.timedOut()
		return nil, false
	case evClientGone:
		x.clientLeft()
		return nil, false
	}
	if headerState && ans.GetModeOverride() != nil && x.ep.allowModeOverride {
		x.overrideMode(ans.GetModeOverride())
	}
	if ir := ans.GetImmediateResponse(); ir != nil {
		if x.ep.disableImmediate {
			x.spurious()
			return nil, false
		}
		x.complete = true
		x.graceful = true
		x.immediate(ir)
		return nil, false
	}
	return ans, true
}

func (x *exchange) waiter() waiter {
	return waiter{s: x.side, timeout: x.ep.messageTimeout, maxTimeout: x.ep.maxMessageTimeout, clientGone: x.clientGone}
}

func (x *exchange) openSide() bool {
	if x.side != nil {
		return true
	}
	clients := x.p.clients
	c := clients[x.p.next(len(clients))]
	s, err := openSideStream(c)
	if err != nil {
		x.grpcFailed(err)
		return false
	}
	x.side = s
	return true
}

// checkIdle handles a message that arrived while none was awaited: spurious (500), or the
// stream ending (clean close: go on without the server; error: 500).
func (x *exchange) checkIdle() bool {
	if x.side == nil || x.complete {
		return true
	}
	r, ok := x.side.poll()
	if !ok {
		return true
	}
	switch {
	case r.err == nil:
		x.spurious()
		return false
	case errors.Is(r.err, io.EOF):
		x.complete = true
		return true
	default:
		x.grpcFailed(r.err)
		return false
	}
}

// overrideMode applies a mode_override the way Filter::onReceiveMessage does: DEFAULT header
// modes in the override are unset, body modes are always taken, and the result must be in
// allowed_override_modes when that list is set (request_header_mode is not compared).
func (x *exchange) overrideMode(o *extprocfilterv3.ProcessingMode) {
	eff := &extprocfilterv3.ProcessingMode{
		RequestHeaderMode:   x.ep.mode.GetRequestHeaderMode(),
		ResponseHeaderMode:  x.ep.mode.GetResponseHeaderMode(),
		RequestTrailerMode:  x.ep.mode.GetRequestTrailerMode(),
		ResponseTrailerMode: x.ep.mode.GetResponseTrailerMode(),
		RequestBodyMode:     o.GetRequestBodyMode(),
		ResponseBodyMode:    o.GetResponseBodyMode(),
	}
	if o.GetRequestHeaderMode() != extprocfilterv3.ProcessingMode_DEFAULT {
		eff.RequestHeaderMode = o.GetRequestHeaderMode()
	}
	if o.GetResponseHeaderMode() != extprocfilterv3.ProcessingMode_DEFAULT {
		eff.ResponseHeaderMode = o.GetResponseHeaderMode()
	}
	if o.GetRequestTrailerMode() != extprocfilterv3.ProcessingMode_DEFAULT {
		eff.RequestTrailerMode = o.GetRequestTrailerMode()
	}
	if o.GetResponseTrailerMode() != extprocfilterv3.ProcessingMode_DEFAULT {
		eff.ResponseTrailerMode = o.GetResponseTrailerMode()
	}
	if len(x.ep.allowedOverrides) > 0 {
		allowed := false
		for _, a := range x.ep.allowedOverrides {
			allowed = allowed || (eff.GetRequestBodyMode() == a.GetRequestBodyMode() &&
				eff.GetRequestTrailerMode() == a.GetRequestTrailerMode() &&
				eff.GetResponseHeaderMode() == a.GetResponseHeaderMode() &&
				eff.GetResponseBodyMode() == a.GetResponseBodyMode() &&
				eff.GetResponseTrailerMode() == a.GetResponseTrailerMode())
		}
		if !allowed {
			x.p.log.Debug("envoyemu: mode_override not in allowed_override_modes; ignored", "override", o.String())
			return
		}
	}
	// Decoding state keeps its request phases already done; what matters from here on is
	// the rest of the request (if any) and the response.
	x.mode = modeOf(eff)
	x.log.Modes = append(x.log.Modes, fmt.Sprintf("request_body_mode=%s response_body_mode=%s", eff.GetRequestBodyMode(), eff.GetResponseBodyMode()))
}

// mutate applies a header mutation with the filter's rules; a refused mutation ends the
// request with a 500, as handleErrorResponse does.
func (x *exchange) mutate(m *extprocv3.HeaderMutation, h *headerMap, replacing, removeCL bool) error {
	err := applyMutation(m, h, x.ep.checker, replacing, removeCL)
	if err != nil {
		x.fail(http.StatusInternalServerError, strings.TrimPrefix(err.Error(), errMutation.Error()+": "))
	}
	return err
}

// clearRouteCache is DecodingProcessorState::clearRouteCache: only honoured when the same
// answer carries a header mutation.
func (x *exchange) clearRouteCache(cr *extprocv3.CommonResponse) {
	if cr.GetHeaderMutation() == nil {
		return
	}
	switch x.ep.routeCacheAction {
	case extprocfilterv3.ExternalProcessor_CLEAR:
		x.routeCleared = true
	case extprocfilterv3.ExternalProcessor_DEFAULT:
		x.routeCleared = x.routeCleared || cr.GetClearRouteCache()
	}
}

// route is the router filter: pick the cluster, rewrite, send upstream.
func (x *exchange) route(rt *route, req headerMap, body io.Reader, bodyLen int64) upstreamResponse {
	if rt == nil {
		return x.routerReply(http.StatusNotFound, "", "route_not_found")
	}
	x.log.Route = rt.name
	if rt.direct != nil {
		text := string(rt.direct.GetBody().GetInlineBytes())
		if s := rt.direct.GetBody().GetInlineString(); s != "" {
			text = s
		}
		return x.routerReply(int(rt.direct.GetStatus()), text, "direct_response")
	}
	x.log.Cluster = rt.cluster
	eps := x.p.endpoints[rt.cluster]
	if len(eps) == 0 {
		return x.routerReply(http.StatusServiceUnavailable, "no healthy upstream", "no_healthy_upstream")
	}
	path, _ := req.get(":path")
	if rt.prefixRewrite != "" && rt.prefix != "" && strings.HasPrefix(path, rt.prefix) {
		path = rt.prefixRewrite + path[len(rt.prefix):]
	}
	scheme := "http"
	if x.p.cfg.clusters[rt.cluster].tls {
		scheme = "https"
	}
	ep := eps[x.p.next(len(eps))]
	url := scheme + "://" + ep + path
	x.log.UpstreamURL = url
	method, _ := req.get(":method")
	ureq, err := http.NewRequestWithContext(x.r.Context(), method, url, body)
	if err != nil {
		return x.routerReply(http.StatusServiceUnavailable, err.Error(), "upstream_reset_before_response_started{invalid_request}")
	}
	hdr := req
	for _, f := range rt.reqAdd {
		hdr.set(strings.ToLower(f.GetHeader().GetKey()), f.GetHeader().GetValue())
	}
	for _, name := range rt.reqRemove {
		hdr.del(strings.ToLower(name))
	}
	ureq.Header = hdr.httpHeader()
	for _, hop := range []string{"Connection", "Keep-Alive", "Transfer-Encoding", "Upgrade", "Proxy-Connection", "Te", "Content-Length"} {
		ureq.Header.Del(hop)
	}
	if ip, _, err := net.SplitHostPort(x.r.RemoteAddr); err == nil {
		ureq.Header.Set("X-Forwarded-For", ip) // use_remote_address: true
	}
	authority, _ := req.get(":authority")
	ureq.Host = authority
	if rt.hostRewrite != "" {
		ureq.Host = rt.hostRewrite
	}
	ureq.ContentLength = bodyLen
	if cl, ok := req.get("content-length"); ok && bodyLen < 0 {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil {
			ureq.ContentLength = n
		}
	}
	if ureq.ContentLength == 0 {
		ureq.Body = http.NoBody
	}
	resp, err := x.p.upstreams[rt.cluster].Do(ureq) //nolint:bodyclose // the body goes to respond, which closes it
	if err != nil {
		if x.r.Context().Err() != nil {
			return upstreamResponse{details: "downstream_remote_disconnect"}
		}
		x.p.log.Info("envoyemu: upstream request failed", "cluster", rt.cluster, "err", err)
		return x.routerReply(http.StatusServiceUnavailable, "upstream connect error or disconnect/reset before headers. reset reason: connection failure", "upstream_reset_before_response_started{connection_failure}")
	}
	h := headerMap{{":status", strconv.Itoa(resp.StatusCode)}}
	fromHTTP(resp.Header, &h)
	for _, hop := range []string{"connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection"} {
		h.del(hop)
	}
	if resp.ContentLength >= 0 {
		h.set("content-length", strconv.FormatInt(resp.ContentLength, 10))
	}
	return upstreamResponse{status: resp.StatusCode, headers: h, body: resp.Body, details: "via_upstream"}
}

// routerReply is a local reply produced by the router or the filter manager (not by
// ext_proc): it still goes through the ext_proc filter's response phases.
func (x *exchange) routerReply(code int, body, details string) upstreamResponse {
	h := headerMap{{":status", strconv.Itoa(code)}}
	if body != "" {
		h.set("content-type", "text/plain")
	}
	h.set("content-length", strconv.Itoa(len(body)))
	return upstreamResponse{status: code, headers: h, body: io.NopCloser(strings.NewReader(body)), details: details}
}

// respond runs the response phases (encodeHeaders, encodeData) and writes downstream.
func (x *exchange) respond(vh *vhost, rt *route, req headerMap, resp upstreamResponse) {
	if resp.body == nil {
		x.clientLeft()
		return
	}
	defer func() { _ = resp.body.Close() }()
	h := resp.headers
	if vh != nil {
		if rt != nil {
			applyHeadersToAdd(&h, rt.respAdd, rt.respRemove)
		}
		applyHeadersToAdd(&h, vh.respAdd, vh.respRemove)
	}
	x.log.Details = resp.details
	method, _ := req.get(":method")
	noBody := method == http.MethodHead || resp.status == http.StatusNoContent || resp.status == http.StatusNotModified
	if cl, _ := h.get("content-length"); cl == "0" {
		noBody = true
	}

	// encodeHeaders
	if !x.complete && x.mode.respHeaders {
		dropCL := x.shouldRemoveContentLength(x.mode.respBody, x.mode.respHeaders)
		ans, ok := x.exchangeMessage("response_headers", &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
			ResponseHeaders: &extprocv3.HttpHeaders{Headers: h.proto(), EndOfStream: noBody}}}, true)
		if dropCL {
			h.del("content-length")
		}
		if !ok {
			return
		}
		if ans != nil {
			hr, isHeaders := ans.GetResponse().(*extprocv3.ProcessingResponse_ResponseHeaders)
			if !isHeaders {
				x.spurious()
				return
			}
			if m := hr.ResponseHeaders.GetResponse().GetHeaderMutation(); m != nil {
				if err := x.mutate(m, &h, false, x.shouldRemoveContentLength(x.mode.respBody, x.mode.respHeaders)); err != nil {
					return
				}
			}
			if hr.ResponseHeaders.GetResponse().GetStatus() == extprocv3.CommonResponse_CONTINUE_AND_REPLACE {
				if bm := hr.ResponseHeaders.GetResponse().GetBodyMutation(); bm != nil {
					h.del("content-length")
					x.complete, x.graceful = true, true
					x.writeHeaders(h)
					_, _ = x.w.Write(applyBodyMutation(bm, nil))
					return
				}
				x.mode.respBody = extprocfilterv3.ProcessingMode_NONE
			}
		}
	} else if !x.complete && x.shouldRemoveContentLength(x.mode.respBody, x.mode.respHeaders) {
		h.del("content-length")
	}
	if !x.checkIdle() {
		return
	}
	if noBody || x.complete || x.mode.respBody == extprocfilterv3.ProcessingMode_NONE {
		x.graceful = !x.complete || x.graceful
		x.complete = true
		x.writeHeaders(h)
		x.copyThrough(resp.body)
		return
	}

	// encodeData
	switch x.mode.respBody {
	case extprocfilterv3.ProcessingMode_BUFFERED:
		buf, err := io.ReadAll(io.LimitReader(resp.body, x.p.cfg.bufferLimit+1))
		if err != nil {
			x.upstreamReset()
			return
		}
		if int64(len(buf)) > x.p.cfg.bufferLimit {
			x.fail(http.StatusInternalServerError, "response_payload_too_large")
			return
		}
		ans, ok := x.exchangeMessage("response_body", &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
			ResponseBody: &extprocv3.HttpBody{Body: buf, EndOfStream: true}}}, false)
		if !ok {
			return
		}
		if ans != nil {
			br, isBody := ans.GetResponse().(*extprocv3.ProcessingResponse_ResponseBody)
			if !isBody {
				x.spurious()
				return
			}
			if buf, ok = x.applyBodyAnswer(br.ResponseBody.GetResponse(), &h, buf); !ok {
				return
			}
			x.graceful = true
		}
		x.complete = true
		if !x.checkIdleAfterLast() {
			return
		}
		x.writeHeaders(h)
		_, _ = x.w.Write(buf)
	case extprocfilterv3.ProcessingMode_STREAMED:
		x.writeHeaders(h)
		x.flush()
		x.streamBody(resp.body)
	default:
		x.unimplemented("response body mode " + x.mode.respBody.String())
	}
}

// applyBodyAnswer applies the answer to a buffered body: its header mutation to h, then its
// body mutation to buf. Envoy answers 500 when h keeps a content-length that the mutated body
// does not have. ok is false when the exchange has ended.
func (x *exchange) applyBodyAnswer(cr *extprocv3.CommonResponse, h *headerMap, buf []byte) (_ []byte, ok bool) {
	if m := cr.GetHeaderMutation(); m != nil {
		if err := x.mutate(m, h, false, false); err != nil {
			return nil, false
		}
	}
	bm := cr.GetBodyMutation()
	if bm == nil {
		return buf, true
	}
	if cl, ok := h.get("content-length"); ok {
		if n, err := strconv.ParseUint(cl, 10, 64); err == nil && n != uint64(len(bodyMutationBytes(bm))) {
			x.fail(http.StatusInternalServerError, "mismatch_between_content_length_and_the_length_of_the_mutated_body")
			return nil, false
		}
	}
	return applyBodyMutation(bm, buf), true
}

// checkIdleAfterLast is checkIdle for the moment between the last answer and writing: a
// surplus answer there is still spurious.
func (x *exchange) checkIdleAfterLast() bool {
	wasComplete := x.complete
	x.complete = false
	ok := x.checkIdle()
	x.complete = wasComplete || x.complete
	return ok
}

func applyHeadersToAdd(h *headerMap, add []*corev3.HeaderValueOption, remove []string) {
	for _, name := range remove {
		h.del(strings.ToLower(name))
	}
	for _, o := range add {
		k, v := strings.ToLower(o.GetHeader().GetKey()), o.GetHeader().GetValue()
		switch o.GetAppendAction() {
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			h.set(k, v)
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if _, ok := h.get(k); !ok {
				h.add(k, v)
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if _, ok := h.get(k); ok {
				h.set(k, v)
			}
		default:
			h.add(k, v)
		}
	}
}

// chunk is one read of the upstream body, as Envoy would hand it to encodeData.
type chunk struct {
	data []byte
	eos  bool
	err  error
}

// streamBody is STREAMED mode: each chunk is sent as it arrives (without waiting for earlier
// answers), answers are matched to chunks in order, and each chunk goes downstream replaced by
// its answer's body mutation. Header mutations in these answers are ignored. The message timer
// restarts at each send and stops at each answer, as ProcessorState does.
func (x *exchange) streamBody(body io.Reader) {
	chunks := make(chan chunk, 8) // flow control: a slow processor stops the upstream reads
	readerDone := make(chan struct{})
	defer close(readerDone)
	go func() {
		buf := make([]byte, 16<<10)
		for {
			n, err := body.Read(buf)
			// A chunk keeps only its bytes: SSE chunks are small, the read buffer is not.
			c := chunk{data: append([]byte(nil), buf[:n]...)}
			switch {
			case errors.Is(err, io.EOF):
				c.eos = true
			case err != nil:
				c.err = err
			}
			if n == 0 && !c.eos && c.err == nil {
				continue
			}
			select {
			case chunks <- c:
			case <-readerDone:
				return
			}
			if c.eos || c.err != nil {
				return
			}
		}
	}()

	// queue holds the chunks sent and not answered yet, in order.
	type queued struct {
		c    chunk
		sent sentMessage
	}
	var queue []queued
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var incoming <-chan received
	if !x.complete && x.side != nil {
		incoming = x.side.incoming
	}
	upstreamDone := false
	for {
		if upstreamDone && len(queue) == 0 {
			x.graceful = !x.complete || x.graceful
			x.complete = true
			return
		}
		var in <-chan chunk
		if !upstreamDone {
			in = chunks
		}
		select {
		case c := <-in:
			if c.err != nil {
				x.upstreamReset()
				return
			}
			if c.eos {
				upstreamDone = true
			}
			if x.complete {
				if !x.write(c.data) {
					return
				}
				continue
			}
			if !x.checkIdleStreaming(len(queue)) {
				return
			}
			sent := x.sent("response_body")
			x.side.send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
				ResponseBody: &extprocv3.HttpBody{Body: c.data, EndOfStream: c.eos}}})
			queue = append(queue, queued{c, sent})
			timer.Reset(x.ep.messageTimeout)
		case r := <-incoming:
			if r.err != nil {
				x.side.ended = true
				incoming = nil
				if !errors.Is(r.err, io.EOF) {
					x.grpcFailed(r.err)
					return
				}
				// Clean close: the queued chunks go on unmodified, the rest passes through.
				x.complete = true
				timer.Stop()
				for _, q := range queue {
					if !x.write(q.c.data) {
						return
					}
				}
				queue = nil
				continue
			}
			if r.resp.GetOverrideMessageTimeout() != nil {
				continue
			}
			if r.resp.GetImmediateResponse() != nil && !x.ep.disableImmediate {
				x.complete = true
				x.fail(0, "ext_proc_immediate_response_after_headers")
				return
			}
			br, isBody := r.resp.GetResponse().(*extprocv3.ProcessingResponse_ResponseBody)
			if !isBody || len(queue) == 0 {
				x.spurious()
				return
			}
			timer.Stop()
			q := queue[0]
			queue = queue[1:]
			x.answered(q.sent)
			if !x.write(applyBodyMutation(br.ResponseBody.GetResponse().GetBodyMutation(), q.c.data)) {
				return
			}
		case <-timer.C:
			x.timedOut()
			return
		case <-x.clientGone:
			x.clientLeft()
			return
		}
	}
}

// checkIdleStreaming is checkIdle while chunks are outstanding: answers are expected then.
func (x *exchange) checkIdleStreaming(outstanding int) bool {
	if outstanding > 0 {
		return true
	}
	return x.checkIdle()
}

func (x *exchange) writeHeaders(h headerMap) {
	code := http.StatusOK
	if s, ok := h.get(":status"); ok {
		if n, err := strconv.Atoi(s); err == nil {
			code = n
		}
	}
	dst := x.w.Header()
	for _, f := range h {
		if strings.HasPrefix(f.key, ":") {
			continue
		}
		dst[http.CanonicalHeaderKey(f.key)] = append(dst[http.CanonicalHeaderKey(f.key)], f.value)
	}
	x.w.WriteHeader(code)
	x.started = true
	x.log.Status = code
}

func (x *exchange) write(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	if _, err := x.w.Write(b); err != nil {
		x.clientLeft()
		return false
	}
	x.flush()
	return true
}

func (x *exchange) flush() {
	_ = http.NewResponseController(x.w).Flush()
}

func (x *exchange) copyThrough(body io.Reader) {
	buf := make([]byte, 16<<10)
	for {
		n, err := body.Read(buf)
		if n > 0 && !x.write(buf[:n]) {
			return
		}
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			x.upstreamReset()
			return
		}
	}
}

// immediate sends the server's ImmediateResponse as a local reply (Filter::sendImmediateResponse).
func (x *exchange) immediate(ir *extprocv3.ImmediateResponse) {
	code := int(ir.GetStatus().GetCode())
	if code < 200 {
		code = http.StatusOK
	}
	details := strings.Join(strings.Fields(ir.GetDetails()), "_")
	if x.started {
		x.reset(details)
		return
	}
	h := headerMap{{":status", strconv.Itoa(code)}}
	if len(ir.GetBody()) > 0 {
		h.set("content-type", "text/plain")
	}
	if m := ir.GetHeaders(); m != nil {
		if err := applyMutation(m, &h, permissiveChecker, false, false); err != nil {
			x.p.log.Error("envoyemu: immediate response mutations failed", "err", err)
		}
	}
	h.set("content-length", strconv.Itoa(len(ir.GetBody())))
	x.log.Details = details
	x.writeHeaders(h)
	_, _ = x.w.Write(ir.GetBody())
}

// fail ends processing with a local reply (status_on_error) or, once the response started, a
// reset. code 0 means reset only.
func (x *exchange) fail(code int, details string) {
	x.complete = true
	x.log.Details = details
	if x.started || code == 0 {
		x.reset(details)
		return
	}
	h := headerMap{{":status", strconv.Itoa(code)}, {"content-length", "0"}}
	x.writeHeaders(h)
}

func (x *exchange) spurious() {
	x.p.log.Warn("envoyemu: spurious response message on the ext_proc stream")
	if x.ep.failureModeAllow {
		x.complete = true
		return
	}
	x.fail(http.StatusInternalServerError, "spurious_message")
}

func (x *exchange) grpcFailed(err error) {
	st := status.Convert(err)
	x.fail(http.StatusInternalServerError, fmt.Sprintf("ext_proc_error_gRPC_error_%d{%s}", st.Code(), strings.Join(strings.Fields(st.Message()), "_")))
}

func (x *exchange) timedOut() {
	x.fail(http.StatusGatewayTimeout, "ext_proc_error_per-message_timeout_exceeded")
}

func (x *exchange) unimplemented(what string) {
	x.p.log.Error("envoyemu: not implemented; failing the request", "what", what)
	x.fail(http.StatusInternalServerError, "envoyemu_not_implemented{"+what+"}")
}

func (x *exchange) upstreamReset() {
	if x.r.Context().Err() != nil {
		x.clientLeft()
		return
	}
	x.fail(http.StatusServiceUnavailable, "upstream_reset_after_response_started")
}

func (x *exchange) clientLeft() {
	x.complete = true
	x.graceful = false
	x.log.ClientGone = true
	if x.log.Details == "" || x.log.Details == "via_upstream" {
		x.log.Details = "downstream_remote_disconnect"
	}
}

// reset aborts the downstream stream after its response started (net/http closes the
// connection without finishing the body).
func (x *exchange) reset(details string) {
	x.log.Reset = true
	x.log.Details = details
	x.graceful = false
	panic(http.ErrAbortHandler)
}

// finish closes the side stream: half-closed when the last answer came (the server then ends
// it), reset otherwise (client gone, errors, local replies before the end).
func (x *exchange) finish() {
	x.stopWatch()
	if x.side == nil {
		return
	}
	if x.graceful && !x.log.ClientGone {
		x.side.closeGracefully()
		return
	}
	x.side.cancel()
}
