#!/usr/bin/env bash
# The whole-pipeline benchmark: builds the release binaries, then runs a real
# broker, the server and N workers against a single-process baseline.
#   scripts/bench.sh                                  # 8192x8192, 2 workers, 512 px tiles
#   scripts/bench.sh --workers 1,2 --tile-sizes 256,512,1024
#   scripts/bench.sh --size 32768 --no-baselines --rounds 1   # the gigapixel case
#   scripts/bench.sh --no-baselines --concurrent 8 --rounds 1   # eight uploads at once, under the memory budget
#   scripts/bench.sh --no-baselines --rounds 1 --zoom          # and the result's zoomable pyramid
#   scripts/bench.sh --no-baselines --rounds 1 --idle 10       # and what a system with no job costs
# Needs nisshi on PATH (scripts/setup.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --workspace
RUST_LOG="${RUST_LOG:-off}" exec target/release/tilepipe-bench "$@"
