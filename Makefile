# Tollgate. `make help` lists the targets.
SHELL := /usr/bin/env bash
GO ?= go
export PATH := $(CURDIR)/tools/node/node_modules/.bin:$(PATH)

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: tools ## run the whole thing locally: Postgres, Redis, anvil, serve, settle, demo upstream, Envoy emulator
	@./scripts/run.sh

.PHONY: test
test: tools ## run every test (needs PostgreSQL and Redis; see README)
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) test -race -count=1 -timeout 60m ./...
	@# deploy/ is its own module: its test needs Prometheus's rule parser, which the binary does not
	cd deploy && $(GO) vet ./... && $(GO) test -race -count=1 ./...

.PHONY: bench
bench: ## run the benchmarks that fill the README's performance section
	./scripts/bench.sh

.PHONY: lint
lint: ## golangci-lint v2 (installed on first use)
	@command -v golangci-lint >/dev/null || $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0
	golangci-lint run ./...
	cd deploy && golangci-lint run ./...

.PHONY: generate
generate: tools ## regenerate committed code (contract ABI, bytecode, bindings)
	$(GO) generate ./...

.PHONY: check-generate
check-generate: generate ## fail if generated code drifted from its sources
	@git diff --exit-code --stat -- . && test -z "$$(git status --porcelain --untracked-files=all)" || \
		{ git status --short; echo "generated files are stale: run 'make generate' and commit"; exit 1; }

.PHONY: tools
tools: tools/node/node_modules/.installed ## install the npm tools tests need (anvil, solc, playwright-core)

tools/node/node_modules/.installed: tools/node/package.json tools/node/package-lock.json
	cd tools/node && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

.PHONY: build
build: ## build bin/tollgate
	$(GO) build -o bin/tollgate ./cmd/tollgate
