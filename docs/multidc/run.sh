#!/usr/bin/env bash
# Two data centres on this machine (make multidc): a hub node per data
# centre, each embedding its data centre's NATS server of
# docs/multidc/<dc>.conf (a JetStream domain each, "east" and "west",
# west joined to east by a leaf connection), and a simulated fleet in each
# (EAST-0001... on east, WEST-0001... on west). Waits until both nodes'
# /readyz answer 200, then prints the dashboards and the dev login last:
# either dashboard lists, watches and commands the devices of both.
# Ctrl-C stops everything (SIGTERM, SIGKILL after 10 s).
#
#   docs/multidc/run.sh            # both data centres and their fleets
#   docs/multidc/run.sh node DC    # the node of DC (east or west) alone, in
#                                  # the foreground: to start one again
#
# BIN (bin), DATA (./data/multidc) and DEVICES (20 per data centre) can be
# set in the environment, and so can every variable the configuration
# files read (FLEETHUB_EAST_PORT 4231, FLEETHUB_WEST_PORT 4232,
# FLEETHUB_EAST_LEAF_PORT 7431, FLEETHUB_LEAF_PASSWORD, a public
# development password by default). East listens on 127.0.0.1:8091
# (HTTP, WebSocket), west on 127.0.0.1:8092; each keeps its data in
# DATA/<dc> and logs to DATA/<dc>.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-bin}
DATA=${DATA:-./data/multidc}
DEVICES=${DEVICES:-20}
READY_TIMEOUT=${READY_TIMEOUT:-120}

export FLEETHUB_EAST_PORT=${FLEETHUB_EAST_PORT:-4231}
export FLEETHUB_WEST_PORT=${FLEETHUB_WEST_PORT:-4232}
export FLEETHUB_EAST_LEAF_PORT=${FLEETHUB_EAST_LEAF_PORT:-7431}
# Public, like --dev's master secret: it keeps other local users'
# servers off the leaf listener of a development setup. Give the link a
# secret of its own before it leaves loopback.
export FLEETHUB_LEAF_PASSWORD=${FLEETHUB_LEAF_PASSWORD:-fleethub-dev-leaf-password}
export FLEETHUB_WEST_LEAF_REMOTE=${FLEETHUB_WEST_LEAF_REMOTE:-nats-leaf://leaf:$FLEETHUB_LEAF_PASSWORD@127.0.0.1:$FLEETHUB_EAST_LEAF_PORT}

http_port() { case $1 in east) echo 8091 ;; west) echo 8092 ;; esac; }

node_args() {
  echo --dev --nats-conf "docs/multidc/$1.conf" --data-dir "$DATA/$1" \
    --listen "127.0.0.1:$(http_port "$1")" --node-id "hub-$1"
}

if [ "${1:-}" = node ]; then
  dc=${2:?usage: $0 node DC (east or west)}
  case $dc in east|west) ;; *) echo "data centre $dc: want east or west" >&2; exit 2 ;; esac
  mkdir -p "$DATA/$dc"
  # shellcheck disable=SC2046 # the arguments hold no spaces
  exec "$BIN/hub" $(node_args "$dc")
fi

# get, keys_on, keys_off, wait_stop, stop_all (the array pids), wait_ready
. docs/dev/lib.sh

trap stop_all EXIT
trap 'stop_all; exit 0' INT TERM
keys_on

dcs=(east west)
for dc in "${dcs[@]}"; do
  mkdir -p "$DATA/$dc"
  # shellcheck disable=SC2046
  "$BIN/hub" $(node_args "$dc") --log-level warn >>"$DATA/$dc.log" 2>&1 &
  pids+=($!)
done

# Both nodes ready (their data centre's JetStream answers, every bucket,
# stream and view present).
deadline=$((SECONDS + READY_TIMEOUT))
for i in 0 1; do
  dc=${dcs[$i]}
  wait_ready "hub-$dc" "127.0.0.1:$(http_port "$dc")" "${pids[$i]}" "$DATA/$dc.log" "$deadline"
done

for dc in "${dcs[@]}"; do
  prefix=$(echo "$dc" | tr '[:lower:]' '[:upper:]')-
  port_var=FLEETHUB_$(echo "$dc" | tr '[:lower:]' '[:upper:]')_PORT
  # Registered with their types and groups in their data centre's domain
  # (the registry is one per JetStream domain).
  "$BIN/devsim" --register --devices "$DEVICES" --prefix "$prefix" --nats-url "nats://127.0.0.1:${!port_var}" >/dev/null
  "$BIN/devsim" --dev --devices "$DEVICES" --prefix "$prefix" --log-level warn \
    --url "ws://127.0.0.1:$(http_port "$dc")/ws" &
  pids+=($!)
done

echo "fleethub, two data centres: east (JetStream domain east) and west (domain west, a leaf node of east),"
echo "  $DEVICES simulated devices in each; logs: $DATA/east.log, $DATA/west.log"
echo "  NATS: east nats://127.0.0.1:$FLEETHUB_EAST_PORT, west nats://127.0.0.1:$FLEETHUB_WEST_PORT"
echo "  kill a node at any time (hub-east pid ${pids[0]}, hub-west ${pids[1]}) and start it again"
echo "  with make multidc-node DC=east or west (docs/multidc/run.sh node DC); Ctrl-C (or q) stops both"
for dc in "${dcs[@]}"; do
  echo "dashboard $dc: http://127.0.0.1:$(http_port "$dc")/"
done
echo "dev login: user admin, password admin"
wait_stop
