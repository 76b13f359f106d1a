# Sourced by docs/dev/run.sh and docs/cluster/run.sh (from the
# repository root).

# get ADDR PATH prints the body of http://ADDR/PATH and fails unless the
# answer is 200. Bash's /dev/tcp, so that nothing but bash and Go is needed.
get() {
  local host=${1%:*} port=${1##*:} status body
  exec 3<>"/dev/tcp/$host/$port" 2>/dev/null || return 1
  printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$2" "$1" >&3
  IFS= read -r -t 2 status <&3 || { exec 3<&-; return 1; }
  body=$(timeout 2 cat <&3 2>/dev/null | sed '1,/^\r\{0,1\}$/d')
  exec 3<&-
  case $status in "HTTP/1."?" 200"*) printf '%s' "$body" ;; *) return 1 ;; esac
}
