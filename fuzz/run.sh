#!/usr/bin/env bash
# Fuzzes the DNS request path (target dns_request) and the zone-file loader (zone_file), each
# for a bounded time (default 60 s), or one of them:
#   bash fuzz/run.sh [seconds] [target]
# Installs cargo-fuzz if missing. libFuzzer needs nightly flags; RUSTC_BOOTSTRAP lets the
# stable toolchain accept them. Crashes are kept in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_TO_RUN="${1:-60}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
TARGETS=("${2:-dns_request}")
[ -n "${2:-}" ] || TARGETS+=(zone_file)
for target in "${TARGETS[@]}"; do
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" --sanitizer none -- \
        -max_total_time="$SECONDS_TO_RUN" -max_len=1500
done
