"""Probing benchmark: vantage against Prometheus blackbox_exporter, and vantage at scale.

Run by tests/bench/probe.sh (which builds vantage and checks the tools). Everything on loopback:
one nginx (HTTPS, a private CA made here, `/healthz` answers 200 "ok") is the endpoint of every
check; each endpoint of a run is one more target of the same nginx. The tool under test runs on
CPU 0, nginx and the blackbox driver on CPU 1.

1. Same rate, side by side: vantage probe (N endpoints at interval N/rate) and blackbox_exporter
   (its http module with the same CA, driven like Prometheus would: one /probe request per
   check, round robin over N targets at the same rate). Per tool: checks/s, CPU seconds per
   1,000 checks, checks per CPU-second, RSS, the share of checks with a full TLS handshake
   (nginx logs $ssl_session_reused per request: a full handshake verifies the certificate),
   and the TIME_WAIT sockets left on the prober's side.
2. Scale: `vantage probe` with 10,000 endpoints at 5 s; `vantage dns` with 3 in-process probers x
   10,000 endpoints at 15 s; `vantage probe` with 10,000 endpoints at 1 s (more than the machine
   can check): RSS, checks/s, late starts, overloaded or not, endpoints Down.
"""

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

VANTAGE = sys.argv[1]
QUICK = os.environ.get("QUICK") == "1"
WINDOW = 15 if QUICK else 30
WORK = tempfile.mkdtemp(prefix="vantage-probe-bench-")
PROCS = []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(args, cpu, **kw):
    p = subprocess.Popen(["taskset", "-c", str(cpu)] + args, **kw)
    PROCS.append(p)
    return p


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def child_pid(p):
    """The pid of the program taskset started (taskset execs it: the same pid)."""
    return p.pid


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def time_wait(port, side):
    """TIME_WAIT sockets whose peer (side="prober": the prober's sockets) is nginx's port."""
    key = "dport" if side == "prober" else "sport"
    out = subprocess.run(
        ["ss", "-Htan", "state", "time-wait", f"( {key} = :{port} )"],
        capture_output=True, text=True, check=False,
    ).stdout
    return len([line for line in out.splitlines() if line.strip()])


def until(seconds, what, check):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            value = check()
            if value:
                return value
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"timed out: {what}")


def http_get(port, path):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace").split("\r\n\r\n", 1)[1]


def metric_sum(text, name, **labels):
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# --- the endpoint: nginx with a private CA ------------------------------------------------

def pki():
    d = os.path.join(WORK, "pki")
    os.makedirs(d)
    run = lambda *a: subprocess.run(a, cwd=d, check=True, capture_output=True)
    run("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key")
    run("openssl", "req", "-x509", "-new", "-key", "ca.key", "-days", "30", "-subj", "/CN=bench CA", "-out", "ca.pem")
    run("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "app.key")
    run("openssl", "req", "-new", "-key", "app.key", "-subj", "/CN=app.test", "-out", "app.csr")
    with open(os.path.join(d, "ext"), "w") as f:
        f.write("subjectAltName=DNS:app.test\n")
    run("openssl", "x509", "-req", "-in", "app.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "30", "-extfile", "ext", "-out", "app.pem")
    return d


def nginx(pki_dir, port):
    d = os.path.join(WORK, "nginx")
    os.makedirs(d)
    conf = f"""
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
daemon off;
worker_rlimit_nofile 65536;
events {{ worker_connections 60000; multi_accept on; }}
http {{
    log_format reused '$ssl_session_reused $http_user_agent';
    access_log {d}/access.log reused buffer=256k flush=1s;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_timeout 5s;
    server {{
        listen 127.0.0.1:{port} ssl backlog=65535;
        ssl_certificate {pki_dir}/app.pem;
        ssl_certificate_key {pki_dir}/app.key;
        ssl_session_cache shared:SSL:10m;
        ssl_session_tickets on;
        location /healthz {{ return 200 "ok\\n"; }}
    }}
}}
"""
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    p = start(["nginx", "-c", path, "-p", d], 1, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    until(10, "nginx", lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True)
    return p, os.path.join(d, "access.log")


def handshakes(log, agent):
    """(full, resumed) handshakes of requests whose user agent contains `agent`."""
    full = resumed = 0
    try:
        with open(log) as f:
            for line in f:
                if agent not in line:
                    continue
                if line.startswith("r "):
                    resumed += 1
                else:
                    full += 1
    except FileNotFoundError:
        pass
    return full, resumed


# --- vantage -------------------------------------------------------------------------------

def vantage_config(path, endpoints, interval, regions, port, ca, prober_port=None, extra=""):
    per_record = 10
    stale = max(10.0, interval * 3 + 5)
    lines = [f'[cluster]\nstale_after = "{stale}s"\nstartup_grace = "{max(60, interval * 1.2 + 10)}s"\n']
    if prober_port:
        lines.append('token_file = "token"\n')
    for r in regions:
        lines.append(f'[[prober]]\nregion = "{r}"\n')
        if prober_port:
            lines.append(f'url = "http://127.0.0.1:{prober_port}"\n')
    timeout = min(2.0, interval)
    lines.append(
        f'[check.web]\nprotocol = "https"\nport = {port}\npath = "/healthz"\nhost = "app.test"\n'
        f'interval = "{interval}s"\ntimeout = "{timeout}s"\nconnect_timeout = "{timeout}s"\nrise = 1\nfall = 1\n'
        f'ca_file = "{ca}"\n'
    )
    lines.append(f'[dns]\nlisten = ["127.0.0.1:{free_port()}"]\nzones_dir = "zones"\n')
    lines.append(f'[admin]\nlisten = "127.0.0.1:{free_port()}"\n{extra}')
    for r in range(endpoints // per_record):
        eps = ", ".join(
            f'{{ name = "e{r}-{e}", address = "10.{r // 250}.{r % 250}.{e + 1}", check_address = "127.0.0.1" }}'
            for e in range(per_record)
        )
        lines.append(f'[[record]]\nname = "r{r}.example.com"\npolicy = "all"\ncheck = "web"\nendpoints = [{eps}]\n')
    d = os.path.dirname(path)
    os.makedirs(os.path.join(d, "zones"), exist_ok=True)
    with open(os.path.join(d, "zones", "example.com.zone"), "w") as f:
        f.write("$ORIGIN example.com.\n@ 3600 SOA ns1 hostmaster 1 3600 600 604800 300\n@ 3600 NS ns1\nns1 3600 A 192.0.2.53\n")
    with open(os.path.join(d, "token"), "w") as f:
        f.write("bench-fleet-secret-0123456789abcdef\n")
    with open(path, "w") as f:
        f.write("".join(lines))


def run_vantage(label, role, endpoints, interval, regions, port, ca, window, log):
    d = os.path.join(WORK, label)
    os.makedirs(d)
    config = os.path.join(d, "fleet.toml")
    prober_port = free_port() if role == "probe" else None
    vantage_config(config, endpoints, interval, regions, port, ca, prober_port)
    if role == "probe":
        args = [VANTAGE, "probe", "--region", regions[0], "--config", config, "--listen", f"127.0.0.1:{prober_port}"]
        admin = prober_port
    else:
        args = [VANTAGE, "dns", "--config", config]
        admin = int(re.search(r'\[admin\]\nlisten = "127.0.0.1:(\d+)"', open(config).read()).group(1))
    p = start(args, 0, cwd=d, stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "log"), "w"),
              env={**os.environ, "RUST_LOG": "warn"})
    pid = child_pid(p)
    metrics = lambda: http_get(admin, "/metrics")
    until(60, f"{label}: metrics", lambda: "vantage_probes_total" in metrics())
    # Warm up: one interval (every endpoint checked and decided once), 5 to 75 s.
    time.sleep(min(75.0, max(5.0, interval * 1.2)))
    m0, c0, t0 = metrics(), cpu_seconds(pid), time.time()
    tw = []
    end = t0 + window
    while time.time() < end:
        time.sleep(min(5, max(0.1, end - time.time())))
        tw.append(time_wait(port, "prober"))
    m1, c1, t1 = metrics(), cpu_seconds(pid), time.time()
    rss = rss_mib(pid)
    checks = metric_sum(m1, "vantage_probes_total") - metric_sum(m0, "vantage_probes_total")
    ok = metric_sum(m1, "vantage_probes_total", result="success") - metric_sum(m0, "vantage_probes_total", result="success")
    late = metric_sum(m1, "vantage_probe_late_starts_total") - metric_sum(m0, "vantage_probe_late_starts_total")
    local = metric_sum(m1, "vantage_probes_total", result="local") - metric_sum(m0, "vantage_probes_total", result="local")
    names = set(re.findall(r'vantage_probes_total\{[^}]*result="(\w+)"', m1)) - {"success"}
    kinds = {k: metric_sum(m1, "vantage_probes_total", result=k) - metric_sum(m0, "vantage_probes_total", result=k)
             for k in names}
    overloaded = metric_sum(m1, "vantage_probe_overloaded")
    down = metric_sum(m1, "vantage_prober_endpoints", state="down")
    stop(p)
    full, resumed = handshakes(log, "vantage-probe")
    return {
        "label": label, "checks_s": checks / (t1 - t0), "ok": ok, "checks": checks,
        "cpu": c1 - c0, "rss": rss, "late": late, "local": local, "overloaded": overloaded,
        "down": down, "time_wait": max(tw) if tw else 0, "full": full, "resumed": resumed,
        "cores": (c1 - c0) / (t1 - t0),
        "failures": ", ".join(f"{k} {v:.0f}" for k, v in sorted(kinds.items()) if v >= 0.5) or "none",
    }


# --- blackbox_exporter ---------------------------------------------------------------------

async def drive_blackbox(port, targets, rate, seconds, counts):
    """Prometheus' part: one /probe request per check at `rate` per second, round robin."""
    interval = 1.0 / rate
    sem = asyncio.Semaphore(512)
    start_t = time.monotonic()

    async def one(target):
        async with sem:
            try:
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(
                    f"GET /probe?module=https_ca&target={target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    "X-Prometheus-Scrape-Timeout-Seconds: 5\r\nConnection: close\r\n\r\n".encode()
                )
                await w.drain()
                body = await asyncio.wait_for(r.read(), 10)
                w.close()
                counts["done"] += 1
                if b"\nprobe_success 1" in body:
                    counts["ok"] += 1
            except (OSError, asyncio.TimeoutError):
                counts["error"] += 1

    tasks = set()
    i = 0
    while True:
        due = start_t + i * interval
        now = time.monotonic()
        if now - start_t >= seconds:
            break
        if due > now:
            await asyncio.sleep(due - now)
        t = asyncio.create_task(one(targets[i % len(targets)]))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        i += 1
    if tasks:
        await asyncio.wait(tasks, timeout=15)


def run_blackbox(label, endpoints, rate, port, pki_dir, window, log):
    d = os.path.join(WORK, label)
    os.makedirs(d)
    config = os.path.join(d, "blackbox.yml")
    with open(config, "w") as f:
        f.write(
            "modules:\n  https_ca:\n    prober: http\n    timeout: 2s\n    http:\n"
            "      preferred_ip_protocol: ip4\n      valid_status_codes: [200]\n"
            "      headers:\n        Host: app.test\n"
            f"      tls_config:\n        ca_file: {pki_dir}/ca.pem\n        server_name: app.test\n"
        )
    bport = free_port()
    p = start(["prometheus-blackbox-exporter", f"--config.file={config}", f"--web.listen-address=127.0.0.1:{bport}",
               "--log.level=warn"], 0, stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "log"), "w"))
    pid = child_pid(p)
    until(20, "blackbox_exporter", lambda: "blackbox" in http_get(bport, "/metrics"))
    targets = [f"https://127.0.0.1:{port}/healthz?endpoint={i}" for i in range(endpoints)]
    counts = {"done": 0, "ok": 0, "error": 0}
    # Warm up 5 s, then measure.
    asyncio.run(drive_blackbox(bport, targets, rate, 5, {"done": 0, "ok": 0, "error": 0}))
    c0, t0 = cpu_seconds(pid), time.time()
    tw = []

    async def measured():
        async def sample():
            while True:
                await asyncio.sleep(5)
                tw.append(time_wait(port, "prober"))
        s = asyncio.create_task(sample())
        await drive_blackbox(bport, targets, rate, window, counts)
        s.cancel()
    asyncio.run(measured())
    c1, t1 = cpu_seconds(pid), time.time()
    rss = rss_mib(pid)
    stop(p)
    full, resumed = handshakes(log, "Blackbox")
    return {
        "label": label, "checks_s": counts["done"] / (t1 - t0), "ok": counts["ok"], "checks": counts["done"],
        "cpu": c1 - c0, "rss": rss, "time_wait": max(tw) if tw else 0, "full": full, "resumed": resumed,
        "errors": counts["error"],
    }


def row(r):
    per_k = r["cpu"] / r["checks"] * 1000 if r["checks"] else float("nan")
    per_cpu = r["checks"] / r["cpu"] if r["cpu"] else float("nan")
    hs = r["full"] + r["resumed"]
    full_share = f'{100 * r["full"] / hs:.0f}% of {hs}' if hs else "-"
    return (f'| {r["label"]} | {r["checks_s"]:.0f} | {100 * r["ok"] / max(1, r["checks"]):.1f}% | {per_k:.3f} | '
            f'{per_cpu:.0f} | {r["rss"]:.0f} | {full_share} | {r["time_wait"]} |')


def main():
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    pki_dir = pki()
    port = free_port()
    ng, log = nginx(pki_dir, port)
    print(f"nginx on 127.0.0.1:{port}; work dir {WORK}", file=sys.stderr)
    only = os.environ.get("ONLY", "")
    results = []
    rate = 200 if QUICK else 500
    if only in ("scale", "dns"):
        return scale_runs(port, pki_dir, log, only)
    n = 1000 if QUICK else 2500
    print(f"# 1. same rate: {n} endpoints, {rate} checks/s, {WINDOW} s measured", file=sys.stderr)
    results.append(run_blackbox(f"blackbox_exporter, {n} targets, {rate}/s", n, rate, port, pki_dir, WINDOW, log))
    open(log, "w").close()
    results.append(run_vantage(f"vantage probe, {n} endpoints at {n / rate:.0f} s", "probe", n, n / rate, ["r1"], port,
                               f"{pki_dir}/ca.pem", WINDOW, log))
    open(log, "w").close()
    print("| run | checks/s | succeeded | CPU s per 1,000 checks | checks per CPU-second | RSS MiB | full TLS handshakes | prober-side TIME_WAIT (max) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(row(r))
    bb, vp = results
    ratio = (vp["checks"] / vp["cpu"]) / (bb["checks"] / bb["cpu"])
    print(f"\nvantage does {ratio:.1f}x blackbox_exporter's checks per CPU-second\n")
    sys.stdout.flush()

    scale_runs(port, pki_dir, log)
    stop(ng)


def scale_runs(port, pki_dir, log, only=""):
    print("# 2. scale", file=sys.stderr)
    big = 2000 if QUICK else 10000
    if only == "dns":
        scale = [run_vantage(f"vantage dns, 3 probers x {big} endpoints at 15 s", "dns", big, 15, ["r1", "r2", "r3"],
                             port, f"{pki_dir}/ca.pem", WINDOW, log)]
    else:
        scale = [
            run_vantage(f"vantage probe, {big} endpoints at 5 s", "probe", big, 5, ["r1"], port, f"{pki_dir}/ca.pem",
                        WINDOW, log),
            run_vantage(f"vantage dns, 3 probers x {big} endpoints at 15 s", "dns", big, 15, ["r1", "r2", "r3"], port,
                        f"{pki_dir}/ca.pem", WINDOW, log),
            run_vantage(f"vantage dns, 3 probers x {big} endpoints at 60 s", "dns", big, 60, ["r1", "r2", "r3"], port,
                        f"{pki_dir}/ca.pem", WINDOW, log),
            run_vantage(f"vantage probe, {big} endpoints at 1 s (overload)", "probe", big, 1, ["r1"], port,
                        f"{pki_dir}/ca.pem", WINDOW, log),
        ]
    print("| run | checks/s | succeeded | failed, by kind | RSS MiB | CPU cores | CPU s per 1,000 checks | late starts | overloaded | endpoints Down |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in scale:
        per_k = r["cpu"] / r["checks"] * 1000 if r["checks"] else float("nan")
        print(f'| {r["label"]} | {r["checks_s"]:.0f} | {100 * r["ok"] / max(1, r["checks"]):.1f}% | {r["failures"]} | '
              f'{r["rss"]:.0f} | {r["cores"]:.2f} | {per_k:.3f} | {r["late"]:.0f} | {"yes" if r["overloaded"] else "no"} | '
              f'{r["down"]:.0f} |')


try:
    main()
finally:
    for p in PROCS:
        stop(p)
    if not os.environ.get("KEEP"):
        subprocess.run(["rm", "-rf", WORK], check=False)
