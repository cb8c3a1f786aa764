# Helpers shared by run.sh and test.sh (sourced, not run).

export PATH="$HOME/.cargo/bin:$PWD/tools/node_modules/.bin:$PATH"

log() { printf '\033[1;34m[tilepipe]\033[0m %s\n' "$*"; }

# wait_for_port HOST:PORT SECONDS
wait_for_port() {
  local addr=$1 deadline=$((SECONDS + $2))
  until (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null; do
    ((SECONDS < deadline)) || { echo "nothing listens on $addr after $2 s" >&2; return 1; }
    sleep 0.2
  done
}

# free_port: a TCP port nothing listens on right now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_broker DIR PORT: nisshi with SQLite storage in DIR (it reads ./.env,
# so it runs from its own directory); sets BROKER_PID.
start_broker() {
  local dir=$1 port=$2
  mkdir -p "$dir"
  # Its own session: a Ctrl-C in the terminal must not stop the broker before
  # the server and workers have left their consumer groups.
  (cd "$dir" && exec setsid nisshi broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "sqlite://broker.db?mode=direct" \
      --group-initial-rebalance-delay "${BROKER_REBALANCE_DELAY:-1s}" \
      >>broker.log 2>&1) &
  BROKER_PID=$!
  wait_for_port "127.0.0.1:$port" 30
}

# supervise NAME COMMAND...: runs COMMAND again whenever it exits, reporting
# it and waiting 1 s, then 2, 4, ... up to 30 s while it keeps dying young
# (a run of a minute resets the wait): one crashing worker never takes the
# server and the broker down with it. TERM or INT stops it and COMMAND.
supervise() {
  local name=$1 delay=1 child="" status started
  shift
  trap 'if [[ -n $child ]]; then kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; fi; exit 0' TERM INT
  while true; do
    started=$SECONDS
    "$@" & child=$!
    status=0
    wait "$child" || status=$?
    child=""
    ((SECONDS - started < 60)) || delay=1
    log "$name exited with status $status; starting it again in ${delay}s"
    sleep "$delay" & wait $! || true
    delay=$((delay * 2 > 30 ? 30 : delay * 2))
  done
}
