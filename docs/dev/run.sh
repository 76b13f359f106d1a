#!/usr/bin/env bash
# make run: one hub node with an embedded NATS server (JetStream on) in
# --dev mode, then, once its /readyz answers, a simulated fleet whose
# robots are first registered with their types and groups (devsim
# --register), so that group pushes and --where reach them. The dashboard
# address and the dev login are the last lines printed. Ctrl-C (or q)
# stops both and exits 0.
#
# On a terminal Ctrl-C is read as a key (the terminal's signal keys are
# off while this runs, and restored on exit) so that make sees a clean
# exit instead of an interrupt; without a terminal, SIGINT and SIGTERM do
# the same.
#
# BIN (bin), DATA (./data), DEVICES (12), LISTEN (127.0.0.1:8080),
# NATS_LISTEN (127.0.0.1:4222, the embedded NATS server's client address,
# where hubctl looks by default) and DEVSIM_FLAGS (more devsim flags, e.g.
# --disconnect-rate 0) can be set in the environment; arguments are passed
# to the hub.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-bin}
DATA=${DATA:-./data}
DEVICES=${DEVICES:-12}
LISTEN=${LISTEN:-127.0.0.1:8080}
NATS_LISTEN=${NATS_LISTEN:-127.0.0.1:4222}
DEVSIM_FLAGS=${DEVSIM_FLAGS:-}
READY_TIMEOUT=${READY_TIMEOUT:-60}

tty_state=
if [ -t 0 ]; then
  tty_state=$(stty -g)
  # Keys arrive one at a time (a read waits at most 1 s), unechoed, and
  # Ctrl-C is a key, not a signal.
  stty -isig -icanon -echo min 0 time 10
fi
hub= sim=
stop() {
  trap - EXIT INT TERM
  [ -n "$tty_state" ] && stty "$tty_state"
  [ -n "$sim" ] && kill -TERM "$sim" 2>/dev/null
  [ -n "$hub" ] && kill -TERM "$hub" 2>/dev/null
  for p in $sim $hub; do wait "$p" 2>/dev/null || true; done
}
trap stop EXIT
trap 'stop; exit 0' INT TERM

"$BIN/hub" --dev --data-dir "$DATA" --listen "$LISTEN" --nats-listen "$NATS_LISTEN" "$@" &
hub=$!

deadline=$((SECONDS + READY_TIMEOUT))
until curl -fsS -o /dev/null --max-time 2 "http://$LISTEN/readyz" 2>/dev/null; do
  if ! kill -0 "$hub" 2>/dev/null; then
    hub=
    echo "the hub exited before it was ready (its log is above)" >&2
    exit 1
  fi
  if [ $SECONDS -ge $deadline ]; then
    echo "the hub is not ready after ${READY_TIMEOUT}s (GET http://$LISTEN/readyz)" >&2
    exit 1
  fi
  sleep 0.2
done

# The registry entries first (hubctl device add for each robot, as
# devsim --print-registry shows), so each robot's session has its group;
# on the NATS system the hub uses (HUB_NATS_URL, when set, replaces the
# embedded server).
"$BIN/devsim" --register --devices "$DEVICES" --nats-url "${HUB_NATS_URL:-nats://$NATS_LISTEN}"

# shellcheck disable=SC2086 # DEVSIM_FLAGS is a list of flags
"$BIN/devsim" --dev --devices "$DEVICES" --url "ws://$LISTEN/ws" --log-level warn $DEVSIM_FLAGS &
sim=$!

# The banner comes last: after the fleet's connections (at most 15 s).
deadline=$((SECONDS + 15))
while [ $SECONDS -lt $deadline ] && kill -0 "$sim" 2>/dev/null; do
  n=$(curl -fsS --max-time 2 "http://$LISTEN/healthz" 2>/dev/null | sed -n 's/.*"sessions":\([0-9]*\).*/\1/p')
  [ "${n:-0}" -ge "$DEVICES" ] && break
  sleep 0.2
done

secret=fleethub-dev-master-secret-do-not-use-in-production
bin=$(cd "$BIN" && pwd)
nats_env=
[ "$NATS_LISTEN" != 127.0.0.1:4222 ] && nats_env=" HUB_NATS_URL=nats://$NATS_LISTEN"
cat <<MSG

  fleethub is running (dev mode: never for production)
  dashboard       http://$LISTEN/   user admin, password admin
  devices         $DEVICES simulated robots (devsim), registered: hubctl device list
  master secret   $secret
  in a shell      export PATH="$bin:\$PATH" SECRET=$secret$nats_env
  stop            Ctrl-C (or q)

MSG

if [ -n "$tty_state" ]; then
  while kill -0 "$hub" 2>/dev/null; do
    key=$(dd bs=1 count=1 2>/dev/null || true)
    case $key in $'\x03' | q | Q) break ;; esac
  done
else
  wait "$hub" || true
fi
