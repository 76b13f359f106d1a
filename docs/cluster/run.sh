#!/usr/bin/env bash
# The one-binary cluster on this machine (make cluster): three hub nodes,
# each embedding one of the three NATS servers of docs/cluster/hub-N.conf,
# the hub's state at --replicas 3, and a simulated fleet spread over the
# three. Waits until every node's /readyz answers 200, then prints the
# dashboards and the dev login last. Ctrl-C (or q) stops everything and exits 0 (SIGTERM,
# SIGKILL after 10 s).
#
#   docs/cluster/run.sh            # the whole cluster and the fleet
#   docs/cluster/run.sh node N     # node N alone, in the foreground: to
#                                  # start one again after killing it
#
# BIN (bin), DATA (./data/cluster) and DEVICES (30) can be set in the
# environment. Node N listens on 127.0.0.1:808N (HTTP, WebSocket) and
# 127.0.0.1:422(N+2) (NATS), keeps its data in DATA/hub-N and logs to
# DATA/hub-N.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-bin}
DATA=${DATA:-./data/cluster}
DEVICES=${DEVICES:-30}
READY_TIMEOUT=${READY_TIMEOUT:-120}

node_args() {
  echo --dev --nats-conf "docs/cluster/hub-$1.conf" --replicas 3 \
    --data-dir "$DATA/hub-$1" --listen "127.0.0.1:808$1" --node-id "hub-$1"
}

if [ "${1:-}" = node ]; then
  n=${2:?usage: $0 node N (1, 2 or 3)}
  case $n in 1|2|3) ;; *) echo "node $n: want 1, 2 or 3" >&2; exit 2 ;; esac
  mkdir -p "$DATA/hub-$n"
  # shellcheck disable=SC2046 # the arguments hold no spaces
  exec "$BIN/hub" $(node_args "$n")
fi

# get, keys_on, keys_off, wait_stop, stop_all (the array pids), wait_ready
. docs/dev/lib.sh

trap stop_all EXIT
trap 'stop_all; exit 0' INT TERM
keys_on

for n in 1 2 3; do
  mkdir -p "$DATA/hub-$n"
  # shellcheck disable=SC2046
  "$BIN/hub" $(node_args "$n") --log-level warn >>"$DATA/hub-$n.log" 2>&1 &
  pids+=($!)
done

# Every node ready (JetStream with a quorum, the hub's stores at R3).
deadline=$((SECONDS + READY_TIMEOUT))
for n in 1 2 3; do
  wait_ready "hub-$n" "127.0.0.1:808$n" "${pids[$((n - 1))]}" "$DATA/hub-$n.log" "$deadline"
done

# The robots registered with their types and groups first, so that group
# pushes and --where reach them.
"$BIN/devsim" --register --devices "$DEVICES" --nats-url nats://127.0.0.1:4223 >/dev/null
"$BIN/devsim" --dev --devices "$DEVICES" --log-level warn \
  --url ws://127.0.0.1:8081/ws,ws://127.0.0.1:8082/ws,ws://127.0.0.1:8083/ws &
pids+=($!)

echo "fleethub cluster: 3 nodes ready (state at R3), $DEVICES simulated devices spread over them"
echo "  logs: $DATA/hub-N.log; NATS: nats://127.0.0.1:4223,nats://127.0.0.1:4224,nats://127.0.0.1:4225"
echo "  kill a node at any time (hub-1 pid ${pids[0]}, hub-2 ${pids[1]}, hub-3 ${pids[2]}) and start it again"
echo "  with make cluster-node N=1, 2 or 3 (docs/cluster/run.sh node N); Ctrl-C (or q) stops the cluster"
for n in 1 2 3; do
  echo "dashboard hub-$n: http://127.0.0.1:808$n/"
done
echo "dev login: user admin, password admin"
wait_stop
