"""Failover latency, vantage (3 probers in their own namespaces, 2 DNS servers) against PowerDNS
LUA ifurlup (one point of view), on the same HTTPS backends. Run by tests/bench/failover.sh,
inside the namespace vb-dns, after it built the namespaces (see there).

Per configuration and fault, TRIALS trials: wait until every server answers the primary, wait
a random part of a second (so the fault falls anywhere in the check cycle), inject the fault on
the primary backend, query every server every 5 ms until it answers the secondary; lift the
fault and time the failback the same way. A vantage trial counts when *both* of its DNS
servers answer the new address (the later of the two).
"""

import json
import os
import random
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
import urllib.request

VANTAGE, WORK = sys.argv[1], sys.argv[2]
TRIALS = int(os.environ.get("TRIALS", "10"))
PRIMARY, SECONDARY = "10.77.0.10", "10.77.0.11"
DNS_IP = "10.77.0.30"
VANTAGE_DNS = [(DNS_IP, 5301), (DNS_IP, 5302)]
PDNS = (DNS_IP, 5310)
PROCS = []


def netns(ns, args, **kw):
    p = subprocess.Popen(["ip", "netns", "exec", ns] + args, start_new_session=True, **kw)
    PROCS.append(p)
    return p


def kill(p):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def query(server):
    """The A address a server answers for www.example.com, or None."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.2)
    qid = random.randrange(65536)
    name = b"".join(bytes([len(p)]) + p for p in b"www.example.com".split(b".")) + b"\0"
    try:
        s.sendto(struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + name + struct.pack(">HH", 1, 1), server)
        d = s.recv(4096)
    except OSError:
        return None
    finally:
        s.close()
    if struct.unpack(">H", d[:2])[0] != qid or struct.unpack(">H", d[6:8])[0] == 0:
        return None
    return socket.inet_ntoa(d[-4:])


def up_votes(n):
    """How many probers vote the primary up, as vantage DNS server n's status says."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{8300 + n}/v1/status", timeout=1) as r:
            status = json.load(r)
    except OSError:
        return 0
    return next((e["up_votes"] for e in status["endpoints"] if e["id"] == "primary"), 0)


def until(seconds, what, check):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.05)
    raise SystemExit(f"failover.py: timed out waiting for {what}")


# --- backends ---------------------------------------------------------------------------------

def nginx(name, ip):
    d = os.path.join(WORK, f"nginx-{name}")
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
daemon off;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
    keepalive_timeout 0;
    server {{
        listen {ip}:443 ssl;
        ssl_certificate {WORK}/app.pem;
        ssl_certificate_key {WORK}/app.key;
        location /healthz {{
            if (-f {WORK}/{name}.down) {{ return 503; }}
            return 200 "ok\\n";
        }}
    }}
}}
""")
    return netns("vb-be", ["nginx", "-c", conf, "-p", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


BACKENDS = {}


def nft(rule):
    subprocess.run(["ip", "netns", "exec", "vb-be", "nft", "-f", "-"], input=rule.encode(), check=True)


def fault(kind, on):
    if kind == "HTTP 503":
        path = os.path.join(WORK, "a.down")
        if on:
            open(path, "w").close()
        else:
            os.remove(path)
    elif kind == "process killed (refused)":
        if on:
            kill(BACKENDS["a"])
        else:
            BACKENDS["a"] = nginx("a", PRIMARY)
    else:
        verdict = "drop" if kind == "packets dropped (timeout)" else "reject with tcp reset"
        if on:
            nft(f"table inet vb {{\n  chain in {{\n    type filter hook input priority 0;\n"
                f"    ip daddr {PRIMARY} tcp dport 443 {verdict}\n  }}\n}}\n")
        else:
            nft("delete table inet vb")


FAULTS = ["HTTP 503", "process killed (refused)", "packets dropped (timeout)", "connection reset"]
# FAULT=drop (a word of the fault's name) and CONFIG=fall 1 (of the column's) run a part only.
FAULTS = [f for f in FAULTS if os.environ.get("FAULT", "") in f]
LOG = os.environ.get("VANTAGE_LOG", "warn")


# --- vantage and PowerDNS ---------------------------------------------------------------------

def vantage_config(d, listen, admin, check):
    os.makedirs(os.path.join(d, "zones"), exist_ok=True)
    with open(os.path.join(d, "zones", "example.com.zone"), "w") as f:
        f.write("$ORIGIN example.com.\n@ 3600 SOA ns1 hostmaster 1 3600 600 604800 300\n@ 3600 NS ns1\n"
                "ns1 3600 A 192.0.2.53\n")
    with open(os.path.join(d, "token"), "w") as f:
        f.write("bench-fleet-secret-0123456789abcdef\n")
    probers = "".join(f'[[prober]]\nregion = "r{i}"\nurl = "http://10.77.0.2{i}:9100"\n' for i in (1, 2, 3))
    with open(os.path.join(d, "fleet.toml"), "w") as f:
        f.write(f"""[cluster]
stale_after = "3s"
token_file = "token"
poll_interval = "200ms"
poll_timeout = "1s"
{probers}
[check.web]
protocol = "https"
port = 443
path = "/healthz"
host = "app.test"
interval = "1s"
ca_file = "{WORK}/ca.pem"
{check}
[dns]
listen = ["{listen}"]
zones_dir = "zones"
[admin]
listen = "{admin}"
[[record]]
name = "www.example.com"
policy = "failover"
check = "web"
endpoints = [{{ name = "primary", address = "{PRIMARY}" }}, {{ name = "secondary", address = "{SECONDARY}" }}]
""")
    return os.path.join(d, "fleet.toml")


def start_vantage(label, check):
    procs = []
    for n, (ip, port) in enumerate(VANTAGE_DNS):
        d = os.path.join(WORK, label, f"dns{n}")
        config = vantage_config(d, f"{ip}:{port}", f"127.0.0.1:{8300 + n}", check)
        if n == 0:
            for i in (1, 2, 3):
                procs.append(netns(f"vb-p{i}", [VANTAGE, "probe", "--region", f"r{i}", "--config", config,
                                                "--listen", f"10.77.0.2{i}:9100"],
                                   cwd=d, stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, f"probe{i}.log"), "w"),
                                   env={**os.environ, "RUST_LOG": LOG}))
        procs.append(netns("vb-dns", [VANTAGE, "dns", "--config", config], cwd=d, stdout=subprocess.DEVNULL,
                           stderr=open(os.path.join(d, "dns.log"), "w"), env={**os.environ, "RUST_LOG": LOG}))
    return procs


def start_pdns():
    d = os.path.join(WORK, "pdns")
    os.makedirs(d)
    with open(os.path.join(d, "example.zone"), "w") as f:
        f.write("$ORIGIN example.com.\n@ 3600 SOA ns1 hostmaster 1 3600 600 604800 300\n@ 3600 NS ns1\n"
                "ns1 3600 A 192.0.2.53\n"
                f"www 1 IN LUA A \"ifurlup('https://app.test/healthz', {{{{'{PRIMARY}'}}, {{'{SECONDARY}'}}}}, "
                "{interval=1, timeout=1})\"\n")
    with open(os.path.join(d, "named.conf"), "w") as f:
        f.write(f'zone "example.com" {{ type master; file "{d}/example.zone"; }};\n')
    with open(os.path.join(d, "pdns.conf"), "w") as f:
        f.write(f"launch=bind\nbind-config={d}/named.conf\nlocal-address={PDNS[0]}\nlocal-port={PDNS[1]}\n"
                f"enable-lua-records=yes\nsocket-dir={d}\nguardian=no\ndaemon=no\nsetuid=\nsetgid=\n"
                "cache-ttl=0\nquery-cache-ttl=0\nnegquery-cache-ttl=0\n"
                # Its checks every second (the per-record interval option came later than 4.7).
                "lua-health-checks-interval=1\n")
    return netns("vb-dns", ["pdns_server", f"--config-dir={d}"], stdout=subprocess.DEVNULL,
                 stderr=open(os.path.join(d, "pdns.log"), "w"))


# --- trials -----------------------------------------------------------------------------------

def trial(kind):
    """(vantage seconds, PowerDNS seconds) to fail over, and the same to fail back."""
    servers = VANTAGE_DNS + [PDNS]
    until(30, "every server to answer the primary", lambda: all(query(s) == PRIMARY for s in servers))
    # And every prober to see it up again (a check started during the last fault may still hang).
    until(30, "every prober to see the primary up", lambda: all(up_votes(n) == 3 for n in range(len(VANTAGE_DNS))))
    time.sleep(random.uniform(0.0, 1.0))

    def watch(target):
        start = time.monotonic()
        seen = {}
        while len(seen) < len(servers) and time.monotonic() - start < 10:
            for s in servers:
                if s not in seen and query(s) == target:
                    seen[s] = time.monotonic() - start
            time.sleep(0.005)
        v = [seen.get(s) for s in VANTAGE_DNS]
        return (None if None in v else max(v)), seen.get(PDNS)

    fault(kind, True)
    trial.at = time.time()
    over = watch(SECONDARY)
    fault(kind, False)
    back = watch(PRIMARY)
    # A failback is only timed where the failover happened.
    back = tuple(b if o is not None else None for o, b in zip(over, back))
    time.sleep(0.5)
    return over, back


def cell(values):
    got = sorted(v for v in values if v is not None)
    if not got:
        return "—"
    missed = len(values) - len(got)
    p90 = got[min(len(got) - 1, int(round(0.9 * (len(got) - 1))))]
    return f"{statistics.median(got):.2f} s (p90 {p90:.2f}{', ' + str(missed) + ' missed' if missed else ''})"


def main():
    BACKENDS["a"] = nginx("a", PRIMARY)
    BACKENDS["b"] = nginx("b", SECONDARY)
    start_pdns()
    configs = [
        ("vantage fall 1, rise 1", "rise = 1\nfall = 1\n"),
        ("vantage fall 3, rise 2, suspect_interval 100ms", "rise = 2\nfall = 3\nsuspect_interval = \"100ms\"\n"),
    ]
    configs = [c for c in configs if os.environ.get("CONFIG", "") in c[0]]
    results = {}  # (column, fault) -> {"over": [...], "back": [...]}
    for label, check in configs:
        procs = start_vantage(label.split(",")[0].replace(" ", "-") + str(len(results)), check)
        for kind in FAULTS:
            for n in range(TRIALS):
                (v_over, p_over), (v_back, p_back) = trial(kind)
                print(f"{label} | {kind} | trial {n} (fault at {trial.at:.3f}): vantage {v_over} / {v_back}, PowerDNS {p_over} / {p_back}",
                      file=sys.stderr, flush=True)
                for col, over, back in ((label, v_over, v_back), ("PowerDNS ifurlup, interval 1 s", p_over, p_back)):
                    r = results.setdefault((col, kind), {"over": [], "back": []})
                    r["over"].append(over)
                    r["back"].append(back)
        for p in procs:
            kill(p)
    columns = [c for c, _ in configs] + ["PowerDNS ifurlup, interval 1 s"]
    print(f"\nFailover: median time from the fault to every DNS server answering the secondary "
          f"({TRIALS} trials per vantage cell, {TRIALS * len(configs)} for PowerDNS)\n")
    print("| fault | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for kind in FAULTS:
        print(f"| {kind} | " + " | ".join(cell(results[(c, kind)]["over"]) for c in columns) + " |")
    print("\nFailback: from lifting the fault to answering the primary again\n")
    print("| fault | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for kind in FAULTS:
        print(f"| {kind} | " + " | ".join(cell(results[(c, kind)]["back"]) for c in columns) + " |")


try:
    main()
finally:
    for p in PROCS:
        kill(p)
