#!/usr/bin/env bash
# One side-by-side run for issue 13, in one machine state: the bench's
# run-all.sh (hub, Centrifugo, nats-server WS), then the write(2) floor
# (wsfloor) on the same publish rows, then a connect-rate ramp (idle,
# RAMP_N clients, each offered rate, every target), then one table with
# the ratios the issue sets goals on. docs/perf.md says what each row is.
#
#   docs/perf/compare.sh                  # from the repository root; ~20 minutes
#   make compare                          # the same
#   STEPS="floor" docs/perf/compare.sh    # only some steps (peers floor ramp report)
#   OUT=<dir> STEPS=report docs/perf/compare.sh   # the table again from a run
#
# Knobs (environment), with their defaults:
#   BENCH_DIR=<repo>/../shared/bench  the bench (run-all.sh, wsload); read-only here
#   CENTRIFUGO_BIN, NATS_SERVER_BIN   the peers ($HOME/peers/<name> when there)
#   HUB_BIN                           the hub binary (default: built once from this tree)
#   TARGETS="centrifugo nats hub" NS="1000 10000" IDLE_NS="1000 10000"
#   DURATION=20s BCAST_DELIVERIES=40000 UNICAST_RATE=2000 PAYLOAD=128
#   CONNECT_RATE=5000 CONNECT_CONC=200 RAMP_N=10000 RAMP_RATES="5000 7500 10000"
#   OUT=${TMPDIR:-/tmp}/fleet-compare/<UTC time>   results, logs and compare.md
#
# Every run is bounded (wsload and wsfloor: -timeout 150s inside, timeout
# 190 outside) and its servers die with it. Loopback only.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH_DIR=${BENCH_DIR:-$(cd "$ROOT/.." && pwd)/shared/bench}
BENCH_BIN=${BENCH_BIN:-${TMPDIR:-/tmp}/fleet-bench-bin}
OUT=${OUT:-${TMPDIR:-/tmp}/fleet-compare/$(date -u +%Y%m%dT%H%M%SZ)}
STEPS=${STEPS:-"peers floor ramp report"}
TARGETS=${TARGETS:-"centrifugo nats hub"}
NS=${NS:-"1000 10000"}
IDLE_NS=${IDLE_NS:-"1000 10000"}
DURATION=${DURATION:-20s}
BCAST_DELIVERIES=${BCAST_DELIVERIES:-40000}
UNICAST_RATE=${UNICAST_RATE:-2000}
PAYLOAD=${PAYLOAD:-128}
CONNECT_RATE=${CONNECT_RATE:-5000}
CONNECT_CONC=${CONNECT_CONC:-200}
RAMP_N=${RAMP_N:-10000}
RAMP_RATES=${RAMP_RATES:-"5000 7500 10000"}
for p in centrifugo nats-server; do
  v=$(echo "${p^^}_BIN" | tr - _)
  if [[ -z "${!v:-}" && -x "$HOME/peers/$p" ]]; then export "$v=$HOME/peers/$p"; fi
done
export TARGETS NS IDLE_NS DURATION BCAST_DELIVERIES UNICAST_RATE PAYLOAD CONNECT_RATE CONNECT_CONC OUT BENCH_BIN
export HUB_REPO=$ROOT

has() { [[ " $STEPS " == *" $1 "* ]]; }

if [[ ! -x "$BENCH_DIR/run-all.sh" ]]; then
  echo "compare: no run-all.sh in $BENCH_DIR (set BENCH_DIR)" >&2
  exit 2
fi
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
mkdir -p "$OUT/bin" "$OUT/floor" "$OUT/ramp" "$BENCH_BIN"
echo "results: $OUT"

# The same binaries for every row: the hub and the floor built once.
(cd "$ROOT" && go build -o "$OUT/bin/wsfloor" ./internal/cmd/wsfloor) || exit 1
if [[ -z "${HUB_BIN:-}" ]] && { has peers || has ramp; }; then
  (cd "$ROOT" && go build -o "$OUT/bin/hub" ./cmd/hub) || exit 1
  export HUB_BIN=$OUT/bin/hub
fi
if has ramp && [[ ! -x "$BENCH_BIN/wsload" ]]; then
  (cd "$BENCH_DIR" && go build -o "$BENCH_BIN/wsload" ./cmd/wsload) || exit 1
fi

busy_pct() { # whole-machine busy % over 1 s, from /proc/stat (as run-all.sh)
  local a b i tot=0 idle
  a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
  idle=$(( (b[4]+b[5]) - (a[4]+a[5]) ))
  for i in 1 2 3 4 5 6 7 8; do tot=$((tot + b[i] - a[i])); done
  echo $(( tot > 0 ? 100 * (tot - idle) / tot : 0 ))
}

quiet_wait() { # at most 60 s until other work is below 15 % (as run-all.sh)
  local p i
  for i in $(seq 1 60); do
    p=$(busy_pct)
    [[ $p -lt 15 ]] && return
    [[ $i -eq 1 ]] && echo "   machine busy ${p}% before the run; waiting"
  done
  echo "   WARNING: machine still busy (${p}%) after 60 s; running anyway" | tee -a "$OUT/noise.txt"
}

bounded() { # name cmd... : one bounded run, logged
  local name=$1; shift
  quiet_wait
  echo "$*" >> "$OUT/commands.txt"
  echo "== $*"
  timeout -k 10 190 "$@" 2> "$name.log" | tee -a "$OUT/summaries.txt"
  local rc=${PIPESTATUS[0]}
  [[ $rc -ne 0 ]] && echo "   (exit $rc; log $name.log)"
  sleep 3 # let sockets and the old server go away
}

# 1. Peers and hub: the bench's own run, into the same OUT.
if has peers; then
  "$BENCH_DIR/run-all.sh" || echo "compare: run-all.sh exited $?" >&2
fi

# 2. The floor on the publish rows of step 1 (same rates, same duration).
if has floor; then
  for n in $NS; do
    rate=$(awk -v d="$BCAST_DELIVERIES" -v n="$n" 'BEGIN{printf "%g", d/n}')
    bounded "$OUT/floor/floor-broadcast-$n" "$OUT/bin/wsfloor" -scenario broadcast -clients "$n" -rate "$rate" \
      -duration "$DURATION" -payload "$PAYLOAD" -connect-rate "$CONNECT_RATE" -connect-concurrency "$CONNECT_CONC" \
      -timeout 150s -out "$OUT/floor/floor-broadcast-$n.json"
  done
  for n in $NS; do
    bounded "$OUT/floor/floor-unicast-$n" "$OUT/bin/wsfloor" -scenario unicast -clients "$n" -rate "$UNICAST_RATE" \
      -duration "$DURATION" -payload "$PAYLOAD" -connect-rate "$CONNECT_RATE" -connect-concurrency "$CONNECT_CONC" \
      -timeout 150s -out "$OUT/floor/floor-unicast-$n.json"
  done
fi

# 3. The connect ramp: idle, RAMP_N clients, each offered rate, every
# target. The step at CONNECT_RATE is step 1's idle run when it has one.
if has ramp; then
  for r in $RAMP_RATES; do
    for t in $TARGETS; do
      base="$OUT/ramp/$t-idle-$RAMP_N-r$r"
      if [[ "$r" == "$CONNECT_RATE" && -f "$OUT/$t-idle-$RAMP_N.json" ]]; then
        cp "$OUT/$t-idle-$RAMP_N.json" "$base.json"
        continue
      fi
      bounded "$base" "$BENCH_BIN/wsload" -bench-dir "$BENCH_DIR" -target "$t" -scenario idle -clients "$RAMP_N" \
        -payload "$PAYLOAD" -connect-rate "$r" -connect-concurrency "$CONNECT_CONC" -timeout 150s -out "$base.json"
    done
  done
fi

# 4. One table.
if has report; then
  "$OUT/bin/wsfloor" -report "$OUT" | tee "$OUT/compare.md"
  echo
  echo "table: $OUT/compare.md"
fi
