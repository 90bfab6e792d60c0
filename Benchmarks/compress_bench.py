#!/usr/bin/env python3
"""Compression benchmark: this proxy's `"compress"` (gzip, brotli) against nginx's gzip at the
same level, each proxy with one worker pinned to one core, the load and the origin on the other.

The origin is one nginx serving two generated, deterministic text files with no compression of its
own: data.json (a JSON array of records, about 100 KiB) and app.js (JavaScript-like code, about
1 MiB). In front of it, each started fresh each round (rounds interleaved):

  swift-proxy gzip   "compress": {"encodings": ["gzip"], "gzip_level": LEVEL, "min_bytes": 1024}
  swift-proxy br     "compress": {"encodings": ["br"], "brotli_level": BR_LEVEL, "min_bytes": 1024}
  nginx gzip         proxy_pass with gzip on; gzip_comp_level LEVEL; gzip_proxied any
  swift-proxy none   no "compress": the cost of proxying alone (same Accept-Encoding: gzip)

Before the load, one request per proxy and file checks the Content-Encoding and that the body
decodes to the origin's file (brotli: decoded only when Python's `brotli` module is there) and
records the compressed size. Then wrk -t1 -c16 with `Accept-Encoding: gzip` (`br` for the br row),
2 s warm-up, `--duration` s measured: requests/s, MB/s of uncompressed body (requests × file size,
MB = 10^6 bytes) and the proxy's CPU (user + system from /proc, master and workers) per MB.
Medians over rounds. Target: swift-proxy gzip CPU per MB ≤ 1.25 × nginx gzip's, for each file.

  python3 Benchmarks/compress_bench.py --bin .build/release [--level 5] [--rounds N] [--duration S]
                                       [--connections C] [--only nginx,gzip,...] [--json FILE]

Everything listens on 127.0.0.1 on free ports; every process started here runs in its own
process group and is killed on exit; every run has a timeout.
"""
from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench import Pinning, Processes, children, cpu_seconds, ensure_tools, free_port, raise_nofile, run, wait_port  # noqa: E402

try:
    import brotli  # type: ignore
except ImportError:
    brotli = None

ROOT = Path(__file__).resolve().parent.parent
TOOLS = {"wrk": "wrk", "nginx": "nginx-light", "taskset": "util-linux"}
ROWS = ["swift-proxy gzip", "swift-proxy br", "nginx gzip", "swift-proxy none"]
FILES = ["data.json", "app.js"]
TARGET = 1.25
WORDS = ("user order item cart price total account session token widget panel render update fetch "
         "value state event handler config option theme layout color status result error message "
         "index count range filter query cache store record field").split()
NAMES = "Ada Alan Grace Linus Barbara Ken Dennis Margaret Edsger Donald Frances Niklaus John Radia".split()
CITIES = "Paris Berlin Lisbon Oslo Madrid Vienna Prague Dublin Warsaw Athens Zurich Helsinki".split()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_json(rng: random.Random, size: int) -> bytes:
    """A JSON array of records (repeated keys, varied values) of at least `size` bytes."""
    records, length = [], 2
    while length < size:
        first, last = rng.choice(NAMES), rng.choice(NAMES) + "son"
        r = {"id": len(records) + 1, "uuid": "%032x" % rng.getrandbits(128), "name": f"{first} {last}",
             "email": f"{first.lower()}.{last.lower()}{rng.randrange(100)}@example.com",
             "active": rng.random() < 0.7, "score": round(rng.uniform(0, 100), 2), "city": rng.choice(CITIES),
             "tags": rng.sample(WORDS, rng.randrange(1, 4)),
             "created": f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T{rng.randrange(24):02d}:"
                        f"{rng.randrange(60):02d}:{rng.randrange(60):02d}Z"}
        records.append(r)
        length += len(json.dumps(r)) + 2
    return json.dumps(records).encode()


def make_js(rng: random.Random, size: int) -> bytes:
    """JavaScript-like code (functions built from a small vocabulary, varied numbers) of at least `size` bytes."""
    parts, length = [], 0
    while length < size:
        a, b, c = rng.sample(WORDS, 3)
        name = f"{a}{b.capitalize()}{c.capitalize()}{rng.randrange(1000)}"
        text = (f"export function {name}(event, options = {{}}) {{\n"
                f"  const {a} = options.{b} ?? {rng.randrange(10000)};\n"
                f"  const {c}List = (event.detail.{c}s || []).filter((x) => x.{a} > {rng.uniform(0, 1):.3f});\n"
                f"  if ({c}List.length > {rng.randrange(50)}) {{\n"
                f"    return render{b.capitalize()}(\"{a}-{c}\", {c}List.map((x) => x.{b} * {a}), options.theme);\n"
                f"  }}\n  console.debug(`{name}: ${{{c}List.length}} {c}s, {b}=${{{a}}}`);\n"
                f"  return {{ {a}, {c}: {c}List[0] ?? null, status: {rng.choice(['200', '404', 'null', 'undefined'])} }};\n}}\n\n")
        parts.append(text)
        length += len(text)
    return "".join(parts).encode()


class Bench:
    def __init__(self, args: argparse.Namespace, rows: list[str]) -> None:
        self.args, self.rows = args, rows
        self.bin = Path(args.bin)
        self.procs = Processes()
        self.pin = Pinning()
        self.tmp = Path(tempfile.mkdtemp(prefix="compress-bench-"))
        self.site = self.tmp / "site"
        self.site.mkdir()
        rng = random.Random(20240601)
        self.files = {"data.json": make_json(rng, 100 * 1024), "app.js": make_js(rng, 1 << 20)}
        for name, body in self.files.items():
            (self.site / name).write_bytes(body)
        self.origin_port = 0

    def nginx(self, name: str, port: int, http: str, server: str = "") -> list[str]:
        d = self.tmp / name
        d.mkdir(exist_ok=True)
        user = "user root;" if os.geteuid() == 0 else ""  # as root, workers would switch to nobody (0700 temp dir)
        (d / "nginx.conf").write_text(f"""{user} daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000; keepalive_timeout 120s;
  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};
  {http}
  server {{ listen 127.0.0.1:{port} backlog=1024; {server} }} }}
""")
        return ["nginx", "-p", str(d), "-c", str(d / "nginx.conf"), "-e", str(d / "error.log")]

    def start_origin(self) -> None:
        self.origin_port = free_port()
        conf = self.nginx("origin", self.origin_port, f"""sendfile on; tcp_nopush on; gzip off; root {self.site};
  types {{ application/json json; application/javascript js; text/html html; }} default_type application/octet-stream;""")
        p = self.procs.start(self.pin.load(conf), self.tmp / "origin.log")
        wait_port(self.origin_port, 20, p)

    def swift_config(self, row: str, port: int) -> Path:
        config = {"listen": [f"127.0.0.1:{port}"], "workers": 1, "access_log": None,
                  "backends": [{"id": "origin", "url": f"http://127.0.0.1:{self.origin_port or 2}"}],
                  "health_check": {"path": None, "interval_ms": 60000}}
        if row == "swift-proxy gzip":
            config["compress"] = {"encodings": ["gzip"], "gzip_level": self.args.level, "min_bytes": 1024}
        elif row == "swift-proxy br":
            config["compress"] = {"encodings": ["br"], "brotli_level": self.args.brotli_level, "min_bytes": 1024}
        path = self.tmp / f"{row.replace(' ', '-')}.json"
        path.write_text(json.dumps(config))
        return path

    def preflight(self) -> None:
        """`proxy --check` on every swift config: a build from before `compress` says so here."""
        for row in (r for r in self.rows if r.startswith("swift-proxy")):
            check = run([str(self.bin / "proxy"), "--check", "--config", str(self.swift_config(row, 1))], timeout=30)
            if check.returncode != 0:
                msg = (check.stderr or check.stdout).strip()
                hint = (" — this build predates \"compress\": rebuild (make release), or --only nginx"
                        if "compress" in msg and "unknown key" in msg else "")
                raise SystemExit(f"compress_bench: {self.bin / 'proxy'} rejects the {row!r} config{hint}\n  {msg}")

    def start(self, row: str) -> tuple[subprocess.Popen, int]:
        port = free_port()
        if row.startswith("swift-proxy"):
            cmd = self.pin.proxy([str(self.bin / "proxy"), "--config", str(self.swift_config(row, port))])
        else:
            cmd = self.pin.proxy(self.nginx("nginx-gzip", port, f"""
  upstream origin {{ server 127.0.0.1:{self.origin_port}; keepalive 64; keepalive_requests 1000000; }}
  gzip on; gzip_comp_level {self.args.level}; gzip_types application/json text/html application/javascript;
  gzip_min_length 1024; gzip_proxied any; gzip_http_version 1.1;
  # Buffered as usual, but never spilled to a temp file on disk (1 MiB bodies exceed the buffers).
  proxy_max_temp_file_size 0;""", 'location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }'))
        log_path = self.tmp / f"{row.replace(' ', '-')}.log"
        p = self.procs.start(cmd, log_path)
        try:
            wait_port(port, 20, p)
        except RuntimeError as e:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            self.procs.stop(p)
            raise SystemExit(f"compress_bench: {row} did not start: {e}\n{tail}")
        time.sleep(0.3)  # nginx's worker
        return p, port

    def verify(self, row: str, port: int, name: str, accept: str) -> int:
        """One request: the expected Content-Encoding and a body that decodes to the file; its size on the wire."""
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        try:
            conn.request("GET", f"/{name}", headers={"Accept-Encoding": accept})
            resp = conn.getresponse()
            body, coding = resp.read(), resp.getheader("Content-Encoding")
        finally:
            conn.close()
        want = None if row.endswith("none") else accept
        if resp.status != 200 or coding != want:
            raise SystemExit(f"compress_bench: {row} /{name}: status {resp.status}, Content-Encoding {coding!r}"
                             f" (expected 200, {want!r}) — is compression on in this build?")
        if coding == "gzip":
            decoded = gzip.decompress(body)
        elif coding == "br":
            decoded = brotli.decompress(body) if brotli else None
        else:
            decoded = body
        if decoded is not None and decoded != self.files[name]:
            raise SystemExit(f"compress_bench: {row} /{name}: the body does not decode to the origin's file")
        return len(body)

    def measure(self, row: str, p: subprocess.Popen, port: int, name: str) -> dict:
        accept = "br" if row.endswith("br") else "gzip"
        size = self.verify(row, port, name, accept)
        url = f"http://127.0.0.1:{port}/{name}"
        wrk = ["wrk", "-t1", f"-c{self.args.connections}", "--timeout", "10s", "-H", f"Accept-Encoding: {accept}"]
        run(self.pin.load(wrk + ["-d2s", url]), timeout=40)
        pids = [p.pid] + children(p.pid)  # nginx: master and worker
        before = cpu_seconds(pids)
        out = run(self.pin.load(wrk + [f"-d{self.args.duration:g}s", url]), timeout=self.args.duration + 40).stdout
        cpu = cpu_seconds(pids) - before
        m = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", out)
        if not m:
            raise SystemExit(f"compress_bench: {row} /{name}: unexpected wrk output:\n{out}")
        requests, seconds = int(m.group(1)), float(m.group(2)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[m.group(3)]
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        mb = requests * len(self.files[name]) / 1e6
        return {"rps": requests / seconds, "mb_per_s": mb / seconds, "cpu_ms_per_mb": cpu / max(mb, 1e-9) * 1000,
                "cpu_s": cpu, "requests": requests, "wire_bytes": size,
                "non2xx": int(non2xx.group(1)) if non2xx else 0,
                "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0}

    def run(self) -> dict:
        self.start_origin()
        results: dict = {row: {f: [] for f in FILES} for row in self.rows}
        for r in range(self.args.rounds):
            for row in self.rows:
                log(f"round {r + 1}/{self.args.rounds}: {row}")
                p, port = self.start(row)
                try:
                    for f in FILES:
                        results[row][f].append(self.measure(row, p, port, f))
                finally:
                    self.procs.stop(p)
        return results


def median(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", default=str(ROOT / ".build" / "release"), help="the directory holding this build's proxy")
    parser.add_argument("--level", type=int, default=5, help="gzip level for both proxies (default 5)")
    parser.add_argument("--brotli-level", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--only", help="comma-separated words; keep the rows whose name holds one (e.g. nginx, gzip)")
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = [r for r in ROWS if not args.only or any(w.strip() and w.strip() in r for w in args.only.split(","))]
    if not (Path(args.bin) / "proxy").exists():
        if args.only:
            rows = [r for r in rows if not r.startswith("swift-proxy")]
        else:
            sys.exit(f"compress_bench: no proxy in {args.bin} (--bin DIR, or --only nginx for the nginx row alone)")
        if not rows:
            sys.exit(f"compress_bench: no proxy in {args.bin}")
        log(f"compress_bench: no proxy in {args.bin}: its rows are left out")
    if not rows:
        sys.exit(f"compress_bench: --only {args.only!r} matches none of {', '.join(ROWS)}")
    if "swift-proxy br" in rows and brotli is None:
        log("compress_bench: no Python brotli module: br bodies are checked by their Content-Encoding only")
    ensure_tools(TOOLS)
    raise_nofile()
    bench = Bench(args, rows)
    try:
        bench.preflight()
        results = bench.run()
    finally:
        bench.procs.stop_all()
        shutil.rmtree(bench.tmp, ignore_errors=True)
    log(json.dumps(results))
    sizes = {f: len(b) for f, b in bench.files.items()}
    print(f"\nCompression — gzip level {args.level}, brotli {args.brotli_level}; one worker each ({bench.pin.describe()}); "
          f"wrk -t1 -c{args.connections}, {args.duration:g} s; medians of {args.rounds} rounds\n")
    print("| proxy | file | req/s | MB/s (uncompressed) | CPU ms/MB | vs nginx gzip | bytes on the wire | of original |")
    print("|---|---|--:|--:|--:|--:|--:|--:|")
    medians: dict = {}
    for f in FILES:
        base = median(results["nginx gzip"][f], "cpu_ms_per_mb") if "nginx gzip" in results else float("nan")
        for row in rows:
            rs = results[row][f]
            cpu = median(rs, "cpu_ms_per_mb")
            wire = median(rs, "wire_bytes")
            bad = sum(r["non2xx"] + r["socket_errors"] for r in rs)
            medians.setdefault(row, {})[f] = {"rps": median(rs, "rps"), "mb_per_s": median(rs, "mb_per_s"),
                                               "cpu_ms_per_mb": cpu, "vs_nginx_gzip": cpu / base, "wire_bytes": wire}
            print(f"| {row} | {f} ({sizes[f] / 1024:.0f} KiB) | {median(rs, 'rps'):.0f} | {median(rs, 'mb_per_s'):.0f} | "
                  f"{cpu:.2f} | {cpu / base:.2f} | {wire:.0f} | {wire / sizes[f] * 100:.1f} %"
                  f"{f' ({bad} errors)' if bad else ''} |")
    target: dict = {}
    if "swift-proxy gzip" in medians and "nginx gzip" in medians:
        ratios = {f: medians["swift-proxy gzip"][f]["vs_nginx_gzip"] for f in FILES}
        ok = all(v <= TARGET for v in ratios.values())
        target = {"limit": TARGET, "ratios": ratios, "pass": ok}
        print(f"\nTarget: swift-proxy gzip CPU/MB ≤ {TARGET} × nginx gzip (level {args.level}): "
              + ", ".join(f"{f} {v:.2f}×" for f, v in ratios.items()) + f" → {'PASS' if ok else 'FAIL'}")
    else:
        print("\nTarget: swift-proxy gzip CPU/MB ≤ 1.25 × nginx gzip: not measured (needs both rows)")
    if args.json:
        Path(args.json).write_text(json.dumps({"level": args.level, "brotli_level": args.brotli_level, "sizes": sizes,
                                               "pinning": bench.pin.describe(), "rounds": results,
                                               "medians": medians, "target": target}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
