#!/usr/bin/env python3
"""Benchmark harness: this proxy against nginx and HAProxy in front of the same nginx origin.

    python3 Benchmarks/bench.py --bin <dir with proxy>            (what `make bench` runs)
    python3 Benchmarks/bench.py --bin <dir with proxy> --quick    (`make bench-quick`)

Everything runs on 127.0.0.1 on free ports. The proxy under test (and each anchor proxy) is pinned
to one core; wrk, the harness's own clients and the origin to the other(s). Rounds are interleaved
(A B C D A B C D ...) and each figure is reported as the median with min–max over rounds. Figures:

  1. small requests, wrk -t1 -c64: requests/s, p50/p99 latency, CPU-seconds per 10k requests
  2. the same at 1000 connections, plus peak RSS (VmHWM, reset before each run)
  3. a 1 GiB download (fresh proxy): MB/s, CPU-s/GiB, peak RSS
  4. 8 concurrent 256 MiB uploads: aggregate MB/s, CPU-s/GiB
  5. memory per idle keep-alive connection (10k connections or what the fd limit allows, RSS delta,
     freshly started proxies)
  6. user-space instructions per request (callgrind, two runs of N1 and N2 requests, difference)
  7. system calls per keep-alive request (strace -c -f during a wrk run)

The origin is one nginx (13-byte `return 200`, a 1 GiB file in tmpfs). Uploads go to
Benchmarks/upload_sink.py instead, through a second instance of each proxy (its docstring says why).
Downloads and uploads use small Python clients (1 MiB reads, sendfile) rather than curl: they cost
the shared load core about half as much, which raises the ceiling the proxies are measured under.
Every sample also records the CPU other programs used meanwhile; disturbed samples are listed.

MB = 10^6 bytes, MiB/GiB = 2^20/2^30 bytes. Results: a Markdown table on stdout, the same data as
JSON in Benchmarks/results/<timestamp>.json and a chart in Benchmarks/results/<timestamp>.png
(gnuplot). Every process started here is in its own process group and is killed on exit, error or
Ctrl-C; every load step has a count and a time bound.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "Benchmarks" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MB = 1_000_000
MIB = 1 << 20
GIB = 1 << 30

# command -> Debian package that provides it
TOOLS = {"wrk": "wrk", "nginx": "nginx-light", "haproxy": "haproxy", "valgrind": "valgrind",
         "strace": "strace", "taskset": "util-linux", "gnuplot": "gnuplot-nox",
         "objcopy": "binutils"}
SEARCH_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/local/sbin"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def which(cmd: str) -> str | None:
    return shutil.which(cmd, path=SEARCH_PATH)


def ensure_tools(tools: dict[str, str] | None = None) -> None:
    """Install what is missing with apt-get (as root or through sudo); `tools` maps a command to
    its Debian package (default: this benchmark's)."""
    tools = tools if tools is not None else TOOLS
    missing = sorted({pkg for cmd, pkg in tools.items() if which(cmd) is None})
    if not missing:
        return
    log(f"installing {' '.join(missing)} …")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(sudo + ["apt-get", "update", "-qq"], env=env, check=False, timeout=300)
    r = subprocess.run(sudo + ["apt-get", "install", "-y", "-qq"] + missing, env=env,
                       stdout=subprocess.DEVNULL, timeout=600)
    if r.returncode != 0:
        sys.exit(f"bench: apt-get install {' '.join(missing)} failed")
    still = [cmd for cmd in tools if which(cmd) is None and cmd != "gnuplot"]
    if still:
        sys.exit(f"bench: still missing after install: {', '.join(still)}")


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children (wrk, proxies) inherit it
    return hard


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f} s")


# ---------------------------------------------------------------------------------------------
# CPU pinning and process bookkeeping


class Pinning:
    """The proxy under test on one core, the load generators and the origin on the rest."""

    def __init__(self) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2:
            self.proxy_cpus = str(cpus[1])
            self.load_cpus = ",".join(str(c) for c in cpus if c != cpus[1])
        else:
            self.proxy_cpus = self.load_cpus = None

    def proxy(self, cmd: list[str]) -> list[str]:
        return ["taskset", "-c", self.proxy_cpus] + cmd if self.proxy_cpus else cmd

    def load(self, cmd: list[str]) -> list[str]:
        return ["taskset", "-c", self.load_cpus] + cmd if self.load_cpus else cmd

    def everywhere(self, cmd: list[str]) -> list[str]:
        if not self.proxy_cpus:
            return cmd
        return ["taskset", "-c", ",".join(sorted([self.proxy_cpus] + self.load_cpus.split(","), key=int))] + cmd

    def describe(self) -> str:
        if not self.proxy_cpus:
            return "1 core: no pinning (numbers are not comparable with pinned runs)"
        return (f"proxy under test (and each anchor proxy): taskset -c {self.proxy_cpus}; "
                f"wrk, the origin and the harness's clients: taskset -c {self.load_cpus}")


class Processes:
    """Every long-running process, each in its own process group, killed on exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, cmd: list[str], log_path: Path | None = None, **kw) -> subprocess.Popen:
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True, **kw)
        if log_path:
            out.close()
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 5.0) -> None:
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        try:  # the group may outlive its leader (nginx workers)
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self) -> None:
        for p in list(self.procs):
            self.stop(p, grace=2.0)


def run(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    """A bounded one-shot command (killed if it overruns)."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)


# ---------------------------------------------------------------------------------------------
# /proc readings


def children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


def cpu_split(pids: list[int]) -> tuple[float, float]:
    """(utime, stime) of the processes in seconds (each process's figure already includes all
    its threads)."""
    user = system = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        user += int(fields[11])  # field 14 of proc(5)
        system += int(fields[12])  # field 15
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes."""
    return sum(cpu_split(pids))


def foreign_cpu() -> dict[int, float]:
    """CPU seconds of every user-space process that is neither this harness nor started by it
    (so a compiler running beside the benchmark shows up as noise). Kernel threads are left out:
    they do the network work of the benchmark itself."""
    me = os.getpid()
    parent, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        parent[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    foreign = {}
    for pid in cpu:
        p, ours = pid, False
        while p > 2:  # 1 = init, 2 = kthreadd (kernel threads)
            if p == me:
                ours = True
                break
            p = parent.get(p, 0)
        if not ours and p != 2 and pid != 2:
            foreign[pid] = cpu[pid]
    return foreign


def foreign_cpu_since(before: dict[int, float]) -> float:
    after = foreign_cpu()
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def rss_kib(pids: list[int]) -> int:
    return sum(status_kib(p, "VmRSS") for p in pids)


def peak_rss_kib(pids: list[int]) -> int:
    return sum(status_kib(p, "VmHWM") for p in pids)


def reset_peak_rss(pids: list[int]) -> bool:
    """Writing 5 to clear_refs resets VmHWM to the current RSS (Linux ≥ 4.0)."""
    try:
        for p in pids:
            Path(f"/proc/{p}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# The four targets


class Target:
    key = ""
    label = ""

    def __init__(self, ctx: "Context", upstream: "Target | None" = None, suffix: str = "") -> None:
        self.ctx = ctx
        self.upstream = upstream  # the server this proxy forwards to (None for servers)
        self.name = self.key + suffix  # file names: several instances of one kind may run
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def command(self, callgrind_out: Path | None) -> list[str]:
        raise NotImplementedError

    def pinned(self, cmd: list[str]) -> list[str]:
        return self.ctx.pin.proxy(cmd)

    def start(self, callgrind_out: Path | None = None) -> None:
        self.port = free_port()
        cmd = self.command(callgrind_out)
        if callgrind_out:
            cmd = ["valgrind", "--tool=callgrind", "--quiet",
                   f"--callgrind-out-file={callgrind_out}"] + cmd
        self.proc = self.ctx.procs.start(self.pinned(cmd), self.ctx.logfile(self.name))
        self.wait_ready(120 if callgrind_out else 20)
        self.after_start()

    def wait_ready(self, timeout: float) -> None:
        try:
            wait_port(self.port, timeout, self.proc)
        except RuntimeError as e:
            tail = self.ctx.logfile(self.name).read_text(errors="replace")[-1500:]
            raise RuntimeError(f"{self.label} did not start: {e}\n{tail}") from None

    def after_start(self) -> None:
        pass

    def stop(self, grace: float = 5.0) -> None:
        if self.proc:
            self.ctx.procs.stop(self.proc, grace=grace)
            self.proc = None

    def stop_and_dump(self, timeout: float = 120) -> None:
        """SIGTERM a process running under callgrind and wait for it to exit (callgrind writes its
        file then). Under valgrind a signal does not always interrupt a blocking epoll_wait (nginx
        then sleeps until its next timer, up to 60 s), so connect to the port to wake the loop."""
        if not self.proc:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
        self.stop(grace=1)

    def pids(self) -> list[int]:
        """The processes whose CPU and memory count (`taskset` execs: the Popen pid is the server)."""
        return [self.proc.pid] if self.proc else []


class SwiftProxy(Target):
    key, label = "proxy", "this proxy"

    @property
    def workers(self) -> int:
        return self.ctx.args.workers

    def command(self, callgrind_out):
        cfg = self.ctx.dir / f"{self.name}.json"
        # Under callgrind a probe every 5 s would add a run-length-dependent count: probe rarely.
        interval = 600_000 if callgrind_out else 5000
        config = {
            "backends": [{"id": "origin", "url": f"http://127.0.0.1:{self.upstream.port}"}],
            "health_check": {"path": "/health", "interval_ms": interval}}
        if self.ctx.args.routes:
            # --routes N: N path routes that wrk's "/" never matches, so every request is matched
            # against all of them before it falls through to the default pool (the routing cost).
            config["upstreams"] = {"routed": {"backends": [{"id": "origin-routed",
                                                            "url": f"http://127.0.0.1:{self.upstream.port}"}],
                                              "health_check": {"path": "/health", "interval_ms": interval}}}
            config["routes"] = [{"host": "*", "path": f"/route{i}", "upstream": "routed"}
                                for i in range(self.ctx.args.routes)]
        if self.binary == self.ctx.bin or self.understands_access_log(config):
            # Stated, not left to the default (stdout): like nginx's `access_log off` above.
            config["access_log"] = self.access_log()
        cfg.write_text(json.dumps(config))
        binary = self.binary / "proxy"
        if callgrind_out:
            binary = readable_by_valgrind(binary, self.ctx.dir / f"{self.name}-proxy")
        return [str(binary), "--config", str(cfg), "--listen", f"127.0.0.1:{self.port}",
                "--workers", str(self.workers)]

    @property
    def binary(self) -> Path:
        return self.ctx.bin

    def access_log(self):
        return None

    def understands_access_log(self, config: dict) -> bool:
        """Whether this build accepts the `access_log` key (`--compare-bin` may name a build that
        predates it; such a build never logs)."""
        probe = self.ctx.dir / f"{self.name}-probe.json"
        probe.write_text(json.dumps(dict(config, access_log=None)))
        check = subprocess.run([str(self.binary / "proxy"), "--check", "--config", str(probe)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        return check.returncode == 0

    def pinned(self, cmd: list[str]) -> list[str]:
        # More than one worker loop: the proxy may use every core (sharing them with the load),
        # unless --workers-cpus own keeps it on the proxy's core.
        spread = self.workers > 1 and self.ctx.args.workers_cpus == "all"
        return self.ctx.pin.everywhere(cmd) if spread else self.ctx.pin.proxy(cmd)


class SwiftProxyVariant(SwiftProxy):
    """A second instance of this proxy that differs in one way — `--compare-workers N` (worker
    loops), `--compare-access-log FORMAT` (access log to a file) or `--compare-bin DIR` (another
    build, e.g. the commit before a change) — measured in the same interleaved rounds, so the
    difference is seen under the same machine noise."""
    key = "proxy_multi"

    @property
    def workers(self) -> int:
        return self.ctx.args.compare_workers or self.ctx.args.workers

    @property
    def binary(self) -> Path:
        return Path(self.ctx.args.compare_bin) if self.ctx.args.compare_bin else self.ctx.bin

    def access_log(self):
        fmt = self.ctx.args.compare_access_log
        return {"path": str(self.ctx.dir / f"{self.name}-access.log"), "format": fmt} if fmt else None

    @staticmethod
    def describe(args) -> str:
        parts = []
        if args.compare_workers:
            parts.append(f"{args.compare_workers} workers")
        if args.compare_access_log:
            parts.append(f"{args.compare_access_log} access log to a file")
        if args.compare_bin:
            parts.append(f"build {binary_commit(Path(args.compare_bin))}")
        return "this proxy, " + ", ".join(parts)

    @property
    def label(self) -> str:
        return self.describe(self.ctx.args)

    def pinned(self, cmd: list[str]) -> list[str]:
        spread = self.ctx.args.compare_workers > 1 and self.ctx.args.workers_cpus == "all"
        return self.ctx.pin.everywhere(cmd) if spread else self.ctx.pin.proxy(cmd)

    def after_start(self):
        # Wait for the first health probe to mark the origin up.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if http_get_status(self.port, "/_health") == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("this proxy never reported the origin healthy")


class NginxBase(Target):
    """nginx as the current user with every path inside its own temp dir."""

    def conf_http(self) -> str:
        raise NotImplementedError

    def command(self, callgrind_out):
        d = self.ctx.dir / (self.name + ("-callgrind" if callgrind_out else ""))
        d.mkdir(exist_ok=True)
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (d / sub).mkdir(exist_ok=True)
        master = "master_process off;" if callgrind_out else ""
        # As root, workers would switch to `nobody` and lose access to the 0700 temp dir.
        user = "user root;" if os.geteuid() == 0 else ""
        # nginx initialises its whole connection table at start: keep it small under callgrind.
        conns = 1024 if callgrind_out else self.ctx.nofile - 100
        conf = f"""
{user}
{master}
daemon off;
worker_processes 1;
worker_rlimit_nofile {self.ctx.nofile};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections {conns}; }}
http {{
    access_log off;
    default_type text/plain;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    # The default of 1000 requests per connection would make wrk (and the proxies' upstream
    # connections) reconnect every 1000 requests; this proxy and HAProxy have no such limit.
    keepalive_requests 1000000;
    keepalive_timeout 120s;
{self.conf_http()}
}}
"""
        (d / "nginx.conf").write_text(conf)
        return ["nginx", "-p", str(d), "-c", str(d / "nginx.conf")]

    def pids(self):
        if not self.proc:
            return []
        return [self.proc.pid] + children(self.proc.pid)  # master + worker

    def worker_pids(self):
        kids = children(self.proc.pid) if self.proc else []
        return kids or self.pids()  # master_process off: the process itself


class Origin(NginxBase):
    key, label = "origin", "origin"

    def conf_http(self):
        data = self.ctx.data_dir
        return f"""
    sendfile on;
    tcp_nopush on;
    server {{
        listen 127.0.0.1:{self.port} backlog=1024;
        location = /health {{ return 200 "ok\\n"; }}
        location = /big {{ alias {data}/big.bin; }}
        location / {{ return 200 "hello, world\\n"; }}
    }}"""

    def start(self, callgrind_out=None):
        # The origin belongs to the load side of the machine.
        self.port = free_port()
        cmd = self.command(None)
        self.proc = self.ctx.procs.start(self.ctx.pin.load(cmd), self.ctx.logfile(self.name))
        self.wait_ready(20)


class UploadSink(Target):
    """Benchmarks/upload_sink.py: reads every upload to the end, then 200 (see its docstring)."""
    key, label = "sink", "upload sink"

    def start(self, callgrind_out=None):
        self.port = free_port()
        cmd = [sys.executable, str(ROOT / "Benchmarks" / "upload_sink.py"), str(self.port)]
        self.proc = self.ctx.procs.start(self.ctx.pin.load(cmd), self.ctx.logfile(self.name))
        self.wait_ready(20)


class NginxProxy(NginxBase):
    key, label = "nginx", "nginx"

    def conf_http(self):
        return f"""
    upstream origin {{
        server 127.0.0.1:{self.upstream.port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{self.port} backlog=1024;
        client_max_body_size 0;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""


def haproxy_config(port, maxconn, backend_lines):
    """HAProxy with one thread, HTTP mode, keep-alive both sides (`http-reuse always`), listening
    on 127.0.0.1:`port`, its backend made of `backend_lines` (`server …`, `balance …`)."""
    lines = "\n".join(f"    {line}" for line in backend_lines)
    return f"""
global
    nbthread 1
    maxconn {maxconn}

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 60s
    http-reuse always

frontend fe
    bind 127.0.0.1:{port}
    backlog 1024
    default_backend be

backend be
{lines}
"""


class HAProxy(Target):
    key, label = "haproxy", "HAProxy"

    def command(self, callgrind_out):
        cfg = self.ctx.dir / f"{self.name}.cfg"
        # HAProxy wants 2 × maxconn + 14 descriptors (valgrind keeps a few for itself).
        maxconn = 1000 if callgrind_out else self.ctx.nofile // 2 - 10
        cfg.write_text(haproxy_config(self.port, maxconn, [f"server origin 127.0.0.1:{self.upstream.port}"]))
        return ["haproxy", "-f", str(cfg), "-db"]


class Direct(Target):
    """The origin without a proxy: the ceiling."""
    key, label = "direct", "origin direct"

    def start(self, callgrind_out=None):
        self.port = self.upstream.port

    def stop(self, grace=5.0):
        pass

    def pids(self):
        return []


# ---------------------------------------------------------------------------------------------
# Small HTTP client pieces (for readiness, idle connections and the callgrind runs)


def request_bytes(path: str = "/") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def parse_response(buf: bytes) -> tuple[int, int] | None:
    """(status, total length) once a complete Content-Length response is in buf, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    length = 0
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        elif name.strip().lower() == "transfer-encoding":
            raise RuntimeError("unexpected chunked response")
    total = end + 4 + length
    return (status, total) if len(buf) >= total else None


def http_get_status(port: int, path: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        buf = b""
        while True:
            parsed = parse_response(buf)
            if parsed:
                return parsed[0]
            chunk = s.recv(65536)
            if not chunk:
                raise OSError("connection closed")
            buf += chunk


def keepalive_requests(port: int, n: int, timeout: float) -> int:
    """n sequential GET / on one keep-alive connection; returns how many got 200."""
    deadline = time.monotonic() + timeout
    ok = 0
    req = request_bytes()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        for _ in range(n):
            if time.monotonic() > deadline:
                raise RuntimeError(f"keep-alive client: only {ok} of {n} requests in {timeout:.0f} s")
            s.sendall(req)
            while True:
                parsed = parse_response(buf)
                if parsed:
                    break
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError(f"keep-alive client: connection closed after {ok} requests")
                buf += chunk
            status, total = parsed
            buf = buf[total:]
            ok += status == 200
    return ok


def open_idle_connections(port: int, n: int, timeout: float, batch: int = 500) -> list[socket.socket]:
    """n connections, each having sent one request and read its 200 response (keep-alive state)."""
    deadline = time.monotonic() + timeout
    done: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    req = request_bytes()
    pending: dict[socket.socket, bytes] = {}
    try:
        while len(done) < n and time.monotonic() < deadline:
            pending = {}
            for _ in range(min(batch, n - len(done))):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                pending[s] = b""
                sel.register(s, selectors.EVENT_WRITE)
            batch_deadline = min(deadline, time.monotonic() + 15)
            while pending and time.monotonic() < batch_deadline:
                for key, events in sel.select(timeout=1):
                    s = key.fileobj
                    if events & selectors.EVENT_WRITE:
                        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            raise OSError(err, f"connect failed after {len(done)} connections")
                        s.send(req)  # 37 bytes always fit in an empty send buffer
                        sel.modify(s, selectors.EVENT_READ)
                        continue
                    chunk = s.recv(65536)
                    if not chunk:
                        raise OSError(f"connection closed by peer after {len(done)} connections")
                    pending[s] += chunk
                    parsed = parse_response(pending[s])
                    if parsed:
                        if parsed[0] != 200:
                            raise RuntimeError(f"idle connection setup got status {parsed[0]}")
                        sel.unregister(s)
                        del pending[s]
                        done.append(s)
            if pending:
                for s in pending:
                    sel.unregister(s)
                    s.close()
                break
    except BaseException:
        for s in done + list(pending):
            s.close()
        raise
    finally:
        sel.close()
    return done


# ---------------------------------------------------------------------------------------------
# Load generators


LAT_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_latency_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    return float(m.group(1)) * LAT_UNITS[m.group(2)]


def wrk(ctx: "Context", target: Target, conns: int, duration: float) -> dict:
    cmd = ctx.pin.load(["wrk", "-t1", f"-c{conns}", f"-d{duration:g}s", "--latency",
                        "--timeout", "5s", target.url("/")])
    r = run(cmd, timeout=duration + 30)
    out = r.stdout
    if r.returncode != 0 or "Requests/sec" not in out:
        raise RuntimeError(f"wrk failed ({r.returncode}): {out[-500:]} {r.stderr[-500:]}")
    res = {"requests": int(re.search(r"(\d+) requests in", out).group(1)),
           "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for pct in ("50", "99"):
        res[f"p{pct}_ms"] = parse_latency_ms(re.search(rf"\s{pct}%\s+(\S+)", out).group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                    map(int, m.groups()))) if m else {}
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    if res["non_2xx"] or any(res["socket_errors"].values()):
        ctx.problem(f"{target.label}, wrk -c{conns}: {res['non_2xx']} non-2xx, "
                    f"socket errors {res['socket_errors']}")
    return res


def read_response(sock: socket.socket, deadline: float) -> tuple[int, int]:
    """Reads one response with 1 MiB recvs, dropping the body: (status, body bytes)."""
    buf = bytearray(MIB)
    head = b""
    while b"\r\n\r\n" not in head:
        if time.monotonic() > deadline:
            raise TimeoutError("response head did not arrive in time")
        n = sock.recv_into(buf)
        if not n:
            raise OSError(f"connection closed before the response head ({len(head)} bytes)")
        head += bytes(buf[:n])
    end = head.index(b"\r\n\r\n")
    lines = head[:end].decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    if "chunked" in fields.get("transfer-encoding", "").lower():
        raise RuntimeError("chunked response: this client only counts Content-Length bodies")
    length = int(fields.get("content-length", -1))  # -1: read until close
    got = len(head) - end - 4
    while got < length or length < 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"body incomplete after the time limit ({got} bytes)")
        n = sock.recv_into(buf)
        if not n:
            break
        got += n
    return status, got


def download(port: int, path: str, timeout: float) -> dict:
    """One GET on a fresh connection; the client runs on the load core (like the harness)."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        status, got = read_response(s, start + timeout)
    return {"status": status, "bytes": got, "seconds": time.monotonic() - start}


def upload(port: int, path: str, body: Path, timeout: float, out: dict) -> None:
    """One PUT of a file with sendfile (no Expect: 100-continue); the result goes into out."""
    start = time.monotonic()
    size = body.stat().st_size
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s, open(body, "rb") as f:
            s.sendall(f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {size}\r\n"
                      f"Content-Type: application/octet-stream\r\n\r\n".encode())
            sent = s.sendfile(f)
            status, _ = read_response(s, start + timeout)
        out.update(status=status, sent=sent, seconds=time.monotonic() - start)
    except (OSError, RuntimeError, ValueError) as e:
        out.update(status=0, sent=0, error=str(e))


# ---------------------------------------------------------------------------------------------
# Figures


class Context:
    def __init__(self, args, pin: Pinning, procs: Processes, workdir: Path, nofile: int):
        self.args = args
        self.pin = pin
        self.procs = procs
        self.dir = workdir
        self.data_dir = workdir / "data"
        self.bin = Path(args.bin)
        self.nofile = nofile
        self.problems: list[str] = []
        self.origin = Origin(self)
        self.sink = UploadSink(self)

    def logfile(self, key: str) -> Path:
        return self.dir / f"{key}.log"

    def problem(self, msg: str) -> None:
        log("PROBLEM: " + msg)
        self.problems.append(msg)


def measure_wrk(ctx: Context, t: Target, conns: int, duration: float, with_rss: bool) -> dict:
    pids = t.pids()
    if with_rss and pids:
        reset_peak_rss(pids)
    user0, sys0 = cpu_split(pids) if pids else (0.0, 0.0)
    res = wrk(ctx, t, conns, duration)
    if pids:
        user1, sys1 = cpu_split(pids)
        cpu = (user1 - user0) + (sys1 - sys0)
        res["cpu_s"] = cpu
        # Where the time goes: on loopback the kernel's share is the TCP work of every read
        # and write, which no user-space change removes.
        res["kernel_share"] = (sys1 - sys0) / cpu if cpu > 0 else None
        res["cpu_per_10k"] = cpu / res["requests"] * 10_000 if res["requests"] else None
        if with_rss:
            res["peak_rss_mb"] = peak_rss_kib(pids) * 1024 / MB
    return res


def fig_small(ctx: Context, t: Target) -> dict:
    """Figure 1: wrk -t1 -c64 on the 13-byte response."""
    return measure_wrk(ctx, t, 64, ctx.args.duration, with_rss=False)


def fig_c1000(ctx: Context, t: Target) -> dict:
    """Figure 2: wrk -t1 -c1000, with peak RSS."""
    return measure_wrk(ctx, t, 1000, ctx.args.duration, with_rss=True)


def fig_download(ctx: Context, t: Target) -> dict:
    """Figure 3: one 1 GiB download (a Python client with 1 MiB reads: cheaper than curl's 16 KiB,
    so the ceiling on the shared load core is higher). Each proxy is restarted first: memory
    allocators keep what the 1000-connection run used, and that would hide the download's own peak."""
    if t.proc:
        t.stop()
        t.start()
    pids = t.pids()
    if pids:
        reset_peak_rss(pids)
    cpu0 = cpu_seconds(pids) if pids else 0.0
    d = download(t.port, "/big", timeout=60)
    if d["status"] != 200 or d["bytes"] != GIB:
        ctx.problem(f"{t.label}, 1 GiB download: status {d['status']}, {d['bytes']} bytes")
    res = {"bytes": d["bytes"], "mb_s": d["bytes"] / d["seconds"] / MB, "status": d["status"]}
    if pids:
        res["cpu_per_gib"] = (cpu_seconds(pids) - cpu0) / (max(d["bytes"], 1) / GIB)
        res["peak_rss_mb"] = peak_rss_kib(pids) * 1024 / MB
    return res


def fig_upload(ctx: Context, t: Target) -> dict:
    """Figure 4: 8 concurrent 256 MiB uploads (PUT with sendfile from tmpfs, one thread each)."""
    n, body = 8, ctx.data_dir / "upload.bin"
    size = body.stat().st_size
    pids = t.pids()
    cpu0 = cpu_seconds(pids) if pids else 0.0
    results = [{} for _ in range(n)]
    threads = [threading.Thread(target=upload, args=(t.port, f"/upload/{i}", body, 120, results[i]),
                                daemon=True) for i in range(n)]
    start = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=max(1.0, start + 130 - time.monotonic()))
    wall = time.monotonic() - start
    total = sum(r.get("sent", 0) for r in results)
    bad = [r for r in results if r.get("status") != 200 or r.get("sent") != size]
    if bad:
        ctx.problem(f"{t.label}, upload: {len(bad)} of {n} uploads incomplete or not 200: "
                    + ", ".join(f"{r.get('status')}/{r.get('sent')} B {r.get('error', '')}" for r in bad))
    res = {"bytes": total, "mb_s": total / wall / MB, "ok": n - len(bad)}
    if pids:
        res["cpu_per_gib"] = (cpu_seconds(pids) - cpu0) / (max(total, 1) / GIB)
    return res


def fig_syscalls(ctx: Context, t: Target) -> dict:
    """Figure 7: strace -c -f attached to the proxy during a short wrk -c64 run."""
    pids = t.worker_pids() if isinstance(t, NginxBase) else t.pids()
    out = ctx.dir / f"strace-{t.name}.txt"
    cmd = ["strace", "-c", "-f", "-o", str(out)] + [a for p in pids for a in ("-p", str(p))]
    st = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True)
    ctx.procs.procs.append(st)
    try:
        time.sleep(1.0)  # let strace attach to every thread
        w = wrk(ctx, t, 64, ctx.args.strace_duration)
    finally:
        if st.poll() is None:
            st.send_signal(signal.SIGINT)  # detach and write the summary
        try:
            st.wait(timeout=30)
        finally:
            ctx.procs.stop(st)
    calls, by_name = None, {}
    for line in out.read_text().splitlines():
        # % time  seconds  usecs/call  calls  [errors]  syscall
        cols = line.split()
        if len(cols) >= 5 and cols[0][0].isdigit() and cols[3].isdigit():
            if cols[-1] == "total":
                calls = int(cols[3])
            else:
                by_name[cols[-1]] = int(cols[3])
    if calls is None:
        raise RuntimeError(f"no strace summary in {out}")
    n = max(w["requests"], 1)
    return {"syscalls": calls, "requests": w["requests"], "per_request": calls / n,
            "per_request_by_syscall": {k: round(v / n, 3) for k, v in by_name.items()},
            "rps_under_strace": w["rps"]}


def fig_idle(ctx: Context, t: Target) -> dict:
    """Figure 5: RSS delta per idle keep-alive connection, on a freshly started proxy."""
    # HAProxy needs two descriptors per allowed connection (maxsock = 2 × maxconn + 14), so the
    # fd limit caps the count for everyone alike.
    n = min(ctx.args.idle_connections, ctx.nofile // 2 - 500)
    t.stop()
    t.start()
    keepalive_requests(t.port, 100, timeout=20)  # warm: first upstream connection, lazy init
    time.sleep(0.5)
    pids = t.pids()
    before = rss_kib(pids)
    socks = open_idle_connections(t.port, n, timeout=90)
    try:
        time.sleep(1.0)
        after = rss_kib(pids)
    finally:
        for s in socks:
            s.close()
    if len(socks) < n:
        ctx.problem(f"{t.label}: only {len(socks)} of {n} idle connections could be set up")
    return {"connections": len(socks), "rss_before_kib": before, "rss_after_kib": after,
            "kib_per_conn": (after - before) / max(len(socks), 1)}


def callgrind_total(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def fig_instructions(ctx: Context, t: Target) -> dict:
    """Figure 6: (Ir(N2) − Ir(N1)) / (N2 − N1) under callgrind, so start-up and shutdown cancel."""
    n1, n2 = ctx.args.callgrind_n
    totals = {}
    t.stop()
    for n in (n1, n2):
        out = ctx.dir / f"callgrind-{t.name}-{n}.out"
        t.start(callgrind_out=out)
        try:
            ok = keepalive_requests(t.port, n, timeout=240)
        finally:
            t.stop_and_dump()
        if ok != n:
            ctx.problem(f"{t.label} under callgrind: {n - ok} of {n} requests were not 200")
        totals[n] = callgrind_total(out)
    return {"ir": {str(k): v for k, v in totals.items()},
            "per_request": (totals[n2] - totals[n1]) / (n2 - n1)}


# ---------------------------------------------------------------------------------------------
# Summaries, table, targets, chart


def summary(samples: list[float]) -> dict | None:
    samples = [s for s in samples if s is not None]
    if not samples:
        return None
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "n": len(samples), "samples": samples}


# (row id, figure label, samples key, field, unit format, higher is better, columns)
ALL = ("proxy", "proxy_multi", "nginx", "haproxy", "direct")
PROXIES = ("proxy", "proxy_multi", "nginx", "haproxy")
ROWS = [
    ("rps_c64", "1. requests/s, c64", "small", "rps", "{:,.0f}", True, ALL),
    ("p50_c64", "1. p50 latency, c64 (ms)", "small", "p50_ms", "{:.3g}", False, ALL),
    ("p99_c64", "1. p99 latency, c64 (ms)", "small", "p99_ms", "{:.3g}", False, ALL),
    ("cpu_c64", "1. CPU-s per 10k requests, c64", "small", "cpu_per_10k", "{:.3f}", False, PROXIES),
    ("rps_c1000", "2. requests/s, c1000", "c1000", "rps", "{:,.0f}", True, ALL),
    ("p99_c1000", "2. p99 latency, c1000 (ms)", "c1000", "p99_ms", "{:.3g}", False, ALL),
    ("cpu_c1000", "2. CPU-s per 10k requests, c1000", "c1000", "cpu_per_10k", "{:.3f}", False, PROXIES),
    ("rss_c1000", "2. peak RSS, c1000 (MB)", "c1000", "peak_rss_mb", "{:.1f}", False, PROXIES),
    ("dl_mbs", "3. 1 GiB download (MB/s)", "download", "mb_s", "{:,.0f}", True, ALL),
    ("dl_cpu", "3. download CPU-s/GiB", "download", "cpu_per_gib", "{:.2f}", False, PROXIES),
    ("dl_rss", "3. download peak RSS (MB)", "download", "peak_rss_mb", "{:.1f}", False, PROXIES),
    ("ul_mbs", "4. 8×256 MiB upload (MB/s)", "upload", "mb_s", "{:,.0f}", True, ALL),
    ("ul_cpu", "4. upload CPU-s/GiB", "upload", "cpu_per_gib", "{:.2f}", False, PROXIES),
    ("idle_kib", "5. RSS per idle keep-alive connection (KiB)", "idle", "kib_per_conn", "{:.2f}", False, PROXIES),
    ("instr", "6. user-space instructions per request", "instructions", "per_request", "{:,.0f}", False, PROXIES),
    ("syscalls", "7. system calls per keep-alive request", "syscalls", "per_request", "{:.2f}", False, PROXIES),
]
COLUMNS = [("proxy", "this proxy"), ("nginx", "nginx"), ("haproxy", "HAProxy"), ("direct", "origin direct")]


def build_rows(samples: dict) -> dict:
    rows = {}
    for rid, label, fig, field, fmt, higher, cols in ROWS:
        cells = {}
        for key in cols:
            s = summary([r.get(field) for r in samples.get(fig, {}).get(key, [])])
            if s:
                cells[key] = s
        if cells:
            rows[rid] = {"label": label, "higher_is_better": higher, "format": fmt, "cells": cells}
    return rows


def fmt_cell(cell: dict | None, fmt: str) -> str:
    if not cell:
        return "—"
    text = fmt.format(cell["median"])
    if cell["n"] > 1:
        text += f" ({fmt.format(cell['min'])}–{fmt.format(cell['max'])})"
    return text


def best_anchor(row: dict) -> tuple[str, float] | None:
    anchors = [(k, row["cells"][k]["median"]) for k in ("nginx", "haproxy") if k in row["cells"]]
    if not anchors:
        return None
    pick = max if row["higher_is_better"] else min
    return pick(anchors, key=lambda kv: kv[1])


def markdown_table(rows: dict) -> str:
    lines = ["| figure | " + " | ".join(lbl for _, lbl in COLUMNS) + " | this proxy vs best anchor |",
             "|---|" + "---:|" * len(COLUMNS) + "---|"]
    for rid, row in rows.items():
        cells = [fmt_cell(row["cells"].get(k), row["format"]) for k, _ in COLUMNS]
        ratio = "—"
        best = best_anchor(row)
        if best and "proxy" in row["cells"] and best[1]:
            r = row["cells"]["proxy"]["median"] / best[1]
            better = r >= 1 if row["higher_is_better"] else r <= 1
            ratio = f"{r:.2f}× {dict(COLUMNS)[best[0]]} ({'better' if better else 'worse'})"
        lines.append(f"| {row['label']} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def med(rows: dict, rid: str, key: str) -> float | None:
    try:
        return rows[rid]["cells"][key]["median"]
    except KeyError:
        return None


def evaluate_targets(rows: dict) -> list[dict]:
    """The performance targets, each with the figures it compares and whether it is met."""

    def check(name, parts):
        # parts: (description, ours, bound, ok(ours, bound)) — None values mean not measured
        details, verdicts = [], []
        for desc, ours, bound, ok in parts:
            if ours is None or bound is None:
                details.append(f"{desc}: not measured")
                verdicts.append(None)
            else:
                details.append(f"{desc}: {num(ours)} vs {num(bound)}")
                verdicts.append(ok(ours, bound))
        met = None if None in verdicts else all(verdicts)
        return {"target": name, "details": "; ".join(details), "met": met}

    le = lambda a, b: a <= b
    ge = lambda a, b: a >= b
    anchors_cpu = [v for v in (med(rows, "cpu_c64", "nginx"), med(rows, "cpu_c64", "haproxy")) if v]
    return [
        check("CPU-s per 10k small requests, c64 ≤ 0.8 × the better of nginx and HAProxy",
              [("CPU-s/10k vs 0.8 × best", med(rows, "cpu_c64", "proxy"),
                0.8 * min(anchors_cpu) if anchors_cpu else None, le)]),
        check("p99 latency, c64 ≤ nginx's",
              [("p99 ms", med(rows, "p99_c64", "proxy"), med(rows, "p99_c64", "nginx"), le)]),
        check("1000 connections: requests/s ≥ HAProxy's, peak RSS ≤ HAProxy's",
              [("requests/s", med(rows, "rps_c1000", "proxy"), med(rows, "rps_c1000", "haproxy"), ge),
               ("peak RSS MB", med(rows, "rss_c1000", "proxy"), med(rows, "rss_c1000", "haproxy"), le)]),
        check("1 GiB download: MB/s ≥ HAProxy's, CPU-s/GiB ≤ HAProxy's, peak RSS ≤ 16 MB",
              [("MB/s", med(rows, "dl_mbs", "proxy"), med(rows, "dl_mbs", "haproxy"), ge),
               ("CPU-s/GiB", med(rows, "dl_cpu", "proxy"), med(rows, "dl_cpu", "haproxy"), le),
               ("peak RSS MB", med(rows, "dl_rss", "proxy"), 16.0, le)]),
        check("8×256 MiB upload: MB/s ≥ HAProxy's",
              [("MB/s", med(rows, "ul_mbs", "proxy"), med(rows, "ul_mbs", "haproxy"), ge)]),
        check("idle keep-alive connection ≤ 10 KiB each",
              [("KiB/connection", med(rows, "idle_kib", "proxy"), 10.0, le)]),
        check("user-space instructions per proxied request ≤ nginx's",
              [("instructions", med(rows, "instr", "proxy"), med(rows, "instr", "nginx"), le)]),
        check("system calls per keep-alive request ≤ 5 on average",
              [("syscalls/request", med(rows, "syscalls", "proxy"), 5.0, le)]),
    ]


def num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def targets_table(results: list[dict]) -> str:
    lines = ["| target | measured (this proxy vs bound) | met |", "|---|---|---|"]
    for r in results:
        mark = {True: "✅ yes", False: "❌ no", None: "— not measured"}[r["met"]]
        lines.append(f"| {r['target']} | {r['details']} | {mark} |")
    return "\n".join(lines)


CHART_ROWS = ["rps_c64", "cpu_c64", "p99_c64", "rps_c1000", "rss_c1000", "dl_mbs", "ul_mbs",
              "instr", "syscalls"]


def write_chart(rows: dict, png: Path, title: str) -> bool:
    if which("gnuplot") is None:
        log("gnuplot not found: no chart")
        return False
    panels = [rid for rid in CHART_ROWS if rid in rows]
    if not panels:
        return False
    colors = {"proxy": "#d95f02", "proxy_multi": "#e6ab02", "nginx": "#1b9e77", "haproxy": "#7570b3",
              "direct": "#999999"}
    cols = max(1, min(3, len(panels)))
    nrows = (len(panels) + cols - 1) // cols
    script = [f"set terminal pngcairo size {500 * cols},{330 * nrows} font ',9'",
              f"set output '{png}'",
              f"set multiplot layout {nrows},{cols} title '{title}'",
              "set style fill solid 0.85 border -1", "set boxwidth 0.6", "unset key",
              "set grid ytics", "set yrange [0:*]", "set xtics nomirror", "set offsets 0.5,0.5,graph 0.15,0"]
    for i, rid in enumerate(panels):
        row = rows[rid]
        data = [f"$d{i} << EOD"]
        for key, lbl in COLUMNS:
            c = row["cells"].get(key)
            if c:
                text = row["format"].format(c["median"])
                data.append(f'"{lbl}" {c["median"]} {c["min"]} {c["max"]} {int(colors[key][1:], 16)} "{text}"')
        data.append("EOD")
        script += data
        better = "higher" if row["higher_is_better"] else "lower"
        label = row["label"].replace("'", "")
        script += [f"set title '{label} — {better} is better'",
                   f"plot $d{i} using 0:2:(0.6):5:xtic(1) with boxes lc rgb variable, "
                   f"'' using 0:2:3:4 with yerrorbars lc rgb 'black' pt 0, "
                   f"'' using 0:4:6 with labels offset 0,0.8"]
    script.append("unset multiplot")
    r = subprocess.run(["gnuplot"], input="\n".join(script), capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        log(f"gnuplot failed: {r.stderr[-800:]}")
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Main


def make_data_files(ctx: Context, need_big: bool) -> None:
    ctx.data_dir.mkdir(parents=True, exist_ok=True)
    if not need_big:
        return
    block = bytes(range(256)) * 4096  # 1 MiB, not all zeros
    for name, size in (("big.bin", GIB), ("upload.bin", 256 * MIB)):
        with open(ctx.data_dir / name, "wb") as f:
            for _ in range(size // len(block)):
                f.write(block)


def versions(ctx: Context) -> dict:
    def first(cmd):
        try:
            r = run(cmd, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except Exception as e:  # noqa: BLE001 - informational only
            return f"unknown ({e})"
    versions = {"proxy": f"{binary_commit(ctx.bin)} ({ctx.bin})"}
    if ctx.args.compare_bin:
        versions["proxy, second instance"] = f"{binary_commit(Path(ctx.args.compare_bin))} ({ctx.args.compare_bin})"
    return versions | {"nginx": first(["nginx", "-v"]),
            "haproxy": first(["haproxy", "-v"]), "wrk": first(["wrk", "-v"]),
            "kernel": os.uname().release, "cpus": os.cpu_count()}


def readable_by_valgrind(binary: Path, copy: Path) -> Path:
    """A copy of `binary` without its debug information: the Swift toolchain writes DWARF 5,
    which Debian 12's valgrind 3.19 cannot read (it gives up before running anything). Counting
    instructions needs no symbols."""
    if not copy.exists():
        subprocess.run(["objcopy", "--strip-debug", str(binary), str(copy)], check=True)
    return copy


def binary_commit(bin_dir: Path) -> str:
    """The commit of the checkout a binary was built in (another worktree when comparing
    versions), `+dirty` when its sources had uncommitted changes."""
    repo = Path(bin_dir).resolve()
    while repo != repo.parent and not (repo / ".git").exists():
        repo = repo.parent
    if not (repo / ".git").exists():
        repo = ROOT
    commit = run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], timeout=10).stdout.strip()
    dirty = run(["git", "-C", str(repo), "status", "--porcelain", "--", "Sources"], timeout=10).stdout.strip()
    return f"{commit}{'+dirty' if dirty else ''}"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="directory holding the release `proxy` binary")
    ap.add_argument("--quick", action="store_true", help="~1 minute: 1 round of figures 1 and 7")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=1,
                    help="this proxy's worker loops (default 1, like the anchors' one worker/thread); with more "
                         "than one it may run on every core, sharing them with wrk and the origin")
    ap.add_argument("--routes", type=int, default=0, metavar="N",
                    help="give this proxy N path routes that the benchmark's requests do not match (routing cost)")
    ap.add_argument("--workers-cpus", choices=("all", "own"), default="all",
                    help="where a proxy with more than one worker runs: every core (default) or only the core "
                         "the proxy under test is pinned to")
    ap.add_argument("--compare-workers", type=int, default=0, metavar="N",
                    help="also measure a second instance of this proxy with N workers (on every core) in the "
                         "same rounds: figures 1, 2 and 7 (and 3 when selected)")
    ap.add_argument("--compare-access-log", choices=("combined", "json"), default=None, metavar="FORMAT",
                    help="also measure a second instance of this proxy writing its access log (combined or json) "
                         "to a file, in the same rounds")
    ap.add_argument("--compare-bin", default=None, metavar="DIR",
                    help="also measure the `proxy` binary in DIR (another build, e.g. the commit before a change) "
                         "in the same rounds; its access log is off too unless the build predates the access_log key")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    ap.add_argument("--strace-duration", type=float, default=3.0)
    ap.add_argument("--idle-connections", type=int, default=10_000)
    ap.add_argument("--callgrind-n", type=int, nargs=2, default=(2000, 12000), metavar=("N1", "N2"))
    ap.add_argument("--figures", default="1,2,3,4,5,6,7", help="comma-separated figure numbers")
    ap.add_argument("--budget-min", type=float, default=8.0,
                    help="start no further per-round measurement after this many minutes (figures 5 and 6, about "
                         "a minute together, still run)")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.duration, args.strace_duration, args.figures = 1, 3.0, 2.0, "1,7"
    args.figures = {int(f) for f in args.figures.split(",")}
    return args


def main() -> int:
    args = parse_args()
    if not (Path(args.bin) / "proxy").exists():
        sys.exit(f"bench: no proxy binary in {args.bin}")
    ensure_tools()
    nofile = raise_nofile()
    pin = Pinning()
    procs = Processes()
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and shutil.disk_usage(shm).free > 6 * GIB else None
    workdir = Path(tempfile.mkdtemp(prefix="proxy-bench-", dir=base))
    ctx = Context(args, pin, procs, workdir, nofile)
    # The harness's own clients (downloads, uploads, idle and callgrind connections) run on the
    # load side; the proxies are started through `taskset` onto their own core.
    if pin.load_cpus:
        os.sched_setaffinity(0, {int(c) for c in pin.load_cpus.split(",")})
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    # Also SIGINT: a shell without job control starts background jobs with SIGINT ignored, and
    # Python would then never raise KeyboardInterrupt.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_term)

    samples: dict[str, dict[str, list]] = {}
    interrupted = False
    skipped: list[str] = []
    noisy: list[str] = []

    def record(fig: str, key: str, value: dict) -> None:
        samples.setdefault(fig, {}).setdefault(key, []).append(value)

    def within_budget(what: str) -> bool:
        if time.monotonic() - started > args.budget_min * 60:
            skipped.append(f"{what}: skipped, --budget-min {args.budget_min:g} used up")
            log(skipped[-1])
            return False
        return True

    def attempt(fig: str, t: Target, fn) -> None:
        try:
            before, t0 = foreign_cpu(), time.monotonic()
            res = fn(ctx, t)
            # CPU other programs took meanwhile: more than 5 % of one core marks the sample noisy.
            res["foreign_cpu_s"] = round(foreign_cpu_since(before), 2)
            if res["foreign_cpu_s"] > 0.05 * (time.monotonic() - t0):
                noisy.append(f"{t.label}, {fig}: other processes used {res['foreign_cpu_s']:.2f} CPU-s "
                             f"during {time.monotonic() - t0:.1f} s")
            record(fig, t.key, res)
        except Exception as e:  # noqa: BLE001 - one failed measurement must not end the run
            ctx.problem(f"{t.label}, {fig}: {type(e).__name__}: {e}")

    try:
        log(f"pinning: {pin.describe()}")
        if args.workers > 1:
            log(f"this proxy: {args.workers} workers on every core (taskset -c all)")
        log(f"work dir {workdir}, fd limit {nofile}")
        make_data_files(ctx, need_big=bool(args.figures & {3, 4}))
        ctx.origin.start()
        proxies = [SwiftProxy(ctx, ctx.origin), NginxProxy(ctx, ctx.origin), HAProxy(ctx, ctx.origin)]
        if args.compare_workers or args.compare_access_log or args.compare_bin:
            proxies.insert(1, SwiftProxyVariant(ctx, ctx.origin))
            COLUMNS.insert(1, ("proxy_multi", SwiftProxyVariant.describe(args)))
        targets = proxies + [Direct(ctx, ctx.origin)]
        # Uploads go to the sink through a second instance of each proxy (same configuration).
        upload_targets = []
        if 4 in args.figures:
            ctx.sink.start()
            upload_targets = [cls(ctx, ctx.sink, "-upload") for cls in (SwiftProxy, NginxProxy, HAProxy)]
            upload_targets.append(Direct(ctx, ctx.sink))
        for t in targets + upload_targets:
            t.start()
        for t in targets:  # warm-up: lazy init, upstream connections, page cache
            wrk(ctx, t, 64, 1)

        per_round = [(1, "small", fig_small, targets), (2, "c1000", fig_c1000, targets),
                     (3, "download", fig_download, targets), (4, "upload", fig_upload, upload_targets),
                     (7, "syscalls", fig_syscalls, proxies)]
        for rnd in range(args.rounds):
            for num, fig, fn, ts in per_round:
                if num not in args.figures or not within_budget(f"round {rnd + 1} figure {num}"):
                    continue
                log(f"round {rnd + 1}/{args.rounds}: figure {num} ({fig})")
                for t in ts:
                    attempt(fig, t, fn)
        if 5 in args.figures:
            for t in proxies:
                log(f"figure 5 (idle connections): {t.label}")
                attempt("idle", t, fig_idle)
        if 6 in args.figures:
            for t in proxies:
                log(f"figure 6 (callgrind): {t.label}")
                attempt("instructions", t, fig_instructions)
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
        interrupted = True
    finally:
        procs.stop_all()
        logs = {p.name: p.read_text(errors="replace")[-2000:] for p in workdir.glob("*.log")
                if p.exists() and p.stat().st_size}
        shutil.rmtree(workdir, ignore_errors=True)
    if interrupted:
        return 130

    rows = build_rows(samples)
    target_results = evaluate_targets(rows)
    elapsed = time.monotonic() - started
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS_DIR / f"{stamp}.json"
    png_path = RESULTS_DIR / f"{stamp}.png"
    meta = {"timestamp": stamp, "quick": args.quick, "rounds": args.rounds,
            "wrk_duration_s": args.duration, "strace_duration_s": args.strace_duration,
            "idle_connections": args.idle_connections, "callgrind_n": list(args.callgrind_n),
            "figures": sorted(args.figures), "pinning": pin.describe(), "workers": args.workers, "fd_limit": nofile,
            "versions": versions(ctx), "elapsed_s": round(elapsed, 1),
            "loadavg_at_start": load_before, "loadavg_at_end": os.getloadavg()[0]}
    json_path.write_text(json.dumps({"meta": meta, "rows": rows, "targets": target_results,
                                     "samples": samples, "problems": ctx.problems,
                                     "skipped": skipped, "disturbed": noisy, "process_logs": logs},
                                    indent=2))
    chart = write_chart(rows, png_path, f"swift-proxy benchmark {stamp}")

    print(f"\n## Benchmark {stamp} ({'quick' if args.quick else 'full'}, {args.rounds} round(s), "
          f"{elapsed:.0f} s)\n")
    print(f"- pinning: {pin.describe()}")
    if args.routes:
        print(f"- this proxy: {args.routes} routes checked on every request before the default pool")
    print(f"- this proxy: {args.workers} worker loop{'s' if args.workers > 1 else ''}"
          + (" allowed on every core (shared with wrk and the origin)" if args.workers > 1 else ""))
    variant = SwiftProxyVariant.describe(args) if (args.compare_workers or args.compare_access_log or args.compare_bin) else ""
    if variant:
        where = ("allowed on every core (shared with wrk and the origin)"
                 if args.compare_workers > 1 and args.workers_cpus == "all" else "pinned to the proxy's core like the others")
        print(f"- {variant}: a second instance {where}, measured in the same rounds")
    print("- this proxy's access log: off (`\"access_log\": null`), like nginx's `access_log off`"
          + ("; the second instance writes its log to a file in the work dir" if args.compare_access_log else ""))
    print(f"- wrk -t1, {args.duration:g} s per run; cells are median (min–max) over rounds; "
          f"MB = 10^6 bytes")
    print("- origin: nginx (13-byte `return 200`, 1 GiB file with sendfile); for uploads the origin is "
          "Benchmarks/upload_sink.py behind a second instance of each proxy")
    print(f"- versions: " + "; ".join(f"{k}: {v}" for k, v in meta["versions"].items()))
    print()
    print(markdown_table(rows))
    if variant:
        parts = []
        for rid in ("rps_c64", "cpu_c64", "rps_c1000", "cpu_c1000", "syscalls"):
            one, more = med(rows, rid, "proxy"), med(rows, rid, "proxy_multi")
            if one and more:
                parts.append(f"{rows[rid]['label'][3:]} {more / one:.2f}×")
        print(f"\n{variant[len('this proxy, '):]} vs this proxy: " + "; ".join(parts))
    splits = []
    names = dict(COLUMNS, proxy_multi=variant or "second instance")
    for key in ALL:
        runs = [r for r in samples.get("small", {}).get(key, [])
                if r and r.get("kernel_share") is not None and r.get("cpu_per_10k")]
        if runs:
            kernel = statistics.median(r["cpu_per_10k"] * r["kernel_share"] for r in runs)
            user = statistics.median(r["cpu_per_10k"] * (1 - r["kernel_share"]) for r in runs)
            splits.append(f"{names.get(key, key)} {kernel:.3f} + {user:.3f}")
    if splits:
        print("\nCPU-s per 10k requests at c64 as kernel + user time (medians): " + "; ".join(splits))
    print("\n### Targets\n")
    print(targets_table(target_results))
    if ctx.problems or skipped:
        print("\n### Problems seen\n")
        for p in ctx.problems + skipped:
            print(f"- {p}")
    if noisy:
        print(f"\n### Disturbed measurements ({len(noisy)}): other programs used CPU meanwhile\n")
        for n in noisy:
            print(f"- {n}")
    print(f"\nJSON: {json_path.relative_to(ROOT)}" + (f"\nchart: {png_path.relative_to(ROOT)}" if chart else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
