#!/usr/bin/env bash
# Failover latency: vantage (3 `vantage probe` processes, each in its own network namespace,
# 2 `vantage dns` pulling them) side by side with PowerDNS LUA `ifurlup` (one point of view)
# checking the same HTTPS backends at the same 1 s interval. Faults on the primary backend:
# HTTP 503, process killed (connection refused), packets dropped (nft drop), connection reset
# (nft reject with tcp reset); then the fault is lifted and the failback is timed too.
#
#   bash tests/bench/failover.sh              # 10 trials per fault and configuration (~6 min)
#   TRIALS=3 bash tests/bench/failover.sh     # shorter
#   FAULT=drop CONFIG="fall 1" VANTAGE_LOG=vantage=debug KEEP=1 bash tests/bench/failover.sh
#                                             # one fault, one column, the processes' logs kept
#
# Needs root (network namespaces), nginx, nftables, pdns-server with pdns-backend-bind (installed
# from Debian's packages if missing). Everything runs in namespaces this script creates (a
# private 10.77.0.0/24 behind a bridge in its own namespace) and removes at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" != 0 ]; then
    echo "failover.sh: needs root (network namespaces)" >&2
    exit 1
fi
missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
command -v nft >/dev/null || missing+=(nftables)
command -v pdns_server >/dev/null || missing+=(pdns-server)
[ -e /usr/lib/x86_64-linux-gnu/pdns/libbindbackend.so ] || missing+=(pdns-backend-bind)
command -v openssl >/dev/null || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
cargo build --release --locked --quiet

NS=(vb-sw vb-be vb-p1 vb-p2 vb-p3 vb-dns)
cleanup() {
    for ns in "${NS[@]}"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf /etc/netns/vb-dns
    if [ -n "${KEEP:-}" ] && [ -n "${WORK:-}" ]; then
        echo "failover.sh: the logs are kept in $WORK" >&2
    else
        rm -rf "${WORK:-/nonexistent}"
    fi
}
trap cleanup EXIT
cleanup
for ns in "${NS[@]}"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n vb-sw link add br0 type bridge
ip -n vb-sw link set br0 up
attach() { # namespace, addresses...
    local ns=$1; shift
    ip -n vb-sw link add "v-$ns" type veth peer name eth0 netns "$ns"
    ip -n vb-sw link set "v-$ns" master br0 up
    for a in "$@"; do ip -n "$ns" addr add "$a/24" dev eth0; done
    ip -n "$ns" link set eth0 up
}
attach vb-be 10.77.0.10 10.77.0.11
attach vb-p1 10.77.0.21
attach vb-p2 10.77.0.22
attach vb-p3 10.77.0.23
attach vb-dns 10.77.0.30
# PowerDNS checks over HTTPS with libcurl, which trusts the system's bundle: inside vb-dns that
# bundle is the benchmark's CA (ip netns exec mounts /etc/netns/vb-dns/* over /etc).
mkdir -p /etc/netns/vb-dns/ssl/certs
WORK=$(mktemp -d /tmp/vantage-failover-bench-XXXX)
chmod 755 "$WORK"   # nginx's workers look for the 503 flag file in it
openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/ca.key"
openssl req -x509 -new -key "$WORK/ca.key" -days 30 -subj "/CN=bench CA" -out "$WORK/ca.pem" 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/app.key"
openssl req -new -key "$WORK/app.key" -subj "/CN=app.test" -out "$WORK/app.csr" 2>/dev/null
printf 'subjectAltName=DNS:app.test\n' > "$WORK/ext"
openssl x509 -req -in "$WORK/app.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
    -days 30 -extfile "$WORK/ext" -out "$WORK/app.pem" 2>/dev/null
cp "$WORK/ca.pem" /etc/netns/vb-dns/ssl/certs/ca-certificates.crt
ip netns exec vb-dns python3 tests/bench/failover.py "$PWD/target/release/vantage" "$WORK"
