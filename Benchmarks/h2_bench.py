#!/usr/bin/env python3
"""HTTP/2 benchmark: this proxy against nginx, HAProxy, h2o and nghttpx terminating HTTP/2 (over
TLS with ALPN h2, and cleartext h2c with prior knowledge) in front of one cleartext nginx origin
spoken to in HTTP/1.1, each with one worker, access logs off and the same ECDSA P-256 certificate.
The proxy under test is pinned to CPU 0, h2load and the origin to CPU 1 (as in bench.py and
tls_bench.py).

Figures, per proxy, for TLS and for h2c, at -m 10 and -m 100 streams per connection:
  requests/s            h2load -c 64 -m M (a small body from the origin)
  CPU-s per 10k         the proxy's user + system CPU over the run, per 10,000 requests
  p99 ms                99th percentile of h2load's per-request times (--log-file)
and, once per proxy:
  idle h2 connection    resident memory growth per connection: 1000 TLS connections that each
                        spoke h2 (preface, SETTINGS, one request) and then stay open

Targets (ratios in this run): requests/s >= the best anchor and CPU per request <= 0.9 x the best
anchor at -m 10; memory per idle h2 connection <= the best anchor's.

  python3 Benchmarks/h2_bench.py --bin .build/release [--rounds N] [--only ours,nginx]
"""
import argparse
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench import ensure_tools  # noqa: E402
from tls_bench import (LOAD_CPU, PROXY_CPU, Target, cpu_ticks, free_port, pin, report, rss_kib,  # noqa: E402
                       run_rounds)

TOOLS = {"h2load": "nghttp2-client", "nghttpx": "nghttp2-proxy", "nginx": "nginx-light", "haproxy": "haproxy",
         "h2o": "h2o", "curl": "curl", "openssl": "openssl", "taskset": "util-linux"}


class H2Target(Target):
    """A proxy with a TLS port (`port`, ALPN h2) and a cleartext h2c port (`h2c_port`)."""

    def __init__(self, name, ctx):
        super().__init__(name, ctx)
        self.h2c_port = free_port()


class Ours(H2Target):
    def command(self):
        c = self.ctx
        config = {"listen": [{"address": f"127.0.0.1:{self.port}",
                              "tls": {"certificates": [{"cert": str(c.cert), "key": str(c.key)}]}},
                             f"127.0.0.1:{self.h2c_port}"],
                  "backends": [{"url": f"http://127.0.0.1:{self.origin_port}"}],
                  "health_check": {"path": "/", "interval_ms": 5000},
                  "access_log": None, "workers": 1, "limits": {"max_connections": 10000}}
        path = self.dir / "config.json"
        path.write_text(json.dumps(config))
        return [str(c.args.bin / "proxy"), "--config", str(path)]


class Nginx(H2Target):
    def command(self):
        c = self.ctx
        (self.dir / "nginx.conf").write_text(f"""
daemon off; master_process off; worker_processes 1; error_log {self.dir}/error.log; pid {self.dir}/nginx.pid;
events {{ worker_connections 20000; }}
http {{
  access_log off; client_body_temp_path {self.dir}; proxy_temp_path {self.dir}; fastcgi_temp_path {self.dir};
  uwsgi_temp_path {self.dir}; scgi_temp_path {self.dir}; client_max_body_size 0; proxy_request_buffering off;
  proxy_buffering off; http2_max_requests 1000000; keepalive_requests 1000000;
  upstream origin {{ server 127.0.0.1:{self.origin_port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{self.port} ssl http2; listen 127.0.0.1:{self.h2c_port} http2;
    ssl_certificate {c.cert}; ssl_certificate_key {c.key};
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets on; ssl_session_cache off;
    location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
""")
        return ["nginx", "-c", str(self.dir / "nginx.conf"), "-e", str(self.dir / "error.log")]


class HAProxy(H2Target):
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
  bind 127.0.0.1:{self.port} ssl crt {c.combined} alpn h2,http/1.1
  bind 127.0.0.1:{self.h2c_port} proto h2
  default_backend b
backend b
  http-reuse always
  server o 127.0.0.1:{self.origin_port}
""")
        return ["haproxy", "-f", str(self.dir / "haproxy.cfg")]


class H2O(H2Target):
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
listen:
  host: 127.0.0.1
  port: {self.h2c_port}
hosts:
  "*":
    paths:
      "/":
        proxy.reverse.url: http://127.0.0.1:{self.origin_port}/
""")
        return ["h2o", "-c", str(self.dir / "h2o.conf")]


class Nghttpx(H2Target):
    def command(self):
        c = self.ctx
        return ["nghttpx", "--workers=1", "--no-ocsp", "--accesslog-file=/dev/null", f"--errorlog-file={self.dir}/error.log",
                f"--frontend=127.0.0.1,{self.port}", f"--frontend=127.0.0.1,{self.h2c_port};no-tls",
                f"--backend=127.0.0.1,{self.origin_port}", "--backend-keep-alive-timeout=60s",
                f"--pid-file={self.dir}/nghttpx.pid", str(c.key), str(c.cert)]


TARGETS = {"ours": Ours, "nginx": Nginx, "haproxy": HAProxy, "h2o": H2O, "nghttpx": Nghttpx}


class Context:
    def __init__(self, args, workdir):
        self.args, self.dir = args, workdir
        self.key, self.cert = workdir / "bench.key", workdir / "bench.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                        "-keyout", str(self.key), "-out", str(self.cert), "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
        self.combined = workdir / "bench-combined.pem"
        self.combined.write_text(self.cert.read_text() + self.key.read_text())
        self.origin_port = free_port()
        origin_dir = workdir / "origin"
        origin_dir.mkdir()
        (origin_dir / "www").mkdir()
        (origin_dir / "www" / "index.html").write_text("hello from the origin\n")
        (origin_dir / "nginx.conf").write_text(f"""
daemon off; master_process off; worker_processes 1; error_log {origin_dir}/error.log; pid {origin_dir}/nginx.pid;
events {{ worker_connections 20000; }}
http {{
  access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{self.origin_port}; root {origin_dir}/www; }}
}}
""")
        self.origin = subprocess.Popen(pin(LOAD_CPU, ["nginx", "-c", str(origin_dir / "nginx.conf"), "-e", str(origin_dir / "error.log")]),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(0.5)


def h2load(url, n, conns, streams, logfile):
    r = subprocess.run(pin(LOAD_CPU, ["h2load", "-n", str(n), "-c", str(conns), "-m", str(streams), "-t", "1",
                                      f"--log-file={logfile}", url]), capture_output=True, text=True, timeout=600)
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", r.stdout)
    ok = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", r.stdout)
    proto = re.search(r"Application protocol: (\S+)", r.stdout)
    if not m or not ok or (url.startswith("https") and (not proto or proto.group(1) != "h2")):
        raise RuntimeError(f"h2load: {r.stdout[-800:]} {r.stderr[-400:]}")
    times = []
    with open(logfile) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1] == "200":
                times.append(int(parts[2]))
    times.sort()
    p99 = times[int(len(times) * 0.99) - 1] / 1000 if times else float("nan")
    return float(m.group(3)), int(ok.group(1)), p99


def h2_request_bytes():
    """The preface, an empty SETTINGS frame and a GET / on stream 1 (HPACK: static-table
    :method GET, :scheme https, :path /, and :authority localhost as a literal)."""
    block = bytes([0x82, 0x87, 0x84, 0x41, 9]) + b"localhost"
    headers = len(block).to_bytes(3, "big") + bytes([0x1, 0x5]) + (1).to_bytes(4, "big") + block
    return b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 0x4, 0, 0, 0, 0, 0]) + headers


def idle_connections(t, count):
    """RSS growth per idle h2 connection (TLS), each after one answered request."""
    base = rss_kib(t.pids())
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    held = []
    request = h2_request_bytes()
    for _ in range(count):
        s = context.wrap_socket(socket.create_connection(("127.0.0.1", t.port)), server_hostname="localhost")
        if s.selected_alpn_protocol() != "h2":
            raise RuntimeError("ALPN did not select h2")
        s.sendall(request)
        s.settimeout(5)
        got = b""
        while b"hello from the origin" not in got:  # the response's DATA
            d = s.recv(65536)
            if not d:
                raise RuntimeError("closed before the answer")
            got += d
        held.append(s)
    time.sleep(1.0)
    per = (rss_kib(t.pids()) - base) / count
    for s in held:
        s.close()
    return per


def measure(t, ctx):
    args = ctx.args
    out = {"idle_kib": idle_connections(t, args.idle)}
    for scheme, port in (("tls", t.port), ("h2c", t.h2c_port)):
        url = f"{'https' if scheme == 'tls' else 'http'}://127.0.0.1:{port}/"
        for m in (10, 100):
            before = cpu_ticks(t.pids())
            rate, ok, p99 = h2load(url, args.requests, 64, m, ctx.dir / f"{t.name}-{scheme}-{m}.log")
            out[f"{scheme}_m{m}_rps"] = rate
            out[f"{scheme}_m{m}_cpu_10k"] = (cpu_ticks(t.pids()) - before) * 10000 / max(ok, 1)
            out[f"{scheme}_m{m}_p99_ms"] = p99
    return out


ROWS = []
for scheme, label in (("tls", "h2 over TLS"), ("h2c", "h2c")):
    for m in (10, 100):
        ROWS += [(f"{scheme}_m{m}_rps", f"{label}, c64 m{m}: requests/s", "high"),
                 (f"{scheme}_m{m}_cpu_10k", "  proxy CPU-s per 10k requests", "low"),
                 (f"{scheme}_m{m}_p99_ms", "  p99 ms", "low")]
ROWS.append(("idle_kib", "RSS per idle h2 connection over TLS (KiB)", "low"))

TARGET_CHECKS = [("tls_m10_rps", "h2 over TLS m10 requests/s >= best anchor", lambda o, b: o >= b, "high"),
                 ("tls_m10_cpu_10k", "h2 over TLS m10 CPU per request <= 0.9 x best anchor", lambda o, b: o <= 0.9 * b, "low"),
                 ("h2c_m10_rps", "h2c m10 requests/s >= best anchor", lambda o, b: o >= b, "high"),
                 ("h2c_m10_cpu_10k", "h2c m10 CPU per request <= 0.9 x best anchor", lambda o, b: o <= 0.9 * b, "low"),
                 ("idle_kib", "idle h2 connection memory <= best anchor", lambda o, b: o <= b, "low")]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", type=Path, required=True, help="directory with the release `proxy`")
    p.add_argument("--only", default=",".join(TARGETS), help="comma-separated targets (default: all)")
    p.add_argument("--rounds", type=int, default=1, help="rounds; medians are reported")
    p.add_argument("--requests", type=int, default=200000)
    p.add_argument("--idle", type=int, default=1000)
    p.add_argument("--json", type=Path, help="write the medians here")
    args = p.parse_args()
    ensure_tools(TOOLS)
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix="h2-bench-") as tmp:
        ctx = Context(args, Path(tmp))
        try:
            results = run_rounds(args, TARGETS, ctx, measure, "h2 round")
        finally:
            os.killpg(ctx.origin.pid, signal.SIGTERM)
    report(f"HTTP/2 (ECDSA P-256, 1 worker each, HTTP/1.1 origin; proxy on CPU {PROXY_CPU}, load on CPU {LOAD_CPU}; "
           f"medians of {args.rounds} round(s))", results, ROWS, TARGET_CHECKS, args.json, width=50)

if __name__ == "__main__":
    main()
