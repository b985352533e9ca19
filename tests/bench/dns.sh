#!/usr/bin/env bash
# DNS benchmark: vantage side by side with gdnsd, Knot and NSD serving the same zone on
# loopback. Each server is pinned to CPU 0 and dnsperf to CPU 1; the figure that compares
# servers is queries per second per server CPU-second (dnsperf saturates its own core first).
# Latency percentiles come from a second, rate-limited run with dnsperf's per-query report.
# vantage runs twice: with its UDP sockets, and with `dns.xdp = ["lo"]` (AF_XDP), the latter
# last and alone, since its XDP program on lo sees every loopback packet while attached.
#
#   bash tests/bench/dns.sh [seconds per run, default 10]
#
# With VANTAGE_BEFORE=/path/to/an/older/vantage, that binary is measured too in the same run
# (rows "vantage before ..."), for a same-run comparison of a change.
#
# Installs dnsperf, gdnsd, knot and nsd from Debian's packages if missing (needs root), builds
# vantage in release mode, and prints a Markdown table. Loopback only; stops by itself.
# For the AF_XDP run it sets net.ipv4.conf.lo.route_localnet and accept_local to 1 (IPv4
# replies injected on lo are martians otherwise) and restores them at exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION="${1:-10}"

packages=()
command -v dnsperf >/dev/null 2>&1 || packages+=(dnsperf)
[ -x /usr/sbin/gdnsd ] || packages+=(gdnsd)
[ -x /usr/sbin/knotd ] || packages+=(knot)
[ -x /usr/sbin/nsd ] || packages+=(nsd)
if [ "${#packages[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
cargo build --release --locked --quiet
VANTAGE="$PWD/target/release/vantage"

WORK="$(mktemp -d)"
PIDS=()
. tests/bench/dns-common.sh   # descendants, start, cpu_seconds, ready
SYSCTLS=(net.ipv4.conf.lo.route_localnet net.ipv4.conf.lo.accept_local)
SAVED=()
for key in "${SYSCTLS[@]}"; do SAVED+=("$(sysctl -n "$key")"); done
cleanup() {
    local all=() i
    for i in "${!SYSCTLS[@]}"; do sysctl -qw "${SYSCTLS[$i]}=${SAVED[$i]}" || true; done
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
mail IN MX 10 static.example.com.
'
mkdir -p "$WORK/zones" "$WORK/gdnsd/zones" "$WORK/knot" "$WORK/nsd"
printf '%s' "$ZONE" > "$WORK/zones/example.com.zone"
# The others serve the managed name statically (the same answer vantage computes).
printf '%swww IN A 192.0.2.10\n' "$ZONE" > "$WORK/static-www.zone"
cp "$WORK/static-www.zone" "$WORK/gdnsd/zones/example.com"

printf 'static.example.com A\n' > "$WORK/q-static"
printf 'www.example.com A\n' > "$WORK/q-managed"

# vantage: static zone + managed www (one endpoint, TCP check against a local listener).
python3 -c 'import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", 15301)); s.listen(128); time.sleep(100000)' &
PIDS+=($!)
cat > "$WORK/vantage.toml" <<TOML
[[prober]]
region = "bench"
[check.t]
protocol = "tcp"
port = 15301
[dns]
listen = ["127.0.0.1:15310"]
zones_dir = "$WORK/zones"
[admin]
listen = "127.0.0.1:15311"
state_dir = "$WORK/state"
# The others run without response rate limiting too.
[dns.rrl]
responses_per_second = 0
[[record]]
name = "www.example.com"
ttl = 3600
endpoints = [{ address = "192.0.2.10", check_address = "127.0.0.1" }]
TOML

sed -e 's/15310/15312/; s/15311/15313/; s/^zones_dir = .*/&\nxdp = ["lo"]/' \
    -e "s|$WORK/state|$WORK/state-xdp|" "$WORK/vantage.toml" > "$WORK/vantage-xdp.toml"
# An older vantage, if asked for: the same configuration on other ports, without the settings
# it may not know.
BEFORE="${VANTAGE_BEFORE:-}"
sed -e 's/15310/15314/; s/15311/15315/' -e "s|$WORK/state|$WORK/state-before|" \
    -e '/^# The others run without/d; /^\[dns.rrl\]/d; /^responses_per_second/d' \
    "$WORK/vantage.toml" > "$WORK/vantage-before.toml"
sed -e 's/15314/15316/; s/15315/15317/; s/^zones_dir = .*/&\nxdp = ["lo"]/' \
    -e "s|$WORK/state-before|$WORK/state-before-xdp|" "$WORK/vantage-before.toml" > "$WORK/vantage-before-xdp.toml"

cat > "$WORK/gdnsd/config" <<CONF
options => { listen => [ 127.0.0.1:15320 ], zones_default_ttl => 3600 }
CONF

cat > "$WORK/knot/knot.conf" <<CONF
server:
    rundir: "$WORK/knot"
    listen: 127.0.0.1@15330
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "$WORK/knot"
zone:
  - domain: example.com
    storage: "$WORK"
    file: "static-www.zone"
CONF

cat > "$WORK/nsd/nsd.conf" <<CONF
server:
    ip-address: 127.0.0.1@15340
    server-count: 1
    username: ""
    zonesdir: "$WORK"
    pidfile: "$WORK/nsd/nsd.pid"
    xfrdfile: "$WORK/nsd/xfrd.state"
    zonelistfile: "$WORK/nsd/zone.list"
    database: ""
    chroot: ""
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: example.com
    zonefile: static-www.zone
CONF

rss_mib() {
    awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

run() { # name pid port queryfile
    local name=$1 pid=$2 port=$3 queries=$4
    local before after out
    before=$(cpu_seconds "$pid")
    out=$(taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$queries" -l "$DURATION" -c 4 -q 200 2>&1)
    after=$(cpu_seconds "$pid")
    local completed qps lat lost
    completed=$(echo "$out" | awk '/Queries completed:/ { print $3 }')
    lost=$(echo "$out" | awk '/Queries lost:/ { print $3 }')
    qps=$(echo "$out" | awk '/Queries per second:/ { printf "%.0f", $4 }')
    lat=$(echo "$out" | awk '/Average Latency/ { gsub(/[(),]/, ""); printf "%.3f ms (max %.3f ms)", $4 * 1000, $8 * 1000 }')
    local cpu per_core
    cpu=$(awk -v a="$after" -v b="$before" 'BEGIN { printf "%.2f", a - b }')
    per_core=$(awk -v q="$completed" -v c="$cpu" 'BEGIN { if (c > 0) printf "%.0f", q / c; else print "n/a" }')
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$qps" "$cpu" "$per_core" "$lat" "$(percentiles "$port" "$queries")" "$lost" "$(rss_mib "$pid")"
}

# Latency percentiles at a fixed load (RATE qps for 5 s), from dnsperf's per-query report.
RATE=50000
percentiles() { # port queryfile
    taskset -c 1 dnsperf -s 127.0.0.1 -p "$1" -d "$2" -l 5 -c 4 -Q "$RATE" -v 2>/dev/null |
        awk '/^> / { print $NF * 1000 }' | sort -n |
        awk '{ v[NR] = $1 } END { if (NR == 0) { print "n/a"; exit }
             p50 = v[int(NR * 0.50) > 0 ? int(NR * 0.50) : 1]; p99 = v[int(NR * 0.99) > 0 ? int(NR * 0.99) : 1]
             printf "%.3f / %.3f ms", p50, p99 }'
}

echo "starting servers (pinned to CPU 0)..." >&2
start vantage 15310 "$VANTAGE" dns --config "$WORK/vantage.toml"
V=$STARTED
ready 15311
start gdnsd 15320 /usr/sbin/gdnsd -c "$WORK/gdnsd" start
G=$STARTED
start knot 15330 /usr/sbin/knotd -c "$WORK/knot/knot.conf"
K=$STARTED
start nsd 15340 /usr/sbin/nsd -d -c "$WORK/nsd/nsd.conf"
N=$STARTED

echo
echo "dnsperf: $DURATION s per run, 4 clients, 200 queries in flight, pinned to CPU 1"
echo
echo "| server and answer | qps | server CPU s | qps per server core | avg latency | p50 / p99 at ${RATE} qps | lost | max RSS MiB |"
echo "|---|---|---|---|---|---|---|---|"
run "vantage static" "$V" 15310 "$WORK/q-static"
run "vantage managed" "$V" 15310 "$WORK/q-managed"
run "gdnsd static" "$G" 15320 "$WORK/q-static"
run "gdnsd (www static)" "$G" 15320 "$WORK/q-managed"
run "knot static" "$K" 15330 "$WORK/q-static"
run "nsd static" "$N" 15340 "$WORK/q-static"
if [ -n "$BEFORE" ]; then
    start "vantage-before" 15314 "$BEFORE" dns --config "$WORK/vantage-before.toml"
    B=$STARTED
    ready 15315
    run "vantage before static" "$B" 15314 "$WORK/q-static"
    run "vantage before managed" "$B" 15314 "$WORK/q-managed"
    kill "$B"
fi

for key in "${SYSCTLS[@]}"; do sysctl -qw "$key=1"; done
start "vantage-xdp" 15312 "$VANTAGE" dns --config "$WORK/vantage-xdp.toml"
X=$STARTED
ready 15313
run "vantage static, AF_XDP" "$X" 15312 "$WORK/q-static"
run "vantage managed, AF_XDP" "$X" 15312 "$WORK/q-managed"
if [ -n "$BEFORE" ]; then
    kill "$X"
    wait "$X" 2>/dev/null || true
    start "vantage-before-xdp" 15316 "$BEFORE" dns --config "$WORK/vantage-before-xdp.toml"
    BX=$STARTED
    ready 15317
    run "vantage before static, AF_XDP" "$BX" 15316 "$WORK/q-static"
    run "vantage before managed, AF_XDP" "$BX" 15316 "$WORK/q-managed"
fi
