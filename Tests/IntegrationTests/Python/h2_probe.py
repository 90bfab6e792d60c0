"""An HTTP/2 client for the integration tests (the `h2` package): prior-knowledge h2c over plain
TCP to 127.0.0.1:PORT. Runs one scenario and prints one JSON line of what happened; the exit
status is 0 whenever the script itself ran (the JSON says how the proxy behaved, with an "error"
field when something unexpected happened), nonzero only when the script crashed or was misused.
Every wait is bounded: about 20 s per scenario (`idle`: SECONDS + 10; `resets-then-upload`:
N / 2 + 20; `slow-download`: 40).

  h2_probe.py concurrent PORT N SIZE     N streams at once: even ones POST SIZE random bytes to
                                         /echo/i (interleaved, flow-controlled), odd ones GET
                                         /stream?bytes=SIZE; checks status, echoed path, length,
                                         FNV-1a and the stream pattern
      {"streams", "ok", "bad": [...], "seconds"}
  h2_probe.py slow-reader PORT           stream A (GET /stream?bytes=20000000) is never read past
                                         its 65535-byte window; meanwhile 20 sequential GET /echo/x
      {"others_ok", "others_max_ms", "a_received", ...}
  h2_probe.py big-upload PORT SIZE [nocl]  one POST /up of SIZE bytes (without content-length
                                         with nocl)
      {"status", "body_bytes", "fnv_ok", "window_updates", ...}
  h2_probe.py reset-upload PORT          POST /upload (content-length 50000000), 1 MiB sent, then
                                         RST_STREAM CANCEL, then GET /after on the same connection
      {"after_status", "upload_sent", ...}
  h2_probe.py reset-download PORT        GET /stream?bytes=500000000, ~1 MiB read, RST_STREAM
                                         CANCEL, then GET /after on the same connection
      {"after_status", "received", ...}
  h2_probe.py smuggle PORT CASE          one request with crafted headers (see smuggle_headers),
                                         then GET /echo/after if the connection lives on
      {"case", "status", "reset", "goaway", "body", "echo_headers", "echo_path", "after_status"}
  h2_probe.py flood PORT KIND COUNT      COUNT abusive units, frames built by hand, then reads
                                         until the connection closes or 10 s. KIND: rapid-reset
                                         (HEADERS + RST_STREAM), settings, ping, continuation (one
                                         HEADERS, COUNT CONTINUATIONs, END_HEADERS on the last),
                                         empty-data, window-update (increment 1 on stream 0),
                                         invalid-frames (new stream + WINDOW_UPDATE 0 on it),
                                         invalid-data (new stream + DATA after its END_STREAM),
                                         invalid-headers (new stream with an upper-case name).
                                         settings and ping do not read while sending and use a
                                         4 KiB SO_RCVBUF (env H2_PROBE_RCVBUF; 0: the system's)
      {"kind", "sent", "goaway", "closed", "seconds", "resets", ...}
  h2_probe.py goaway-wait PORT [PATH]    GET /echo/1, then (with PATH) a GET of PATH left in
                                         flight, then waits up to 15 s for GOAWAY and close
      {"first_status", "goaway", "last_stream_id", "closed", "inflight", ...}
  h2_probe.py idle PORT SECONDS          settings only, then waits up to SECONDS + 5 s
      {"goaway", "closed", "seconds", ...}
  h2_probe.py headers-size PORT BYTES    GET /echo/headers with x-h-0..x-h-k (100-byte values)
                                         adding up to about BYTES
      {"status", "reset", "goaway", "fields", "header_list_bytes", ...}
  h2_probe.py resets-then-upload PORT N SIZE  N times: POST /upload (content-length 10000000),
                                         what the windows allow up to 240000 bytes, RST_STREAM
                                         CANCEL; then POST /echo/final of SIZE bytes,
                                         flow-controlled (up to 15 s), on the same connection
      {"resets", "final_status", "final_body_bytes", "connection_window_at_end", "seconds", ...}
  h2_probe.py half-open PORT PATH        GET PATH without END_STREAM (the body never comes), then
                                         reads up to 8 s (until RST_STREAM or close)
      {"status", "response_ended", "rst_code", "rst_after_response", "goaway", "closed",
       "seconds_to_rst"}
  h2_probe.py partial-headers PORT       one HEADERS without END_HEADERS and no CONTINUATION,
                                         then reads until close or 10 s
      {"goaway", "closed", "seconds"}
  h2_probe.py zero-window PORT N         SETTINGS_INITIAL_WINDOW_SIZE 0 and no WINDOW_UPDATE
                                         ever; N GET /stream?bytes=1000000000, then reads until
                                         all N are reset or 15 s
      {"streams", "headers", "resets", "reset_codes", "seconds", "closed", ...}
  h2_probe.py late-literal PORT          GET /stream?bytes=60000, a pause, then a request with a
                                         12,000-byte cookie whose header block is split in
                                         HEADERS and (0.3 s later) CONTINUATION
      {"first_bytes", "status", "resets", "closed", "cookie_intact", ...}
  h2_probe.py slow-download PORT BYTES   SETTINGS_INITIAL_WINDOW_SIZE 16384; GET
                                         /stream?bytes=BYTES read at about 8 MB/s (each DATA frame
                                         acknowledged after its share of the pace) until BYTES or
                                         30 s; with env H2_PROBE_PID, samples that process's VmRSS
                                         at the start, about every second and at the end
      {"received", "complete", "seconds", "rss_start_kb", "rss_max_kb", "rss_end_kb", ...}

GOAWAY frames are taken out of the byte stream before h2 sees them (h2 would refuse every
later frame), so responses still in flight after a graceful GOAWAY are read normally.
"""
import json
import os
import random
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack

HOST = "127.0.0.1"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
CANCEL = 8
MIB = 1 << 20

deadline = time.monotonic() + 20


def left():
    return deadline - time.monotonic()


def fnv1a(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


PATTERN = bytes(range(251)) * 70  # /stream bodies: the byte at offset i is i % 251


def matches_pattern(offset, chunk):
    for i in range(0, len(chunk), 16384):
        piece = chunk[i:i + 16384]
        start = (offset + i) % 251
        if piece != PATTERN[start:start + len(piece)]:
            return False
    return True


def b(x):
    return x if isinstance(x, bytes) else x.encode()


def frame(ftype, flags, sid, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload


def split_frames(buf):
    """Yields (type, flags, stream id, payload, raw frame) for the complete frames at the front of
    buf, removing them from it."""
    while len(buf) >= 9:
        n = int.from_bytes(buf[:3], "big")
        if len(buf) < 9 + n:
            return
        raw = bytes(buf[:9 + n])
        del buf[:9 + n]
        yield raw[3], raw[4], int.from_bytes(raw[5:9], "big") & 0x7FFFFFFF, raw[9:], raw


def goaway_fields(payload):
    return int.from_bytes(payload[4:8], "big"), int.from_bytes(payload[:4], "big") & 0x7FFFFFFF


class Stream:
    def __init__(self, path, keep):
        self.path, self.keep = path, keep
        self.status, self.headers, self.body, self.received = None, {}, bytearray(), 0
        self.ended, self.reset, self.pattern_ok = False, None, True

    @property
    def done(self):
        return self.ended or self.reset is not None

    def add(self, data):
        if self.pattern_ok and not matches_pattern(self.received, data):
            self.pattern_ok = False
        self.received += len(data)
        if self.keep and len(self.body) < MIB:
            self.body += data

    def echo(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def text(self, n=200):
        return bytes(self.body[:n]).decode("utf-8", "replace")


class Upload:
    def __init__(self, data, end):
        self.data, self.end, self.sent = memoryview(data), end, 0
        self.chunk = random.randint(1000, 16384)


class Client:
    """One h2c connection driven by h2, with manual flow control (every DATA frame is
    acknowledged unless its stream is in `hold`)."""

    def __init__(self, port, window=4 * MIB, config=None):
        self.port = port
        self.sock = socket.create_connection((HOST, port), timeout=min(5, left()))
        self.conn = h2.connection.H2Connection(config or h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 1 << 16,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(1 << 30)
        self.streams, self.uploads, self.hold = {}, {}, set()
        self.buf, self.closed, self.peer_reset, self.send_error = bytearray(), False, False, None
        self.goaways, self.window_updates, self.settings_seen, self.acked = [], 0, False, False
        self.flush()
        if not self.wait(lambda: self.settings_seen and self.acked, 5):
            raise RuntimeError("no SETTINGS exchange with the proxy")

    def flush(self):
        data = self.conn.data_to_send()
        if data and not self.closed:
            try:
                self.sock.settimeout(max(0.5, min(10, left())))
                self.sock.sendall(data)
            except OSError as e:
                self.closed, self.send_error = True, f"{type(e).__name__}: {e}"

    def request(self, method, path, body=None, headers=(), keep=True, end=True, cl=True, raw_headers=None):
        """Sends HEADERS (the body goes out from `push`, as windows allow); returns the stream id."""
        sid = self.conn.get_next_available_stream_id()
        hs = raw_headers
        if hs is None:
            hs = [(":method", method), (":scheme", "http"), (":authority", f"{HOST}:{self.port}"), (":path", path)]
            if body is not None and cl:
                hs.append(("content-length", str(len(body))))
            hs += list(headers)
        self.streams[sid] = Stream(path, keep)
        self.conn.send_headers(sid, [(b(k), b(v)) for k, v in hs], end_stream=body is None and end)
        if body is not None:
            self.uploads[sid] = Upload(body, end)
        self.flush()
        return sid

    def push(self):
        """Sends request body bytes round-robin across streams, as far as the windows allow."""
        progress = True
        while progress and self.uploads and not self.closed:
            progress = False
            for sid, up in list(self.uploads.items()):
                try:
                    if self.streams[sid].reset is not None:
                        del self.uploads[sid]
                        continue
                    if up.sent == len(up.data):
                        if up.end:
                            self.conn.end_stream(sid)
                        del self.uploads[sid]
                        progress = True
                        continue
                    n = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size,
                            len(up.data) - up.sent, up.chunk)
                    if n > 0:
                        self.conn.send_data(sid, up.data[up.sent:up.sent + n].tobytes())
                        up.sent += n
                        progress = True
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    del self.uploads[sid]
        self.flush()

    def pump(self, timeout):
        """Reads once (up to timeout) and handles what came."""
        t = min(timeout, left())
        if self.closed or t <= 0:
            return
        self.sock.settimeout(t)
        try:
            data = self.sock.recv(1 << 16)
        except socket.timeout:
            return
        except OSError:
            self.closed = self.peer_reset = True
            return
        if not data:
            self.closed = True
            return
        self.buf += data
        for ftype, _, _, payload, raw in split_frames(self.buf):
            if ftype == GOAWAY:
                code, last = goaway_fields(payload)
                self.goaways.append({"code": code, "last_stream_id": last, "at": time.monotonic()})
                continue
            if ftype == WINDOW_UPDATE:
                self.window_updates += 1
            for ev in self.conn.receive_data(raw):
                self.on_event(ev)
        self.push()

    def on_event(self, ev):
        s = self.streams.get(getattr(ev, "stream_id", None))
        if isinstance(ev, h2.events.ResponseReceived) and s:
            s.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in ev.headers}
            s.status = int(s.headers.get(":status", "0"))
        elif isinstance(ev, h2.events.DataReceived):
            if s:
                s.add(ev.data)
            if ev.stream_id not in self.hold:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded) and s:
            s.ended = True
        elif isinstance(ev, h2.events.StreamReset) and s:
            s.reset = int(ev.error_code)
            self.uploads.pop(ev.stream_id, None)
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            self.settings_seen = True
        elif isinstance(ev, h2.events.SettingsAcknowledged):
            self.acked = True

    def wait(self, pred, timeout):
        end = time.monotonic() + timeout
        self.push()
        while not pred() and not self.closed and time.monotonic() < end and left() > 0:
            self.pump(min(0.5, end - time.monotonic()))
        return pred()

    def get(self, path, timeout=5):
        sid = self.request("GET", path)
        self.wait(lambda: self.streams[sid].done, timeout)
        return self.streams[sid]

    def report(self, out, t0=None):
        """Connection-level facts: the last GOAWAY, whether the connection closed."""
        if self.goaways:
            g = self.goaways[-1]
            out.setdefault("goaway", g["code"])
            out.setdefault("last_stream_id", g["last_stream_id"])
            if t0 is not None:
                out["goaway_ms"] = round((self.goaways[0]["at"] - t0) * 1000)
            if len(self.goaways) > 1:
                out["goaways"] = [[g["code"], g["last_stream_id"]] for g in self.goaways]
        else:
            out.setdefault("goaway", None)
        out["closed"] = self.closed
        if self.peer_reset:
            out["peer_reset"] = True
        if self.send_error:
            out["send_error"] = self.send_error


def stream_result(s):
    return {"status": s.status, "reset": s.reset, "ended": s.ended}


# MARK: Scenarios

def concurrent(out, port, n, size):
    n, size = int(n), int(size)
    bodies = {i: os.urandom(size) for i in range(0, n, 2)}
    hashes = {i: fnv1a(body) for i, body in bodies.items()}
    c = Client(port)
    t0 = time.monotonic()
    plan = {}
    for i in range(n):
        if i in bodies:
            plan[c.request("POST", f"/echo/{i}", body=bodies[i])] = ("POST", f"/echo/{i}", hashes[i])
        else:
            plan[c.request("GET", f"/stream?bytes={size}", keep=False)] = ("GET", f"/stream?bytes={size}", None)
    c.wait(lambda: all(c.streams[sid].done for sid in plan), left() - 1)
    out["seconds"] = round(time.monotonic() - t0, 3)
    ok, bad = 0, []
    for sid, (method, path, h) in plan.items():
        s = c.streams[sid]
        why = []
        if not s.ended or s.status != 200:
            why.append(f"status {s.status} reset {s.reset} ended {s.ended}")
        elif method == "POST":
            e = s.echo() or {}
            if e.get("path") != path or e.get("method") != "POST":
                why.append(f"echo of {e.get('method')} {e.get('path')}")
            if e.get("body_bytes") != size:
                why.append(f"body_bytes {e.get('body_bytes')}")
            if int(e.get("body_fnv1a") or "0", 16) != h:
                why.append("fnv mismatch")
        else:
            if s.received != size:
                why.append(f"received {s.received}")
            if not s.pattern_ok:
                why.append("pattern mismatch")
        if why:
            bad.append(f"{method} {path} (stream {sid}): " + ", ".join(why))
        else:
            ok += 1
    out.update({"streams": n, "ok": ok, "bad": bad})
    c.report(out)


def slow_reader(out, port):
    c = Client(port, window=65535)
    a = c.request("GET", "/stream?bytes=20000000", keep=False)
    c.hold.add(a)
    c.wait(lambda: c.streams[a].received >= 65535 or c.streams[a].done, 5)
    out["a_initial"] = c.streams[a].received
    ok, times = 0, []
    for _ in range(20):
        t = time.monotonic()
        s = c.get("/echo/x", timeout=min(5, left() - 1))
        times.append((time.monotonic() - t) * 1000)
        if s.ended and s.status == 200:
            ok += 1
        if c.closed:
            break
    c.pump(0.2)
    sa = c.streams[a]
    out.update({"others_ok": ok, "others_max_ms": round(max(times), 1) if times else None,
                "a_received": sa.received, "a_status": sa.status, "a_reset": sa.reset, "a_ended": sa.ended})
    c.report(out)


def big_upload(out, port, size, mode="cl"):
    size = int(size)
    body = os.urandom(size)
    h = fnv1a(body)
    c = Client(port)
    t0 = time.monotonic()
    sid = c.request("POST", "/up", body=body, cl=mode != "nocl")
    c.wait(lambda: c.streams[sid].done, left() - 1)
    s = c.streams[sid]
    e = s.echo() or {}
    out.update({"status": s.status, "reset": s.reset, "body_bytes": e.get("body_bytes"),
                "fnv_ok": e.get("body_fnv1a") is not None and int(e["body_fnv1a"], 16) == h,
                "window_updates": c.window_updates,
                "backend_content_length": e.get("headers", {}).get("content-length"),
                "backend_transfer_encoding": e.get("headers", {}).get("transfer-encoding"),
                "seconds": round(time.monotonic() - t0, 3)})
    if not s.done:
        out["error"] = "upload response did not complete"
    c.report(out)


def reset_upload(out, port):
    c = Client(port)
    sid = c.request("POST", "/upload", body=os.urandom(MIB), end=False, cl=False, headers=[("content-length", "50000000")])
    up = c.uploads[sid]
    c.wait(lambda: up.sent == len(up.data) or c.streams[sid].done, 8)
    out["upload_sent"] = up.sent
    out["upload_before_reset"] = stream_result(c.streams[sid])
    c.conn.reset_stream(sid, CANCEL)
    c.uploads.pop(sid, None)
    c.flush()
    t = time.monotonic()
    s = c.get("/after")
    out.update({"after_status": s.status, "after_reset": s.reset, "after_ms": round((time.monotonic() - t) * 1000, 1)})
    c.report(out)


def reset_download(out, port):
    c = Client(port)
    sid = c.request("GET", "/stream?bytes=500000000", keep=False)
    c.wait(lambda: c.streams[sid].received >= MIB or c.streams[sid].done, 8)
    s = c.streams[sid]
    out.update({"received": s.received, "pattern_ok": s.pattern_ok, "download_before_reset": stream_result(s)})
    c.conn.reset_stream(sid, CANCEL)
    c.flush()
    t = time.monotonic()
    a = c.get("/after")
    out.update({"after_status": a.status, "after_reset": a.reset, "after_ms": round((time.monotonic() - t) * 1000, 1)})
    c.report(out)


def smuggle_headers(port, case):
    """The header list of each case, as sent (bytes, in order), and the body (None: END_STREAM on
    HEADERS)."""
    def base(path=b"/echo/smuggle", method=b"GET", authority=f"{HOST}:{port}".encode()):
        return [(b":method", method), (b":scheme", b"http"), (b":authority", authority), (b":path", path)]
    post = base(method=b"POST")
    cases = {
        "crlf-value": (base() + [(b"x-a", b"a\r\nx-injected: 1")], None),
        "lf-name": (base() + [(b"x-a\nb", b"1")], None),
        "nul-value": (base() + [(b"x-a", b"a\x00b")], None),
        "crlf-path": (base(path=b"/a\r\nx: y"), None),
        "space-path": (base(path=b"/a b"), None),
        "transfer-encoding": (post + [(b"transfer-encoding", b"chunked")],
                              b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n"),
        "cl-mismatch": (post + [(b"content-length", b"10")], b"12345"),
        "cl-mismatch-more": (post + [(b"content-length", b"3")], b"0123456789"),
        "uppercase-name": (base() + [(b"X-Upper", b"1")], None),
        "pseudo-after-regular": (base()[:3] + [(b"x-a", b"1")] + base()[3:], None),
        "authority-host-disagree": (base(authority=b"a.example") + [(b"host", b"b.example")], None),
        "connection-header": (base() + [(b"connection", b"keep-alive")], None),
        "te-gzip": (base() + [(b"te", b"gzip")], None),
        "duplicate-path": (base() + [(b":path", b"/echo/other")], None),
        # Not attacks: what the proxy makes of legal or borderline requests.
        "control": (base() + [(b"x-a", b"1")], None),
        "split-cookie": (base() + [(b"cookie", b"a=1"), (b"cookie", b"b=2")], None),
        "absolute-path": (base(path=b"http://evil.example/echo/abs"), None),
        "no-authority": ([h for h in base() if h[0] != b":authority"], None),
        "host-only": ([h for h in base() if h[0] != b":authority"] + [(b"host", b"h.example")], None),
        "connect-method": ([(b":method", b"CONNECT"), (b":authority", b"example.com:443")], None),
    }
    return cases.get(case)


def smuggle(out, port, case):
    out["case"] = case
    headers, body = smuggle_headers(port, case)
    c = Client(port, config=h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=False,
        normalize_outbound_headers=False, validate_inbound_headers=False))
    sid = c.request(None, None, body=body, raw_headers=headers)
    c.wait(lambda: c.streams[sid].done or c.goaways, 5)
    s = c.streams[sid]
    out.update({"status": s.status, "reset": s.reset, "body": s.text()})
    e = s.echo() if s.status == 200 else None
    if e:
        out.update({"echo_headers": e.get("headers"), "echo_path": e.get("path"),
                    "echo_method": e.get("method"), "echo_body_bytes": e.get("body_bytes")})
    if not c.closed and not c.goaways:
        out["after_status"] = c.get("/echo/after").status
    c.report(out)


class Raw:
    """A hand-driven connection for the floods: frames built byte by byte, HPACK by `hpack`."""

    def __init__(self, port, rcvbuf=None, settings=b"", window_increment=1 << 30):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(5)
        self.sock.connect((HOST, port))
        self.enc, self.dec = hpack.Encoder(), hpack.Decoder()
        self.buf, self.block = bytearray(), None
        self.closed = self.peer_reset = False
        self.goaway = self.last_stream_id = self.goaway_at = self.closed_at = self.send_error = None
        self.resets, self.statuses, self.settings_seen, self.frames_in = 0, {}, False, 0
        self.status_of, self.watch = {}, None  # watch(type, flags, stream id, payload): every frame
        self.send(PREFACE + frame(SETTINGS, 0, 0, settings) +
                  (frame(WINDOW_UPDATE, 0, 0, window_increment.to_bytes(4, "big")) if window_increment else b""))
        end = time.monotonic() + 5
        while not self.settings_seen and not self.closed and time.monotonic() < end:
            self.read(0.5)
        if not self.settings_seen:
            raise RuntimeError("no SETTINGS from the proxy")

    def send(self, data):
        if self.closed:
            return False
        try:
            self.sock.settimeout(max(0.5, min(5, left())))
            self.sock.sendall(data)
            return True
        except OSError as e:
            self.send_error = f"{type(e).__name__}: {e}"
            return False

    def read(self, timeout):
        if self.closed:
            return False
        self.sock.settimeout(timeout) if timeout > 0 else self.sock.setblocking(False)
        try:
            data = self.sock.recv(1 << 16)
        except (socket.timeout, BlockingIOError):
            return False
        except OSError:
            data, self.peer_reset = b"", True
        if not data:
            self.closed, self.closed_at = True, time.monotonic()
            return False
        self.buf += data
        for ftype, flags, sid, payload, _ in split_frames(self.buf):
            self.on_frame(ftype, flags, sid, payload)
        return True

    def drain(self):
        while self.read(0):
            pass

    def on_frame(self, ftype, flags, sid, payload):
        self.frames_in += 1
        if ftype == GOAWAY:
            self.goaway, self.last_stream_id = goaway_fields(payload)
            self.goaway_at = self.goaway_at or time.monotonic()
        elif ftype == RST_STREAM:
            self.resets += 1
        elif ftype == SETTINGS and not flags & ACK:
            self.settings_seen = True
            self.send(frame(SETTINGS, ACK, 0))
        elif ftype in (HEADERS, CONTINUATION):
            if ftype == HEADERS:
                pad = payload[0] if flags & PADDED else 0
                payload = payload[(1 if flags & PADDED else 0) + (5 if flags & PRIORITY_FLAG else 0):len(payload) - pad]
                self.block = bytearray()
            if self.block is not None:
                self.block += payload
            if flags & END_HEADERS and self.block is not None:
                try:
                    status = dict(self.dec.decode(bytes(self.block))).get(":status", "?")
                except Exception as e:  # noqa: BLE001 - reported, not fatal
                    status = f"hpack error {type(e).__name__}"
                self.statuses[status] = self.statuses.get(status, 0) + 1
                self.status_of.setdefault(sid, status)
                self.block = None
        if self.watch:
            self.watch(ftype, flags, sid, payload)

    def headers(self, path, method="GET", port=0):
        return self.enc.encode([(":method", method), (":scheme", "http"), (":authority", f"{HOST}:{port}"), (":path", path)])


FLOOD_KINDS = ("rapid-reset", "settings", "ping", "continuation", "empty-data", "window-update",
               "invalid-frames", "invalid-data", "invalid-headers")


def flood(out, port, kind, count):
    port, count = int(port), int(count)
    out["kind"] = kind
    # The settings and ping floods do not read while sending; a small receive buffer makes the
    # acknowledgements back up at the proxy sooner.
    r = Raw(port, rcvbuf=int(os.environ.get("H2_PROBE_RCVBUF", "4096")) if kind in ("settings", "ping") else None)
    reads = kind not in ("settings", "ping")

    def units():
        if kind == "rapid-reset":
            for i in range(count):
                sid = 1 + 2 * i
                yield frame(HEADERS, END_STREAM | END_HEADERS, sid, r.headers(f"/echo/{i}", port=port)) + \
                    frame(RST_STREAM, 0, sid, CANCEL.to_bytes(4, "big"))
        elif kind == "settings":
            for _ in range(count):
                yield frame(SETTINGS, 0, 0)
        elif kind == "ping":
            for i in range(count):
                yield frame(PING, 0, 0, i.to_bytes(8, "big"))
        elif kind == "continuation":
            yield frame(HEADERS, END_STREAM, 1, r.headers("/echo/continuation", port=port))
            for i in range(count):
                yield frame(CONTINUATION, END_HEADERS if i == count - 1 else 0, 1, r.enc.encode([("x-c", "v")]))
        elif kind == "empty-data":
            yield frame(HEADERS, END_HEADERS, 1, r.headers("/echo/empty-data", method="POST", port=port))
            for _ in range(count):
                yield frame(DATA, 0, 1)
        elif kind == "window-update":
            for _ in range(count):
                yield frame(WINDOW_UPDATE, 0, 0, (1).to_bytes(4, "big"))
        elif kind == "invalid-frames":
            for i in range(count):
                sid = 1 + 2 * i
                yield frame(HEADERS, END_STREAM | END_HEADERS, sid, r.headers(f"/echo/{i}", port=port)) + \
                    frame(WINDOW_UPDATE, 0, sid, (0).to_bytes(4, "big"))
        elif kind == "invalid-data":
            for i in range(count):
                sid = 1 + 2 * i
                yield frame(HEADERS, END_STREAM | END_HEADERS, sid, r.headers(f"/echo/{i}", port=port)) + \
                    frame(DATA, 0, sid, b"x")
        elif kind == "invalid-headers":
            for i in range(count):
                yield frame(HEADERS, END_STREAM | END_HEADERS, 1 + 2 * i, r.enc.encode(
                    [(":method", "GET"), (":scheme", "http"), (":authority", f"{HOST}:{port}"), (":path", f"/echo/{i}"), ("X-Bad", "1")]))

    t0 = time.monotonic()
    stop_sending = t0 + min(8, max(1, left() - 11))
    sent = 0
    first = kind in ("continuation", "empty-data")  # the opening HEADERS is not counted
    for unit in units():
        if time.monotonic() > stop_sending:
            out["send_stopped"] = "time"
            break
        if not r.send(unit):
            break
        if first:
            first = False
            continue
        sent += 1
        if reads and sent % 50 == 0:
            r.drain()
            if r.closed or r.goaway is not None:
                break
    out["send_seconds"] = round(time.monotonic() - t0, 3)
    end = time.monotonic() + min(10, max(0, left()))
    while not r.closed and time.monotonic() < end:
        r.read(min(0.5, end - time.monotonic()))
    stop = r.closed_at or time.monotonic()
    out.update({"sent": sent, "goaway": r.goaway, "last_stream_id": r.last_stream_id, "closed": r.closed,
                "seconds": round(stop - t0, 3), "resets": r.resets, "statuses": r.statuses, "frames_in": r.frames_in,
                "goaway_ms": round((r.goaway_at - t0) * 1000) if r.goaway_at else None})
    if r.peer_reset:
        out["peer_reset"] = True
    if r.send_error:
        out["send_error"] = r.send_error


def goaway_wait(out, port, path=None):
    c = Client(port)
    out["first_status"] = c.get("/echo/1").status
    t0 = time.monotonic()
    sid = c.request("GET", path) if path else None
    c.wait(lambda: False, min(15, left() - 0.5))
    out["seconds"] = round(time.monotonic() - t0, 3)
    if sid:
        out["inflight"] = stream_result(c.streams[sid])
    c.report(out, t0)
    out.setdefault("last_stream_id", None)


def idle(out, port, seconds):
    c = Client(port)
    t0 = time.monotonic()
    c.wait(lambda: False, min(float(seconds) + 5, left() - 0.5))
    out["seconds"] = round(time.monotonic() - t0, 3)
    c.report(out, t0)


def headers_size(out, port, size):
    size = int(size)
    fields, total = [], 0
    while total < size:
        name, value = f"x-h-{len(fields)}", os.urandom(50).hex()
        fields.append((name, value))
        total += len(name) + len(value)
    c = Client(port)
    sid = c.request("GET", "/echo/headers", headers=fields)
    out.update({"fields": len(fields), "header_list_bytes": total + 32 * len(fields),
                "header_block_bytes": len(hpack.Encoder().encode(fields))})
    c.wait(lambda: c.streams[sid].done or c.goaways, 8)
    s = c.streams[sid]
    e = s.echo() if s.status == 200 else None
    out.update({"status": s.status, "reset": s.reset, "body": s.text()})
    if e:
        out["echoed_fields"] = sum(1 for k in e.get("headers", {}) if k.startswith("x-h-"))
    if not c.closed and not c.goaways:
        out["after_status"] = c.get("/echo/after").status
    c.report(out)


def resets_then_upload(out, port, n, size):
    n, size = int(n), int(size)
    c = Client(port)
    sent = []
    for _ in range(n):
        sid = c.request("POST", "/upload", body=b"x" * 240000, end=False, cl=False,
                        headers=[("content-length", "10000000")])
        up = c.uploads[sid]
        c.push()  # what the windows allow now; no waiting for WINDOW_UPDATE
        sent.append(up.sent)
        c.conn.reset_stream(sid, CANCEL)
        c.uploads.pop(sid, None)
        c.flush()
        c.wait(lambda: False, 0.5)  # WINDOW_UPDATEs for the discarded bytes come back meanwhile
        if c.closed or c.goaways:
            break
    out.update({"resets": len(sent), "upload_sent": sent,
                "connection_window_at_end": c.conn.outbound_flow_control_window})
    t0 = time.monotonic()
    sid = c.request("POST", "/echo/final", body=os.urandom(size))
    up = c.uploads[sid]
    c.wait(lambda: c.streams[sid].done, min(15, left() - 0.5))
    s = c.streams[sid]
    e = s.echo() if s.ended else None
    out.update({"final_status": s.status, "final_reset": s.reset,
                "final_body_bytes": e.get("body_bytes") if e else None,
                "final_sent": up.sent,
                "seconds": round(time.monotonic() - t0, 3)})
    if not s.done:
        out["error"] = "final upload did not complete"
    c.report(out)


def status_int(status):
    return int(status) if status and status.isdigit() else status


def read_until(r, pred, seconds):
    """Reads r until pred(), close, or `seconds`; returns the time spent."""
    t0 = time.monotonic()
    end = t0 + min(seconds, max(0, left() - 0.5))
    while not pred() and not r.closed and time.monotonic() < end:
        r.read(min(0.5, end - time.monotonic()))
    return time.monotonic() - t0


def half_open(out, port, path):
    r = Raw(int(port))
    seen = {"ended": False, "rst": None, "rst_after": False, "rst_at": None}

    def watch(ftype, flags, sid, payload):
        if sid != 1:
            return
        if ftype in (HEADERS, DATA) and flags & END_STREAM:
            seen["ended"] = True
        elif ftype == RST_STREAM and seen["rst"] is None:
            seen.update(rst=int.from_bytes(payload[:4], "big"), rst_after=seen["ended"], rst_at=time.monotonic())
    r.watch = watch
    t0 = time.monotonic()
    r.send(frame(HEADERS, END_HEADERS, 1, r.headers(path, port=port)))  # no END_STREAM, no body ever
    read_until(r, lambda: seen["rst"] is not None, 8)
    out.update({"status": status_int(r.status_of.get(1)),
                "response_ended": seen["ended"], "rst_code": seen["rst"], "rst_after_response": seen["rst_after"],
                "goaway": r.goaway, "closed": r.closed,
                "seconds_to_rst": round(seen["rst_at"] - t0, 3) if seen["rst_at"] else None})
    if r.peer_reset:
        out["peer_reset"] = True


def partial_headers(out, port):
    r = Raw(int(port))
    t0 = time.monotonic()
    r.send(frame(HEADERS, END_STREAM, 1, r.headers("/echo/partial", port=port)))  # no END_HEADERS
    read_until(r, lambda: False, 10)
    out.update({"goaway": r.goaway, "last_stream_id": r.last_stream_id, "closed": r.closed,
                "seconds": round((r.closed_at or time.monotonic()) - t0, 3)})
    if r.peer_reset:
        out["peer_reset"] = True


def late_literal(out, port):
    """A 60,000-byte response (DATA frames over a page), a pause (the connection is idle), then
    a request whose header block carries a 12,000-byte cookie literal, sent as HEADERS and,
    after another pause, CONTINUATION: the decoder holds the half-decoded literal across reads."""
    r = Raw(int(port))
    got = {1: bytearray(), 3: bytearray()}
    ended = set()

    def watch(ftype, flags, sid, payload):
        if ftype == DATA and sid in got:
            got[sid].extend(payload)
            if flags & END_STREAM:
                ended.add(sid)

    r.watch = watch
    r.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, r.headers("/stream?bytes=60000", port=port)))
    read_until(r, lambda: 1 in ended, 10)
    out["first_bytes"] = len(got[1])
    time.sleep(0.3)
    rng = random.Random(7)
    cookie = "c=" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12000))
    block = r.enc.encode([(":method", "GET"), (":scheme", "http"), (":authority", f"{HOST}:{port}"),
                          (":path", "/echo/late"), ("cookie", cookie)])
    half = len(block) // 2
    r.send(frame(HEADERS, END_STREAM, 3, block[:half]))
    read_until(r, lambda: False, 0.3)
    r.send(frame(CONTINUATION, END_HEADERS, 3, block[half:]))
    read_until(r, lambda: 3 in ended or r.resets > 0, 10)
    out.update({"status": r.status_of.get(3), "resets": r.resets, "closed": r.closed, "block_bytes": len(block)})
    try:
        echo = json.loads(bytes(got[3]))
        out["cookie_intact"] = (echo.get("headers") or {}).get("cookie") == cookie
    except ValueError:
        out["cookie_intact"] = False


def zero_window(out, port, n):
    n = int(n)
    r = Raw(int(port), settings=(4).to_bytes(2, "big") + (0).to_bytes(4, "big"), window_increment=0)
    codes, last = {}, [None]

    def watch(ftype, flags, sid, payload):
        if ftype == RST_STREAM:
            codes.setdefault(sid, int.from_bytes(payload[:4], "big"))
            last[0] = time.monotonic()
    r.watch = watch
    t0 = time.monotonic()
    r.send(b"".join(frame(HEADERS, END_STREAM | END_HEADERS, 1 + 2 * i, r.headers("/stream?bytes=1000000000", port=port))
                    for i in range(n)))
    waited = read_until(r, lambda: len(codes) >= n, 15)
    out.update({"streams": n, "headers": sum(r.statuses.values()), "statuses": r.statuses, "resets": len(codes),
                "reset_codes": sorted(set(codes.values())),
                "seconds": round(last[0] - t0 if len(codes) >= n else waited, 3),
                "goaway": r.goaway, "closed": r.closed})
    if r.peer_reset:
        out["peer_reset"] = True


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def slow_download(out, port, total):
    total, pid = int(total), os.environ.get("H2_PROBE_PID")
    rate = 8e6  # bytes per second
    samples = []

    def sample():
        if pid:
            samples.append(rss_kb(pid))
    r = Raw(int(port), settings=(4).to_bytes(2, "big") + (16384).to_bytes(4, "big"), window_increment=MIB)
    got = {"n": 0, "ended": False, "reset": None}
    t0 = time.monotonic()

    def watch(ftype, flags, sid, payload):
        if sid != 1:
            return
        if ftype == DATA:
            got["n"] += len(payload)
            if flags & END_STREAM:
                got["ended"] = True
            if payload:
                pause = t0 + got["n"] / rate - time.monotonic()  # about 2 ms per 16 KB frame
                if pause > 0:
                    time.sleep(pause)
                inc = len(payload).to_bytes(4, "big")
                r.send(frame(WINDOW_UPDATE, 0, 1, inc) + frame(WINDOW_UPDATE, 0, 0, inc))
        elif ftype == HEADERS and flags & END_STREAM:
            got["ended"] = True
        elif ftype == RST_STREAM:
            got["reset"] = int.from_bytes(payload[:4], "big")
    r.watch = watch
    sample()
    r.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, r.headers(f"/stream?bytes={total}", port=port)))
    end = t0 + min(30, max(0, left() - 1))
    next_sample = time.monotonic() + 1
    while not (got["ended"] or got["reset"] is not None or got["n"] >= total) and not r.closed \
            and time.monotonic() < end:
        r.read(min(0.5, max(0.01, end - time.monotonic())))
        if time.monotonic() >= next_sample:
            sample()
            next_sample += 1
    seconds = time.monotonic() - t0
    sample()
    known = [x for x in samples if x is not None]
    out.update({"received": got["n"], "complete": got["n"] >= total, "seconds": round(seconds, 3),
                "mb_per_s": round(got["n"] / seconds / 1e6, 2) if seconds > 0 else None,
                "status": status_int(r.status_of.get(1)), "reset": got["reset"],
                "rss_start_kb": samples[0] if samples else None, "rss_max_kb": max(known) if known else None,
                "rss_end_kb": samples[-1] if samples else None, "rss_samples": len(known),
                "goaway": r.goaway, "closed": r.closed})
    if r.peer_reset:
        out["peer_reset"] = True


SCENARIOS = {
    "concurrent": (concurrent, 2), "slow-reader": (slow_reader, 0), "big-upload": (big_upload, 1),
    "reset-upload": (reset_upload, 0), "reset-download": (reset_download, 0), "smuggle": (smuggle, 1),
    "flood": (flood, 2), "goaway-wait": (goaway_wait, 0), "idle": (idle, 1), "headers-size": (headers_size, 1),
    "resets-then-upload": (resets_then_upload, 2), "half-open": (half_open, 1), "partial-headers": (partial_headers, 0),
    "zero-window": (zero_window, 1), "slow-download": (slow_download, 1), "late-literal": (late_literal, 0),
}


def main():
    global deadline
    if len(sys.argv) < 3 or sys.argv[1] not in SCENARIOS or len(sys.argv) - 3 < SCENARIOS[sys.argv[1]][1]:
        print(__doc__, file=sys.stderr)
        return 2
    name, port, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    if (name == "smuggle" and smuggle_headers(port, args[0]) is None) or (name == "flood" and args[0] not in FLOOD_KINDS):
        print(f"unknown {name} case {args[0]}", file=sys.stderr)
        return 2
    budget = {"idle": lambda: float(args[0]) + 10, "resets-then-upload": lambda: int(args[0]) / 2 + 20,
              "slow-download": lambda: 40}.get(name, lambda: 20)()
    deadline = time.monotonic() + budget
    out = {"scenario": name}
    try:
        SCENARIOS[name][0](out, port, *args)
    except Exception as e:  # noqa: BLE001 - the JSON reports it
        out["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
