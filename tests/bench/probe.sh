#!/usr/bin/env bash
# Probing benchmark: vantage against Prometheus blackbox_exporter at the same rate (checks/s,
# CPU per 1,000 checks, checks per CPU-second, RSS, full TLS handshakes, TIME_WAIT), then vantage
# at 10,000 endpoints (one prober; three in one DNS server; an overload). See probe.py.
#
#   bash tests/bench/probe.sh            # ~6 minutes
#   QUICK=1 bash tests/bench/probe.sh    # smaller, shorter
#   ONLY=scale / ONLY=dns bash tests/bench/probe.sh   # only the scale runs / only 3 x 10,000 in one DNS server
#
# Needs nginx, prometheus-blackbox-exporter, openssl, taskset, ss (installed from Debian's
# packages if missing and running as root). Builds vantage in release mode. Loopback only;
# stops by itself.
set -euo pipefail
cd "$(dirname "$0")/../.."

missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
command -v prometheus-blackbox-exporter >/dev/null || missing+=(prometheus-blackbox-exporter)
command -v openssl >/dev/null || missing+=(openssl)
command -v taskset >/dev/null || missing+=(util-linux)
command -v ss >/dev/null || missing+=(iproute2)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "probe.sh: missing ${missing[*]}; install them: apt-get install ${missing[*]}" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The checks of 10,000 endpoints need more than the default 1,024 descriptors in the drivers.
ulimit -n 65536 2>/dev/null || true

cargo build --release --locked --quiet
python3 tests/bench/probe.py "$PWD/target/release/vantage"
