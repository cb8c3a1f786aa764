#!/usr/bin/env bash
# Runs every test: unit and integration tests (each integration test starts
# its own nisshi broker), then the whole system (broker, release server, two
# workers) under Playwright in Debian's Chromium. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

scripts/setup.sh

log "format check"
cargo fmt --all -- --check

run_dir=$(mktemp -d)
log "unit and integration tests (release)"
cargo test --release --workspace 2>&1 | tee "$run_dir/cargo-test.log"

log "building the site (release)"
cargo leptos build --release
cargo build --release -p worker

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -n ${BROKER_PID:-} ]]; then kill -KILL "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; fi
  rm -rf "$run_dir"
}
trap cleanup EXIT INT TERM

broker_port=$(free_port)
http_port=$(free_port)
log "end-to-end: broker on $broker_port, server on $http_port (logs in $run_dir)"
BROKER_REBALANCE_DELAY=300ms start_broker "$run_dir/broker" "$broker_port"
export TILEPIPE_BROKERS=127.0.0.1:$broker_port
export TILEPIPE_TOPIC_PREFIX="e2e-$$-"
export TILEPIPE_DATA_DIR=$run_dir/data
export TILEPIPE_ADDR=127.0.0.1:$http_port
export LEPTOS_SITE_ROOT=target/site
# Lost quickly, so the dashboard test of a stopped worker is short.
TILEPIPE_WORKER_TIMEOUT_SECS=3 target/release/server >"$run_dir/server.log" 2>&1 & pids+=($!)
wait_for_port "$TILEPIPE_ADDR" 60
for n in 1 2 leaving; do
  TILEPIPE_WORKER_ID="e2e-worker-$n" TILEPIPE_HEARTBEAT_SECS=1 target/release/worker >"$run_dir/worker-$n.log" 2>&1 & pids+=($!)
done
leaving_pid=$!

# A second server that wants an access token (own prefix and data, no workers).
token_addr=127.0.0.1:$(free_port)
TILEPIPE_ADDR=$token_addr TILEPIPE_TOKEN=e2e-token TILEPIPE_TOPIC_PREFIX="e2e-token-$$-" \
  TILEPIPE_DATA_DIR=$run_dir/token-data target/release/server >"$run_dir/token-server.log" 2>&1 & pids+=($!)
wait_for_port "$token_addr" 60

# A third whose tasks topic has one partition, and two workers: one of them
# gets no tasks, and the dashboard says so.
narrow_addr=127.0.0.1:$(free_port)
TILEPIPE_ADDR=$narrow_addr TILEPIPE_TOPIC_PREFIX="e2e-narrow-$$-" TILEPIPE_TASK_PARTITIONS=1 \
  TILEPIPE_DATA_DIR=$run_dir/narrow-data target/release/server >"$run_dir/narrow-server.log" 2>&1 & pids+=($!)
wait_for_port "$narrow_addr" 60
for n in 1 2; do
  TILEPIPE_TOPIC_PREFIX="e2e-narrow-$$-" TILEPIPE_WORKER_ID="e2e-narrow-$n" TILEPIPE_HEARTBEAT_SECS=1 \
    target/release/worker >"$run_dir/narrow-worker-$n.log" 2>&1 & pids+=($!)
done

status=0
(cd end2end && E2E_BASE_URL="http://$TILEPIPE_ADDR" E2E_TOKEN_BASE_URL="http://$token_addr" E2E_NARROW_BASE_URL="http://$narrow_addr" \
  E2E_LEAVING_WORKER_PID=$leaving_pid npx playwright test) 2>&1 | tee "$run_dir/playwright.log" || status=$?
if ((status != 0)); then
  for f in "$run_dir"/{server,token-server,narrow-server,worker-1,worker-2}.log; do echo "--- $f"; tail -n 40 "$f"; done
fi

# One closing line for everything that ran.
count() { { grep -oE "[0-9]+ $2" "$1" || true; } | awk '{n += $1} END {print n + 0}'; }
passed=$(($(count "$run_dir/cargo-test.log" passed) + $(count "$run_dir/playwright.log" passed)))
failed=$(($(count "$run_dir/cargo-test.log" failed) + $(count "$run_dir/playwright.log" failed)))
echo "tests: $passed passed, $failed failed"
exit $status
