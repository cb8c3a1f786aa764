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

target/release/server & pids+=($!)
wait_for_port "$addr" 60
for n in 1 2; do
  id=$(hostname)-worker-$n
  supervise "worker $id" env TILEPIPE_WORKER_ID="$id" target/release/worker & pids+=($!)
done
log "tilepipe is running on http://$addr (dashboard: http://$addr/dashboard); Ctrl-C stops it"
wait -n "${pids[@]}" || true
