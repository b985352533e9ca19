#!/usr/bin/env bash
# Amplification and flood benchmark: vantage with its defaults, Knot DNS with its defaults, and
# Knot with its RRL module (rate-limit 200, slip 2, as vantage's defaults) serve the same zone
# on loopback. Prints per server:
#   - the worst amplification factor (reply bytes / query bytes over UDP) among queries for
#     big answers (TXT, ANY, MX with many targets, NXDOMAIN) with no EDNS and EDNS buffers of
#     512, 1232, 4096 and 65535 bytes, and the largest reply;
#   - a flood of one name from one source at 5,000 queries per second for 2 s: replies in full,
#     truncated (slipped) and none; and how many of 50 queries from another network were
#     answered meanwhile.
#
#   bash tests/bench/amplification.sh
#
# Installs knot from Debian's packages if missing (needs root), builds vantage in release mode.
# Loopback only (127.0.0.1 and 127.0.1.1); stops by itself.
set -euo pipefail
cd "$(dirname "$0")/../.."

[ -x /usr/sbin/knotd ] || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends knot >/dev/null
}
cargo build --release --locked --quiet
VANTAGE="$PWD/target/release/vantage"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.2
    cat "$WORK"/*.log >&2 || true; rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

mkdir -p "$WORK/zones" "$WORK/knot" "$WORK/knot-rrl"
python3 - > "$WORK/zones/amp.test.zone" <<'EOF'
print("$ORIGIN amp.test.\n$TTL 3600\n@ SOA ns1 hostmaster 1 3600 600 604800 300\n@ NS ns1\nns1 A 192.0.2.53")
for i in range(40):
    print(f'big TXT "{str(i % 10) * 250}"')
for i in range(30):
    print(f"@ MX {i} mx{i}")
    print(f"mx{i} A 192.0.2.{i + 1}")
    print(f"mx{i} AAAA 2001:db8::{i + 1:x}")
for i in range(20):
    print(f"@ TXT \"apex text {i} {'x' * 200}\"")
print("www A 192.0.2.80")
EOF
cp "$WORK/zones/amp.test.zone" "$WORK/knot/amp.test.zone"
cp "$WORK/zones/amp.test.zone" "$WORK/knot-rrl/amp.test.zone"

VPORT=$(free_port)
cat > "$WORK/fleet.toml" <<EOF
[[prober]]
region = "bench"
[dns]
listen = ["127.0.0.1:$VPORT"]
zones_dir = "$WORK/zones"
[admin]
listen = "127.0.0.1:$(free_port)"
state_dir = "$WORK/state"
EOF
RUST_LOG=warn "$VANTAGE" dns --config "$WORK/fleet.toml" 2>"$WORK/vantage.log" &
PIDS+=($!)

knot_conf() { # dir port module
    cat <<EOF
server:
    rundir: "$1"
    listen: 127.0.0.1@$2
database:
    storage: "$1"
$3
zone:
  - domain: amp.test
    storage: "$1"
    file: "amp.test.zone"
$4
EOF
}
KPORT=$(free_port)
knot_conf "$WORK/knot" "$KPORT" "" "" > "$WORK/knot/knot.conf"
/usr/sbin/knotd -c "$WORK/knot/knot.conf" >"$WORK/knot.log" 2>&1 &
PIDS+=($!)
RPORT=$(free_port)
knot_conf "$WORK/knot-rrl" "$RPORT" "mod-rrl:
  - id: default
    rate-limit: 200
    slip: 2" "    module: mod-rrl/default" > "$WORK/knot-rrl/knot.conf"
/usr/sbin/knotd -c "$WORK/knot-rrl/knot.conf" >"$WORK/knot-rrl.log" 2>&1 &
PIDS+=($!)

python3 - "$VPORT" "$KPORT" "$RPORT" <<'EOF'
import socket, struct, sys, time

servers = [("vantage (defaults)", int(sys.argv[1])), ("Knot (defaults)", int(sys.argv[2])),
           ("Knot with mod-rrl 200/s, slip 2", int(sys.argv[3]))]

def query(name, qtype, edns, qid=1):
    q = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 1 if edns else 0)
    q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    q += struct.pack(">HH", qtype, 1)
    if edns:
        q += b"\0" + struct.pack(">HHIH", 41, edns, 0, 0)
    return q

def ask(port, q, source="127.0.0.1", timeout=1.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((source, 0))
    s.settimeout(timeout)
    s.sendto(q, ("127.0.0.1", port))
    try:
        return s.recv(65535)
    except OSError:
        return None
    finally:
        s.close()

for _, port in servers:
    deadline = time.time() + 30
    while ask(port, query("www.amp.test", 1, None), timeout=0.2) is None:
        if time.time() > deadline:
            sys.exit(f"no answer on port {port}")
        time.sleep(0.1)

cases = [(name, qtype, edns) for name, qtype in
         [("big.amp.test", 16), ("amp.test", 255), ("amp.test", 15), ("amp.test", 16), ("nope.amp.test", 1)]
         for edns in [None, 512, 1232, 4096, 65535]]
print()
print("| server | worst amplification | its query | largest reply | flood of 10,000 queries in 2 s: full / truncated / none | another network answered |")
print("|---|---|---|---|---|---|")
for label, port in servers:
    worst, worst_case, largest = 0.0, None, 0
    for name, qtype, edns in cases:
        q = query(name, qtype, edns)
        r = ask(port, q)
        if r is None:
            continue
        largest = max(largest, len(r))
        if len(r) / len(q) > worst:
            worst, worst_case = len(r) / len(q), f"{name} type {qtype} EDNS {edns or 'none'}"
    # The flood: one source, one name, 5,000 queries per second for 2 s.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.1.1", 0))
    other.setblocking(False)
    full = truncated = 0
    answered_other = 0
    start = time.time()
    sent = 0
    def drain():
        global full, truncated, answered_other
        while True:
            try:
                r = s.recv(65535)
            except BlockingIOError:
                break
            if r[2] & 0x02:
                truncated += 1
            else:
                full += 1
        while True:
            try:
                other.recv(65535)
                answered_other += 1
            except BlockingIOError:
                break
    while sent < 10000:
        target = int((time.time() - start) * 5000)
        while sent < min(target, 10000):
            s.sendto(query("www.amp.test", 1, 1232, sent & 0xffff), ("127.0.0.1", port))
            sent += 1
            if sent % 200 == 0:
                other.sendto(query("www.amp.test", 1, 1232, sent & 0xffff), ("127.0.0.1", port))
        drain()
        time.sleep(0.001)
    end = time.time() + 1
    while time.time() < end:
        drain()
        time.sleep(0.01)
    none = 10000 - full - truncated
    print(f"| {label} | x{worst:.1f} | {worst_case} | {largest} bytes | {full} / {truncated} / {none} | {answered_other} of 50 |")
EOF
