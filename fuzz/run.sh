#!/usr/bin/env bash
# Fuzzes the DNS request path for a bounded time (default 60 s):
#   bash fuzz/run.sh [seconds]
# Installs cargo-fuzz if missing. libFuzzer needs nightly flags; RUSTC_BOOTSTRAP lets the
# stable toolchain accept them. Crashes are kept in fuzz/artifacts/dns_request/.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_TO_RUN="${1:-60}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
RUSTC_BOOTSTRAP=1 cargo fuzz run dns_request --sanitizer none -- \
    -max_total_time="$SECONDS_TO_RUN" -max_len=1500
