"""A WebSocket backend for the integration tests (the `websockets` package, independent of the
proxy). Prints `ws_server: listening on 127.0.0.1:PORT`, then echoes every message. Special text messages:
  "close-from-server"  the server closes with code 4000 "server says bye"
  "sleep:S"           waits S seconds, then answers "slept"
"""
import asyncio
import sys

import websockets


async def handler(ws):
    async for message in ws:
        if message == "close-from-server":
            await ws.close(4000, "server says bye")
            return
        if isinstance(message, str) and message.startswith("sleep:"):
            await asyncio.sleep(float(message[6:]))
            await ws.send("slept")
            continue
        await ws.send(message)


async def main():
    async with websockets.serve(handler, "127.0.0.1", 0, max_size=None, ping_interval=None,
                                process_request=health) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"ws_server: listening on 127.0.0.1:{port}", flush=True)
        await asyncio.Future()


def health(connection, request):
    # Plain HTTP for the proxy's health probe (GET /health); everything else is a WebSocket.
    if request.path == "/health":
        return connection.respond(200, "OK\n")
    return None


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
