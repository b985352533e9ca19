#!/usr/bin/env bash
# Route53 benchmark: `vantage route53` pushes a failover of 1,000 records to the strict Route53
# emulator (tests/route53/emulator.py), which answers like Route53: 5 API calls per second per
# account (more are throttled), changes PENDING for 1 s. Two runs: a clean flip, and a flip
# with one record Route53 refuses. Prints per run:
#   - API calls by operation during the flip (from the verdict until Route53 lists every new
#     value, plus 10 s), and the most calls in any one-second window of the whole run;
#   - verdict -> first and last change batch submitted; verdict -> Route53 lists every new value.
#
#   bash tests/bench/route53.sh
#
# Builds vantage in release mode. Loopback only (127.0.0.2, 127.0.0.3 for the health checks);
# stops by itself.
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --release --locked --quiet
VANTAGE="$PWD/target/release/vantage"
N=1000
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.2
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Polls `command` every 100 ms until it succeeds, for at most $1 seconds.
until_ok() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "timed out: $*" >&2; return 1; }
        sleep 0.1
    done
}

# One run: $1 = label, $2 = a record name the emulator refuses ("" for none).
run() {
    local label="$1" refused="$2"
    local dir="$WORK/$label"
    mkdir -p "$dir/zones"
    printf '$ORIGIN example.com.\n@ 3600 SOA ns1 hostmaster 1 3600 600 604800 300\n@ 3600 NS ns1\nns1 3600 A 192.0.2.53\n' > "$dir/zones/example.com.zone"
    local eport cport
    eport=$(free_port)
    cport=$(free_port)
    python3 tests/route53/emulator.py --port "$eport" --rate 5 --pending 1 &
    local emulator=$!
    PIDS+=("$emulator")
    python3 -m http.server --bind 127.0.0.2 "$cport" >/dev/null 2>&1 &
    local primary=$!
    PIDS+=("$primary")
    python3 -m http.server --bind 127.0.0.3 "$cport" >/dev/null 2>&1 &
    PIDS+=("$!")
    until_ok 10 curl -sf "http://127.0.0.1:$eport/_emulator/calls"
    local zone
    zone=$(curl -sf -X POST "http://127.0.0.1:$eport/2013-04-01/hostedzone" \
        -d '<CreateHostedZoneRequest xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Name>example.com.</Name><CallerReference>bench</CallerReference></CreateHostedZoneRequest>' |
        python3 -c 'import re,sys; print(re.search(r"<Id>/hostedzone/([^<]+)</Id>", sys.stdin.read()).group(1))')
    if [ -n "$refused" ]; then
        curl -sf -X POST "http://127.0.0.1:$eport/_emulator/refuse" -d "{\"names\": [\"$refused\"]}" >/dev/null
    fi
    {
        cat <<EOF
[[prober]]
region = "bench"
[check.t]
protocol = "tcp"
port = $cport
interval = "500ms"
timeout = "300ms"
rise = 1
fall = 1
[admin]
listen = "127.0.0.1:0"
state_dir = "$dir/state"
[dns]
zones_dir = "$dir/zones"
[route53]
endpoint_url = "http://127.0.0.1:$eport"
interval = "30s"
EOF
        for i in $(seq 0 $((N - 1))); do
            printf '[[record]]\nname = "r%d.example.com"\npolicy = "failover"\nendpoints = [{ name = "a", address = "192.0.2.1", check_address = "127.0.0.2" }, { name = "b", address = "192.0.2.2", check_address = "127.0.0.3" }]\nroute53 = { zone_id = "%s", owner = "bench" }\n' "$i" "$zone"
        done
    } > "$dir/fleet.toml"
    AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true \
        "$VANTAGE" route53 --config "$dir/fleet.toml" > "$dir/listening" 2> "$dir/vantage.log" &
    PIDS+=("$!")
    until_ok 30 grep -q listening "$dir/listening"
    local admin
    admin=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["listening"]["admin"])' "$dir/listening")
    # Every record holds one of the two addresses (`want`), except the refused one.
    holding() {
        curl -sf "http://127.0.0.1:$eport/_emulator/state" | python3 -c '
import json, sys
zone, want, n, refused = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sets = json.load(sys.stdin)[zone]
held = {s["name"] for s in sets if s["type"] == "A" and s["values"] == [want]}
need = {f"r{i}.example.com." for i in range(n)} - {refused}
sys.exit(0 if need <= held else 1)' "$zone" "$1" "$N" "$refused"
    }
    until_ok 120 holding 192.0.2.1
    sleep 3 # the first cycle's propagation checks finish
    kill "$primary"
    until_ok 60 holding 192.0.2.2
    local listed
    listed=$(python3 -c 'import time; print(time.time())')
    sleep 10 # what follows the flip (propagation checks, retries) counts too
    curl -sf "http://$admin/v1/status" > "$dir/status.json"
    curl -sf "http://127.0.0.1:$eport/_emulator/calls" > "$dir/calls.json"
    python3 - "$label" "$dir/status.json" "$dir/calls.json" "$listed" <<'EOF'
import collections, json, sys
label, status, calls, listed = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3])), float(sys.argv[4])
verdict = max(t["at_unix_ms"] for t in status["transitions"] if t["endpoint"] == "a" and t["to"] == "down") / 1000
flip = [c for c in calls if verdict <= c["unix"] <= listed + 10]
by_op = collections.Counter(c["op"] for c in flip)
throttled = sum(1 for c in flip if c.get("error") == "Throttling")
times = sorted(c["unix"] for c in calls)
peak = max(sum(1 for u in times[i:] if u < t + 1.0) for i, t in enumerate(times))
batches = [c["unix"] for c in flip if c["op"] == "ChangeResourceRecordSets" and c["status"] == 200]
print(f"| {label} | {by_op['ChangeResourceRecordSets']} | {by_op['ListResourceRecordSets']} | {by_op['GetChange']} | "
      f"{sum(by_op.values())} | {throttled} | {peak} | {min(batches) - verdict:.2f} s | {max(batches) - verdict:.2f} s | {listed - verdict:.2f} s |")
EOF
    kill "$emulator" 2>/dev/null || true
}

echo "vantage route53, $N failover records, strict emulator at 5 calls/s, PENDING 1 s"
echo
echo "| run | ChangeResourceRecordSets | ListResourceRecordSets | GetChange | calls in all | throttled | most calls in 1 s | verdict -> first batch | verdict -> last batch | verdict -> all listed |"
echo "|---|---|---|---|---|---|---|---|---|---|"
run "clean-flip" ""
run "one-refused" "r500.example.com."
