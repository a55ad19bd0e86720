package envoy

import (
	"errors"
	"fmt"
	"strings"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// Names shared by envoy.yaml, the ext_proc server and the emulator.
const (
	// RoutingHeader carries the upstream the ext_proc server chose for a request: "openrouter"
	// for the built-in provider, the BYOK cluster's name otherwise.
	RoutingHeader = "x-tollgate-upstream"
	// ExtProcFilterName is the ext_proc filter's name in the HTTP filter chain and the key of
	// its per-route config.
	ExtProcFilterName = "envoy.filters.http.ext_proc"
	// ExtProcCluster is the cluster of the ext_proc gRPC servers.
	ExtProcCluster = "tollgate_extproc"
	// APICluster is the cluster of Tollgate's HTTP API and hosted pages.
	APICluster = "tollgate_http"
)

// Listener is one listener's HTTP connection manager, decoded.
type Listener struct {
	Name string
	HCM  *hcmv3.HttpConnectionManager
}

// Listeners returns the HTTP connection managers of b's static listeners.
func Listeners(b *bootstrapv3.Bootstrap) ([]Listener, error) {
	var out []Listener
	for _, l := range b.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				hcm, err := hcmOf(f)
				if err != nil {
					return nil, fmt.Errorf("listener %s: %w", l.GetName(), err)
				}
				if hcm != nil {
					out = append(out, Listener{Name: l.GetName(), HCM: hcm})
				}
			}
		}
	}
	return out, nil
}

func hcmOf(f *listenerv3.Filter) (*hcmv3.HttpConnectionManager, error) {
	tc := f.GetTypedConfig()
	if tc == nil || !strings.HasSuffix(tc.GetTypeUrl(), "HttpConnectionManager") {
		return nil, nil
	}
	return Unpack[*hcmv3.HttpConnectionManager](tc)
}

// ExtProc returns the ext_proc filter of an HTTP filter chain, or nil. It can return an error
// when the filter is there under another name than ExtProcFilterName, where per-route
// configs (keyed by that name) would silently not apply, or when there are two.
func ExtProc(hcm *hcmv3.HttpConnectionManager) (*extprocfilterv3.ExternalProcessor, error) {
	var found *extprocfilterv3.ExternalProcessor
	for _, f := range hcm.GetHttpFilters() {
		if !strings.HasSuffix(f.GetTypedConfig().GetTypeUrl(), "/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor") {
			continue
		}
		if f.GetName() != ExtProcFilterName {
			return nil, fmt.Errorf("the ext_proc filter must be named %s (per-route configs use that name), got %q", ExtProcFilterName, f.GetName())
		}
		if found != nil {
			return nil, errors.New("two ext_proc filters")
		}
		ep, err := Unpack[*extprocfilterv3.ExternalProcessor](f.GetTypedConfig())
		if err != nil {
			return nil, err
		}
		found = ep
	}
	return found, nil
}

// ExtProcDisabled reports whether a route turns the ext_proc filter off.
func ExtProcDisabled(r *routev3.Route) (bool, error) {
	a, ok := r.GetTypedPerFilterConfig()[ExtProcFilterName]
	if !ok {
		return false, nil
	}
	per, err := Unpack[*extprocfilterv3.ExtProcPerRoute](a)
	if err != nil {
		return false, err
	}
	return per.GetDisabled(), nil
}

// CheckInvariants reports every way b departs from what Tollgate relies on (DESIGN §2): the
// generated validators cannot know that the ext_proc filter must fail closed, or that a route
// names a cluster that does not exist.
func CheckInvariants(b *bootstrapv3.Bootstrap) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range b.GetStaticResources().GetClusters() {
		if clusters[c.GetName()] != nil {
			bad("cluster %q: defined twice", c.GetName())
		}
		clusters[c.GetName()] = c
	}
	listeners, err := Listeners(b)
	if err != nil {
		return err
	}
	if len(listeners) == 0 {
		bad("no listener has an HTTP connection manager")
	}
	for _, l := range listeners {
		ep, err := ExtProc(l.HCM)
		if err != nil {
			bad("listener %s: ext_proc filter: %v", l.Name, err)
			continue
		}
		if ep == nil {
			bad("listener %s: no %s filter: requests would pass unpaid", l.Name, ExtProcFilterName)
			continue
		}
		checkExtProc(l.Name, ep, clusters, bad)
		filters := l.HCM.GetHttpFilters()
		if last := filters[len(filters)-1]; last.GetName() != "envoy.filters.http.router" {
			bad("listener %s: the last HTTP filter must be the router, got %s", l.Name, last.GetName())
		}
		if l.HCM.GetRds() != nil {
			bad("listener %s: routes must be inline (route_config), not RDS", l.Name)
		}
		for _, vh := range l.HCM.GetRouteConfig().GetVirtualHosts() {
			for i, r := range vh.GetRoutes() {
				checkRoute(fmt.Sprintf("listener %s: route %d (%s)", l.Name, i, r.GetName()), r, clusters, bad)
			}
		}
	}
	return errors.Join(errs...)
}

func checkExtProc(where string, ep *extprocfilterv3.ExternalProcessor, clusters map[string]*clusterv3.Cluster, bad func(string, ...any)) {
	where += ": ext_proc"
	if ep.GetFailureModeAllow() {
		bad("%s: failure_mode_allow must be false (fail closed)", where)
	}
	if ep.GetObservabilityMode() {
		bad("%s: observability_mode cannot block or rewrite", where)
	}
	pm := ep.GetProcessingMode()
	want := &extprocfilterv3.ProcessingMode{
		RequestHeaderMode:   extprocfilterv3.ProcessingMode_SEND,
		RequestBodyMode:     extprocfilterv3.ProcessingMode_BUFFERED,
		ResponseHeaderMode:  extprocfilterv3.ProcessingMode_SEND,
		ResponseBodyMode:    extprocfilterv3.ProcessingMode_BUFFERED,
		RequestTrailerMode:  extprocfilterv3.ProcessingMode_SKIP,
		ResponseTrailerMode: extprocfilterv3.ProcessingMode_SKIP,
	}
	if pm.GetRequestHeaderMode() != want.RequestHeaderMode || pm.GetRequestBodyMode() != want.RequestBodyMode ||
		pm.GetResponseHeaderMode() != want.ResponseHeaderMode || pm.GetResponseBodyMode() != want.ResponseBodyMode ||
		pm.GetRequestTrailerMode() != want.RequestTrailerMode || pm.GetResponseTrailerMode() != want.ResponseTrailerMode {
		bad("%s: processing_mode must be headers SEND, bodies BUFFERED, trailers SKIP (DESIGN §2), got %v", where, pm)
	}
	if !ep.GetAllowModeOverride() {
		bad("%s: allow_mode_override must be true (the server switches SSE replies to STREAMED)", where)
	}
	if ep.GetSendBodyWithoutWaitingForHeaderResponse() {
		bad("%s: send_body_without_waiting_for_header_response makes Envoy ignore mode_override", where)
	}
	if allowed := ep.GetAllowedOverrideModes(); len(allowed) > 0 {
		ok := false
		for _, m := range allowed {
			ok = ok || m.GetResponseBodyMode() == extprocfilterv3.ProcessingMode_STREAMED
		}
		if !ok {
			bad("%s: allowed_override_modes must allow response_body_mode STREAMED", where)
		}
	}
	if d := ep.GetMessageTimeout().AsDuration(); ep.GetMessageTimeout() == nil || d < time.Second {
		bad("%s: message_timeout must be at least 1s to fit a ledger write (Envoy's default is 200ms), got %s", where, d)
	}
	cluster := ep.GetGrpcService().GetEnvoyGrpc().GetClusterName()
	if cluster == "" {
		bad("%s: grpc_service must be envoy_grpc with a cluster_name", where)
		return
	}
	c, ok := clusters[cluster]
	if !ok {
		bad("%s: grpc_service names cluster %q, which does not exist", where, cluster)
		return
	}
	if !speaksHTTP2(c) {
		bad("cluster %s: the ext_proc server speaks gRPC: set explicit_http_config.http2_protocol_options", cluster)
	}
}

func speaksHTTP2(c *clusterv3.Cluster) bool {
	a, ok := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if !ok {
		return false
	}
	opts, err := Unpack[*upstreamhttpv3.HttpProtocolOptions](a)
	if err != nil {
		return false
	}
	return opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil
}

func checkRoute(where string, r *routev3.Route, clusters map[string]*clusterv3.Cluster, bad func(string, ...any)) {
	disabled, err := ExtProcDisabled(r)
	if err != nil {
		bad("%s: ext_proc per-route config: %v", where, err)
	}
	ra := r.GetRoute()
	if ra == nil {
		return
	}
	name := ra.GetCluster()
	if name == "" {
		bad("%s: only routes to a named cluster are supported (cluster_header and weighted_clusters would let a header pick any cluster)", where)
		return
	}
	if _, ok := clusters[name]; !ok {
		bad("%s: cluster %q does not exist", where, name)
	}
	if name == ExtProcCluster {
		bad("%s: must not route client traffic to the ext_proc cluster", where)
	}
	if name == APICluster && !disabled {
		bad("%s: routes to %s must disable ext_proc (typed_per_filter_config %s: disabled: true)", where, APICluster, ExtProcFilterName)
	}
	if name != APICluster {
		if disabled {
			bad("%s: ext_proc is disabled on a route to upstream %q: it would be served unpaid", where, name)
		}
		routed := false
		for _, h := range r.GetMatch().GetHeaders() {
			routed = routed || (h.GetName() == RoutingHeader && h.GetStringMatch().GetExact() != "")
		}
		if !routed {
			bad("%s: a route to upstream %q must match %s exactly", where, name, RoutingHeader)
		}
	}
}
