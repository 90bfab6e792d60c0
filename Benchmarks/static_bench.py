#!/usr/bin/env python3
"""Static files benchmark: this proxy's `"static"` route against nginx (`root`, sendfile on) and
Caddy's `file_server`, each with one worker pinned to one core (Caddy: GOMAXPROCS=1), the load
on the other core.

Part 1 — small files: a 1 KiB file, wrk -t1 -c64, 2 s warm-up then `--duration` s measured,
rounds interleaved (each server started fresh each round); requests/s, p99 and the server's CPU
per request (user + system from /proc ÷ requests). Medians over rounds.

Part 2 — a 1 GiB file (sparse, so the disk is not what is measured): one curl download to
/dev/null per round; MB/s and the server's CPU seconds. Medians over rounds.

  python3 Benchmarks/static_bench.py --bin .build/release [--rounds N] [--duration S] [--json FILE]

Everything listens on 127.0.0.1 on free ports; every process started here runs in its own
process group and is killed on exit; every run has a timeout.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench import Pinning, Processes, children, cpu_seconds, ensure_tools, free_port, raise_nofile, run, wait_port  # noqa: E402

TOOLS = {"wrk": "wrk", "nginx": "nginx-light", "caddy": "caddy", "curl": "curl", "taskset": "util-linux"}
SERVERS = ["swift-proxy", "nginx", "caddy"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.bin = Path(args.bin)
        self.procs = Processes()
        self.pin = Pinning()
        self.tmp = Path(tempfile.mkdtemp(prefix="static-bench-"))
        self.site = self.tmp / "site"
        self.site.mkdir()
        (self.site / "small.txt").write_bytes(b"x" * 1024)
        with open(self.site / "big.bin", "wb") as f:
            f.truncate(1 << 30)

    def start(self, server: str) -> tuple[subprocess.Popen, int]:
        port = free_port()
        if server == "swift-proxy":
            config = self.tmp / "proxy.json"
            config.write_text(json.dumps({"listen": [f"127.0.0.1:{port}"], "workers": 1, "access_log": None,
                                          "routes": [{"path": "/", "static": {"root": str(self.site)}}]}))
            p = self.procs.start(self.pin.proxy([str(self.bin / "proxy"), "--config", str(config)]), self.tmp / "proxy.log")
        elif server == "nginx":
            conf = self.tmp / "nginx.conf"
            conf.write_text(f"""daemon off; worker_processes 1; error_log {self.tmp}/nginx-error.log; pid {self.tmp}/nginx.pid;
events {{ worker_connections 4096; }}
http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000000; default_type application/octet-stream;
  client_body_temp_path {self.tmp}; proxy_temp_path {self.tmp}; fastcgi_temp_path {self.tmp}; uwsgi_temp_path {self.tmp}; scgi_temp_path {self.tmp};
  server {{ listen 127.0.0.1:{port}; root {self.site}; etag on; }} }}
""")
            p = self.procs.start(self.pin.proxy(["nginx", "-c", str(conf), "-e", str(self.tmp / "nginx-error.log")]), self.tmp / "nginx.log")
        else:
            caddyfile = self.tmp / "Caddyfile"
            caddyfile.write_text(f"{{\n  admin off\n  auto_https off\n  log {{\n    output discard\n  }}\n}}\n"
                                 f"http://127.0.0.1:{port} {{\n  root * {self.site}\n  file_server\n}}\n")
            env = dict(os.environ, GOMAXPROCS="1", HOME=str(self.tmp), XDG_DATA_HOME=str(self.tmp), XDG_CONFIG_HOME=str(self.tmp))
            p = self.procs.start(self.pin.proxy(["caddy", "run", "--config", str(caddyfile), "--adapter", "caddyfile"]),
                                 self.tmp / "caddy.log", env=env)
        wait_port(port, 20, p)
        time.sleep(0.3)  # nginx's worker, Caddy's listeners
        return p, port

    def small(self, server: str) -> dict:
        p, port = self.start(server)
        try:
            url = f"http://127.0.0.1:{port}/small.txt"
            check = run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url], timeout=10).stdout
            if check != "200 1024":
                raise RuntimeError(f"{server}: /small.txt answered {check}")
            run(self.pin.load(["wrk", "-t1", "-c64", "-d2s", url]), timeout=40)
            pids = [p.pid] + children(p.pid)  # nginx: the master and its worker
            before = cpu_seconds(pids)
            out = run(self.pin.load(["wrk", "-t1", "-c64", f"-d{self.args.duration:g}s", "--latency", url]),
                      timeout=self.args.duration + 40).stdout
            cpu = cpu_seconds(pids) - before
            requests = int(re.search(r"(\d+) requests in", out).group(1))
            seconds = float(re.search(r"requests in ([\d.]+)s", out).group(1))
            non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", out, re.M)
            p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)] if m else None
            return {"rps": requests / seconds, "p99_ms": p99, "cpu_us_per_req": cpu / max(requests, 1) * 1e6,
                    "non2xx": int(non2xx.group(1)) if non2xx else 0}
        finally:
            self.procs.stop(p)

    def big(self, server: str) -> dict:
        p, port = self.start(server)
        try:
            pids = [p.pid] + children(p.pid)
            before = cpu_seconds(pids)
            started = time.monotonic()
            out = run(self.pin.load(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                                     f"http://127.0.0.1:{port}/big.bin"]), timeout=300).stdout
            elapsed = time.monotonic() - started
            cpu = cpu_seconds(pids) - before
            code, size = out.split()
            if code != "200" or int(size) != 1 << 30:
                raise RuntimeError(f"{server}: /big.bin answered {out}")
            return {"mb_per_s": (1 << 30) / elapsed / 1e6, "cpu_s": cpu}
        finally:
            self.procs.stop(p)

    def run(self) -> dict:
        results: dict = {s: {"small": [], "big": []} for s in SERVERS}
        for r in range(self.args.rounds):
            for s in SERVERS:
                log(f"round {r + 1}/{self.args.rounds}: {s}")
                results[s]["small"].append(self.small(s))
                results[s]["big"].append(self.big(s))
        return results


def median(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", required=True, help="the directory holding this build's proxy")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--json")
    args = parser.parse_args()
    ensure_tools(TOOLS)
    raise_nofile()
    bench = Bench(args)
    try:
        results = bench.run()
    finally:
        bench.procs.stop_all()
    log(json.dumps(results))
    print(f"\nStatic files — one worker each ({bench.pin.describe()}), medians of {args.rounds} rounds\n")
    print(f"| server | 1 KiB file req/s | p99 ms | CPU µs/req | vs nginx | 1 GiB file MB/s | CPU s for 1 GiB |")
    print(f"|---|--:|--:|--:|--:|--:|--:|")
    base = median(results["nginx"]["small"], "cpu_us_per_req")
    for s in SERVERS:
        small, big = results[s]["small"], results[s]["big"]
        cpu = median(small, "cpu_us_per_req")
        print(f"| {s} | {median(small, 'rps'):.0f} | {median(small, 'p99_ms'):.2f} | {cpu:.2f} | {cpu / base:.3f} | "
              f"{median(big, 'mb_per_s'):.0f} | {median(big, 'cpu_s'):.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
