#!/usr/bin/env bash
# Runs the benchmarks behind the README's performance section. Each benchmark compares against
# its own baseline in the same run; see README "Performance".
set -euo pipefail
cd "$(dirname "$0")/.."
go test -run '^$' -bench . -benchmem ./ledger/... "$@"
