package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadGood(t *testing.T) {
	cfg, err := Load("testdata/good.yaml", nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.Database.MaxConns != 16 || cfg.Redis.Prefix != "tg:" || cfg.Log.Level != "debug" {
		t.Errorf("file values not applied: %+v", cfg)
	}
	if cfg.Serve.GRPCAddr != Defaults().Serve.GRPCAddr {
		t.Errorf("default grpc_addr lost: %q", cfg.Serve.GRPCAddr)
	}
}

func TestLoadEmptyFileMeansDefaults(t *testing.T) {
	cfg, err := Load("testdata/empty.yaml", nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.Database.URL != Defaults().Database.URL {
		t.Errorf("got %q, want the default database URL", cfg.Database.URL)
	}
}

// TestLoadBad has one fixture per invalid configuration, each with the exact problems it must
// report; bad_many shows that every problem is reported at once.
func TestLoadBad(t *testing.T) {
	tests := []struct {
		file string
		want []string
	}{
		{"bad_unknown_key.yaml", []string{"field max_con not found"}},
		{"bad_syntax.yaml", []string{"testdata/bad_syntax.yaml: yaml:"}},
		{"bad_log_level.yaml", []string{"1 problem(s)", `log.level: must be debug, info, warn or error, got "loud"`}},
		{"bad_public_url.yaml", []string{"1 problem(s)", `serve.public_url: must be an absolute http(s) URL, got "pay.example.com"`}},
		{"bad_short_secret.yaml", []string{"1 problem(s)", "serve.link_secret: must be at least 32 bytes"}},
		{"bad_many.yaml", []string{
			"4 problem(s)",
			"database.url: required",
			"database.max_conns: must be at least 1, got 0",
			"redis.addr: required",
			`log.level: must be debug, info, warn or error, got "verbose"`,
		}},
		{"missing.yaml", []string{"no such file or directory"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			loadFails(t, filepath.Join("testdata", tt.file), nil, tt.want...)
		})
	}
}

// loadFails loads path with env and requires an error that contains every string of want; it
// returns the error's text for further checks.
func loadFails(t *testing.T, path string, env []string, want ...string) string {
	t.Helper()
	cfg, err := Load(path, env)
	if err == nil || cfg != nil {
		t.Fatalf("Load(%q) = %+v, %v; want only an error", path, cfg, err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error\n%v\ndoes not contain %q", err, w)
		}
	}
	return err.Error()
}

func TestEnvOverrides(t *testing.T) {
	env := []string{
		"PATH=/usr/bin",
		"TOLLGATE_DATABASE_URL=postgres://other/db",
		"TOLLGATE_DATABASE_MAX_CONNS=7",
		"TOLLGATE_SERVE_LINK_TTL=90s",
		"TOLLGATE_LOG_LEVEL=warn",
		"TOLLGATE_CONFIG=ignored.yaml",
		"TOLLGATE_BANK_OPS=50000", // read by the ledger's bank test, not a setting
	}
	cfg, err := Load("testdata/good.yaml", env)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.Database.URL != "postgres://other/db" || cfg.Database.MaxConns != 7 {
		t.Errorf("database overrides not applied: %+v", cfg.Database)
	}
	if cfg.Serve.LinkTTL != 90*time.Second || cfg.Log.Level != "warn" {
		t.Errorf("overrides not applied: link_ttl=%s level=%s", cfg.Serve.LinkTTL, cfg.Log.Level)
	}
}

func TestEnvOverrideProblems(t *testing.T) {
	env := []string{
		"TOLLGATE_DATABASE_MAX_CONNS=many",
		"TOLLGATE_SERVE_LINK_TTL=soon",
		"TOLLGATE_NO_SUCH_THING=1",
	}
	loadFails(t, "", env,
		`TOLLGATE_DATABASE_MAX_CONNS: not an integer: "many"`,
		`TOLLGATE_SERVE_LINK_TTL: not a duration (like 250ms or 10s): "soon"`,
		"TOLLGATE_NO_SUCH_THING: no such setting",
	)
}

func TestRedacted(t *testing.T) {
	cfg, err := Load("testdata/good.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Redacted()
	if r.Redis.Password != "[redacted]" || r.Serve.LinkSecret != "[redacted]" {
		t.Errorf("secrets not redacted: %q %q", r.Redis.Password, r.Serve.LinkSecret)
	}
	if cfg.Redis.Password != "hunter2" {
		t.Error("Redacted changed the original")
	}
}

func FuzzLoad(f *testing.F) {
	for _, name := range []string{"good.yaml", "bad_many.yaml", "bad_unknown_key.yaml"} {
		raw, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, raw []byte) {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(p, nil)
		if err == nil && cfg == nil {
			t.Fatal("nil config without an error")
		}
		if err != nil && cfg != nil {
			t.Fatal("config returned with an error")
		}
	})
}
