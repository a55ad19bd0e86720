#!/usr/bin/env bash
set -euo pipefail
echo "make run: not built yet (issue 4)" >&2
exit 1
