// Package e2e holds the whole-system tests: the real ext_proc server with the real ledger,
// paywall and pricing stores on PostgreSQL and Redis, driven through the Envoy emulator
// (reading envoy/envoy.yaml) by the official openai-go SDK, in front of fake OpenAI upstreams.
package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/tollgate-dev/tollgate/api"
	"github.com/tollgate-dev/tollgate/e2e/envoyemu"
	"github.com/tollgate-dev/tollgate/e2e/fakeupstream"
	"github.com/tollgate-dev/tollgate/extproc"
	"github.com/tollgate-dev/tollgate/extproc/generation"
	"github.com/tollgate-dev/tollgate/internal/schema"
	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/internal/testredis"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/ledger/ledgercheck"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/pricing"
)

const (
	operatorKey = "operator-openrouter-key" // the built-in provider's credential (config)
	byokKey     = "byok-demo-key"           // the BYOK paywall's upstream credential
	// secretsKey is paywall.secrets_key: it seals byokKey in the database and Redis.
	secretsKey = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="
	model      = "fake/model"
)

// stack is Tollgate assembled in-process the way `tollgate serve` wires it, behind the Envoy
// emulator.
type stack struct {
	url        string // the emulator: the client's base URL is url+"/v1"
	db         *testdb.DB
	ledger     *ledger.Ledger
	paywalls   *paywall.Store
	prices     *pricing.Catalog
	links      paywall.Links
	demo       *fakeupstream.Server // the BYOK upstream (cluster "demo")
	openrouter *fakeupstream.Server // the built-in provider (cluster "openrouter", TLS)
	logs       chan envoyemu.RequestLog
}

// testSecrets is secretsKey, for the stores the tests make themselves.
func testSecrets(t testing.TB) *paywall.SecretsKey {
	t.Helper()
	k, err := paywall.ParseSecretsKey(secretsKey)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newStack(t testing.TB) *stack {
	t.Helper()
	db := testdb.NewWithPool(t, 64, schema.All()...)
	checkLedgerAtEnd(t, db)
	rdb, prefix := testredis.New(t)
	s := &stack{
		db:         db,
		ledger:     ledger.New(db.Pool, ledger.Options{}),
		paywalls:   paywall.NewStore(db.Pool, rdb, prefix, paywall.Options{SecretsKey: testSecrets(t)}),
		prices:     pricing.NewCatalog(db.Pool, rdb, prefix),
		links:      paywall.Links{BaseURL: "http://tollgate.test", Secret: []byte(strings.Repeat("k", 32)), TTL: time.Hour},
		demo:       fakeupstream.New(fakeupstream.Options{Name: "demo", RequireKey: byokKey}),
		openrouter: fakeupstream.New(fakeupstream.Options{Name: "openrouter", RequireKey: operatorKey}),
		logs:       make(chan envoyemu.RequestLog, 1024),
	}
	t.Cleanup(func() { _ = s.paywalls.Close(); _ = s.prices.Close() })
	importPrices(t, s.prices)

	or := httptest.NewTLSServer(s.openrouter)
	t.Cleanup(or.Close)
	// A built-in stream cut short is charged from the provider's record of the generation,
	// which the fake OpenRouter keeps as OpenRouter does.
	srv, err := extproc.NewServer(extproc.Config{ProviderKey: operatorKey, Provider: "openrouter", GenerationWait: 30 * time.Second,
		SettleRetryBackoff: 50 * time.Millisecond}, extproc.Deps{
		Ledger: s.ledger, Paywalls: s.paywalls, Prices: s.prices, Links: s.links,
		Generations: generation.New(or.URL+"/api/v1/generation", operatorKey, or.Client()),
	})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(32 << 20))
	srv.Register(gs)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(func() {
		srv.Shutdown()
		gs.GracefulStop()
	})

	apiSrv, err := api.New(api.Deps{Pool: db.Pool, Redis: rdb, Paywalls: s.paywalls, Ledger: s.ledger, Links: s.links,
		Nonces: paywall.NewNonces(rdb, prefix)}, api.Options{PublicURL: s.links.BaseURL, ChainIDs: []uint64{31337}, RedisPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	apiHTTP := httptest.NewServer(apiSrv.Handler())
	t.Cleanup(apiHTTP.Close)

	demo := httptest.NewServer(s.demo)
	t.Cleanup(demo.Close)
	roots := x509.NewCertPool()
	roots.AddCert(or.Certificate())
	p, err := envoyemu.New(envoyemu.Options{
		Config: "../envoy/envoy.yaml",
		Endpoints: map[string][]string{
			"tollgate_extproc": {lis.Addr().String()},
			"tollgate_http":    {strings.TrimPrefix(apiHTTP.URL, "http://")},
			"demo":             {strings.TrimPrefix(demo.URL, "http://")},
			"openrouter":       {strings.TrimPrefix(or.URL, "https://")},
		},
		UpstreamTLS: testTLS(roots),
		OnRequest: func(l envoyemu.RequestLog) {
			select {
			case s.logs <- l:
			default:
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	front := httptest.NewServer(p)
	t.Cleanup(front.Close)
	s.url = front.URL
	return s
}

// testTLS trusts the httptest certificate (issued for example.com) whatever the SNI.
func testTLS(roots *x509.CertPool) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true, //nolint:gosec // verified below against the test root
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			c, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			_, err = c.Verify(x509.VerifyOptions{Roots: roots})
			return err
		}}
}

// createPaywall makes a paywall and returns it with its API key.
func (s *stack) createPaywall(t testing.TB, p paywall.Paywall) (paywall.Paywall, string) {
	t.Helper()
	if p.Name == "" {
		p.Name = "e2e"
	}
	if p.Owner == "" {
		p.Owner = "dev@example.com"
	}
	created, key, err := s.paywalls.Create(t.Context(), p)
	if err != nil {
		t.Fatalf("create paywall: %v", err)
	}
	return created, key
}

func byokPaywall() paywall.Paywall {
	return paywall.Paywall{Mode: paywall.ModeBYOK, Upstream: "demo", UpstreamKey: byokKey, MarkupBps: 1500}
}

// checkLedgerAtEnd runs the ledger's invariant checker when the test ends, after the servers
// it starts later have stopped (cleanups run last registered first) and before the database
// is dropped.
func checkLedgerAtEnd(t testing.TB, db *testdb.DB) {
	t.Cleanup(func() {
		problems, err := ledgercheck.Check(context.Background(), db.Pool)
		if err != nil {
			t.Errorf("ledger invariant check: %v", err)
		}
		for _, p := range problems {
			t.Errorf("ledger invariant broken: %s", p)
		}
	})
}
