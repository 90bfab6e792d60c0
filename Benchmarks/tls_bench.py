#!/usr/bin/env python3
"""TLS benchmark: this proxy against nginx, HAProxy, h2o and Caddy terminating TLS in front of
one cleartext nginx origin, each with one worker, access logs off and the same ECDSA P-256
certificate. The proxy under test is pinned to CPU 0, the load generators to CPU 1 (as in
bench.py).

Figures, per proxy:
  full handshakes/s     h2load --h1 -H 'Connection: close' (a new TLS connection per request;
                        h2load 1.52 never resumes), 64 connections
  resumed handshakes/s  openssl s_time -reuse (serial: one client, session resumed each time)
  keep-alive requests/s h2load --h1, 64 connections; and the proxy's CPU seconds per 10k requests
  download / upload     1 GiB through the proxy with curl (MB/s, proxy CPU seconds per GiB)
  idle TLS connection   resident memory growth per connection, 2000 connections after one
                        request each, measured first on a fresh process

Targets (ratios in this run): full handshakes/s >= the best anchor; keep-alive CPU per request
<= 0.9 x the best anchor; bulk MB/s >= the best anchor; idle memory <= the best anchor's.

  python3 Benchmarks/tls_bench.py --bin .build/release [--rounds N] [--only ours,nginx]
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench import ensure_tools  # noqa: E402  (the HTTP benchmark's installer)

TOOLS = {"h2load": "nghttp2-client", "nginx": "nginx-light", "haproxy": "haproxy", "h2o": "h2o", "caddy": "caddy",
         "curl": "curl", "openssl": "openssl", "taskset": "util-linux"}
PROXY_CPU, LOAD_CPU = "0", "1"


def log(msg):
    print(f"tls-bench: {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pin(cpu, cmd):
    return ["taskset", "-c", cpu] + cmd


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def family(pid):
    """The process and its descendants (nginx's master and worker, h2o's workers)."""
    out = [pid]
    try:
        for child in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split():
            out += family(int(child))
    except (OSError, ValueError):
        pass
    return out


class Target:
    """One proxy under test, in front of `origin` (the nginx origin, or the upload sink)."""

    def __init__(self, name, ctx, origin=None, suffix=""):
        self.name, self.ctx = name, ctx
        self.origin_port = origin or ctx.origin_port
        self.port = free_port()
        self.proc = None
        self.dir = ctx.dir / (name + suffix)
        self.dir.mkdir(exist_ok=True)

    def command(self):
        raise NotImplementedError

    def env(self):
        return None

    def start(self, ready_path="/"):
        self.proc = subprocess.Popen(pin(PROXY_CPU, self.command()), stdout=open(self.dir / "out.log", "w"),
                                     stderr=subprocess.STDOUT, env=self.env(), start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {(self.dir / 'out.log').read_text()[-2000:]}")
            r = subprocess.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", f"https://127.0.0.1:{self.port}{ready_path}"],
                               capture_output=True, text=True)
            if r.stdout == "200":
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} never answered 200 over HTTPS")

    def pids(self):
        return family(self.proc.pid)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Ours(Target):
    def command(self):
        c = self.ctx
        config = {"listen": [{"address": f"127.0.0.1:{self.port}",
                              "tls": {"certificates": [{"cert": str(c.cert), "key": str(c.key)}]}}],
                  "backends": [{"url": f"http://127.0.0.1:{self.origin_port}"}],
                  "health_check": {"path": "/", "interval_ms": 5000},
                  "access_log": None, "workers": 1, "limits": {"max_connections": 10000}}
        path = self.dir / "config.json"
        path.write_text(json.dumps(config))
        return [str(c.args.bin / "proxy"), "--config", str(path)]


class Nginx(Target):
    def command(self):
        c = self.ctx
        (self.dir / "nginx.conf").write_text(f"""
daemon off; master_process off; worker_processes 1; error_log {self.dir}/error.log; pid {self.dir}/nginx.pid;
events {{ worker_connections 20000; }}
http {{
  access_log off; client_body_temp_path {self.dir}; proxy_temp_path {self.dir}; fastcgi_temp_path {self.dir};
  uwsgi_temp_path {self.dir}; scgi_temp_path {self.dir}; client_max_body_size 0; proxy_request_buffering off;
  proxy_buffering off;
  upstream origin {{ server 127.0.0.1:{self.origin_port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{self.port} ssl; ssl_certificate {c.cert}; ssl_certificate_key {c.key};
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets on; ssl_session_cache off;
    location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
""")
        return ["nginx", "-c", str(self.dir / "nginx.conf"), "-e", str(self.dir / "error.log")]


class HAProxy(Target):
    def command(self):
        c = self.ctx
        (self.dir / "haproxy.cfg").write_text(f"""
global
  nbthread 1
  maxconn 9000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend f
  bind 127.0.0.1:{self.port} ssl crt {c.combined} alpn http/1.1
  default_backend b
backend b
  http-reuse always
  server o 127.0.0.1:{self.origin_port}
""")
        return ["haproxy", "-f", str(self.dir / "haproxy.cfg")]


class H2O(Target):
    def command(self):
        c = self.ctx
        (self.dir / "h2o.conf").write_text(f"""
num-threads: 1
user: {os.environ.get("USER") or "root"}
error-log: {self.dir}/error.log
max-connections: 20000
listen:
  host: 127.0.0.1
  port: {self.port}
  ssl:
    certificate-file: {c.cert}
    key-file: {c.key}
    minimum-version: TLSv1.2
hosts:
  "*":
    paths:
      "/":
        proxy.reverse.url: http://127.0.0.1:{self.origin_port}/
""")
        return ["h2o", "-c", str(self.dir / "h2o.conf")]


class Caddy(Target):
    def env(self):
        return dict(os.environ, GOMAXPROCS="1", HOME=str(self.dir), XDG_DATA_HOME=str(self.dir), XDG_CONFIG_HOME=str(self.dir))

    def command(self):
        c = self.ctx
        (self.dir / "Caddyfile").write_text(f"""
{{
  auto_https off
  admin off
}}
https://127.0.0.1:{self.port} {{
  tls {c.cert} {c.key}
  reverse_proxy 127.0.0.1:{self.origin_port}
}}
""")
        return ["caddy", "run", "--config", str(self.dir / "Caddyfile"), "--adapter", "caddyfile"]


TARGETS = {"ours": Ours, "nginx": Nginx, "haproxy": HAProxy, "h2o": H2O, "caddy": Caddy}


class Context:
    def __init__(self, args, workdir):
        self.args, self.dir = args, workdir
        self.key, self.cert = workdir / "bench.key", workdir / "bench.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                        "-keyout", str(self.key), "-out", str(self.cert), "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
        self.combined = workdir / "bench-combined.pem"
        self.combined.write_text(self.cert.read_text() + self.key.read_text())
        self.big = workdir / "big.bin"
        with open(self.big, "wb") as f:  # 1 GiB of non-zero bytes (sparse zeros would flatter nothing, but be safe)
            block = os.urandom(1 << 20)
            for _ in range(args.gib * 1024):
                f.write(block)
        self.origin_port = free_port()
        origin_dir = workdir / "origin"
        origin_dir.mkdir()
        (origin_dir / "www").mkdir()
        (origin_dir / "www" / "index.html").write_text("hello from the origin\n")
        os.link(self.big, origin_dir / "www" / "big")
        (origin_dir / "nginx.conf").write_text(f"""
daemon off; master_process off; worker_processes 1; error_log {origin_dir}/error.log; pid {origin_dir}/nginx.pid;
events {{ worker_connections 20000; }}
http {{
  access_log off; client_body_temp_path {origin_dir}; proxy_temp_path {origin_dir}; fastcgi_temp_path {origin_dir};
  uwsgi_temp_path {origin_dir}; scgi_temp_path {origin_dir}; client_max_body_size 0; keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{self.origin_port};
    root {origin_dir}/www;
    location = /upload {{ return 204; }}
  }}
}}
""")
        # Uploads go to a sink that reads every body (nginx answers before reading one; see
        # upload_sink.py), through a second instance of each proxy.
        self.sink_port = free_port()
        self.sink = subprocess.Popen(pin(LOAD_CPU, [sys.executable, str(Path(__file__).parent / "upload_sink.py"), str(self.sink_port)]),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        # The origin shares the load CPU: it is the same for every proxy.
        self.origin = subprocess.Popen(pin(LOAD_CPU, ["nginx", "-c", str(origin_dir / "nginx.conf"), "-e", str(origin_dir / "error.log")]),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(0.5)


def h2load(url, n, conns, extra):
    r = subprocess.run(pin(LOAD_CPU, ["h2load", "--h1", "-n", str(n), "-c", str(conns), "-t", "1"] + extra + [url]),
                       capture_output=True, text=True, timeout=600)
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", r.stdout)
    ok = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", r.stdout)
    if not m or not ok:
        raise RuntimeError(f"h2load: {r.stdout[-800:]} {r.stderr[-400:]}")
    return float(m.group(3)), int(ok.group(1))


def measure(t, ctx):
    url = f"https://127.0.0.1:{t.port}/"
    args = ctx.args
    out = {}
    # Idle TLS connections first, on the fresh process (later phases leave freed memory that
    # new connections would reuse without growing the RSS): RSS growth per connection after
    # one request each.
    base = rss_kib(t.pids())
    held = []
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    for _ in range(args.idle):
        s = context.wrap_socket(socket.create_connection(("127.0.0.1", t.port)), server_hostname="localhost")
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        s.recv(65536)
        held.append(s)
    time.sleep(1.0)
    out["idle_kib"] = (rss_kib(t.pids()) - base) / args.idle
    for s in held:
        s.close()
    # Full handshakes: a new TLS connection for every request.
    before = cpu_ticks(t.pids())
    rate, ok = h2load(url, args.handshakes, 64, ["-H", "Connection: close"])
    out["full_hs"] = rate
    out["full_hs_cpu_ms"] = (cpu_ticks(t.pids()) - before) * 1000 / max(ok, 1)
    # Resumed handshakes, serial (openssl s_time reuses its session).
    r = subprocess.run(pin(LOAD_CPU, ["openssl", "s_time", "-connect", f"127.0.0.1:{t.port}", "-reuse", "-time", str(args.stime)]),
                       capture_output=True, text=True, timeout=120)
    m = re.findall(r"(\d+) connections in ([\d.]+)s", r.stdout)
    out["resumed_hs"] = int(m[-1][0]) / float(m[-1][1]) if m else float("nan")
    # Keep-alive requests over TLS.
    before = cpu_ticks(t.pids())
    rate, ok = h2load(url, args.requests, 64, [])
    out["ka_rps"] = rate
    out["ka_cpu_10k"] = (cpu_ticks(t.pids()) - before) * 10000 / max(ok, 1)
    # Bulk: 1 GiB down and up.
    size = args.gib * (1 << 30)
    before = cpu_ticks(t.pids())
    start = time.monotonic()
    r = subprocess.run(pin(LOAD_CPU, ["curl", "-sk", "-o", "/dev/null", "-w", "%{size_download}", url + "big"]),
                       capture_output=True, text=True, timeout=600)
    took = time.monotonic() - start
    if r.stdout.strip() != str(size):
        raise RuntimeError(f"download got {r.stdout} bytes")
    out["down_mbs"] = size / took / 1e6
    out["down_cpu_gib"] = (cpu_ticks(t.pids()) - before) / args.gib
    uploader = type(t)(t.name, ctx, origin=ctx.sink_port, suffix="-upload")
    try:
        uploader.start()
        before = cpu_ticks(uploader.pids())
        start = time.monotonic()
        r = subprocess.run(pin(LOAD_CPU, ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code} %{size_upload}", "-H", "Expect:",
                                          "-T", str(ctx.big), f"https://127.0.0.1:{uploader.port}/upload"]),
                           capture_output=True, text=True, timeout=600)
        took = time.monotonic() - start
        if r.stdout.strip() != f"200 {size}":
            raise RuntimeError(f"upload: {r.stdout} {r.stderr}")
        out["up_mbs"] = size / took / 1e6
        out["up_cpu_gib"] = (cpu_ticks(uploader.pids()) - before) / args.gib
    finally:
        uploader.stop()
    return out


ROWS = [("full_hs", "full handshakes/s (h2load, Connection: close, c64)", "high"),
        ("full_hs_cpu_ms", "  proxy CPU ms per full handshake", "low"),
        ("resumed_hs", "resumed handshakes/s (openssl s_time -reuse, serial)", "high"),
        ("ka_rps", "keep-alive requests/s (h2load --h1, c64)", "high"),
        ("ka_cpu_10k", "  proxy CPU-s per 10k requests", "low"),
        ("down_mbs", "download MB/s (1 GiB, curl)", "high"),
        ("down_cpu_gib", "  proxy CPU-s per GiB down", "low"),
        ("up_mbs", "upload MB/s (1 GiB, curl)", "high"),
        ("up_cpu_gib", "  proxy CPU-s per GiB up", "low"),
        ("idle_kib", "RSS per idle TLS connection (KiB)", "low")]

TARGET_CHECKS = [("full_hs", "full handshakes/s >= best anchor", lambda ours, best: ours >= best, "high"),
                 ("ka_cpu_10k", "keep-alive CPU per request <= 0.9 x best anchor", lambda ours, best: ours <= 0.9 * best, "low"),
                 ("down_mbs", "download MB/s >= best anchor", lambda ours, best: ours >= best, "high"),
                 ("up_mbs", "upload MB/s >= best anchor", lambda ours, best: ours >= best, "high"),
                 ("idle_kib", "idle TLS connection memory <= best anchor", lambda ours, best: ours <= best, "low")]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", type=Path, required=True, help="directory with the release `proxy`")
    p.add_argument("--only", default=",".join(TARGETS), help="comma-separated targets (default: all)")
    p.add_argument("--rounds", type=int, default=1, help="rounds; medians are reported")
    p.add_argument("--handshakes", type=int, default=6000)
    p.add_argument("--requests", type=int, default=150000)
    p.add_argument("--stime", type=int, default=3, help="seconds of openssl s_time")
    p.add_argument("--gib", type=int, default=1)
    p.add_argument("--idle", type=int, default=2000)
    p.add_argument("--json", type=Path, help="write the medians here")
    args = p.parse_args()
    ensure_tools(TOOLS)
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix="tls-bench-") as tmp:
        ctx = Context(args, Path(tmp))
        try:
            results = run_rounds(args, TARGETS, ctx, measure, "round")
        finally:
            os.killpg(ctx.origin.pid, signal.SIGTERM)
            os.killpg(ctx.sink.pid, signal.SIGTERM)
    report(f"TLS (ECDSA P-256, 1 worker each, proxy on CPU {PROXY_CPU}, load on CPU {LOAD_CPU}; medians of {args.rounds} round(s))",
           results, ROWS, TARGET_CHECKS, args.json, width=54)


def run_rounds(args, targets, ctx, measure, label):
    """Runs `measure` on each target of `args.only`, `args.rounds` times; one failing target
    does not lose the others' figures. Returns {name: [figures per round]}."""
    names = [n for n in args.only.split(",") if n]
    results = {n: [] for n in names}
    for round_ in range(args.rounds):
        for name in names:
            t = targets[name](name, ctx)
            log(f"{label} {round_ + 1}/{args.rounds}: {name}")
            try:
                t.start()
                results[name].append(measure(t, ctx))
            except Exception as e:
                log(f"{name}: {e}")
            finally:
                t.stop()
    return results


def report(title, results, rows, checks, json_path, width):
    """Prints the medians as a Markdown table and each target's verdict against the best anchor
    in the same run; writes the medians to `json_path` if given."""
    medians = {n: {k: statistics.median([r[k] for r in rs]) for k in rs[0]} for n, rs in results.items() if rs}
    print(f"\n{title}")
    print("| figure".ljust(width) + " | " + " | ".join(n.rjust(9) for n in medians) + " |")
    print("|" + "-" * (width - 1) + "|" + "|".join("-" * 11 for _ in medians) + "|")
    for key, label, _ in rows:
        cells = []
        for n in medians:
            v = medians[n].get(key, float("nan"))
            cells.append((f"{v:.0f}" if v >= 100 else f"{v:.2f}").rjust(9))
        print(f"| {label}".ljust(width) + " | " + " | ".join(cells) + " |")
    if "ours" in medians:
        anchors = [n for n in medians if n != "ours"]
        print()
        for key, label, check, better in checks:
            if not anchors:
                break
            values = {n: medians[n][key] for n in anchors}
            best_name = max(values, key=values.get) if better == "high" else min(values, key=values.get)
            ours, best = medians["ours"][key], values[best_name]
            verdict = "met" if check(ours, best) else "NOT met"
            print(f"target {label}: {verdict} (ours {ours:.2f}, best anchor {best_name} {best:.2f}, ratio {ours / best:.2f})")
    if json_path:
        json_path.write_text(json.dumps(medians, indent=1))

if __name__ == "__main__":
    main()
