#!/usr/bin/env python3
"""Balancing benchmark: this proxy's `"balance"` policies against nginx (`least_conn`) and HAProxy
(`leastconn`) in front of the same three uneven backends, each proxy with one worker and access
logs off.

Backends (Benchmarks/delay_backend.py: one asyncio process each, HTTP/1.1 keep-alive, a 3-byte
body; the delay is an event-loop timer on a select() loop, whose timeouts have microsecond
resolution, so a waiting request costs no CPU; fixed seeds, and each backend's count and
generator are reset before every measured run, so runs see the same sequence of draws):
  A  "fast"       every answer after 1 ms
  B  "2x slower"  every answer after 2 ms
  C  "slow tail"  1 ms, but 5 % of answers (drawn at random) after 50 ms
On loopback a backend answers in tens of microseconds, so "2x slower overall" needs a base delay
to mean anything: 1 ms for A and C, 2 ms for B. C's mean (3.45 ms) is worse than B's, but its
median is A's; only a policy that watches latency (or in-flight counts) sees it.

Load: h2load --h1 (HTTP/1.1 keep-alive, one request at a time per connection: closed loop), a
fixed number of connections (-t 1 -c 16 unless told: on two CPUs, -c 32 keeps the load core 80-90 %
busy with the Python backends, which inflates every latency), a warm-up run (2 s), then the
measured run (10 s), whose per-request log gives p50 / p99 / p99.9 / max exactly (nearest rank)
and whose own figure gives requests/s. `--load wrk` uses wrk instead, with a Lua done() that
prints the same figures as one JSON line; but wrk applies its coordinated-omission correction
(stats_correct) to the histogram before done() sees it, adding synthetic samples under every
response slower than the mean interval per connection, so with a 50 ms tail its percentiles
describe an imagined open-loop client, not the requests sent (C alone, one connection: wrk p80
~30 ms where every request but 5 % takes 1.4 ms). Each backend counts what it served during the
measured run: the "A/B/C %" column is the share each got.

Targets (each started fresh for each round, rounds interleaved: T1 T2 ... T1 T2 ...):
  direct         the load generator straight at backend A: the floor (1 ms + the client)
  round_robin, least_request, p2c_ewma, random
                 this proxy, `"balance"` set to that policy, its defaults otherwise (retries,
                 outlier detection: the slow backend answers 200, so it is never ejected);
                 `--only ring_hash` adds ring_hash on client_ip (every request comes from
                 127.0.0.1, so it pins all of them to one backend: not in the default set)
  nginx          `least_conn`, upstream keep-alive (64), HTTP/1.1 upstream
  haproxy        `balance leastconn`, `http-reuse always`, nbthread 1
Proxies run on one core (taskset), the load generator and the backends on the other(s). Printed
after the table: how busy each side's cores were during the measured runs (a saturated load side
inflates every latency) and the CPU used meanwhile by processes this script did not start (noise:
a compiler beside the benchmark). Each figure is the median over rounds; shares are over all
rounds' requests.

Targets of the issue (checked at the end, PASS/FAIL):
  p2c_ewma p99 <= 0.5 x this proxy's round_robin p99
  p2c_ewma p99 <= min(nginx least_conn p99, HAProxy leastconn p99)

  python3 Benchmarks/balance_bench.py --bin .build/release [--rounds N] [--duration S]
                                      [--only p2c_ewma,nginx] [--json FILE] [--connections N]
                                      [--load h2load|wrk]

Everything listens on 127.0.0.1 on free ports; every process started here runs in its own process
group and is killed on exit, error or Ctrl-C; every load run has a duration and a timeout.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench import (Pinning, Processes, ensure_tools, foreign_cpu, foreign_cpu_since, free_port, haproxy_config,  # noqa: E402
                   raise_nofile, wait_port)

HERE = Path(__file__).resolve().parent
TOOLS = {"h2load": "nghttp2-client", "wrk": "wrk", "nginx": "nginx-light", "haproxy": "haproxy",
         "taskset": "util-linux"}

# name, base delay ms, slow fraction, slow delay ms, seed
BACKENDS = [("A", 1.0, 0.0, 0.0, 11), ("B", 2.0, 0.0, 0.0, 12), ("C", 1.0, 0.05, 50.0, 13)]
POLICIES = ["round_robin", "least_request", "p2c_ewma", "random"]
DEFAULT_TARGETS = ["direct"] + POLICIES + ["nginx", "haproxy"]
ALL_TARGETS = DEFAULT_TARGETS + ["ring_hash"]
LABELS = {"direct": "direct (backend A alone)", "nginx": "nginx least_conn", "haproxy": "HAProxy leastconn",
          "ring_hash": "this proxy ring_hash client_ip"}
for _p in POLICIES:
    LABELS[_p] = f"this proxy {_p}"

WRK_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BALANCE-BENCH {"requests":%.0f,"duration_us":%.0f,"p50_us":%.1f,"p99_us":%.1f,"p999_us":%.1f,' ..
    '"max_us":%.1f,"mean_us":%.1f,"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def describe_pinning(pin: Pinning) -> str:
    if not pin.proxy_cpus:
        return "one core: nothing pinned"
    return f"proxies on CPU {pin.proxy_cpus}, the load generator and the backends on CPU {pin.load_cpus}"


def log(msg: str) -> None:
    print(f"[balance-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, str]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        c.close()


def cpu_busy() -> dict[str, tuple[int, int]]:
    """Per-CPU (busy, total) jiffies from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            f = line.split()
            vals = [int(x) for x in f[1:]]
            idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
            out[f[0][3:]] = (sum(vals[:8]) - idle, sum(vals[:8]))
    return out


def busy_share(before: dict, after: dict, cpus: str | None) -> float | None:
    if not cpus:
        return None
    busy = total = 0
    for c in cpus.split(","):
        if c in before and c in after:
            busy += after[c][0] - before[c][0]
            total += after[c][1] - before[c][1]
    return 100.0 * busy / total if total else None


class Context:
    def __init__(self, args, workdir: Path):
        self.args = args
        self.dir = workdir
        self.pin = Pinning()
        self.procs = Processes()
        self.nofile = raise_nofile()
        self.backend_ports: dict[str, int] = {}
        self.lua = workdir / "report.lua"
        self.lua.write_text(WRK_LUA)

    def logfile(self, name: str) -> Path:
        return self.dir / f"{name}.log"

    def start_backends(self) -> None:
        for name, delay, frac, slow, seed in BACKENDS:
            port = free_port()
            cmd = [sys.executable, str(HERE / "delay_backend.py"), "--port", str(port), "--name", name,
                   "--delay-ms", str(delay), "--slow-fraction", str(frac), "--slow-ms", str(slow),
                   "--seed", str(seed)]
            p = self.procs.start(self.pin.load(cmd), self.logfile(f"backend-{name}"))
            wait_port(port, 20, p)
            self.backend_ports[name] = port

    def reset_backends(self) -> None:
        for port in self.backend_ports.values():
            http_get(port, "/__reset")

    def backend_counts(self) -> dict[str, int]:
        return {name: int(http_get(port, "/__count")[1].strip()) for name, port in self.backend_ports.items()}


class Target:
    def __init__(self, key: str, ctx: Context):
        self.key, self.ctx = key, ctx
        self.label = LABELS[key]
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.port = free_port()
        self.proc = self.ctx.procs.start(self.ctx.pin.proxy(self.command()), self.ctx.logfile(self.key))
        try:
            wait_port(self.port, 20, self.proc)
            self.wait_ready()
        except Exception as e:
            tail = self.ctx.logfile(self.key).read_text(errors="replace")[-1500:]
            raise RuntimeError(f"{self.label} did not start: {e}\n{tail}") from None

    def wait_ready(self) -> None:
        # Every backend must be reachable through the proxy (a few plain requests).
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if all(http_get(self.port, "/")[0] == 200 for _ in range(6)):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("no 200 through it within 20 s")

    def stop(self) -> None:
        if self.proc:
            self.ctx.procs.stop(self.proc, grace=5.0)
            self.proc = None


class Direct(Target):
    def start(self) -> None:
        self.port = self.ctx.backend_ports["A"]

    def stop(self) -> None:
        pass


class Ours(Target):
    def command(self) -> list[str]:
        c = self.ctx
        config = {"listen": f"127.0.0.1:{self.port}", "workers": 1, "access_log": None,
                  "backends": [{"id": name, "url": f"http://127.0.0.1:{port}"}
                               for name, port in c.backend_ports.items()],
                  "balance": self.key,
                  "health_check": {"path": "/", "interval_ms": 5000}}
        if self.key == "ring_hash":
            config["hash_key"] = "client_ip"
        path = c.dir / f"{self.key}.json"
        path.write_text(json.dumps(config))
        return [str(c.args.bin / "proxy"), "--config", str(path)]

    def wait_ready(self) -> None:
        # Wait for the health checker to have marked all three backends up.
        deadline = time.monotonic() + 30
        last = ""
        while time.monotonic() < deadline:
            try:
                status, body = http_get(self.port, "/_health")
                last = body
                if status == 200:
                    backends = json.loads(body).get("backends", [])
                    if len(backends) == len(BACKENDS) and all(b.get("healthy") for b in backends):
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"not every backend healthy within 30 s: {last[:500]}")


class Nginx(Target):
    def command(self) -> list[str]:
        d = self.ctx.dir / "nginx"
        d.mkdir(exist_ok=True)
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (d / sub).mkdir(exist_ok=True)
        servers = "\n".join(f"        server 127.0.0.1:{port};" for port in self.ctx.backend_ports.values())
        user = "user root;" if os.geteuid() == 0 else ""  # else workers would run as nobody
        (d / "nginx.conf").write_text(f"""
{user}
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {self.ctx.nofile};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 10000; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    upstream u {{
        least_conn;
{servers}
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{self.port} backlog=1024;
        location / {{
            proxy_pass http://u;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")
        return ["nginx", "-p", str(d), "-c", str(d / "nginx.conf")]


class HAProxy(Target):
    def command(self) -> list[str]:
        cfg = self.ctx.dir / "haproxy.cfg"
        servers = [f"server {name} 127.0.0.1:{port}" for name, port in self.ctx.backend_ports.items()]
        cfg.write_text(haproxy_config(self.port, self.ctx.nofile // 2 - 10, ["balance leastconn"] + servers))
        return ["haproxy", "-f", str(cfg), "-db"]


def make_target(key: str, ctx: Context) -> Target:
    if key == "direct":
        return Direct(key, ctx)
    if key == "nginx":
        return Nginx(key, ctx)
    if key == "haproxy":
        return HAProxy(key, ctx)
    return Ours(key, ctx)


def percentile(sorted_vals: list[int], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_vals:
        return float("nan")
    rank = max(1, -(-len(sorted_vals) * p // 100))  # ceil(n × p / 100)
    return float(sorted_vals[int(min(rank, len(sorted_vals))) - 1])


def run_h2load(ctx: Context, port: int) -> dict:
    """h2load --h1: a warm-up run, then the measured run, whose per-request durations come from
    its log file, so the percentiles are exact and uncorrected."""
    a = ctx.args
    log_path = ctx.dir / "h2load.log"

    def h2load(duration: float, log: bool) -> str:
        cmd = ["h2load", "--h1", "-t", str(a.threads), "-c", str(a.connections), "-D", f"{duration:g}", "-N", "5"]
        if log:
            log_path.unlink(missing_ok=True)
            cmd += ["--log-file", str(log_path)]
        cmd.append(f"http://127.0.0.1:{port}/")
        r = subprocess.run(ctx.pin.load(cmd), capture_output=True, text=True, timeout=duration + 30,
                           stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError(f"h2load exited with {r.returncode}: {(r.stdout + r.stderr).strip()[-500:]}")
        return r.stdout

    if a.warmup > 0:
        h2load(a.warmup, log=False)
        ctx.reset_backends()  # the warm-up's requests do not count
    out = h2load(a.duration, log=True)
    m = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out)
    counts = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                       r"(\d+) errored, (\d+) timeout", out)
    if not m or not counts:
        raise RuntimeError(f"unexpected h2load output:\n{out[-1000:]}")
    durations, non2xx = [], 0
    with open(log_path) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3:
                durations.append(int(parts[2]))
                if not parts[1].startswith("2"):
                    non2xx += 1
    log_path.unlink(missing_ok=True)
    durations.sort()
    if not durations:
        raise RuntimeError("h2load logged no requests")
    _total, _done, _ok, failed, errored, timeout = (int(x) for x in counts.groups())
    return {"rps": float(m.group(1)), "requests": len(durations),
            "p50_us": percentile(durations, 50), "p99_us": percentile(durations, 99),
            "p999_us": percentile(durations, 99.9), "max_us": float(durations[-1]),
            "mean_us": sum(durations) / len(durations),
            "errors": failed + errored + timeout + non2xx, "non2xx": non2xx}


def run_wrk(ctx: Context, port: int) -> dict:
    """wrk: a warm-up run, then the measured run whose Lua done() reports. NB: wrk applies its
    coordinated-omission correction (stats_correct) to the latency histogram before done() sees
    it: each response slower than the mean interval per connection adds synthetic samples, so
    with a 50 ms tail its percentiles are far above the per-request ones."""
    a = ctx.args

    def wrk(duration: float, lua: bool) -> str:
        cmd = ["wrk", "-t", str(a.threads), "-c", str(a.connections), "-d", f"{duration:g}s", "--timeout", "5s"]
        if lua:
            cmd += ["-s", str(ctx.lua)]
        cmd.append(f"http://127.0.0.1:{port}/")
        r = subprocess.run(ctx.pin.load(cmd), capture_output=True, text=True, timeout=duration + 30,
                           stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError(f"wrk exited with {r.returncode}: {r.stderr.strip()[-500:]}")
        return r.stdout

    if a.warmup > 0:
        wrk(a.warmup, lua=False)
        ctx.reset_backends()  # the warm-up's requests do not count
    out = wrk(a.duration, lua=True)
    for line in out.splitlines():
        if line.startswith("BALANCE-BENCH "):
            d = json.loads(line[len("BALANCE-BENCH "):])
            d["rps"] = d["requests"] / (d["duration_us"] / 1e6)
            d["errors"] = d["connect"] + d["read"] + d["write"] + d["status"] + d["timeout"]
            return d
    raise RuntimeError(f"no result line from wrk:\n{out[-1000:]}")


def measure(ctx: Context, t: Target) -> dict:
    ctx.reset_backends()
    before, foreign = cpu_busy(), foreign_cpu()
    started = time.monotonic()
    res = run_wrk(ctx, t.port) if ctx.args.load == "wrk" else run_h2load(ctx, t.port)
    elapsed = time.monotonic() - started
    after = cpu_busy()
    res["other_cpu_pct"] = 100.0 * foreign_cpu_since(foreign) / elapsed
    res["counts"] = ctx.backend_counts()
    res["proxy_core_busy_pct"] = busy_share(before, after, ctx.pin.proxy_cpus)
    res["load_cores_busy_pct"] = busy_share(before, after, ctx.pin.load_cpus)
    return res


def ms(us: float | None) -> str:
    return "—" if us is None else f"{us / 1000:.2f}"


def median_of(rounds: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rounds if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def summarize(results: dict[str, list[dict]]) -> dict[str, dict]:
    out = {}
    for key, rounds in results.items():
        if not rounds:
            continue
        s = {k: median_of(rounds, k) for k in ("rps", "p50_us", "p99_us", "p999_us", "max_us",
                                                 "proxy_core_busy_pct", "load_cores_busy_pct", "other_cpu_pct")}
        s["errors"] = sum(r["errors"] for r in rounds)
        totals = {name: sum(r["counts"].get(name, 0) for r in rounds) for name, *_ in BACKENDS}
        n = sum(totals.values())
        s["share_pct"] = {name: (100.0 * v / n if n else 0.0) for name, v in totals.items()}
        s["rounds"] = len(rounds)
        out[key] = s
    return out


def print_report(ctx: Context, summary: dict[str, dict]) -> list[dict]:
    a = ctx.args
    gen = (f"h2load --h1 -t {a.threads} -c {a.connections} (percentiles of every request)" if a.load == "h2load"
           else f"wrk -t {a.threads} -c {a.connections} (percentiles after wrk's coordinated-omission correction)")
    print(f"\nBalancing: {gen}, {a.duration:g} s measured after a {a.warmup:g} s warm-up, medians of "
          f"{a.rounds} round(s). Backends: A 1 ms; B 2 ms; C 1 ms, 5 % at 50 ms. {describe_pinning(ctx.pin)}.\n")
    w = max(len(LABELS[k]) for k in summary) if summary else 10
    print(f"| {'target'.ljust(w)} |   req/s | p50 ms | p99 ms | p99.9 ms | max ms | A/B/C %  | errors |")
    print(f"|{'-' * (w + 2)}|--------:|-------:|-------:|---------:|-------:|----------|-------:|")
    for key, s in summary.items():
        sh = s["share_pct"]
        share = "/".join(f"{sh[n]:.0f}" for n, *_ in BACKENDS)
        print(f"| {LABELS[key].ljust(w)} | {s['rps']:7.0f} | {ms(s['p50_us']):>6} | {ms(s['p99_us']):>6} | "
              f"{ms(s['p999_us']):>8} | {ms(s['max_us']):>6} | {share.ljust(8)} | {s['errors']:6d} |")
    print("\n(req/s and latencies: medians over rounds; max: the median of each round's maximum; "
          "A/B/C %: each backend's share of all measured requests)")
    busy = [(LABELS[k], s["proxy_core_busy_pct"], s["load_cores_busy_pct"], s["other_cpu_pct"])
            for k, s in summary.items() if s["load_cores_busy_pct"] is not None]
    if busy:
        print("\nCPU during the measured runs, medians: proxy core busy % / load core(s) busy % (load "
              "generator + backends) / other processes' CPU % (noise; 100 = one core):")
        for lbl, p, l, o in busy:
            print(f"  {lbl.ljust(w)}  {p:3.0f} / {l:3.0f} / {o:3.0f}")

    checks = []

    def p99(k):
        return summary.get(k, {}).get("p99_us")

    ours = p99("p2c_ewma")
    print("\nTargets")
    if ours is not None and p99("round_robin") is not None:
        limit = 0.5 * p99("round_robin")
        ok = ours <= limit
        checks.append({"check": "p2c_ewma p99 <= 0.5 x round_robin p99", "p2c_ewma_p99_ms": ours / 1000,
                       "limit_ms": limit / 1000, "ratio_to_round_robin": ours / p99("round_robin"), "pass": ok})
        rr = p99("round_robin")
        print(f"  p2c_ewma p99 ≤ 0.5 × round_robin p99: {ours / 1000:.2f} ms vs 0.5 × {rr / 1000:.2f}"
              f" = {limit / 1000:.2f} ms (ratio {ours / p99('round_robin'):.2f}) → {'PASS' if ok else 'FAIL'}")
    else:
        print("  p2c_ewma p99 ≤ 0.5 × round_robin p99: not measured (needs p2c_ewma and round_robin)")
    anchors = {k: p99(k) for k in ("nginx", "haproxy") if p99(k) is not None}
    if ours is not None and anchors:
        best = min(anchors, key=anchors.get)
        ok = ours <= anchors[best]
        parts = ", ".join(f"{LABELS[k]} {v / 1000:.2f} ms" for k, v in anchors.items())
        checks.append({"check": "p2c_ewma p99 <= min(nginx, HAProxy) p99", "p2c_ewma_p99_ms": ours / 1000,
                       "anchors_p99_ms": {k: v / 1000 for k, v in anchors.items()},
                       "ratio_to_best": ours / anchors[best], "pass": ok,
                       "complete": len(anchors) == 2})
        note = "" if len(anchors) == 2 else " (only one anchor measured)"
        print(f"  p2c_ewma p99 ≤ min(nginx least_conn p99, HAProxy leastconn p99): {ours / 1000:.2f} ms vs "
              f"min({parts}) = {anchors[best] / 1000:.2f} ms (ratio {ours / anchors[best]:.2f}) → "
              f"{'PASS' if ok else 'FAIL'}{note}")
    else:
        print("  p2c_ewma p99 ≤ min(nginx, HAProxy) p99: not measured (needs p2c_ewma and an anchor)")
    return checks


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", type=Path, required=True, help="directory with the release `proxy`")
    p.add_argument("--rounds", type=int, default=3, help="rounds (medians are reported); default 3")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of each measured run; default 10")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of the warm-up run before it; default 2")
    p.add_argument("--connections", type=int, default=16,
                   help="client connections; default 16 (32 nearly saturates the load core on 2 CPUs)")
    p.add_argument("--threads", type=int, default=1, help="load generator threads; default 1 (it has one core)")
    p.add_argument("--load", choices=["h2load", "wrk"], default="h2load",
                   help="load generator: h2load (exact per-request percentiles, the default) or wrk "
                        "(percentiles after wrk's coordinated-omission correction)")
    p.add_argument("--only", default=",".join(DEFAULT_TARGETS),
                   help=f"comma-separated targets out of {','.join(ALL_TARGETS)} (default: all but ring_hash)")
    p.add_argument("--json", type=Path, help="write the raw results, medians and verdicts here")
    args = p.parse_args()
    args.targets = [t for t in args.only.split(",") if t]
    unknown = [t for t in args.targets if t not in ALL_TARGETS]
    if unknown:
        p.error(f"unknown target(s): {', '.join(unknown)}; known: {', '.join(ALL_TARGETS)}")
    if any(t in POLICIES + ["ring_hash"] for t in args.targets) and not (args.bin / "proxy").exists():
        p.error(f"no proxy binary in {args.bin}")
    if args.rounds < 1 or args.duration <= 0:
        p.error("--rounds must be >= 1 and --duration > 0")
    return args


def main() -> int:
    args = parse_args()
    ensure_tools(TOOLS)

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_term)

    started = time.monotonic()
    results: dict[str, list[dict]] = {k: [] for k in args.targets}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="balance-bench-") as tmp:
        ctx = Context(args, Path(tmp))
        # The harness's own requests (resets, counts, readiness) belong to the load side.
        if ctx.pin.load_cpus:
            os.sched_setaffinity(0, {int(c) for c in ctx.pin.load_cpus.split(",")})
        try:
            ctx.start_backends()
            log(f"backends {ctx.backend_ports}; {describe_pinning(ctx.pin)}")
            for rnd in range(args.rounds):
                for key in args.targets:
                    t = make_target(key, ctx)
                    log(f"round {rnd + 1}/{args.rounds}: {t.label}")
                    try:
                        t.start()
                        r = measure(ctx, t)
                        r["round"] = rnd + 1
                        results[key].append(r)
                        log(f"  {r['rps']:.0f} req/s, p50 {ms(r['p50_us'])} p99 {ms(r['p99_us'])} "
                            f"p99.9 {ms(r['p999_us'])} ms, counts {r['counts']}, errors {r['errors']}")
                    except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError) as e:
                        failures.append(f"round {rnd + 1} {key}: {e}")
                        log(f"  FAILED: {e}")
                    finally:
                        t.stop()
        finally:
            ctx.procs.stop_all()
    summary = summarize(results)
    checks = print_report(ctx, summary)
    if failures:
        print("\nFailed runs:\n  " + "\n  ".join(f.splitlines()[0] for f in failures))
    elapsed = time.monotonic() - started
    print(f"\n(took {elapsed:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "backends": [{"name": n, "delay_ms": d, "slow_fraction": f, "slow_ms": s, "seed": seed}
                         for n, d, f, s, seed in BACKENDS],
            "pinning": describe_pinning(ctx.pin), "raw": results, "summary": summary, "checks": checks,
            "failures": failures, "elapsed_s": elapsed}, indent=1))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); every process started here was stopped")
        sys.exit(130)
