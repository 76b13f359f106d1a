# Shell functions of docs/dev/run.sh and docs/cluster/run.sh, sourced from
# the repository root. Nothing but bash and coreutils is needed.

# get ADDR PATH prints the body of http://ADDR/PATH and fails unless the
# answer is 200 (bash's /dev/tcp: no curl needed).
get() {
  local host=${1%:*} port=${1##*:} status body
  { exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null || return 1
  printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$2" "$1" >&3
  IFS= read -r -t 2 status <&3 || { exec 3<&-; return 1; }
  body=$(timeout 2 cat <&3 2>/dev/null | sed '1,/^\r\{0,1\}$/d')
  exec 3<&-
  case $status in "HTTP/1."?" 200"*) printf '%s' "$body" ;; *) return 1 ;; esac
}

# keys_on: on a terminal, keys arrive one at a time (a read waits at most
# 1 s), unechoed, and Ctrl-C is a key, not a signal, so that make sees the
# script end cleanly instead of an interrupt. keys_off restores the
# terminal; call it on every exit.
tty_state=
keys_on() {
  if [ -t 0 ]; then
    tty_state=$(stty -g)
    stty -isig -icanon -echo min 0 time 10
  fi
}
keys_off() {
  if [ -n "$tty_state" ]; then
    stty "$tty_state"
    tty_state=
  fi
}

# wait_stop [PID] returns when Ctrl-C or q is pressed, or PID (when given)
# has ended; without a terminal, when PID (or every child) has ended, or a
# trapped SIGINT or SIGTERM comes.
wait_stop() {
  if [ -z "$tty_state" ]; then
    wait "$@" || true
    return
  fi
  local key
  while [ $# -eq 0 ] || kill -0 "$1" 2>/dev/null; do
    key=$(dd bs=1 count=1 2>/dev/null || true)
    case $key in $'\x03' | q | Q) return ;; esac
  done
}

# stop_all ends every process in the array pids (SIGTERM, SIGKILL after
# 10 s) and restores the terminal: the scripts' EXIT trap.
pids=()
stop_all() {
  trap - EXIT INT TERM
  keys_off
  [ ${#pids[@]} -gt 0 ] || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  local alive p
  for _ in $(seq 100); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && return 0
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
}

# wait_ready NAME ADDR PID LOG DEADLINE waits until http://ADDR/readyz
# answers 200; it exits 1, with the end of LOG, when PID ends first or
# SECONDS reaches DEADLINE.
wait_ready() {
  until get "$2" /readyz >/dev/null; do
    if ! kill -0 "$3" 2>/dev/null; then
      echo "$1 exited; the end of $4:" >&2
      tail -n 20 "$4" >&2
      exit 1
    fi
    if [ "$SECONDS" -ge "$5" ]; then
      echo "$1 not ready after ${READY_TIMEOUT}s; the end of $4:" >&2
      tail -n 20 "$4" >&2
      exit 1
    fi
    sleep 0.2
  done
}
