"""The proxy's down page in headless Chromium (DevTools protocol, `websockets`): opens URL (a
gateway whose backend is down), checks that the proxy's 502/503 page shows, then starts the backend
(a tiny HTTP server on 127.0.0.1:BACKEND_PORT whose page is titled "back up") and waits for the open
page to reload itself into the backend's. Prints one JSON object:

  down_page_check.py --url URL --backend-port N [--chromium PATH] [--timeout 40]

  {"down_title": "503 Service Unavailable", "watching": true, "final_title": "back up",
   "reloaded_after_s": 1.6, "external_requests": [], "page_errors": []}

Exit status 0 when the page reloaded into the backend's; 1 otherwise. Chromium and its profile are
always removed, and the backend stopped.
"""
import argparse
import asyncio
import http.server
import json
import sys
import threading
import time
import urllib.parse

import websockets

from status_page_check import CDP, Failure, exception_text, first_page_session, run_in_browser

PAGE = b"<!doctype html><title>back up</title><p>the backend answers</p>"


class PageHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args):
        pass


async def check(args, browser, out, servers):
    parsed = urllib.parse.urlsplit(args.url)
    origin = f"{parsed.scheme}://{parsed.netloc}"
    external, page_errors = [], []
    out["external_requests"] = external
    out["page_errors"] = page_errors
    out["stage"] = "starting Chromium"
    ws_url = await browser.devtools_url()
    out["stage"] = "connecting to DevTools"
    async with websockets.connect(ws_url, max_size=None, ping_interval=None, open_timeout=10) as ws:
        cdp = CDP(ws)
        session = await first_page_session(cdp)

        def on_event(msg):
            if msg.get("sessionId") != session:
                return
            method, params = msg.get("method"), msg.get("params", {})
            if method == "Network.requestWillBeSent":
                url = params.get("request", {}).get("url", "")
                if url != origin and not url.startswith(origin + "/"):
                    external.append(url)
            elif method == "Runtime.exceptionThrown" and len(page_errors) < 20:
                page_errors.append(exception_text(params))

        cdp.handlers.append(on_event)
        for domain in ("Network", "Page", "Runtime"):
            await cdp.send(f"{domain}.enable", session=session)

        async def evaluate(expression):
            reply = await cdp.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)
            return reply.get("result", {}).get("value")

        out["stage"] = f"navigating to {args.url}"
        nav = await cdp.send("Page.navigate", {"url": args.url}, session=session)
        if nav.get("errorText"):
            raise Failure(f"navigating to {args.url}: {nav['errorText']}")
        out["stage"] = "waiting for the down page"
        while not (await evaluate("document.title") or "").startswith(("502", "503")):
            await asyncio.sleep(0.1)
        out["down_title"] = await evaluate("document.title")
        out["watching"] = await evaluate("!!document.getElementById('watch')")
        # Let it poll a few times while still down: it must not reload then.
        await asyncio.sleep(2.5)
        out["still_down_title"] = await evaluate("document.title")
        out["watch_text"] = await evaluate("(document.getElementById('watch') || {}).textContent || ''")

        out["stage"] = "starting the backend"
        server = http.server.ThreadingHTTPServer(("127.0.0.1", args.backend_port), PageHandler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started = time.monotonic()
        out["stage"] = "waiting for the page to reload into the backend's"
        while await evaluate("document.title") != "back up":
            await asyncio.sleep(0.1)
        out["reloaded_after_s"] = round(time.monotonic() - started, 2)
        out["final_title"] = await evaluate("document.title")
        out.pop("stage", None)
        await ws.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--backend-port", type=int, required=True)
    parser.add_argument("--chromium")
    parser.add_argument("--timeout", type=float, default=40)
    args = parser.parse_args()
    servers = []
    try:
        return run_in_browser("down_page_check", args, lambda a, b, o: check(a, b, o, servers), {})
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    sys.exit(main())
