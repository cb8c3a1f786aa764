#!/usr/bin/env bash
# Installs what is missing, builds in release mode, and runs the whole system
# on local defaults: a nisshi broker (data/broker), the server on
# http://127.0.0.1:3000, and two workers. A worker that dies is reported and
# restarted with a backoff; Ctrl-C stops everything cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

scripts/setup.sh
log "building (release)"
cargo leptos build --release
cargo build --release -p worker

data=${TILEPIPE_DATA_DIR:-./data}
addr=${TILEPIPE_ADDR:-127.0.0.1:3000}
broker_port=${TILEPIPE_BROKER_PORT:-9092}
export TILEPIPE_BROKERS=${TILEPIPE_BROKERS:-127.0.0.1:$broker_port}
export TILEPIPE_DATA_DIR=$data TILEPIPE_ADDR=$addr LEPTOS_SITE_ROOT=target/site

pids=()
stop() {
  trap - INT TERM EXIT
  log "stopping"
  # Workers and server first (they leave their groups), the broker last.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -n ${BROKER_PID:-} ]]; then kill -TERM "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; fi
}
trap stop INT TERM EXIT

if [[ $TILEPIPE_BROKERS == "127.0.0.1:$broker_port" ]]; then
  log "starting nisshi on 127.0.0.1:$broker_port (data in $data/broker)"
  start_broker "$data/broker" "$broker_port"
fi

# Runs a worker again whenever it exits, waiting 1 s, then 2, 4, ... up to
# 30 s while it keeps dying young: one crash (or a poison message) never
# takes down the server and the broker with it. TERM stops it and its worker.
supervise_worker() {
  local id=$1 delay=1 child="" status started
  trap 'if [[ -n $child ]]; then kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; fi; exit 0' TERM INT
  while true; do
    started=$SECONDS
    TILEPIPE_WORKER_ID=${TILEPIPE_WORKER_ID:-$id} target/release/worker & child=$!
    status=0
    wait "$child" || status=$?
    child=""
    ((SECONDS - started < 60)) || delay=1
    log "worker $id exited with status $status; restarting it in ${delay}s"
    sleep "$delay" & wait $! || true
    delay=$((delay * 2 > 30 ? 30 : delay * 2))
  done
}

target/release/server & pids+=($!)
wait_for_port "$addr" 60
for n in 1 2; do
  supervise_worker "$(hostname)-worker-$n" & pids+=($!)
done
log "tilepipe is running on http://$addr (dashboard: http://$addr/dashboard); Ctrl-C stops it"
wait -n "${pids[@]}" || true
