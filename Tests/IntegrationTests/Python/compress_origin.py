"""An origin for the compression tests (stdlib only). Usage: compress_origin.py. Prints
`compress_origin: listening on 127.0.0.1:PORT`. Paths:

  /big.json       ~120 KB of JSON with Content-Length, a strong ETag, Accept-Ranges and Vary: Origin
  /chunked.txt    text/plain, chunked, 50 chunks (the body of /big.json cut up)
  /close.html     text/html with no length: HTTP/1.0-style, the body ends at close
  /gzipped.json   application/json already gzip-encoded by the origin
  /notransform    text/plain with Cache-Control: no-transform
  /small.txt      text/plain, 100 bytes
  /image.png      image/png, 20 KB
  /varystar       text/plain, 5 KB, Vary: *
  /events         text/event-stream: three events 0.8 s apart, chunked
  /health         200, empty
Every body is derived from BIG (below) so a client can check what it decoded.
"""
import gzip
import http.server
import json
import random
import socketserver
import sys
import time

random.seed(7)
BIG = json.dumps([{"id": i, "name": f"user{i}", "score": round(random.random(), 6),
                   "tags": random.sample(["red", "green", "blue", "cyan", "black"], 2)} for i in range(1500)]).encode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, ctype, body, extra=()):
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        p = self.path
        if p == "/health":
            return self.send(200, "text/plain", b"")
        if p == "/big.json":
            return self.send(200, "application/json; charset=utf-8", BIG,
                             [("ETag", '"big-1"'), ("Accept-Ranges", "bytes"), ("Vary", "Origin")])
        if p == "/chunked.txt":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            step = len(BIG) // 50 + 1
            for i in range(0, len(BIG), step):
                piece = BIG[i:i + step]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            return
        if p == "/close.html":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(BIG)
            self.close_connection = True
            return
        if p == "/gzipped.json":
            return self.send(200, "application/json", gzip.compress(BIG), [("Content-Encoding", "gzip")])
        if p == "/notransform":
            return self.send(200, "text/plain", BIG[:5000], [("Cache-Control", "public, no-transform")])
        if p == "/small.txt":
            return self.send(200, "text/plain", BIG[:100])
        if p == "/image.png":
            return self.send(200, "image/png", BIG[:20000])
        if p == "/varystar":
            return self.send(200, "text/plain", BIG[:5000], [("Vary", "*")])
        if p == "/events":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(3):
                event = b"id: %d\ndata: %s\n\n" % (i, BIG[:2000])
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
                time.sleep(0.8)
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send(404, "text/plain", b"no such path\n")


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


server = Server(("127.0.0.1", 0), Handler)
print(f"compress_origin: listening on 127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
