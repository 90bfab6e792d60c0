"""A WebSocket client for the integration tests (the `websockets` package). Runs one scenario
against URL and prints one JSON line of results; exit status 0 when every step behaved.

  ws_client.py URL conversation SILENT_S   text, binary, 1 MiB binary, ping/pong, a silence of
                                           SILENT_S seconds, another echo, then close from here
  ws_client.py URL server-close            the server closes; report the close code and reason
"""
import asyncio
import json
import os
import sys
import time

import websockets


async def conversation(url, silent):
    results = {}
    async with websockets.connect(url, max_size=None, ping_interval=None, open_timeout=10) as ws:
        await ws.send("hello")
        results["text"] = await ws.recv() == "hello"
        blob = os.urandom(256)
        await ws.send(blob)
        results["binary"] = await ws.recv() == blob
        big = os.urandom(1 << 20)
        await ws.send(big)
        echoed = await ws.recv()
        results["mib"] = echoed == big
        pong = await ws.ping(b"are you there")
        started = time.monotonic()
        await asyncio.wait_for(pong, 10)
        results["ping_ms"] = round((time.monotonic() - started) * 1000, 1)
        results["pong"] = True
        await asyncio.sleep(silent)
        await ws.send("after silence")
        results["after_silence"] = await asyncio.wait_for(ws.recv(), 10) == "after silence"
        await ws.send(f"sleep:{silent}")  # the server is silent this time
        results["server_silence"] = await asyncio.wait_for(ws.recv(), silent + 10) == "slept"
        await ws.close(1000, "client says bye")
        results["close_code"] = ws.close_code
    return results


async def server_close(url):
    async with websockets.connect(url, open_timeout=10, ping_interval=None) as ws:
        await ws.send("close-from-server")
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed as closed:
            return {"close_code": closed.rcvd.code if closed.rcvd else None,
                    "reason": closed.rcvd.reason if closed.rcvd else None}
    return {"close_code": None}


def main():
    url, scenario = sys.argv[1], sys.argv[2]
    if scenario == "conversation":
        results = asyncio.run(conversation(url, float(sys.argv[3])))
        ok = all(results.get(k) for k in ("text", "binary", "mib", "pong", "after_silence", "server_silence")) \
            and results.get("close_code") == 1000
    else:
        results = asyncio.run(server_close(url))
        ok = results.get("close_code") == 4000
    print(json.dumps(results), flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
