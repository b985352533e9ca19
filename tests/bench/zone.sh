#!/usr/bin/env bash
# Zone store benchmark: a zone of N records (default 1,000,000: A, AAAA, TXT, MX and CNAME
# at distinct names) loaded, served and reloaded by vantage and by Knot DNS side by side.
# Prints, per server: time from start to answering the zone's last record, steady RSS after
# load, the peak RSS during a reload, the RSS after the reload settles, and how many of the
# queries sent every 20 ms during the reload went unanswered.
#
#   bash tests/bench/zone.sh [records, default 1000000]
#
# Installs knot and knot-dnsutils (kdig) from Debian's packages if missing (needs root), builds
# vantage in release mode. Loopback only; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
RECORDS="${1:-1000000}"

packages=()
[ -x /usr/sbin/knotd ] || packages+=(knot)
command -v kdig >/dev/null 2>&1 || packages+=(knot-dnsutils)
if [ "${#packages[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
cargo build --release --locked --quiet
VANTAGE="$PWD/target/release/vantage"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# The zone: records spread over five types, one name each.
mkdir -p "$WORK/zones" "$WORK/knot"
python3 - "$RECORDS" > "$WORK/zones/bench.test.zone" <<'EOF'
import sys
n = int(sys.argv[1])
out = sys.stdout
out.write("$ORIGIN bench.test.\n$TTL 3600\n@ SOA ns1 hostmaster 1 3600 600 604800 300\n@ NS ns1\nns1 A 192.0.2.53\n")
for i in range(n - 3):
    kind = i % 10
    if kind < 6:
        out.write(f"h{i} A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}\n")
    elif kind < 8:
        out.write(f"h{i} AAAA 2001:db8::{i >> 16:x}:{i & 65535:x}\n")
    elif kind == 8:
        out.write(f"h{i} TXT \"record {i}\"\n")
    else:
        out.write(f"h{i} MX 10 h{i - 1}\n" if i % 20 == 9 else f"h{i} CNAME h{i - 1}\n")
EOF
cp "$WORK/zones/bench.test.zone" "$WORK/knot/bench.test.zone"
LAST="h$((RECORDS - 4)).bench.test"
LAST_TYPE=$(tail -1 "$WORK/zones/bench.test.zone" | awk '{print $2}')
SIZE=$(du -m "$WORK/zones/bench.test.zone" | cut -f1)

now() { date +%s.%N; }
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
mib() { echo "scale=0; $1 / 1024" | bc; }

answers() { # port: true once the last record is answered (a NOERROR reply with data)
    python3 - "$1" "$LAST" "$LAST_TYPE" <<'PY'
import socket, struct, sys
port, name, rtype = int(sys.argv[1]), sys.argv[2], sys.argv[3]
codes = {"A": 1, "AAAA": 28, "TXT": 16, "MX": 15, "CNAME": 5}
q = struct.pack(">HHHHHH", 7, 0, 1, 0, 0, 0)
q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
q += struct.pack(">HH", codes[rtype], 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.2)
try:
    s.sendto(q, ("127.0.0.1", port))
    r = s.recv(4096)
except OSError:
    sys.exit(1)
sys.exit(0 if r[3] & 15 == 0 and struct.unpack(">H", r[6:8])[0] > 0 else 1)
PY
}

wait_answer() { # port pid: seconds until the last record is answered
    local start=$2 deadline
    deadline=$(($(date +%s) + 300))
    until answers "$1"; do
        [ "$(date +%s)" -lt "$deadline" ] || { echo "no answer within 300 s" >&2; exit 1; }
        sleep 0.05
    done
    echo "$(now) - $start" | bc
}

# During a reload: the peak RSS (VmHWM reset first) and the queries that went unanswered.
reload_and_watch() { # pid port command...
    local pid=$1 port=$2 sent=0 lost=0 settle
    shift 2
    echo 5 > "/proc/$pid/clear_refs"
    "$@" >/dev/null
    settle=$(($(date +%s) + 60))
    # Queries every 20 ms while the reload runs (until RSS falls back or 60 s pass).
    while [ "$(date +%s)" -lt "$settle" ]; do
        sent=$((sent + 1))
        answers "$port" || lost=$((lost + 1))
        if [ "$sent" -gt 50 ] && [ "$(reload_done)" = yes ]; then break; fi
        sleep 0.02
    done
    echo "$(hwm "$pid") $sent $lost"
}

# --- vantage
VPORT=$(free_port)
APORT=$(free_port)
cat > "$WORK/fleet.toml" <<EOF
[[prober]]
region = "bench"
[dns]
listen = ["127.0.0.1:$VPORT"]
zones_dir = "$WORK/zones"
[admin]
listen = "127.0.0.1:$APORT"
state_dir = "$WORK/state"
EOF
START=$(now)
RUST_LOG=warn "$VANTAGE" dns --config "$WORK/fleet.toml" 2>"$WORK/vantage.log" &
VPID=$!
PIDS+=("$VPID")
V_LOAD=$(wait_answer "$VPORT" "$START")
sleep 2
V_RSS=$(rss "$VPID")
reloads() { curl -s "http://127.0.0.1:$APORT/metrics" | awk '/^vantage_config_reloads_total\{result="success"\}/ {print $2}'; }
BEFORE=$(reloads); BEFORE=${BEFORE:-0}
reload_done() { [ "$(reloads)" != "$BEFORE" ] && echo yes || echo no; }
read -r V_PEAK V_SENT V_LOST < <(reload_and_watch "$VPID" "$VPORT" kill -HUP "$VPID")
sleep 3
V_AFTER=$(rss "$VPID")
kill "$VPID"; wait "$VPID" 2>/dev/null || true

# --- Knot
KPORT=$(free_port)
cat > "$WORK/knot/knot.conf" <<EOF
server:
    rundir: "$WORK/knot"
    listen: 127.0.0.1@$KPORT
control:
    listen: "$WORK/knot/knot.sock"
database:
    storage: "$WORK/knot"
zone:
  - domain: bench.test
    storage: "$WORK/knot"
    file: "bench.test.zone"
    journal-content: none
    zonefile-sync: -1
EOF
START=$(now)
/usr/sbin/knotd -c "$WORK/knot/knot.conf" >"$WORK/knot.log" 2>&1 &
KPID=$!
PIDS+=("$KPID")
K_LOAD=$(wait_answer "$KPORT" "$START")
sleep 2
K_RSS=$(rss "$KPID")
serial() { kdig @127.0.0.1 -p "$KPORT" bench.test SOA +short 2>/dev/null | awk '{print $3}'; }
# Knot reloads only a changed file: bump the serial.
sed -i '0,/SOA ns1 hostmaster 1 /s//SOA ns1 hostmaster 2 /' "$WORK/knot/bench.test.zone"
reload_done() { [ "$(serial)" = 2 ] && echo yes || echo no; }
read -r K_PEAK K_SENT K_LOST < <(reload_and_watch "$KPID" "$KPORT" knotc -s "$WORK/knot/knot.sock" zone-reload bench.test)
sleep 3
K_AFTER=$(rss "$KPID")

echo
echo "Zone of $RECORDS records ($SIZE MiB of zone file), loaded, served and reloaded:"
echo
echo "| server | load to first answer | steady RSS | reload peak RSS | RSS after reload | queries lost during reload |"
echo "|---|---|---|---|---|---|"
printf "| vantage | %.2f s | %s MiB | %s MiB | %s MiB | %s of %s |\n" "$V_LOAD" "$(mib "$V_RSS")" "$(mib "$V_PEAK")" "$(mib "$V_AFTER")" "$V_LOST" "$V_SENT"
printf "| Knot DNS | %.2f s | %s MiB | %s MiB | %s MiB | %s of %s |\n" "$K_LOAD" "$(mib "$K_RSS")" "$(mib "$K_PEAK")" "$(mib "$K_AFTER")" "$K_LOST" "$K_SENT"
