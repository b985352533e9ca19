# What the DNS benchmarks (dns.sh, dnssec.sh) share; sourced, with WORK (holding the query
# file q-static) and the PIDS array set by the caller.

descendants() { # pid: the pid and every process below it (NSD serves from forked children)
    local p
    echo "$1"
    for p in $(pgrep -P "$1" || true); do descendants "$p"; done
}

# Starts a server pinned to CPU 0 and waits until it answers; sets STARTED to its pid (not run
# in a subshell, so that the caller's cleanup knows every pid).
start() { # name port command...
    local name=$1 port=$2; shift 2
    taskset -c 0 "$@" >"$WORK/$name.log" 2>&1 &
    STARTED=$!
    PIDS+=("$STARTED")
    for _ in $(seq 1 100); do
        if dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/q-static" -n 1 >/dev/null 2>&1; then
            return
        fi
        sleep 0.1
    done
    echo "$name did not start; see its log:" >&2; cat "$WORK/$name.log" >&2; exit 1
}

cpu_seconds() { # pid: CPU seconds of the process and its children
    local total=0 p
    for p in $(descendants "$1"); do
        total=$(awk -v t="$total" '{ print t + ($14 + $15) / 100 }' "/proc/$p/stat")
    done
    echo "$total"
}

ready() { # admin-port: waits until vantage says it is ready
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$1/readyz" >/dev/null && return
        sleep 0.1
    done
}
