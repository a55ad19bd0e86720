package envoyemu

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/tollgate-dev/tollgate/envoy"
)

// Envoy's defaults where the config is silent.
const (
	defaultMessageTimeout = 200 * time.Millisecond
	defaultBufferLimit    = 1 << 20 // per_connection_buffer_limit_bytes
	deferredCloseTimeout  = 5 * time.Second
)

// config is the part of an Envoy bootstrap the emulator acts on. Anything in the bootstrap
// that would change request handling and that the emulator does not implement is refused by
// compile, so that a test can never pass on a configuration it did not really exercise.
type config struct {
	bufferLimit    int64
	requestRemoves []string // header_mutation filter: request headers removed before ext_proc
	extProc        *extProcConfig
	vhosts         []*vhost
	clusters       map[string]*cluster
}

type extProcConfig struct {
	cluster           string
	mode              *extprocfilterv3.ProcessingMode // the filter's processing_mode
	allowModeOverride bool
	allowedOverrides  []*extprocfilterv3.ProcessingMode
	messageTimeout    time.Duration
	maxMessageTimeout time.Duration // 0: override_message_timeout is ignored
	failureModeAllow  bool
	checker           checker
	routeCacheAction  extprocfilterv3.ExternalProcessor_RouteCacheAction
	disableImmediate  bool
}

type vhost struct {
	name       string
	domains    []string
	routes     []*route
	respAdd    []*corev3.HeaderValueOption
	respRemove []string
}

type route struct {
	name            string
	match           func(path string, h headerMap) bool
	prefix          string // the matched prefix, for prefix_rewrite
	cluster         string
	prefixRewrite   string
	hostRewrite     string
	direct          *routev3.DirectResponseAction
	extProcDisabled bool
	reqAdd          []*corev3.HeaderValueOption
	reqRemove       []string
	respAdd         []*corev3.HeaderValueOption
	respRemove      []string
}

type cluster struct {
	name      string
	endpoints []string // host:port
	tls       bool
	sni       string
}

func compile(b *bootstrapv3.Bootstrap) (*config, error) {
	ls, err := envoy.Listeners(b)
	if err != nil {
		return nil, err
	}
	if len(ls) != 1 {
		return nil, fmt.Errorf("emulator: want exactly one HTTP listener, found %d", len(ls))
	}
	cfg := &config{bufferLimit: defaultBufferLimit, clusters: map[string]*cluster{}}
	if lim := b.GetStaticResources().GetListeners()[0].GetPerConnectionBufferLimitBytes(); lim != nil {
		cfg.bufferLimit = int64(lim.GetValue())
	}
	hcm := ls[0].HCM
	for _, f := range hcm.GetHttpFilters() {
		switch f.GetName() {
		case "envoy.filters.http.header_mutation":
			hm, err := envoy.Unpack[*headermutationv3.HeaderMutation](f.GetTypedConfig())
			if err != nil {
				return nil, err
			}
			if len(hm.GetMutations().GetResponseMutations()) > 0 || len(hm.GetMutations().GetQueryParameterMutations()) > 0 {
				return nil, errors.New("emulator: header_mutation supports request removals only")
			}
			for _, m := range hm.GetMutations().GetRequestMutations() {
				if m.GetRemove() == "" {
					return nil, errors.New("emulator: header_mutation supports request removals only")
				}
				cfg.requestRemoves = append(cfg.requestRemoves, strings.ToLower(m.GetRemove()))
			}
		case envoy.ExtProcFilterName:
			ep, err := envoy.ExtProc(hcm)
			if err != nil {
				return nil, err
			}
			if cfg.extProc, err = compileExtProc(ep); err != nil {
				return nil, err
			}
		case "envoy.filters.http.router":
		default:
			return nil, fmt.Errorf("emulator: HTTP filter %s is not implemented", f.GetName())
		}
	}
	for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
		v := &vhost{name: vh.GetName(), domains: vh.GetDomains(), respAdd: vh.GetResponseHeadersToAdd(), respRemove: vh.GetResponseHeadersToRemove()}
		if len(vh.GetRequestHeadersToAdd()) > 0 || len(vh.GetRequestHeadersToRemove()) > 0 {
			return nil, fmt.Errorf("emulator: virtual host %s: request_headers_to_add/remove are not implemented", vh.GetName())
		}
		for i, r := range vh.GetRoutes() {
			cr, err := compileRoute(r)
			if err != nil {
				return nil, fmt.Errorf("emulator: virtual host %s route %d (%s): %w", vh.GetName(), i, r.GetName(), err)
			}
			v.routes = append(v.routes, cr)
		}
		cfg.vhosts = append(cfg.vhosts, v)
	}
	for _, c := range b.GetStaticResources().GetClusters() {
		cc, err := compileCluster(c)
		if err != nil {
			return nil, fmt.Errorf("emulator: cluster %s: %w", c.GetName(), err)
		}
		cfg.clusters[c.GetName()] = cc
	}
	return cfg, nil
}

func compileExtProc(ep *extprocfilterv3.ExternalProcessor) (*extProcConfig, error) {
	switch {
	case ep.GetObservabilityMode():
		return nil, errors.New("emulator: ext_proc observability_mode is not implemented")
	case ep.GetSendBodyWithoutWaitingForHeaderResponse():
		return nil, errors.New("emulator: send_body_without_waiting_for_header_response is not implemented")
	case len(ep.GetRequestAttributes()) > 0 || len(ep.GetResponseAttributes()) > 0:
		return nil, errors.New("emulator: ext_proc attributes are not implemented")
	case ep.GetMetadataOptions() != nil || ep.GetForwardRules() != nil:
		return nil, errors.New("emulator: ext_proc metadata_options and forward_rules are not implemented")
	case ep.GetGrpcService().GetEnvoyGrpc() == nil:
		return nil, errors.New("emulator: ext_proc needs grpc_service.envoy_grpc")
	}
	pm := ep.GetProcessingMode()
	if pm == nil {
		pm = &extprocfilterv3.ProcessingMode{}
	}
	for _, m := range []extprocfilterv3.ProcessingMode_BodySendMode{pm.GetRequestBodyMode(), pm.GetResponseBodyMode()} {
		if m != extprocfilterv3.ProcessingMode_NONE && m != extprocfilterv3.ProcessingMode_BUFFERED && m != extprocfilterv3.ProcessingMode_STREAMED {
			return nil, fmt.Errorf("emulator: body mode %s is not implemented", m)
		}
	}
	if pm.GetRequestBodyMode() == extprocfilterv3.ProcessingMode_STREAMED {
		return nil, errors.New("emulator: a STREAMED request body is not implemented")
	}
	if pm.GetRequestTrailerMode() == extprocfilterv3.ProcessingMode_SEND || pm.GetResponseTrailerMode() == extprocfilterv3.ProcessingMode_SEND {
		return nil, errors.New("emulator: trailers are not implemented")
	}
	c, err := newChecker(ep.GetMutationRules())
	if err != nil {
		return nil, err
	}
	e := &extProcConfig{
		cluster:           ep.GetGrpcService().GetEnvoyGrpc().GetClusterName(),
		mode:              pm,
		allowModeOverride: ep.GetAllowModeOverride(),
		allowedOverrides:  ep.GetAllowedOverrideModes(),
		messageTimeout:    defaultMessageTimeout,
		failureModeAllow:  ep.GetFailureModeAllow(),
		checker:           c,
		routeCacheAction:  ep.GetRouteCacheAction(),
		disableImmediate:  ep.GetDisableImmediateResponse(),
	}
	if ep.GetDisableClearRouteCache() {
		e.routeCacheAction = extprocfilterv3.ExternalProcessor_RETAIN
	}
	if ep.GetMessageTimeout() != nil {
		e.messageTimeout = ep.GetMessageTimeout().AsDuration()
	}
	if ep.GetMaxMessageTimeout() != nil {
		e.maxMessageTimeout = ep.GetMaxMessageTimeout().AsDuration()
	}
	return e, nil
}

func compileRoute(r *routev3.Route) (*route, error) {
	m := r.GetMatch()
	if len(m.GetQueryParameters()) > 0 || m.GetGrpc() != nil || m.GetRuntimeFraction() != nil ||
		len(m.GetDynamicMetadata()) > 0 || len(m.GetCookies()) > 0 || m.GetTlsContext() != nil || m.GetPathMatchPolicy() != nil {
		return nil, errors.New("match: only path and header matchers are implemented")
	}
	caseSensitive := m.GetCaseSensitive() == nil || m.GetCaseSensitive().GetValue()
	var pathMatch func(string) bool
	out := &route{name: r.GetName()}
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		out.prefix = ps.Prefix
		pathMatch = func(p string) bool { return hasPrefix(p, ps.Prefix, caseSensitive) }
	case *routev3.RouteMatch_Path:
		pathMatch = func(p string) bool { return p == ps.Path || (!caseSensitive && strings.EqualFold(p, ps.Path)) }
	case *routev3.RouteMatch_PathSeparatedPrefix:
		out.prefix = ps.PathSeparatedPrefix
		pathMatch = func(p string) bool {
			return p == ps.PathSeparatedPrefix || hasPrefix(p, ps.PathSeparatedPrefix+"/", caseSensitive)
		}
	case *routev3.RouteMatch_SafeRegex:
		re, err := regexp.Compile("^(?:" + ps.SafeRegex.GetRegex() + ")$")
		if err != nil {
			return nil, err
		}
		pathMatch = re.MatchString
	default:
		return nil, fmt.Errorf("path specifier %T is not implemented", ps)
	}
	var hms []func(headerMap) bool
	for _, hm := range m.GetHeaders() {
		f, err := compileHeaderMatcher(hm)
		if err != nil {
			return nil, err
		}
		hms = append(hms, f)
	}
	out.match = func(path string, h headerMap) bool {
		if !pathMatch(path) {
			return false
		}
		for _, f := range hms {
			if !f(h) {
				return false
			}
		}
		return true
	}
	disabled, err := envoy.ExtProcDisabled(r)
	if err != nil {
		return nil, err
	}
	out.extProcDisabled = disabled
	for name, a := range r.GetTypedPerFilterConfig() {
		if name != envoy.ExtProcFilterName {
			return nil, fmt.Errorf("typed_per_filter_config for %s is not implemented", name)
		}
		per, err := envoy.Unpack[*extprocfilterv3.ExtProcPerRoute](a)
		if err != nil {
			return nil, err
		}
		if per.GetOverrides() != nil {
			return nil, errors.New("ExtProcPerRoute.overrides is not implemented")
		}
	}
	out.reqAdd, out.reqRemove = r.GetRequestHeadersToAdd(), r.GetRequestHeadersToRemove()
	out.respAdd, out.respRemove = r.GetResponseHeadersToAdd(), r.GetResponseHeadersToRemove()
	switch a := r.GetAction().(type) {
	case *routev3.Route_Route:
		ra := a.Route
		if ra.GetCluster() == "" {
			return nil, errors.New("only routes to a named cluster are implemented")
		}
		if ra.GetRegexRewrite() != nil || ra.GetPathRewritePolicy() != nil || ra.GetHostRewriteHeader() != "" ||
			ra.GetHostRewritePathRegex() != nil || ra.GetAutoHostRewrite().GetValue() || len(ra.GetRequestMirrorPolicies()) > 0 ||
			ra.GetInternalRedirectPolicy() != nil {
			return nil, errors.New("route action: only cluster, prefix_rewrite, host_rewrite_literal and timeouts are implemented")
		}
		out.cluster, out.prefixRewrite, out.hostRewrite = ra.GetCluster(), ra.GetPrefixRewrite(), ra.GetHostRewriteLiteral()
	case *routev3.Route_DirectResponse:
		if a.DirectResponse.GetBodyFormat() != nil {
			return nil, errors.New("direct_response.body_format is not implemented")
		}
		out.direct = a.DirectResponse
	default:
		return nil, fmt.Errorf("action %T is not implemented", a)
	}
	return out, nil
}

func hasPrefix(s, prefix string, caseSensitive bool) bool {
	if caseSensitive {
		return strings.HasPrefix(s, prefix)
	}
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func compileHeaderMatcher(hm *routev3.HeaderMatcher) (func(headerMap) bool, error) {
	name := strings.ToLower(hm.GetName())
	var valueMatch func(string) bool
	switch s := hm.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_StringMatch:
		f, err := compileStringMatcher(s.StringMatch)
		if err != nil {
			return nil, err
		}
		valueMatch = f
	case *routev3.HeaderMatcher_PresentMatch:
		want := s.PresentMatch
		return func(h headerMap) bool {
			_, ok := h.get(name)
			return ok == want != hm.GetInvertMatch()
		}, nil
	case *routev3.HeaderMatcher_ExactMatch:
		// Deprecated in favour of string_match, but Envoy still honours it, so configs may use it.
		valueMatch = func(v string) bool { return v == s.ExactMatch } //nolint:staticcheck // SA1019, see above
	case nil:
		valueMatch = func(string) bool { return true } // presence
	default:
		return nil, fmt.Errorf("header matcher %T is not implemented", s)
	}
	return func(h headerMap) bool {
		v, ok := h.get(name)
		if !ok && !hm.GetTreatMissingHeaderAsEmpty() {
			return false // a missing header never matches, inverted or not
		}
		return valueMatch(v) != hm.GetInvertMatch()
	}, nil
}

func compileStringMatcher(sm *matcherv3.StringMatcher) (func(string) bool, error) {
	fold := func(s string) string { return s }
	if sm.GetIgnoreCase() {
		fold = strings.ToLower
	}
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		want := fold(p.Exact)
		return func(v string) bool { return fold(v) == want }, nil
	case *matcherv3.StringMatcher_Prefix:
		want := fold(p.Prefix)
		return func(v string) bool { return strings.HasPrefix(fold(v), want) }, nil
	case *matcherv3.StringMatcher_Suffix:
		want := fold(p.Suffix)
		return func(v string) bool { return strings.HasSuffix(fold(v), want) }, nil
	case *matcherv3.StringMatcher_Contains:
		want := fold(p.Contains)
		return func(v string) bool { return strings.Contains(fold(v), want) }, nil
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := regexp.Compile("^(?:" + p.SafeRegex.GetRegex() + ")$")
		if err != nil {
			return nil, err
		}
		return re.MatchString, nil
	default:
		return nil, fmt.Errorf("string matcher %T is not implemented", p)
	}
}

func compileCluster(c *clusterv3.Cluster) (*cluster, error) {
	out := &cluster{name: c.GetName()}
	for _, le := range c.GetLoadAssignment().GetEndpoints() {
		for _, lb := range le.GetLbEndpoints() {
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			if sa == nil {
				return nil, errors.New("only socket addresses are implemented")
			}
			out.endpoints = append(out.endpoints, net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))))
		}
	}
	if ts := c.GetTransportSocket(); ts != nil {
		if ts.GetName() != "envoy.transport_sockets.tls" {
			return nil, fmt.Errorf("transport socket %s is not implemented", ts.GetName())
		}
		tc, err := envoy.Unpack[*tlsv3.UpstreamTlsContext](ts.GetTypedConfig())
		if err != nil {
			return nil, err
		}
		out.tls, out.sni = true, tc.GetSni()
	}
	return out, nil
}

// pickVhost chooses the virtual host for an authority as Envoy does: exact domain, then the
// longest suffix wildcard, then the longest prefix wildcard, then "*".
func (c *config) pickVhost(authority string) *vhost {
	host := strings.ToLower(authority)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	var best *vhost
	bestScore := -1
	for _, v := range c.vhosts {
		for _, d := range v.domains {
			d = strings.ToLower(d)
			score := -1
			switch {
			case d == host || d == authority:
				score = 3000
			case d == "*":
				score = 0
			case strings.HasPrefix(d, "*") && strings.HasSuffix(host, d[1:]):
				score = 2000 + len(d)
			case strings.HasSuffix(d, "*") && strings.HasPrefix(host, d[:len(d)-1]):
				score = 1000 + len(d)
			}
			if score > bestScore {
				best, bestScore = v, score
			}
		}
	}
	return best
}

// match returns the first route of the chosen virtual host that matches, or nil (Envoy: 404,
// route_not_found).
func (c *config) match(h headerMap) (*vhost, *route) {
	authority, _ := h.get(":authority")
	v := c.pickVhost(authority)
	if v == nil {
		return nil, nil
	}
	path, _ := h.get(":path")
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	for _, r := range v.routes {
		if r.match(path, h) {
			return v, r
		}
	}
	return v, nil
}
