#!/usr/bin/env bash
# DNSSEC benchmark: answers to DO queries from vantage signing online, side by side with the
# same vantage unsigned and with Knot DNS signing online (mod-onlinesign, ECDSA P-256 like
# vantage's key; vantage with an Ed25519 key too), all serving the same zone on loopback. Each server is pinned to CPU 0 and
# dnsperf to CPU 1; the figure that compares servers is queries per second per server
# CPU-second.
#
# Query sets: a static name; the managed name; a mix of names (positive, NODATA, NXDOMAIN,
# wildcard, CNAME); and 200,000 names that do not exist, each asked once, so that every
# answer needs a signature made for it (the worst case: its per-core rate is the cost of one
# signature, which is the most a failover's first answer can wait for signing).
#
#   bash tests/bench/dnssec.sh [seconds per run, default 10]
#
# Installs dnsperf and knot from Debian's packages if missing (needs root), builds vantage in
# release mode, and prints a Markdown table. Loopback only; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION="${1:-10}"

packages=()
command -v dnsperf >/dev/null 2>&1 || packages+=(dnsperf)
[ -x /usr/sbin/knotd ] || packages+=(knot)
if [ "${#packages[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
cargo build --release --locked --quiet
VANTAGE="$PWD/target/release/vantage"

WORK="$(mktemp -d)"
PIDS=()
. tests/bench/dns-common.sh   # descendants, start, cpu_seconds, ready
cleanup() {
    local all=()
    for pid in "${PIDS[@]}"; do all+=($(descendants "$pid")); done
    for pid in "${all[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

ZONE='$TTL 3600
@   IN SOA ns1.example.com. hostmaster.example.com. ( 1 3600 600 604800 60 )
@   IN NS  ns1.example.com.
ns1 IN A   127.0.0.1
static IN A 192.0.2.80
static IN AAAA 2001:db8::80
mail IN MX 10 static.example.com.
alias IN CNAME static.example.com.
*.wild IN A 192.0.2.99
'
mkdir -p "$WORK/zones" "$WORK/knot/zones"
printf '%s' "$ZONE" > "$WORK/zones/example.com.zone"
printf '%swww IN A 192.0.2.10\n' "$ZONE" > "$WORK/knot/zones/example.com.zone"

printf 'static.example.com A\n' > "$WORK/q-static"
printf 'www.example.com A\n' > "$WORK/q-managed"
printf '%s\n' 'static.example.com A' 'www.example.com A' 'mail.example.com MX' \
    'static.example.com TXT' 'nope.example.com A' 'a.wild.example.com A' \
    'alias.example.com A' 'example.com DNSKEY' 'example.com SOA' 'www.example.com AAAA' > "$WORK/q-mix"
python3 -c '
import random
r = random.Random(7)
for _ in range(200000):
    print("%08x.example.com A" % r.getrandbits(32))' > "$WORK/q-random"

python3 -c 'import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", 15401)); s.listen(128); time.sleep(100000)' &
PIDS+=($!)
"$VANTAGE" dnssec keygen --out "$WORK/example.com.pem" >/dev/null
"$VANTAGE" dnssec keygen --algorithm ed25519 --out "$WORK/example.com-ed25519.pem" >/dev/null
vantage_config() { # dns-port admin-port state signed|ed25519|plain
    cat <<TOML
[[prober]]
region = "bench"
[check.t]
protocol = "tcp"
port = 15401
[dns]
listen = ["127.0.0.1:$1"]
zones_dir = "$WORK/zones"
[admin]
listen = "127.0.0.1:$2"
state_dir = "$WORK/$3"
[dns.rrl]
responses_per_second = 0
[[record]]
name = "www.example.com"
ttl = 3600
endpoints = [{ address = "192.0.2.10", check_address = "127.0.0.1" }]
TOML
    if [ "$4" = signed ]; then
        printf '[dns.dnssec."example.com"]\nkeys = [{ file = "%s" }]\n' "$WORK/example.com.pem"
    elif [ "$4" = ed25519 ]; then
        printf '[dns.dnssec."example.com"]\nalgorithm = "ed25519"\nkeys = [{ file = "%s" }]\n' "$WORK/example.com-ed25519.pem"
    fi
}
vantage_config 15410 15411 state-plain plain > "$WORK/plain.toml"
vantage_config 15412 15413 state-signed signed > "$WORK/signed.toml"
vantage_config 15414 15415 state-ed25519 ed25519 > "$WORK/ed25519.toml"

cat > "$WORK/knot/knot.conf" <<CONF
server:
    rundir: "$WORK/knot"
    listen: 127.0.0.1@15430
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "$WORK/knot"
policy:
  - id: p
    algorithm: ecdsap256sha256
    single-type-signing: on
mod-onlinesign:
  - id: s
    policy: p
zone:
  - domain: example.com
    storage: "$WORK/knot/zones"
    file: "example.com.zone"
    module: mod-onlinesign/s
CONF

run() { # name pid port queryfile [dnsperf flags]
    local name=$1 pid=$2 port=$3 queries=$4; shift 4
    local before after out
    before=$(cpu_seconds "$pid")
    out=$(taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$queries" -l "$DURATION" -c 4 -q 200 "$@" 2>&1)
    after=$(cpu_seconds "$pid")
    local completed qps lost cpu per_core
    completed=$(echo "$out" | awk '/Queries completed:/ { print $3 }')
    lost=$(echo "$out" | awk '/Queries lost:/ { print $3 }')
    qps=$(echo "$out" | awk '/Queries per second:/ { printf "%.0f", $4 }')
    cpu=$(awk -v a="$after" -v b="$before" 'BEGIN { printf "%.2f", a - b }')
    per_core=$(awk -v q="$completed" -v c="$cpu" 'BEGIN { if (c > 0) printf "%.0f", q / c; else print "n/a" }')
    local size
    size=$(echo "$out" | awk '/Average packet size:/ { print $NF }')
    printf '| %s | %s | %s | %s | %s | %s |\n' "$name" "$qps" "$cpu" "$per_core" "$size" "$lost"
}

echo "starting servers (pinned to CPU 0)..." >&2
start vantage-plain 15410 "$VANTAGE" dns --config "$WORK/plain.toml"
P=$STARTED
ready 15411
start vantage-signed 15412 "$VANTAGE" dns --config "$WORK/signed.toml"
S=$STARTED
ready 15413
start vantage-ed25519 15414 "$VANTAGE" dns --config "$WORK/ed25519.toml"
E=$STARTED
ready 15415
start knot 15430 /usr/sbin/knotd -c "$WORK/knot/knot.conf"
K=$STARTED

echo
echo "dnsperf: $DURATION s per run, 4 clients, 200 queries in flight, pinned to CPU 1; DO set where it says signed"
echo
echo "| server and queries | qps | server CPU s | qps per server core | avg response bytes | lost |"
echo "|---|---|---|---|---|---|"
for set in static managed mix random; do
    run "vantage unsigned, $set" "$P" 15410 "$WORK/q-$set"
    run "vantage signed, $set" "$S" 15412 "$WORK/q-$set" -D
    run "vantage signed (Ed25519), $set" "$E" 15414 "$WORK/q-$set" -D
    run "knot onlinesign, $set" "$K" 15430 "$WORK/q-$set" -D
done
