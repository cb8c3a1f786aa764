#!/usr/bin/env bash
# Installs everything tilepipe needs on a fresh Debian machine, idempotently:
# apt packages, the wasm target, cargo-leptos, the wasm-bindgen CLI matching
# Cargo.lock, nisshi (the Kafka-protocol broker), wasm-opt and Playwright from npm,
# and OpenCV from PyPI (the reference for tests and benchmarks).
# Each step checks what is already there, so a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }
export PATH="$HOME/.cargo/bin:$PATH"

# --- apt --------------------------------------------------------------------
apt_pkgs=(build-essential pkg-config zlib1g-dev chromium python3-venv)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt: installing ${missing[*]}"
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

# --- rust targets -------------------------------------------------------------
if ! rustup target list --installed | grep -q wasm32-unknown-unknown; then
  log "rustup: adding wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

# --- cargo-installed tools ----------------------------------------------------
# LTO off: these are tools, not hot paths, and fat LTO more than doubles install time.
export CARGO_PROFILE_RELEASE_LTO=false

if ! have nisshi || ! nisshi --version 2>/dev/null | grep -q '0\.8\.1'; then
  log "cargo: installing nisshi 0.8.1 (lean sqlite build, ~10 min)"
  cargo +nightly install --locked nisshi@0.8.1 --no-default-features --features libsql
fi

if ! have cargo-leptos || ! cargo-leptos --version 2>/dev/null | grep -q '0\.3\.11'; then
  log "cargo: installing cargo-leptos 0.3.11 (~9 min)"
  cargo +nightly install --locked cargo-leptos@0.3.11 --features no_downloads
fi

# The wasm-bindgen CLI must match the library version in Cargo.lock exactly.
wb_version=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock 2>/dev/null || true)
wb_version=${wb_version:-0.2.130}
if ! have wasm-bindgen || ! wasm-bindgen --version 2>/dev/null | grep -q "$wb_version"; then
  log "cargo: installing wasm-bindgen-cli $wb_version"
  cargo install wasm-bindgen-cli --version "$wb_version"
fi

# --- npm ----------------------------------------------------------------------
# wasm-opt from npm's binaryen: Debian's binaryen 108 emits wasm that breaks in browsers.
# OpenSeadragon, the deep-zoom viewer of the job page, served from public/vendor.
osd=tools/node_modules/openseadragon/build/openseadragon
if [[ ! -x tools/node_modules/.bin/wasm-opt || ! -f $osd/openseadragon.min.js ]]; then
  log "npm: installing binaryen (wasm-opt) and OpenSeadragon"
  (cd tools && npm ci --no-audit --no-fund --loglevel=error)
fi
if ! cmp -s "$osd/openseadragon.min.js" public/vendor/openseadragon/openseadragon.min.js; then
  mkdir -p public/vendor/openseadragon
  cp -r "$osd/openseadragon.min.js" "$osd/images" public/vendor/openseadragon/
fi
if [[ ! -d end2end/node_modules/@playwright/test ]]; then
  log "npm: installing Playwright (browser comes from Debian's chromium)"
  (cd end2end && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi

# --- PyPI ---------------------------------------------------------------------
# OpenCV: the reference the operations are tested (pipeline/tests/opencv.rs)
# and benchmarked against; confluent-kafka for the Python reference worker
# (examples/python-worker), which the conformance kit checks.
if ! tools/venv/bin/python -c 'import cv2, confluent_kafka' >/dev/null 2>&1; then
  log "pip: installing OpenCV and confluent-kafka into tools/venv"
  python3 -m venv tools/venv
  tools/venv/bin/pip install -q --disable-pip-version-check -r tools/requirements.txt \
    -r examples/python-worker/requirements.txt
fi

log "all tools present"
