#!/usr/bin/env bash
# make run: the whole of Tollgate on this machine, without Docker. A throwaway PostgreSQL
# cluster and Redis on free ports, `tollgate migrate`, `tollgate serve`, `tollgate settle` with
# anvil and the test USDC, the demo upstream (the fake OpenAI server) and the Envoy emulator as
# the front proxy on port 10000 (or MAKE_RUN_PORT; a free port if 10000 is busy), all reading
# envoy/envoy.yaml. It writes $RUN/env.sh for the curl walk-through of docs/e2e.md. Ctrl-C
# stops everything and removes the temporary directory (keep it with TOLLGATE_RUN_DIR=path).
# Works as root too (PostgreSQL then runs as the postgres user).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

say() { printf '\033[1m== %s\033[0m\n' "$*"; }
warn() { printf '\033[33m!! %s\033[0m\n' "$*" >&2; }
die() { printf '\033[31mmake run: %s\033[0m\n' "$*" >&2; exit 1; }

# --- prerequisites -------------------------------------------------------------------------
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
missing=()
command -v go >/dev/null || missing+=("Go 1.26 (https://go.dev/dl/; 'go' must be on PATH)")
[[ -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl ]] || missing+=("PostgreSQL 15 server binaries in $PG_BIN (Debian: apt-get install postgresql-15; or set PG_BIN)")
command -v psql >/dev/null || missing+=("psql (Debian: apt-get install postgresql-client-15)")
command -v redis-server >/dev/null || missing+=("redis-server (Debian: apt-get install redis-server)")
command -v curl >/dev/null || missing+=("curl (Debian: apt-get install curl)")
if ((${#missing[@]})); then
  printf 'make run: missing prerequisites:\n' >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 1
fi

# --- workspace, ports, cleanup --------------------------------------------------------------
KEEP_DIR=${TOLLGATE_RUN_DIR:+1}
RUN=${TOLLGATE_RUN_DIR:-$(mktemp -d /tmp/tollgate-run.XXXXXX)}
mkdir -p "$RUN/bin" "$RUN/log"
PIDS=()
PG_STARTED=""
AS_PG=()

cleanup() {
  trap - EXIT INT TERM
  trap '' PIPE # a closed terminal or pipe must not stop the cleanup half-way
  say "stopping" || true
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill -TERM "${PIDS[i]}" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [[ -n $PG_STARTED ]]; then
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$RUN/pg" -m fast -w stop >/dev/null 2>&1 || true
  fi
  if [[ -z $KEEP_DIR ]]; then rm -rf "$RUN"; else echo "kept $RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Ports come from below the kernel's ephemeral range: a port picked inside it can be taken, between
# the check and the bind, by any outgoing connection on the machine (a test suite running beside
# us, a database client), and then the service that was meant to listen on it fails to start.
read -r EPHEMERAL_LOW _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || EPHEMERAL_LOW=32768
if ((EPHEMERAL_LOW > 12000)); then
  PORT_LOW=$((EPHEMERAL_LOW > 30000 ? 20000 : 10001)) PORT_SPAN=$((EPHEMERAL_LOW - PORT_LOW))
else
  PORT_LOW=20000 PORT_SPAN=30000 # an unusual ephemeral range: any port, and hope
fi
USED_PORTS=""
# pick_port VAR sets VAR to a free port that no earlier pick_port gave (the services have not
# bound theirs yet, so "free" alone would not keep two of them apart). It sets a variable rather
# than printing: $(…) would run it in a subshell, which forgets USED_PORTS.
pick_port() {
  local p
  for _ in $(seq 200); do
    p=$((PORT_LOW + RANDOM % PORT_SPAN))
    if port_free "$p" && [[ " $USED_PORTS " != *" $p "* ]]; then
      USED_PORTS="$USED_PORTS $p"
      printf -v "$1" '%s' "$p"
      return
    fi
  done
  die "no free port found"
}
wait_port() { # name port [pid]
  for _ in $(seq 300); do
    port_free "$2" || return 0
    if [[ -n ${3:-} ]] && ! kill -0 "$3" 2>/dev/null; then
      die "$1 exited; see $RUN/log/$1.log:$(printf '\n'; tail -n 20 "$RUN/log/$1.log")"
    fi
    sleep 0.1
  done
  die "$1 did not listen on port $2; see $RUN/log/$1.log"
}
start() { # name command...: background, logs in $RUN/log/name.log
  local name=$1
  shift
  "$@" >"$RUN/log/$name.log" 2>&1 &
  PIDS+=($!)
  LAST_PID=$!
}

# The front port: MAKE_RUN_PORT if set (it must be free), else 10000 (envoy.yaml's listener)
# when free, else any free port.
if [[ -n ${MAKE_RUN_PORT:-} ]]; then
  [[ $MAKE_RUN_PORT =~ ^[0-9]+$ ]] && ((MAKE_RUN_PORT > 0 && MAKE_RUN_PORT < 65536)) ||
    die "MAKE_RUN_PORT=$MAKE_RUN_PORT is not a port number"
  port_free "$MAKE_RUN_PORT" || die "port $MAKE_RUN_PORT (MAKE_RUN_PORT) is busy; choose another, or unset MAKE_RUN_PORT to get a free one"
  FRONT_PORT=$MAKE_RUN_PORT
elif port_free 10000; then
  FRONT_PORT=10000
else
  pick_port FRONT_PORT
  warn "port 10000 is busy: the front proxy listens on $FRONT_PORT instead (MAKE_RUN_PORT=N picks one)"
fi
USED_PORTS="$USED_PORTS $FRONT_PORT" # the others keep clear of it
pick_port PG_PORT
pick_port REDIS_PORT
pick_port GRPC_PORT
pick_port HTTP_PORT
pick_port ADMIN_PORT
pick_port SETTLE_ADMIN_PORT
pick_port DEMO_PORT
pick_port ANVIL_PORT

# --- build ----------------------------------------------------------------------------------
say "building (go build)"
go build -o "$RUN/bin/tollgate" ./cmd/tollgate
go build -o "$RUN/bin/envoyemu" ./e2e/cmd/envoyemu
go build -o "$RUN/bin/fakeupstream" ./e2e/cmd/fakeupstream
TG="$RUN/bin/tollgate"

# --- PostgreSQL (throwaway cluster) ---------------------------------------------------------
say "PostgreSQL 15 on 127.0.0.1:$PG_PORT (throwaway cluster in $RUN/pg)"
if [[ $(id -u) == 0 ]]; then
  # initdb refuses to run as root: the cluster belongs to the postgres user.
  id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' user for initdb (apt-get install postgresql-15 creates it)"
  chmod 755 "$RUN"
  mkdir -p "$RUN/pg" && chown postgres "$RUN/pg" "$RUN/log"
  AS_PG=(runuser -u postgres --)
fi
"${AS_PG[@]}" "$PG_BIN/initdb" -D "$RUN/pg" -U postgres --auth=trust --no-sync -E UTF8 >"$RUN/log/initdb.log" 2>&1 ||
  die "initdb failed; see $RUN/log/initdb.log"
"${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$RUN/pg" -w -l "$RUN/log/postgres.log" \
  -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $RUN/pg -c fsync=off" start >/dev/null ||
  die "PostgreSQL did not start; see $RUN/log/postgres.log"
PG_STARTED=1
psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -c 'CREATE DATABASE tollgate' >/dev/null

# --- Redis ----------------------------------------------------------------------------------
say "Redis on 127.0.0.1:$REDIS_PORT"
start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$RUN"
wait_port redis "$REDIS_PORT" "$LAST_PID"

# --- chain (anvil + the test token), for tollgate settle -------------------------------------
# anvil's well-known development accounts: #0 the hot wallet, #1 the treasury, #2 the demo
# user's wallet, #3 the demo paywall's payout address.
HOT_WALLET=0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266
TREASURY=0x70997970C51812dc3A010C7d01b50e0d17dc79C8
DEMO_WALLET=0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC
PAYOUT_ADDRESS=0x90F79bf6EB2c4f870365E785982E1f101E93b906
ANVIL=$ROOT/tools/node/node_modules/.bin/anvil
[[ -x $ANVIL ]] || die "anvil is missing: run 'make tools' (npm ci in tools/node)"
say "anvil on 127.0.0.1:$ANVIL_PORT (chain 31337, a block a second)"
start anvil "$ANVIL" --host 127.0.0.1 --port "$ANVIL_PORT" --chain-id 31337 --block-time 1
wait_port anvil "$ANVIL_PORT" "$LAST_PID"
go build -o "$RUN/bin/devchain" ./e2e/cmd/devchain
# The test USDC (at a fixed address), 1,000 to the hot wallet (#0, which pays payouts) and 100
# to the demo user's wallet (#2, which tops up in the walk-through).
TOKEN=$("$RUN/bin/devchain" -rpc "http://127.0.0.1:$ANVIL_PORT" -mint "$HOT_WALLET=1000" -mint "$DEMO_WALLET=100" 2>"$RUN/log/devchain.log") ||
  die "deploying the test token on anvil failed: $(cat "$RUN/log/devchain.log")"
ANVIL_URL=http://127.0.0.1:$ANVIL_PORT

# --- configuration --------------------------------------------------------------------------
LINK_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
# A throwaway paywall.secrets_key: it seals the demo paywall's upstream credential in this
# run's database, which goes away with the run.
SECRETS_KEY=$(head -c 32 /dev/urandom | base64 | tr -d '\n')
cat >"$RUN/tollgate.yaml" <<EOF
database:
  url: postgres://postgres@127.0.0.1:$PG_PORT/tollgate?sslmode=disable
redis:
  addr: 127.0.0.1:$REDIS_PORT
  prefix: "tollgate:"
serve:
  grpc_addr: 127.0.0.1:$GRPC_PORT
  http_addr: 127.0.0.1:$HTTP_PORT
  admin_addr: 127.0.0.1:$ADMIN_PORT
  public_url: http://127.0.0.1:$FRONT_PORT
  link_secret: $LINK_SECRET
paywall:
  secrets_key: "$SECRETS_KEY"
settle:
  admin_addr: 127.0.0.1:$SETTLE_ADMIN_PORT
  treasury: "$TREASURY"
  hot_wallet:
    private_key: "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
  chains:
    - id: "31337"
      name: anvil
      rpc_url: $ANVIL_URL
      usdc: "$TOKEN"
      eip712_name: USD Coin
      eip712_version: "2"
      finality: confirmations
      confirmations: 2
EOF
export TOLLGATE_CONFIG="$RUN/tollgate.yaml"

say "tollgate migrate"
"$TG" migrate >"$RUN/log/migrate.log" 2>&1 || die "migrate failed: $(cat "$RUN/log/migrate.log")"
tail -n 1 "$RUN/log/migrate.log"

say "tollgate settle"
start settle "$TG" settle
SETTLE_PID=$LAST_PID

# --- demo upstream, serve, front proxy ------------------------------------------------------
DEMO_KEY=demo-upstream-key
say "demo upstream (fake OpenAI) on 127.0.0.1:$DEMO_PORT"
start demo "$RUN/bin/fakeupstream" -listen "127.0.0.1:$DEMO_PORT" -name demo -key "$DEMO_KEY"
wait_port demo "$DEMO_PORT" "$LAST_PID"

say "tollgate serve (ext_proc 127.0.0.1:$GRPC_PORT, API 127.0.0.1:$HTTP_PORT)"
start serve "$TG" serve
SERVE_PID=$LAST_PID
wait_port serve "$GRPC_PORT" "$SERVE_PID"

say "Envoy emulator on 127.0.0.1:$FRONT_PORT (envoy/envoy.yaml)"
start envoyemu "$RUN/bin/envoyemu" -config envoy/envoy.yaml -listen "127.0.0.1:$FRONT_PORT" \
  -endpoint "tollgate_extproc=127.0.0.1:$GRPC_PORT" -endpoint "tollgate_http=127.0.0.1:$HTTP_PORT" \
  -endpoint "demo=127.0.0.1:$DEMO_PORT"
wait_port envoyemu "$FRONT_PORT" "$LAST_PID"

# --- demo paywall ---------------------------------------------------------------------------
API_KEY=""
if "$TG" prices import "$ROOT/e2e/demo/models.json" >"$RUN/log/prices.log" 2>&1; then :; else
  warn "tollgate prices import failed: $(cat "$RUN/log/prices.log")"
fi
if out=$("$TG" paywall create -name "Demo app" -owner demo@localhost -mode byok -upstream demo -upstream-key "$DEMO_KEY" \
  -markup-bps 1000 -payout-address "$PAYOUT_ADDRESS" 2>&1); then
  API_KEY=$(grep -o 'tg_[A-Za-z0-9_-]*' <<<"$out" | head -n 1)
  status_paywall="Demo app (BYOK, upstream 'demo', payouts to $PAYOUT_ADDRESS): API key $API_KEY"
else
  status_paywall="tollgate paywall create failed: $out"
fi

# The walk-through's variables (docs/e2e.md): `. $RUN/env.sh` in another shell.
cat >"$RUN/env.sh" <<EOF
# Written by make run; it lives as long as make run does.
export TG=http://127.0.0.1:$FRONT_PORT
export KEY=$API_KEY
export ANVIL=$ANVIL_URL
export TOKEN=$TOKEN
export TOLLGATE_CONFIG=$RUN/tollgate.yaml
export PATH="$RUN/bin:\$PATH" # tollgate, devchain
EOF
command -v jq >/dev/null || warn "jq is not installed: the walk-through in docs/e2e.md uses it (Debian: apt-get install jq)"

cat <<EOF

$(say "Tollgate is running")
  front (Envoy emulator)  http://127.0.0.1:$FRONT_PORT     <- send requests here
  tollgate serve          running (pid $SERVE_PID, log $RUN/log/serve.log)
  tollgate settle         running (pid $SETTLE_PID, log $RUN/log/settle.log, metrics http://127.0.0.1:$SETTLE_ADMIN_PORT/metrics)
  anvil                   $ANVIL_URL (chain 31337; test USDC at $TOKEN)
  PostgreSQL              postgres://postgres@127.0.0.1:$PG_PORT/tollgate
  Redis                   127.0.0.1:$REDIS_PORT
  demo upstream           http://127.0.0.1:$DEMO_PORT (fake OpenAI; needs Bearer $DEMO_KEY)
  demo paywall            $status_paywall
  config, logs            $RUN/tollgate.yaml, $RUN/log/
  walk-through variables  . $RUN/env.sh     (TG, KEY, ANVIL, TOKEN; tollgate and devchain on PATH)

First request (docs/e2e.md walks through the rest: authorize, top up, charge):
  curl -s http://127.0.0.1:$FRONT_PORT/v1/chat/completions \\
    -H 'Authorization: Bearer ${API_KEY:-tg_YOUR_KEY}' -H 'X-Paywall-User: alice' \\
    -H 'Content-Type: application/json' \\
    -d '{"model":"fake/model","messages":[{"role":"user","content":"hello"}]}'

Ctrl-C stops everything.
EOF

# Stay up until Ctrl-C, or until one of the processes dies.
while true; do
  for pid in "${PIDS[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      warn "a process (pid $pid) exited; logs in $RUN/log/ - stopping"
      KEEP_DIR=1
      exit 1
    fi
  done
  sleep 1
done
