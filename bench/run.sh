#!/usr/bin/env bash
# Runs every `nself-realtime bench` scenario against three servers, in the same run, so the
# results read as ratios:
#   realtime      nself-realtime itself (target/release/nself-realtime server run)
#   socketioxide  bench/baseline-socketioxide: plain socketioxide, default settings, same events
#   node          bench/baseline-node: minimal Node.js socket.io server, same events
# Each scenario gets a freshly started server (a fresh data dir for nself-realtime), so one
# scenario's leftovers never skew the next (RSS especially). Writes markdown tables to stdout
# and to --out, and the raw JSON results next to it.
#
# Usage: [CARGO_TARGET_DIR=...] bench/run.sh [--small] [--out FILE] [--servers "realtime socketioxide node"]
#                     [--scenarios "connect idle fanout peak storm typing presence cycles max heap"]
#                     [--conns N] [--duration SECONDS] [--peak-rate MSG_PER_S] [--max-conns N]
#                     [--no-build] [--check]
#   --small      CI size: a few hundred clients, windows of 1-2 s (whole run well under a minute
#                per server once built). Never a timed assertion.
#   peak         the 100 B fan-out of 20 rooms x 500 members offered --peak-rate messages/s (default 1,200, i.e.
#                600,000 deliveries/s, more than this 2-core machine delivers for any of the three servers), then
#                every server again at half the deliveries/s the socketioxide baseline reached (its peak): the
#                throughput at saturation, and the latency at half of it.
#   cycles       one server process, 5 waves of N clients that connect, hold 2 s and leave, with a rest between:
#                RSS with each wave connected and after each rest (does memory come back, does the peak grow).
#   max          --max-conns clients (default 19,000: the open-files limit here is 20,000) held by one process,
#                3 rooms each.
#   heap         nself-realtime only: its live heap per idle connection, by owner (2,000 connections in 3 rooms
#                each, 200 with --small), recorded with heaptrack (skipped with a note when it is not installed).
#   --check      exit non-zero when a scenario did not connect every client or moved no traffic
#                (functional smoke check; no timing is asserted).
# Loopback only; every scenario stops by itself (bounded counts and durations).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SMALL=0
BUILD=1
CHECK=0
OUT=""
SERVERS="realtime socketioxide node"
SCENARIOS="connect idle fanout peak storm typing presence cycles max heap"
CONNS=""
DURATION=""
PEAK_RATE=""
MAX_CONNS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --small) SMALL=1 ;;
    --no-build) BUILD=0 ;;
    --check) CHECK=1 ;;
    --out) OUT="$2"; shift ;;
    --servers) SERVERS="$2"; shift ;;
    --scenarios) SCENARIOS="$2"; shift ;;
    --conns) CONNS="$2"; shift ;;
    --duration) DURATION="$2"; shift ;;
    --peak-rate) PEAK_RATE="$2"; shift ;;
    --max-conns) MAX_CONNS="$2"; shift ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
OUTDIR="$TARGET_DIR/bench"
mkdir -p "$OUTDIR"
[ -n "$OUT" ] || OUT="$OUTDIR/results.md"
JSONL="${OUT%.md}.jsonl"
: > "$JSONL"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/nself-bench.XXXXXX")
SECRET="bench-secret-$$-$RANDOM"
PORT_BASE="${BENCH_PORT_BASE:-3201}"
SERVER_BIN="$TARGET_DIR/release/nself-realtime"
# The heap table needs an allocator heaptrack sees: the same server built with the C library's malloc
# (`--no-default-features`, i.e. without jemalloc), kept beside the release binary under the same name.
HEAP_BIN="$TARGET_DIR/release/system-alloc/nself-realtime"
BENCH="${BENCH_BIN:-$SERVER_BIN}"  # BENCH_BIN: use another bench binary
SIO_TARGET="$TARGET_DIR/bench-baseline-socketioxide"
SIO_BIN="$SIO_TARGET/release/baseline-socketioxide"

# Many sockets per process: raise the soft limit to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---- sizes ---------------------------------------------------------------------------------
if [ "$SMALL" = 1 ]; then
  N=${CONNS:-200}; T=${DURATION:-2}
  FAN_ROOMS=4; FAN_MEMBERS=$(( (N + 3) / 4 )); FAN_RATE=40
  EV_ROOMS=4; EV_MEMBERS=$(( (N + 3) / 4 )); EV_RATE=100
  IDLE_SETTLE=0.5; DRAIN=2; HEAP_N=200
  PEAK_ROOMS=4; PEAK_MEMBERS=$(( (N + 3) / 4 )); PEAK_RATE=${PEAK_RATE:-100}
  CYCLES=2; CYCLE_REST=1; MAX_N=${MAX_CONNS:-$N}
else
  N=${CONNS:-10000}; T=${DURATION:-10}
  FAN_ROOMS=10; FAN_MEMBERS=$(( N / 10 )); FAN_RATE=50
  EV_ROOMS=50; EV_MEMBERS=$(( N / 50 )); EV_RATE=200
  IDLE_SETTLE=2; DRAIN=10; HEAP_N=2000
  PEAK_ROOMS=20; PEAK_MEMBERS=$(( N / 20 < 500 ? N / 20 : 500 )); PEAK_RATE=${PEAK_RATE:-1200}
  CYCLES=5; CYCLE_REST=15; MAX_N=${MAX_CONNS:-19000}
fi
IDLE_T=$([ "$SMALL" = 1 ] && echo "$T" || echo $(( T * 3 )))
IDLE_ROOMS=$(( N / 50 > 3 ? N / 50 : 3 ))

# ---- build ---------------------------------------------------------------------------------
have() { command -v "$1" >/dev/null 2>&1; }
if [ "$BUILD" = 1 ]; then
  case " $SCENARIOS " in *" heap "*)
    echo "== building nself-realtime with the C library's malloc, for the heap table (release)" >&2
    (cd "$ROOT" && cargo build --release --quiet --no-default-features)
    mkdir -p "$(dirname "$HEAP_BIN")" && cp "$SERVER_BIN" "$HEAP_BIN" ;;
  esac
  echo "== building nself-realtime (release)" >&2
  (cd "$ROOT" && cargo build --release --quiet)
  case " $SERVERS " in *" socketioxide "*)
    echo "== building the socketioxide baseline (release)" >&2
    cargo build --release --quiet --manifest-path "$ROOT/bench/baseline-socketioxide/Cargo.toml" \
      --target-dir "$SIO_TARGET" ;;
  esac
  case " $SERVERS " in *" node "*)
    if have npm; then
      echo "== installing the node baseline (npm ci)" >&2
      (cd "$ROOT/bench/baseline-node" && npm ci --no-audit --no-fund --loglevel=error >&2)
    fi ;;
  esac
fi
[ -x "$BENCH" ] || { echo "run.sh: $BENCH is missing (drop --no-build)" >&2; exit 1; }

# ---- servers -------------------------------------------------------------------------------
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

port_of() {
  case "$1" in realtime) echo "$PORT_BASE" ;; socketioxide) echo $((PORT_BASE + 1)) ;; node) echo $((PORT_BASE + 2)) ;; esac
}

wait_port() { # port pid
  local i
  for i in $(seq 1 200); do
    if ! kill -0 "$2" 2>/dev/null; then return 1; fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  return 1
}

start_server() { # name -> sets SERVER_PID; returns non-zero when it cannot run
  local name=$1 port data log
  port=$(port_of "$name")
  log="$WORK/$name.log"
  case "$name" in
    realtime)
      data=$(mktemp -d "$WORK/data.XXXXXX")
      REALTIME_PORT=$port REALTIME_HOST=127.0.0.1 REALTIME_JWT_SECRET=$SECRET REALTIME_DATA_DIR=$data \
        REALTIME_RATE_LIMIT=0 REALTIME_RATE_LIMIT_POINTS=1000000000 REALTIME_MAX_CONNECTIONS=1000000 \
        LOG_LEVEL=warn "$SERVER_BIN" server run >"$log" 2>&1 &
      ;;
    socketioxide)
      [ -x "$SIO_BIN" ] || { echo "run.sh: $SIO_BIN missing, skipping socketioxide" >&2; return 1; }
      # NODELAY=1: TCP_NODELAY on, as node's http server has by default; socketioxide's own
      # settings stay default. BASELINE_NODELAY=0 runs it exactly like the socketioxide examples.
      NODELAY=${BASELINE_NODELAY:-1} PORT=$port REALTIME_JWT_SECRET=$SECRET "$SIO_BIN" >"$log" 2>&1 &
      ;;
    node)
      have node || { echo "run.sh: node not installed, skipping the node baseline" >&2; return 1; }
      [ -d "$ROOT/bench/baseline-node/node_modules/socket.io" ] || {
        echo "run.sh: bench/baseline-node has no node_modules (npm ci), skipping" >&2; return 1; }
      PORT=$port REALTIME_JWT_SECRET=$SECRET node "$ROOT/bench/baseline-node/server.js" >"$log" 2>&1 &
      ;;
  esac
  SERVER_PID=$!
  if ! wait_port "$port" "$SERVER_PID"; then
    echo "run.sh: $name did not start; its log:" >&2
    tail -n 20 "$log" >&2 || true
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    return 1
  fi
}

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.05; done
  kill -9 "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

scenario_args() { # scenario -> the bench arguments (one per line, may be several variants)
  case "$1" in
    connect) echo "connect -n $N" ;;
    # Every client in 3 rooms (about 150 members each at full size), as an authenticated chat user would be.
    idle) echo "idle -n $N --duration $IDLE_T --settle $IDLE_SETTLE --rooms $IDLE_ROOMS --joins 3" ;;
    fanout)
      echo "fanout --rooms $FAN_ROOMS --members $FAN_MEMBERS --rate $FAN_RATE --payload 100 --duration $T --drain $DRAIN"
      echo "fanout --rooms $FAN_ROOMS --members $FAN_MEMBERS --rate $FAN_RATE --payload 1k --duration $T --drain $DRAIN" ;;
    # The peak at the offered rate; the run at half the library's peak follows once that is known (peak_half_rate).
    peak) echo "fanout --rooms $PEAK_ROOMS --members $PEAK_MEMBERS --rate $PEAK_RATE --payload 100 --duration $T --drain 5s" ;;
    max) echo "idle -n $MAX_N --duration $T --settle $IDLE_SETTLE --rooms $(( MAX_N / 50 > 3 ? MAX_N / 50 : 3 )) --joins 3" ;;
    storm) echo "storm -n $N --settle 1" ;;
    typing) echo "typing --rooms $EV_ROOMS --members $EV_MEMBERS --rate $EV_RATE --duration $T --drain $DRAIN" ;;
    presence) echo "presence --rooms $EV_ROOMS --members $EV_MEMBERS --rate $EV_RATE --duration $T --drain $DRAIN" ;;
    *) echo "run.sh: unknown scenario $1" >&2; return 1 ;;
  esac
}

# The live heap of nself-realtime per idle connection, by owner: the server runs under heaptrack, is killed with
# SIGKILL once every client holds its connection and rooms (so what it held is what was never freed), and
# bench/heap-owners.py gives each allocation's stack to its first owner. Markdown rows on stdout.
heap_breakdown() {
  have heaptrack && have heaptrack_print || {
    echo "heaptrack is not installed (Debian: apt-get install heaptrack): no heap breakdown in this run."; return 0; }
  [ -x "$HEAP_BIN" ] || {
    echo "$HEAP_BIN is missing (run without --no-build once): no heap breakdown in this run."; return 0; }
  local port data rec="$WORK/heap" blog="$WORK/heap-bench.log" tracer pid="" i rooms=$(( HEAP_N / 50 > 3 ? HEAP_N / 50 : 3 ))
  port=$(port_of realtime)
  data=$(mktemp -d "$WORK/data.XXXXXX")
  REALTIME_PORT=$port REALTIME_HOST=127.0.0.1 REALTIME_JWT_SECRET=$SECRET REALTIME_DATA_DIR=$data \
    REALTIME_RATE_LIMIT=0 REALTIME_RATE_LIMIT_POINTS=1000000000 REALTIME_MAX_CONNECTIONS=1000000 \
    LOG_LEVEL=warn heaptrack -o "$rec" "$HEAP_BIN" server run >"$WORK/heap-server.log" 2>&1 &
  tracer=$!
  for i in $(seq 1 200); do pid=$(pgrep -P "$tracer" -x nself-realtime || true); [ -n "$pid" ] && break; sleep 0.05; done
  if [ -z "$pid" ] || ! wait_port "$port" "$pid"; then
    echo "run.sh: nself-realtime did not start under heaptrack; its log:" >&2; tail -n 20 "$WORK/heap-server.log" >&2
    kill "$tracer" 2>/dev/null; wait "$tracer" 2>/dev/null; return 1
  fi
  echo "== realtime under heaptrack: bench idle -n $HEAP_N --rooms $rooms --joins 3" >&2
  REALTIME_JWT_SECRET=$SECRET "$BENCH" bench --url "http://127.0.0.1:$port" --server-pid "$pid" --label heap \
    --max-runtime 10m idle -n "$HEAP_N" --duration 10m --settle 2 --rooms "$rooms" --joins 3 >/dev/null 2>"$blog" &
  local bench=$!
  # The hold starts once every client is connected and in its rooms; a few seconds in, the ramp's garbage is gone.
  for i in $(seq 1 6000); do grep -q '] hold ' "$blog" && break; kill -0 "$bench" 2>/dev/null || break; sleep 0.1; done
  if ! grep -q '] hold ' "$blog"; then
    echo "run.sh: the heap run never reached its hold; the load generator said:" >&2; tail -n 5 "$blog" >&2
    kill -9 "$pid" "$bench" 2>/dev/null; wait "$tracer" "$bench" 2>/dev/null; return 1
  fi
  sleep 5
  kill -9 "$pid"; kill "$bench" 2>/dev/null; wait "$tracer" "$bench" 2>/dev/null || true
  heaptrack_print -f "$rec".* --flamegraph-cost-type leaked -F "$WORK/heap.fg" >/dev/null
  echo "Live heap of nself-realtime per idle connection by owner: $HEAP_N connections, 3 of $rooms rooms each,"
  echo "recorded with heaptrack (allocations never freed when the server was killed during the hold) on the build"
  echo "with the C library's malloc: bytes asked for by each owner, whatever the allocator; the idle table has the RSS."
  echo
  echo "| owner | bytes per connection |"
  echo "|---|---|"
  python3 "$ROOT/bench/heap-owners.py" "$WORK/heap.fg" "$HEAP_N"
}

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
COMMIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo 'an unknown commit')  # as the run starts
# The binary measured may be another checkout's build (CARGO_TARGET_DIR): name it by its build time and hash too.
BINARY=$( [ -f "$SERVER_BIN" ] && echo "$SERVER_BIN built $(date -u -r "$SERVER_BIN" +%Y-%m-%dT%H:%MZ), sha256 $(sha256sum "$SERVER_BIN" | cut -c1-12)" || echo "$SERVER_BIN (not built yet)")
# One bench run against the server started last, its JSON in $WORK/out.json.
bench_json() { # server bench-args...
  local server=$1
  shift
  REALTIME_JWT_SECRET=$SECRET "$BENCH" bench --url "http://127.0.0.1:$(port_of "$server")" \
    --server-pid "$SERVER_PID" --label "$server" --json --max-runtime 10m "$@" >"$WORK/out.json"
}

# One bench run whose JSON line goes to $JSONL, tagged with the variant when one is given (render.py titles and
# summarises by it).
bench_once() { # server variant bench-args...
  local server=$1 variant=$2
  shift 2
  if bench_json "$server" "$@"; then
    python3 -c 'import json, sys
r = json.load(sys.stdin)
if sys.argv[1]: r["variant"] = sys.argv[1]
print(json.dumps(r))' "$variant" <"$WORK/out.json" >>"$JSONL"
  else
    echo "run.sh: bench $* against $server failed" >&2
    return 1
  fi
}

# Every server, each freshly started, runs the same bench.
on_each_server() { # variant bench-args (one string)
  local server
  for server in $SERVERS; do
    echo "== $server: bench $2" >&2
    if ! start_server "$server"; then FAILED=1; continue; fi
    # shellcheck disable=SC2086
    bench_once "$server" "$1" $2 || FAILED=1
    stop_server
  done
}

# The rate (messages/s) at which the fan-out of the peak delivers half of what the socketioxide baseline delivered
# at its peak (nself-realtime's own peak when the baseline did not run).
peak_half_rate() {
  python3 - "$JSONL" "$PEAK_MEMBERS" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
peak = {r.get("label"): r["results"].get("deliveries_per_s") for r in runs if r.get("variant") == "peak"}
best = peak.get("socketioxide") or peak.get("realtime")
print(f"{best / int(sys.argv[2]) / 2:.1f}" if best else "")
PY
}

# One server process through $CYCLES waves of N clients: each wave connects (unpaced), holds 2 s and leaves, then
# the server rests $CYCLE_REST s. One JSON line per server: RSS with each wave connected and after each rest.
cycles() {
  local server wave rss_up rss_rest connected rss n
  for server in $SERVERS; do
    echo "== $server: $CYCLES waves of bench idle -n $N, ${CYCLE_REST} s apart" >&2
    if ! start_server "$server"; then FAILED=1; continue; fi
    rss_up=""; rss_rest=""; connected=""
    for wave in $(seq 1 "$CYCLES"); do
      if ! bench_json "$server" --connect-rate 0 idle -n "$N" --duration 2s --settle 0.5; then
        echo "run.sh: cycle $wave against $server failed" >&2; FAILED=1; break
      fi
      read -r rss n < <(python3 -c 'import json, sys
r = json.load(sys.stdin)["results"]
print(r.get("server_rss_end_bytes") or 0, r.get("connected") or 0)' <"$WORK/out.json")
      rss_up+="$rss "; connected+="$n "
      sleep "$CYCLE_REST"
      rss_rest+="$(( $(awk '/^VmRSS/ {print $2}' "/proc/$SERVER_PID/status") * 1024 )) "
    done
    python3 - "$server" "$N" "$CYCLES" "$CYCLE_REST" "$rss_up" "$rss_rest" "$connected" >>"$JSONL" <<'PY'
import json, sys
server, n, cycles, rest, up, after, connected = sys.argv[1:]
up, after, connected = ([int(float(x)) for x in v.split()] for v in (up, after, connected))
print(json.dumps({"scenario": "cycles", "label": server,
    "params": {"connections": int(n), "cycles": int(cycles), "rest_s": float(rest)},
    "results": {"waves": len(up), "connected_min": min(connected, default=0), "rss_connected_bytes": up,
                "rss_rested_bytes": after, "rss_connected_first_bytes": up[0] if up else None,
                "rss_connected_max_bytes": max(up, default=None),
                "rss_rested_last_bytes": after[-1] if after else None,
                "connected_growth_percent": (max(up) / up[0] - 1) * 100 if up and up[0] else None}}))
PY
    stop_server
  done
}

FAILED=0
HEAP=""
for scenario in $SCENARIOS; do
  case "$scenario" in
    heap)
      case " $SERVERS " in *" realtime "*)
        HEAP=$(heap_breakdown) || { HEAP=""; FAILED=1; } ;;
      esac
      continue ;;
    cycles) cycles; continue ;;
  esac
  variant=""
  case "$scenario" in peak|max) variant=$scenario ;; esac
  while IFS= read -r args; do
    [ -n "$args" ] || continue
    on_each_server "$variant" "$args"
  done < <(scenario_args "$scenario")
  if [ "$scenario" = peak ]; then
    half=$(peak_half_rate)
    if [ -n "$half" ]; then
      on_each_server half "fanout --rooms $PEAK_ROOMS --members $PEAK_MEMBERS --rate $half --payload 100 --duration $T --drain 5s"
    else
      echo "run.sh: no peak was measured, so no run at half of it" >&2; FAILED=1
    fi
  fi
done

RENDER_ARGS=()
[ "$CHECK" = 1 ] && RENDER_ARGS+=(--check)
{
  echo "# nself-realtime bench ($(date -u +%Y-%m-%dT%H:%MZ), $([ "$SMALL" = 1 ] && echo small || echo full) size, $(nproc) cores)"
  echo
  echo "Machine: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(nproc) cores,"
  echo "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r), $(rustc --version 2>/dev/null || echo 'rustc unknown');"
  echo "nself-realtime: checkout at $COMMIT, binary $BINARY; load average before the run: $LOAD0."
  echo
  echo "Servers started fresh for every scenario on loopback; nself-realtime with LOG_LEVEL=warn,"
  echo "rate limits off and an SQLite data dir; baselines with default settings (socketioxide"
  echo "behind axum::serve with TCP_NODELAY=${BASELINE_NODELAY:-1}). Ratios are"
  echo "realtime ÷ baseline. The load generator shares the machine with the server."
  echo
  python3 "$ROOT/bench/render.py" "$JSONL" "${RENDER_ARGS[@]}"
  if [ -n "$HEAP" ]; then echo; echo "### heap — where an idle connection's bytes go"; echo; echo "$HEAP"; fi
} >"$OUT.tmp" || { cat "$OUT.tmp"; mv "$OUT.tmp" "$OUT"; echo "run.sh: check failed (see above)" >&2; exit 1; }
mv "$OUT.tmp" "$OUT"
cat "$OUT"
echo "run.sh: tables in $OUT, raw results in $JSONL" >&2
exit "$FAILED"
