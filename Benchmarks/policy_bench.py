#!/usr/bin/env python3
"""Policy benchmark: what a route's edge policy costs per request, and whether a `global` rate
limit holds its rate across two proxy instances sharing one Redis.

Part 1 — cost. One origin (this build's `test-backend`, a fixed small answer), the proxy with one
worker pinned to one core, wrk -t1 -c64 on the other core, a 2 s warm-up then 10 s measured, rounds
interleaved (each target started fresh each round). For each target: requests/s, p99 (wrk
--latency), and the proxy's CPU per request (user + system time from /proc over the measured run
÷ requests answered). Targets:
  none      no policy on the route
  proxy     a `scope: "proxy"` rate limit on client_ip that never triggers (1,000,000 per second,
            burst 1,000,000): the lock-free shared table on every request
  global    the same limit with `scope: "global"` in a local redis-server (Debian's, started here on
            a free port, nothing saved): requests spend leased tokens (lease 1,000), one Redis
            round trip per 1,000 requests
  jwt       `auth.jwt` with an ES256 key (a JWKS file made here with openssl) and the same token on
            every request (cached after its first check)
Medians over rounds; the ratios are against `none` measured in the same rounds.

Part 2 — accuracy. Two proxy instances (one worker each) with one `global` limit on the route
(`--limit-rate` per second, burst `--limit-burst`, default lease), each hammered by its own wrk
(-c32) for 10 s, far above the limit. Let through = requests answered 2xx by both together
(wrk counts the 429s as non-2xx); expected = rate × measured seconds + burst + 1.

Targets (the issue's; PASS/FAIL at the end):
  proxy-scope limit:   CPU per request ≤ 1.05 × none
  global limit:        CPU per request ≤ 1.15 × none
  global accuracy:     let through within ±10 % of expected over 10 s across two instances

  python3 Benchmarks/policy_bench.py --bin .build/release [--rounds N] [--duration S] [--json FILE]

Everything listens on 127.0.0.1 on free ports; every process started here runs in its own process
group and is killed on exit, error or Ctrl-C; every load run has a duration and a timeout.
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
from bench import Pinning, Processes, cpu_seconds, ensure_tools, free_port, raise_nofile, run, wait_port  # noqa: E402

TOOLS = {"wrk": "wrk", "redis-server": "redis-server", "taskset": "util-linux", "openssl": "openssl"}
TARGETS = ["none", "proxy", "global", "jwt"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def b64url(data: bytes) -> str:
    import base64
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_es256(tmp: Path) -> tuple[Path, str]:
    """An ES256 key (openssl), its JWKS file, and a token for it: no Python packages needed."""
    key = tmp / "es256.pem"
    run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)], timeout=30)
    spki = subprocess.run(["openssl", "ec", "-in", str(key), "-pubout", "-outform", "DER"], capture_output=True, timeout=30).stdout
    point = spki[-64:]  # the uncompressed point's x || y ends the SubjectPublicKeyInfo
    jwks = tmp / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": "bench", "x": b64url(point[:32]), "y": b64url(point[32:])}]}))
    header = b64url(json.dumps({"alg": "ES256", "kid": "bench", "typ": "JWT"}).encode())
    payload = b64url(json.dumps({"sub": "bench", "exp": int(time.time()) + 86400}).encode())
    signing_input = f"{header}.{payload}".encode()
    der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key)], input=signing_input, capture_output=True, timeout=30).stdout
    # DER SEQUENCE { INTEGER r, INTEGER s } -> r || s, 32 bytes each.
    def integer(at: int) -> tuple[int, int]:
        assert der[at] == 0x02
        length = der[at + 1]
        return int.from_bytes(der[at + 2:at + 2 + length], "big"), at + 2 + length
    start = 2 if der[1] < 0x80 else 3
    r, after = integer(start)
    s_, _ = integer(after)
    signature = r.to_bytes(32, "big") + s_.to_bytes(32, "big")
    return jwks, f"{header}.{payload}.{b64url(signature)}"


def proxy_config(port: int, origin: int, redis: int, target: str, rate: int = 1_000_000, burst: int = 1_000_000,
                 lease: int | None = None, jwks: Path | None = None) -> str:
    route: dict = {"path": "/", "upstream": "default"}
    if target == "jwt":
        route["auth"] = {"jwt": {"jwks": str(jwks)}}
    if target in ("proxy", "global"):
        limit = {"key": "client_ip", "rate": rate, "per": "1s", "burst": burst, "scope": target}
        if lease:
            limit["lease"] = lease
        route["rate_limit"] = limit
    config = {"listen": [f"127.0.0.1:{port}"], "backends": [{"url": f"http://127.0.0.1:{origin}"}],
              "routes": [route], "health_check": {"path": None, "interval_ms": 60000}, "access_log": None,
              "redis": {"url": f"redis://127.0.0.1:{redis}/0", "timeout_ms": 50, "on_error": "deny"}}
    return json.dumps(config)


def wrk_run(pin: Pinning, port: int, conns: int, duration: float, latency: bool = True, token: str | None = None) -> dict:
    cmd = pin.load(["wrk", "-t1", f"-c{conns}", f"-d{duration:g}s"] + (["--latency"] if latency else [])
                   + (["-H", f"Authorization: Bearer {token}"] if token else [])
                   + [f"http://127.0.0.1:{port}/"])
    done = run(cmd, timeout=duration + 30)
    out = done.stdout
    found = re.search(r"(\d+) requests in", out)
    if not found:
        raise RuntimeError(f"wrk printed no result: {out}{done.stderr}")
    requests = int(found.group(1))
    seconds = float(re.search(r"requests in ([\d.]+)(m?s)", out).group(1))
    if re.search(r"requests in [\d.]+ms", out):
        seconds /= 1000
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    p99 = None
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", out, re.M)
    if m:
        p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    return {"requests": requests, "seconds": seconds, "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0, "p99_ms": p99, "raw": out}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.bin = Path(args.bin)
        self.procs = Processes()
        self.pin = Pinning()
        self.tmp = Path(tempfile.mkdtemp(prefix="policy-bench-"))

    def start_redis(self) -> int:
        port = free_port()
        p = self.procs.start(self.pin.load(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                            "--appendonly", "no"]), self.tmp / f"redis-{port}.log")
        wait_port(port, 10, p)
        return port

    def start_origin(self) -> int:
        port = free_port()
        p = self.procs.start(self.pin.load([str(self.bin / "test-backend"), str(port)]), self.tmp / "origin.log")
        wait_port(port, 10, p)
        return port

    def start_proxy(self, config: str, pinned: bool = True):
        port = json.loads(config)["listen"][0].split(":")[-1]
        path = self.tmp / f"proxy-{port}.json"
        path.write_text(config)
        cmd = [str(self.bin / "proxy"), "--config", str(path), "--workers", "1"]
        p = self.procs.start(self.pin.proxy(cmd) if pinned else self.pin.everywhere(cmd), self.tmp / f"proxy-{port}.log")
        wait_port(int(port), 10, p)
        return p, int(port)

    def cost_round(self, target: str, origin: int, redis: int) -> dict:
        port = free_port()
        p, port = self.start_proxy(proxy_config(port, origin, redis, target, lease=1000 if target == "global" else None,
                                                jwks=self.jwks))
        token = self.token if target == "jwt" else None
        try:
            wrk_run(self.pin, port, 64, 2, latency=False, token=token)  # warm-up
            before = cpu_seconds([p.pid])
            result = wrk_run(self.pin, port, 64, self.args.duration, token=token)
            cpu = cpu_seconds([p.pid]) - before
            ok = result["requests"] - result["non2xx"]
            result.update(cpu_s=cpu, rps=result["requests"] / result["seconds"],
                          cpu_us_per_request=cpu / max(ok, 1) * 1e6)
            if result["non2xx"] or result["socket_errors"]:
                log(f"  {target}: {result['non2xx']} non-2xx, {result['socket_errors']} socket errors")
            return result
        finally:
            self.procs.stop(p)

    def accuracy(self, origin: int, redis: int) -> dict:
        rate, burst = self.args.limit_rate, self.args.limit_burst
        run(["redis-cli", "-p", str(redis), "FLUSHALL"], timeout=10)
        proxies = []
        for _ in range(2):
            port = free_port()
            config = json.loads(proxy_config(port, origin, redis, "global", rate=rate, burst=burst))
            config["routes"][0]["rate_limit"]["key"] = "route"
            proxies.append(self.start_proxy(json.dumps(config), pinned=False))
        try:
            import threading
            results: list[dict] = [{}, {}]

            def hammer(i: int) -> None:
                results[i] = wrk_run(self.pin, proxies[i][1], 32, self.args.duration, latency=False)

            threads = [threading.Thread(target=hammer, args=(i,)) for i in range(2)]
            started = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - started
            allowed = sum(r["requests"] - r["non2xx"] for r in results)
            seconds = max(r["seconds"] for r in results)
            expected = rate * seconds + burst + 1
            return {"allowed": allowed, "per_instance": [r["requests"] - r["non2xx"] for r in results],
                    "offered": sum(r["requests"] for r in results), "seconds": seconds, "wall_s": elapsed,
                    "expected": expected, "ratio": allowed / expected, "rate": rate, "burst": burst}
        finally:
            for p, _ in proxies:
                self.procs.stop(p)

    def main(self) -> int:
        ensure_tools(TOOLS)
        raise_nofile()
        self.jwks, self.token = make_es256(self.tmp)
        try:
            origin = self.start_origin()
            redis = self.start_redis()
            rounds: dict[str, list[dict]] = {t: [] for t in TARGETS}
            for r in range(self.args.rounds):
                for t in TARGETS:
                    log(f"round {r + 1}/{self.args.rounds}: {t}")
                    rounds[t].append(self.cost_round(t, origin, redis))
            log("accuracy: two instances sharing one global limit")
            acc = self.accuracy(origin, redis)
        finally:
            self.procs.stop_all()
        return self.report(rounds, acc)

    def report(self, rounds: dict[str, list[dict]], acc: dict) -> int:
        med = {t: {k: statistics.median(r[k] for r in rs) for k in ("rps", "cpu_us_per_request")}
               | {"p99_ms": statistics.median(r["p99_ms"] for r in rs if r["p99_ms"] is not None)}
               for t, rs in rounds.items()}
        base = med["none"]["cpu_us_per_request"]
        print(f"\nPolicy cost — test-backend origin, proxy 1 worker ({self.pin.describe()}), wrk -t1 -c64, "
              f"{self.args.duration:g} s per run, medians of {self.args.rounds} rounds\n")
        print("| route policy                       |   req/s | p99 ms | CPU µs/req | vs none |")
        print("|------------------------------------|--------:|-------:|-----------:|--------:|")
        names = {"none": "none", "proxy": "rate_limit scope proxy (never hit)",
                 "global": "rate_limit scope global (Redis)", "jwt": "auth jwt ES256 (cached token)"}
        for t in TARGETS:
            m = med[t]
            print(f"| {names[t]:<34} | {m['rps']:7.0f} | {m['p99_ms']:6.2f} | {m['cpu_us_per_request']:10.2f} | "
                  f"{m['cpu_us_per_request'] / base:7.3f} |")
        print(f"\nGlobal limit accuracy — two instances (1 worker each), one limit of {acc['rate']}/s burst {acc['burst']} "
              f"on the route, wrk -c32 at each for {acc['seconds']:.2f} s: offered {acc['offered']}, let through "
              f"{acc['allowed']} ({acc['per_instance'][0]} + {acc['per_instance'][1]}), expected "
              f"{acc['expected']:.0f} (rate × seconds + burst + 1): ratio {acc['ratio']:.3f}")
        checks = [
            ("proxy-scope limit CPU/request ≤ 1.05 × none", med["proxy"]["cpu_us_per_request"] / base, 1.05),
            ("global limit CPU/request ≤ 1.15 × none", med["global"]["cpu_us_per_request"] / base, 1.15),
            ("JWT (cached token) CPU/request ≤ 1.10 × none", med["jwt"]["cpu_us_per_request"] / base, 1.10),
        ]
        print("\nTargets")
        ok = True
        for name, ratio, limit in checks:
            passed = ratio <= limit
            ok &= passed
            print(f"  {name}: ratio {ratio:.3f} → {'PASS' if passed else 'FAIL'}")
        accurate = 0.9 <= acc["ratio"] <= 1.1
        ok &= accurate
        print(f"  global limit within ±10 % across two instances: {acc['ratio']:.3f} → {'PASS' if accurate else 'FAIL'}")
        if self.args.json:
            Path(self.args.json).write_text(json.dumps({"rounds": {t: [{k: v for k, v in r.items() if k != "raw"} for r in rs]
                                                                   for t, rs in rounds.items()},
                                                        "medians": med, "accuracy": acc}, indent=2))
        return 0 if ok else 1


def parse_args() -> argparse.Namespace:
    a = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--bin", required=True, help="the folder holding the release proxy and test-backend")
    a.add_argument("--rounds", type=int, default=3)
    a.add_argument("--duration", type=float, default=10.0)
    a.add_argument("--limit-rate", type=int, default=2000)
    a.add_argument("--limit-burst", type=int, default=200)
    a.add_argument("--json")
    return a.parse_args()


if __name__ == "__main__":
    sys.exit(Bench(parse_args()).main())
