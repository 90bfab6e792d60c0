"""Drives the proxy's compression for CompressionTests. Usage: compress_check.py PROXY_PORT
ORIGIN_PORT (the origin is compress_origin.py). Prints one JSON object of what it saw; the Swift
test asserts on it. Needs the `brotli` package (the test's venv).
"""
import gzip
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import time
import zlib

import brotli

proxy, origin = int(sys.argv[1]), int(sys.argv[2])


def fetch(port, path, headers=None, method="GET", timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request(method, path, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r, body


def decode(coding, body):
    if coding == "gzip":
        return gzip.decompress(body)
    if coding == "br":
        return brotli.decompress(body)
    return body


def look(path, accept, method="GET"):
    headers = {"Accept-Encoding": accept} if accept is not None else {}
    r, body = fetch(proxy, path, headers, method)
    coding = r.getheader("Content-Encoding")
    out = {"status": r.status, "coding": coding, "vary": r.getheader("Vary"), "etag": r.getheader("ETag"),
           "length": r.getheader("Content-Length"), "ranges": r.getheader("Accept-Ranges"),
           "chunked": (r.getheader("Transfer-Encoding") or "").lower() == "chunked", "wire_bytes": len(body)}
    try:
        out["decoded"] = decode(coding, body) if method != "HEAD" else b""
    except Exception as e:  # noqa: BLE001
        out["decode_error"] = repr(e)
        out["decoded"] = b""
    return out


results = {}
originals = {}
for name in ["/big.json", "/chunked.txt", "/close.html", "/gzipped.json", "/notransform", "/small.txt", "/image.png", "/varystar"]:
    r, body = fetch(origin, name)
    originals[name] = body if r.getheader("Content-Encoding") is None else gzip.decompress(body)

for prefix in ["", "/off", "/gzonly"]:
    for name, identity in originals.items():
        for accept in ["gzip", "br", "gzip, br;q=0", "deflate", None]:
            seen = look(prefix + name, accept)
            decoded = seen.pop("decoded")
            seen["matches"] = decoded == identity
            results[f"{prefix}{name} {accept}"] = seen

# HEAD: never compressed.
results["HEAD /big.json gzip"] = {k: v for k, v in look("/big.json", "gzip", "HEAD").items() if k != "decoded"}

# HTTP/1.0: not compressed (the body would need the connection closed), but still varies.
s = socket.create_connection(("127.0.0.1", proxy), timeout=10)
s.sendall(b"GET /big.json HTTP/1.0\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
raw = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    raw += chunk
s.close()
head, _, body = raw.partition(b"\r\n\r\n")
head_lower = head.decode("latin-1").lower()
results["http1.0"] = {"coding": "content-encoding:" in head_lower, "vary": "vary:" in head_lower and "accept-encoding" in head_lower,
                      "matches": body == originals["/big.json"]}

# Server-Sent Events listed by name: compressed, and each event arrives when sent (sync flush).
def events(path):
    c = http.client.HTTPConnection("127.0.0.1", proxy, timeout=10)
    start = time.monotonic()
    c.request("GET", path, headers={"Accept-Encoding": "gzip"})
    r = c.getresponse()
    coding = r.getheader("Content-Encoding")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if coding == "gzip" else None
    text, first = b"", None
    while True:
        piece = r.read1(65536)
        if not piece:
            break
        text += inflater.decompress(piece) if inflater else piece
        if first is None and b"\n\n" in text:
            first = time.monotonic() - start
    total = time.monotonic() - start
    c.close()
    return {"coding": coding, "first_event_s": round(first or 99, 3), "total_s": round(total, 3), "events": text.count(b"\n\n")}


results["events listed"] = events("/sse/events")
results["events by text/*"] = events("/events")

# HTTP/2 (cleartext, prior knowledge) through curl, which does not decode without --compressed.
with tempfile.NamedTemporaryFile() as f:
    p = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-H", "Accept-Encoding: br", "-D", "-", "-o", f.name,
                        f"http://127.0.0.1:{proxy}/chunked.txt"], capture_output=True, timeout=20)
    head = p.stdout.decode("latin-1").lower()
    body = open(f.name, "rb").read()
    try:
        ok = brotli.decompress(body) == originals["/chunked.txt"]
    except Exception:  # noqa: BLE001
        ok = False
    results["h2 br"] = {"http2": head.startswith("http/2"), "coding": "content-encoding: br" in head, "matches": ok,
                        "length": "content-length:" in head}

print(json.dumps(results, sort_keys=True))
