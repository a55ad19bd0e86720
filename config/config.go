// Package config loads Tollgate's one YAML file, applies environment overrides and validates
// the result, reporting every problem at once.
//
// Every scalar setting can be overridden by an environment variable named TOLLGATE_ followed by
// its YAML path in upper case, joined by underscores: database.url is TOLLGATE_DATABASE_URL,
// serve.grpc_addr is TOLLGATE_SERVE_GRPC_ADDR. Lists of scalars take comma-separated values.
//
// Each part of Tollgate owns one section, in a file of its own (serve.go, settle.go, …); a
// section reports its problems through a problems() method.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole file.
type Config struct {
	Database Database `yaml:"database"`
	Redis    Redis    `yaml:"redis"`
	Log      Log      `yaml:"log"`
	Paywall  Paywall  `yaml:"paywall"`
	Serve    Serve    `yaml:"serve"`
	Settle   Settle   `yaml:"settle"`
}

// Database is the ledger database (CockroachDB in production, PostgreSQL in tests).
type Database struct {
	URL      string `yaml:"url"`
	MaxConns int32  `yaml:"max_conns"`
}

// Redis holds caches, caps and nonces; never money.
type Redis struct {
	Addr     string `yaml:"addr"`
	Password string `yaml:"password" secret:"true"`
	DB       int    `yaml:"db"`
	// Prefix is put before every key, so deployments (and tests) can share one server.
	Prefix string `yaml:"prefix"`
}

// Log configures log/slog's JSON handler.
type Log struct {
	Level string `yaml:"level"` // debug, info, warn, error
}

// Defaults returns the configuration used for anything the file leaves out.
func Defaults() Config {
	return Config{
		Database: Database{URL: "postgres://postgres@127.0.0.1:5432/tollgate?sslmode=disable", MaxConns: 32},
		Redis:    Redis{Addr: "127.0.0.1:6379", Prefix: "tollgate:"},
		Log:      Log{Level: "info"},
		Serve:    defaultServe(),
		Settle:   defaultSettle(),
	}
}

// Load reads the file at path ("" means defaults only), applies the overrides found in env
// (as os.Environ returns them) and validates. Every problem found is in the returned error,
// one per line.
func Load(path string, env []string) (*Config, error) {
	cfg := Defaults()
	var problems []error
	if path != "" {
		raw, err := os.ReadFile(path) //nolint:gosec // the operator names the config file; reading it is the point
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		dec.KnownFields(true)
		// An empty file decodes to io.EOF and means "defaults".
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("config: %s: %w", path, err)
		}
	}
	problems = append(problems, applyEnv(&cfg, env)...)
	problems = append(problems, cfg.problems()...)
	if len(problems) > 0 {
		return nil, fmt.Errorf("config: %d problem(s):\n%w", len(problems), errors.Join(problems...))
	}
	return &cfg, nil
}

func (c *Config) problems() []error {
	var p []error
	if c.Database.URL == "" {
		p = append(p, errors.New("database.url: required"))
	}
	if c.Database.MaxConns < 1 {
		p = append(p, fmt.Errorf("database.max_conns: must be at least 1, got %d", c.Database.MaxConns))
	}
	if c.Redis.Addr == "" {
		p = append(p, errors.New("redis.addr: required"))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		p = append(p, fmt.Errorf("log.level: must be debug, info, warn or error, got %q", c.Log.Level))
	}
	p = append(p, c.Paywall.problems()...)
	p = append(p, c.Serve.problems()...)
	p = append(p, c.Settle.problems()...)
	return p
}

// applyEnv walks cfg's scalar fields and sets those named by TOLLGATE_* variables in env.
func applyEnv(cfg *Config, env []string) []error {
	vars := map[string]string{}
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(k, "TOLLGATE_") {
			vars[k] = v
		}
	}
	if len(vars) == 0 {
		return nil
	}
	var problems []error
	known := map[string]bool{}
	walk(reflect.ValueOf(cfg).Elem(), "TOLLGATE", func(name string, v reflect.Value) {
		known[name] = true
		raw, ok := vars[name]
		if !ok {
			return
		}
		if err := setScalar(v, raw); err != nil {
			problems = append(problems, fmt.Errorf("%s: %w", name, err))
		}
	})
	for k := range vars {
		if !known[k] && !ignoredEnv[k] {
			problems = append(problems, fmt.Errorf("%s: no such setting", k))
		}
	}
	return problems
}

// ignoredEnv are TOLLGATE_ variables that are not settings (read by tests and scripts).
var ignoredEnv = map[string]bool{
	"TOLLGATE_CONFIG":              true,
	"TOLLGATE_TEST_DATABASE_URL":   true,
	"TOLLGATE_TEST_REDIS_ADDR":     true,
	"TOLLGATE_TEST_ANVIL":          true,
	"TOLLGATE_TEST_CHROMIUM":       true,
	"TOLLGATE_TEST_PLAYWRIGHT":     true,
	"TOLLGATE_RUN_DIR":             true,
	"TOLLGATE_BANK_OPS":            true,
	"TOLLGATE_LOADTEST_STREAMS":    true,
	"TOLLGATE_LOADTEST_DURATION":   true,
	"TOLLGATE_LOADTEST_ROUNDS":     true,
	"TOLLGATE_LOADTEST_SATURATION": true,
	"TOLLGATE_LOADTEST_TTFT":       true,
	"TOLLGATE_LOADTEST_CHUNKS":     true,
	"TOLLGATE_LOADTEST_INTERVAL":   true,
	"TOLLGATE_LOADTEST_MAX_CONNS":  true,
}

var durationType = reflect.TypeFor[time.Duration]()

func walk(v reflect.Value, prefix string, visit func(string, reflect.Value)) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		name := prefix + "_" + strings.ToUpper(tag)
		fv := v.Field(i)
		switch {
		case fv.Kind() == reflect.Struct:
			walk(fv, name, visit)
		case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() != reflect.String:
			// lists of structs (chains, upstreams) are set in the file only
		default:
			visit(name, fv)
		}
	}
}

func setScalar(v reflect.Value, raw string) error {
	if v.Type() == durationType {
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fmt.Errorf("not a duration (like 250ms or 10s): %q", raw)
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(raw)
	case reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("not a boolean: %q", raw)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(raw, 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("not an integer: %q", raw)
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(raw, 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("not a non-negative integer: %q", raw)
		}
		v.SetUint(n)
	case reflect.Slice:
		var parts []string
		for p := range strings.SplitSeq(raw, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		v.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("cannot be set from the environment")
	}
	return nil
}

// Redacted returns a copy of cfg with every field tagged secret:"true" replaced by "[redacted]",
// for logging the effective configuration at start.
func (c Config) Redacted() Config {
	out := c
	redact(reflect.ValueOf(&out).Elem())
	return out
}

func redact(v reflect.Value) {
	t := v.Type()
	for i := range t.NumField() {
		f, fv := t.Field(i), v.Field(i)
		if !f.IsExported() {
			continue
		}
		switch {
		case f.Tag.Get("secret") == "true" && fv.Kind() == reflect.String && fv.String() != "":
			fv.SetString("[redacted]")
		case f.Tag.Get("secret") == "true" && fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.String:
			cp := reflect.MakeSlice(fv.Type(), fv.Len(), fv.Len())
			for j := range cp.Len() {
				cp.Index(j).SetString("[redacted]")
			}
			fv.Set(cp)
		case fv.Kind() == reflect.Struct:
			redact(fv)
		case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.Struct:
			cp := reflect.MakeSlice(fv.Type(), fv.Len(), fv.Len())
			reflect.Copy(cp, fv)
			for j := range cp.Len() {
				redact(cp.Index(j))
			}
			fv.Set(cp)
		}
	}
}
