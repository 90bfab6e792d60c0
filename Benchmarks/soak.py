#!/usr/bin/env python3
"""Soak test: mixed traffic through the proxy for N minutes; RSS and open fds must stay flat.

    python3 Benchmarks/soak.py --bin <dir with proxy and test-backend> --minutes 10

Traffic (all on 127.0.0.1, every loop bounded by the deadline): keep-alive GETs, uploads of a
few MB, downloads of a few MB, clients that abort mid-upload and mid-download, slow clients that
trickle their head, and one of the two backends restarted every 30 s. Each minute it prints the
proxy's RSS and open descriptors; at the end it compares the first and the last minute and exits
non-zero when either grew more than the tolerance. Not part of CI (`make soak MINUTES=N`).
"""
import argparse, json, os, random, signal, socket, subprocess, sys, tempfile, threading, time

def start(cmd):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    line = p.stdout.readline().decode()
    if "listening on" not in line:
        raise SystemExit(f"{cmd[0]} did not start: {line}")
    # Keep draining output so the child never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    return p, int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])

def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1

def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))

def request(port, raw, read=True, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(raw)
        if not read:
            return b""
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            d = s.recv(1 << 20)
            if not d:
                return data
            data += d
    finally:
        s.close()

def worker(kind, port, deadline, stats, rnd):
    while time.time() < deadline:
        try:
            if kind == "keepalive":
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                for i in range(200):
                    s.sendall(b"GET /k HTTP/1.1\r\nHost: soak\r\n\r\n")
                    buf = b""
                    while b"\r\n\r\n" not in buf:
                        buf += s.recv(65536)
                    head, _, rest = buf.partition(b"\r\n\r\n")
                    n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
                    while len(rest) < n:
                        rest += s.recv(65536)
                    stats[kind] += 1
                s.close()
            elif kind == "upload":
                body = os.urandom(rnd.randint(1, 4) << 20)
                r = request(port, b"POST /u HTTP/1.1\r\nHost: soak\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                stats[kind] += r.startswith(b"HTTP/1.1 200")
            elif kind == "download":
                n = rnd.randint(1, 8) << 20
                r = request(port, b"GET /stream?bytes=%d HTTP/1.1\r\nHost: soak\r\n\r\n" % n)
                stats[kind] += len(r) > n
            elif kind == "abort":
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                if rnd.random() < 0.5:
                    s.sendall(b"POST /u HTTP/1.1\r\nHost: soak\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 100000)
                else:
                    s.sendall(b"GET /stream?bytes=100000000 HTTP/1.1\r\nHost: soak\r\n\r\n")
                    s.recv(65536)
                s.close()
                stats[kind] += 1
            elif kind == "slow":
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                for piece in (b"GET /slow HT", b"TP/1.1\r\nHo", b"st: soak\r\n\r\n"):
                    s.sendall(piece)
                    time.sleep(0.3)
                s.recv(65536)
                s.close()
                stats[kind] += 1
        except OSError:
            stats["errors"] += 1
            time.sleep(0.05)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rss-tolerance-kib", type=int, default=8192)
    ap.add_argument("--fd-tolerance", type=int, default=16)
    a = ap.parse_args()
    procs = []
    try:
        b1, p1 = start([f"{a.bin}/test-backend", "0"]); procs.append(b1)
        b2, p2 = start([f"{a.bin}/test-backend", "0"]); procs.append(b2)
        cfg = {"backends": [{"id": "b1", "url": f"http://127.0.0.1:{p1}"}, {"id": "b2", "url": f"http://127.0.0.1:{p2}"}],
               "health_check": {"interval_ms": 1000, "timeout_ms": 500, "healthy_threshold": 1, "unhealthy_threshold": 1},
               "timeouts": {"client_header_ms": 5000, "client_body_ms": 5000, "upstream_ms": 10000}}
        path = os.path.join(tempfile.mkdtemp(), "soak.json")
        json.dump(cfg, open(path, "w"))
        proxy, port = start([f"{a.bin}/proxy", "--config", path, "--listen", "127.0.0.1:0"]); procs.append(proxy)
        deadline = time.time() + a.minutes * 60
        stats = {k: 0 for k in ("keepalive", "upload", "download", "abort", "slow", "errors")}
        threads = [threading.Thread(target=worker, args=(k, port, deadline, stats, random.Random(i)), daemon=True)
                   for i, k in enumerate(["keepalive", "keepalive", "upload", "download", "abort", "slow", "slow"])]
        for t in threads:
            t.start()
        samples = []
        next_restart = time.time() + 30
        minute = 0
        print(f"soak: {a.minutes} min through proxy pid {proxy.pid} on :{port}; backend b2 restarts every 30 s", flush=True)
        while time.time() < deadline:
            time.sleep(min(1, max(0, deadline - time.time())))
            if time.time() >= next_restart:
                os.kill(b2.pid, signal.SIGKILL); b2.wait()
                time.sleep(1)
                b2, _ = start([f"{a.bin}/test-backend", str(p2)]); procs.append(b2)
                next_restart = time.time() + 30
            if proxy.poll() is not None:
                raise SystemExit("soak: the proxy exited")
            if time.time() >= deadline - (a.minutes * 60) + (minute + 1) * 60 or time.time() >= deadline:
                minute += 1
                samples.append((rss_kib(proxy.pid), fds(proxy.pid)))
                print(f"minute {minute}: RSS {samples[-1][0]} KiB, open fds {samples[-1][1]}, traffic {dict(stats)}", flush=True)
        for t in threads:
            t.join(timeout=10)
        time.sleep(5)  # pooled upstream connections idle out
        final = (rss_kib(proxy.pid), fds(proxy.pid))
        print(f"after traffic stopped: RSS {final[0]} KiB, open fds {final[1]}")
        first, last = samples[0], samples[-1]
        print(f"first minute: RSS {first[0]} KiB, fds {first[1]}; last minute: RSS {last[0]} KiB, fds {last[1]}")
        ok = last[0] - first[0] <= a.rss_tolerance_kib and final[1] <= first[1] + a.fd_tolerance
        print("soak: " + ("flat" if ok else "GREW"))
        sys.exit(0 if ok else 1)
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass

if __name__ == "__main__":
    main()
