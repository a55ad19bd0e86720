package config

import (
	"errors"
	"fmt"
	"net/url"
	"time"
)

// Serve configures `tollgate serve`: the ext_proc gRPC server, the HTTP API and hosted pages,
// and the admin (metrics and health) listener.
type Serve struct {
	GRPCAddr  string `yaml:"grpc_addr"`  // ext_proc, for Envoy
	HTTPAddr  string `yaml:"http_addr"`  // API and hosted pages, routed through Envoy
	AdminAddr string `yaml:"admin_addr"` // /metrics, /healthz; private
	// PublicURL is where users reach the hosted pages (through Envoy); links point there.
	PublicURL string `yaml:"public_url"`
	// LinkSecret signs link tokens (authorize, top-up); at least 32 bytes.
	LinkSecret string `yaml:"link_secret" secret:"true"`
	// LinkTTL is how long a link stays valid.
	LinkTTL time.Duration `yaml:"link_ttl"`
	// ShutdownGrace bounds how long shutdown waits for open streams to settle.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
}

func defaultServe() Serve {
	return Serve{
		GRPCAddr:      "127.0.0.1:9001",
		HTTPAddr:      "127.0.0.1:9002",
		AdminAddr:     "127.0.0.1:9003",
		PublicURL:     "http://127.0.0.1:10000",
		LinkTTL:       30 * time.Minute,
		ShutdownGrace: 30 * time.Second,
	}
}

func (s Serve) problems() []error {
	var p []error
	for name, addr := range map[string]string{"serve.grpc_addr": s.GRPCAddr, "serve.http_addr": s.HTTPAddr, "serve.admin_addr": s.AdminAddr} {
		if addr == "" {
			p = append(p, fmt.Errorf("%s: required", name))
		}
	}
	if u, err := url.Parse(s.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p = append(p, fmt.Errorf("serve.public_url: must be an absolute http(s) URL, got %q", s.PublicURL))
	}
	if s.LinkSecret != "" && len(s.LinkSecret) < 32 {
		p = append(p, errors.New("serve.link_secret: must be at least 32 bytes"))
	}
	if s.LinkTTL <= 0 {
		p = append(p, fmt.Errorf("serve.link_ttl: must be positive, got %s", s.LinkTTL))
	}
	return p
}
