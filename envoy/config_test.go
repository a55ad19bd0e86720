package envoy

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// check is everything a config must pass: strict parse, generated validators (inside every
// typed_config too), and Tollgate's invariants.
func check(path string) error {
	b, err := Load(path)
	if err != nil {
		return err
	}
	if err := Validate(b); err != nil {
		return err
	}
	return CheckInvariants(b)
}

// TestConfigsValid parses every YAML file in envoy/ (and the minimal good fixture) with
// go-control-plane's bootstrap v3 types and runs their validators.
func TestConfigsValid(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join("testdata", "good_minimal.yaml"))
	if len(files) < 2 {
		t.Fatalf("expected envoy.yaml and the good fixture, found %v", files)
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			if err := check(f); err != nil {
				t.Errorf("%s:\n%v", f, err)
			}
		})
	}
}

// TestBadConfigs proves the checks catch each kind of mistake: every testdata/bad_*.yaml
// starts with "# want: <text>" and must fail with an error containing that text.
func TestBadConfigs(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "bad_*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 10 {
		t.Fatalf("found only %d bad configs", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			want := wantLine(t, f)
			err := check(f)
			if err == nil {
				t.Fatalf("%s: accepted; want an error containing %q", f, want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("%s: error\n%v\ndoes not contain %q", f, err, want)
			}
		})
	}
}

func wantLine(t *testing.T, path string) string {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = fh.Close() }()
	sc := bufio.NewScanner(fh)
	if !sc.Scan() {
		t.Fatalf("%s: empty", path)
	}
	want, ok := strings.CutPrefix(sc.Text(), "# want: ")
	if !ok || want == "" {
		t.Fatalf("%s: first line must be \"# want: <expected error text>\"", path)
	}
	return want
}

// TestEnvoyYAMLShape pins the parts of envoy.yaml the rest of Tollgate is built around, so
// that a change to them is a deliberate one.
func TestEnvoyYAMLShape(t *testing.T) {
	b, err := Load("envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ls, err := Listeners(b)
	if err != nil || len(ls) != 1 {
		t.Fatalf("want one HTTP listener, got %d (%v)", len(ls), err)
	}
	ep, err := ExtProc(ls[0].HCM)
	if err != nil || ep == nil {
		t.Fatalf("ext_proc: %v", err)
	}
	if got := ep.GetGrpcService().GetEnvoyGrpc().GetClusterName(); got != ExtProcCluster {
		t.Errorf("ext_proc cluster = %q, want %q", got, ExtProcCluster)
	}
	if l := b.GetStaticResources().GetListeners()[0].GetPerConnectionBufferLimitBytes().GetValue(); l < 8<<20 {
		t.Errorf("listener buffer limit %d: BUFFERED prompts need at least 8 MiB", l)
	}
	upstreams := map[string]string{} // routing header value -> cluster
	for _, vh := range ls[0].HCM.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			for _, h := range r.GetMatch().GetHeaders() {
				if h.GetName() == RoutingHeader {
					upstreams[h.GetStringMatch().GetExact()] = r.GetRoute().GetCluster()
				}
			}
		}
	}
	for value, cluster := range map[string]string{"openrouter": "openrouter", "demo": "demo"} {
		if upstreams[value] != cluster {
			t.Errorf("%s: %s routes to %q, want %q", RoutingHeader, value, upstreams[value], cluster)
		}
	}
	var tls bool
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == "openrouter" {
			tls = c.GetTransportSocket().GetName() == "envoy.transport_sockets.tls"
		}
	}
	if !tls {
		t.Error("the openrouter cluster must use TLS")
	}
}
