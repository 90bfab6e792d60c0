#!/usr/bin/env python3
"""A fast HTTP/1.1 upload sink for the benchmark: reads every request body to the end, then answers
`200 ok` (keep-alive). Content-Length and chunked bodies; any method, any path.

    python3 Benchmarks/upload_sink.py PORT

Why not the nginx origin: nginx only reads a body when a module asks for it. `return 200` answers
before the body arrives and discards it 4 KiB at a time; WebDAV PUT and the echo module spool it to
a temp file. Measured on the benchmark machine with 8 concurrent 256 MiB uploads on one core, those
peaked at 550–800 MB/s and cost the origin core more CPU than the proxies under test;
`test-backend` (which hashes every byte) at 440 MB/s. This sink reads 1 MiB per recv and keeps
only counters, so the upload figure measures the proxies rather than the origin.
"""
import selectors
import socket
import sys

READ_SIZE = 1 << 20
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nok\n"
MAX_HEAD = 64 * 1024


class Conn:
    """One client connection: head → body (Content-Length or chunked) → response, repeated."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()  # unparsed bytes (head, chunk framing); body bytes are dropped
        self.remaining = 0  # Content-Length body bytes still to read
        self.state = "head"  # head | length | chunk_size | chunk_data | chunk_crlf | trailer

    def feed(self, data: memoryview) -> bool:
        """Consume bytes; returns False to close the connection."""
        i, n = 0, len(data)
        while i < n:
            if self.state == "length" or self.state == "chunk_data":
                take = min(self.remaining, n - i)
                i += take
                self.remaining -= take
                if self.remaining == 0:
                    if self.state == "length":
                        self.respond()
                    else:
                        self.state = "chunk_crlf"
                continue
            # Line-oriented states: gather bytes in buf.
            self.buf += data[i:n]
            i = n
            if not self.parse_lines():
                return False
            if self.state in ("length", "chunk_data") and self.buf:
                rest = bytes(self.buf)
                self.buf.clear()
                return self.feed(memoryview(rest))
        return True

    def parse_lines(self) -> bool:
        while True:
            if self.state == "head":
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return len(self.buf) <= MAX_HEAD
                head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
                del self.buf[:end + 4]
                headers = {}
                for line in head[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    self.state = "chunk_size"
                else:
                    self.remaining = int(headers.get("content-length", "0") or 0)
                    if self.remaining == 0:
                        self.respond()
                    else:
                        self.state = "length"
                        return True
            elif self.state in ("chunk_size", "chunk_crlf", "trailer"):
                end = self.buf.find(b"\r\n")
                if end < 0:
                    return len(self.buf) <= MAX_HEAD
                line = bytes(self.buf[:end])
                del self.buf[:end + 2]
                if self.state == "chunk_crlf":
                    self.state = "chunk_size"
                elif self.state == "trailer":
                    if not line:
                        self.respond()
                else:
                    size = int(line.split(b";")[0], 16)
                    if size == 0:
                        self.state = "trailer"
                    else:
                        self.remaining = size
                        self.state = "chunk_data"
                        return True
            else:
                return True

    def respond(self) -> None:
        self.sock.setblocking(True)  # a few bytes into an idle socket: never blocks for long
        self.sock.sendall(RESPONSE)
        self.sock.setblocking(False)
        self.state = "head"


def main() -> None:
    port = int(sys.argv[1])
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    buf = bytearray(READ_SIZE)
    view = memoryview(buf)
    while True:
        for key, _ in sel.select():
            if key.fileobj is listener:
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    continue
                sock.setblocking(False)
                sel.register(sock, selectors.EVENT_READ, Conn(sock))
                continue
            conn = key.data
            try:
                n = conn.sock.recv_into(buf)
            except BlockingIOError:
                continue
            except OSError:
                n = 0
            ok = False
            if n:
                try:
                    ok = conn.feed(view[:n])
                except (ValueError, OSError):
                    ok = False
            if not ok:
                sel.unregister(conn.sock)
                conn.sock.close()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
