#!/usr/bin/env bash
# Runs the benchmarks behind the README's performance section. Each benchmark compares against
# its own baseline in the same run; see README "Performance".
set -euo pipefail
cd "$(dirname "$0")/.."
go test -run '^$' -bench . -benchmem ./ledger/... "$@"
# ext_proc: whole request vs a no-op server, per-chunk work, SSE scanner vs bytes.Index, and
# 1,000 open streams' memory (docs/extproc.md).
go test -run '^$' -bench 'Request|Chunk|Scan' -benchmem ./extproc/... "$@"
go test -run '^$' -bench 'OpenStreams' -benchtime 1x ./extproc/ "$@"
# Cached paywall lookups and the cost of a request, each beside its baseline.
go test -run '^$' -bench . -benchmem ./paywall/ "$@"
go test -run '^$' -bench CostMicro -benchmem ./pricing/ "$@"
# Gas of a top-up relay and a payout on anvil (a test that logs it; not a benchmark).
go test -count=1 -run '^TestAnvilTopUpAndPayout$' -v ./settlement/ | grep -i gas || true
# End-to-end load: p50/p99 time to first byte and throughput at 200 concurrent LLM-like streams
# (first token after 300 ms, 100 tokens 20 ms apart), through the Envoy emulator + tollgate serve
# beside straight to the fake upstream and beside a no-op ext_proc server; then each target's
# closed-loop throughput ceiling (docs/e2e.md, "Load test").
TOLLGATE_LOADTEST_STREAMS=200 TOLLGATE_LOADTEST_DURATION=20s TOLLGATE_LOADTEST_ROUNDS=4 TOLLGATE_LOADTEST_SATURATION=5s \
	TOLLGATE_LOADTEST_TTFT=300ms TOLLGATE_LOADTEST_CHUNKS=100 TOLLGATE_LOADTEST_INTERVAL=20ms \
	go test -count=1 -run '^TestLoad$' -v ./e2e/
