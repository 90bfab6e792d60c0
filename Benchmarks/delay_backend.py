#!/usr/bin/env python3
"""A small HTTP/1.1 keep-alive backend with a configurable response delay, for
Benchmarks/balance_bench.py.

    python3 Benchmarks/delay_backend.py --port P [--delay-ms D] [--slow-fraction F --slow-ms S]
                                        [--seed N]

Every request is answered `200` with a 3-byte body and a Content-Length, on the same connection
(keep-alive unless the request says `Connection: close` or is HTTP/1.0 without keep-alive). The
answer waits `--delay-ms` (through the event loop's timer, so waiting costs no CPU; 0 answers at
once), or `--slow-ms` for a `--slow-fraction` of requests drawn from a random generator seeded
with `--seed` (the same sequence on every run).

Two paths are the harness's own and are answered at once, without counting:
  GET /__count   the number of requests served since the start (or the last reset), as text
  GET /__reset   sets that count to 0 and reseeds the generator

Built on asyncio.Protocol (not streams) to keep the per-request cost low, on a select() loop
(`--selector epoll` for the default one): select() takes its timeout in microseconds, epoll and
poll round it up to whole milliseconds, which makes a 1 ms delay up to 2 ms once many timers are
pending (measured: 16 connections, 1 ms delay, p50 1.4 ms with select, 1.8 ms with epoll). Requests are handled
one at a time per connection: a pipelined request waits in the buffer until the answer to the
previous one has been written, so answers never overtake each other.
"""
import argparse
import asyncio
import random
import selectors
import signal
import socket

BODY = b"ok\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(BODY)) + BODY
RESPONSE_CLOSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                  % len(BODY)) + BODY
MAX_HEAD = 64 * 1024


def text_response(text: str) -> bytes:
    body = text.encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body) + body


class State:
    def __init__(self, args):
        self.args = args
        self.count = 0
        self.rng = random.Random(args.seed)
        self.base = args.delay_ms / 1000.0
        self.slow = args.slow_ms / 1000.0
        self.fraction = args.slow_fraction

    def reset(self):
        self.count = 0
        self.rng = random.Random(self.args.seed)

    def delay(self) -> float:
        if self.fraction > 0 and self.rng.random() < self.fraction:
            return self.slow
        return self.base


class Conn(asyncio.Protocol):
    __slots__ = ("state", "loop", "transport", "buf", "busy", "closing")

    def __init__(self, state, loop):
        self.state, self.loop = state, loop
        self.transport = None
        self.buf = b""
        self.busy = False  # an answer is pending (delayed)
        self.closing = False

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        self.buf = self.buf + data if self.buf else data
        if not self.busy:
            self.next_request()

    def next_request(self):
        while not self.busy and not self.closing:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self.transport.close()
                    self.closing = True
                return
            head = self.buf[:end]
            rest = end + 4
            lower = head.lower()
            # A request body (none is expected): skip it by its Content-Length.
            i = lower.find(b"\r\ncontent-length:")
            if i >= 0:
                j = lower.find(b"\r\n", i + 2)
                try:
                    n = int(lower[i + 17:j if j >= 0 else len(lower)].strip())
                except ValueError:
                    n = 0
                if len(self.buf) < rest + n:
                    return  # wait for the whole body
                rest += n
            self.buf = self.buf[rest:]
            line_end = head.find(b"\r\n")
            line = head if line_end < 0 else head[:line_end]
            parts = line.split(b" ")
            path = parts[1] if len(parts) > 1 else b"/"
            close = b"\r\nconnection: close" in lower or (line.endswith(b"HTTP/1.0") and b"keep-alive" not in lower)
            st = self.state
            if path == b"/__count":
                self.transport.write(text_response(f"{st.count}\n"))
                continue
            if path == b"/__reset":
                st.reset()
                self.transport.write(text_response("0\n"))
                continue
            st.count += 1
            d = st.delay()
            if d <= 0:
                self.answer(close)
            else:
                self.busy = True
                self.loop.call_later(d, self.delayed, close)

    def delayed(self, close):
        self.busy = False
        if self.closing:
            return
        self.answer(close)
        if self.buf:
            self.next_request()

    def answer(self, close):
        if close:
            self.transport.write(RESPONSE_CLOSE)
            self.transport.close()
            self.closing = True
        else:
            self.transport.write(RESPONSE)

    def connection_lost(self, exc):
        self.closing = True


async def main(args):
    loop = asyncio.get_running_loop()
    state = State(args)
    server = await loop.create_server(lambda: Conn(state, loop), "127.0.0.1", args.port, backlog=1024,
                                      reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"delay_backend {args.name} listening on 127.0.0.1:{args.port} (delay {args.delay_ms} ms, "
          f"{args.slow_fraction * 100:g} % at {args.slow_ms} ms, seed {args.seed})", flush=True)
    async with server:
        await stop.wait()
    print(f"delay_backend {args.name}: {state.count} requests since the last reset", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", default="backend")
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--slow-fraction", type=float, default=0.0)
    p.add_argument("--slow-ms", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--selector", choices=["select", "epoll"], default="select")
    args = p.parse_args()
    if args.selector == "select":
        loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    else:
        loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main(args))
    finally:
        loop.close()
