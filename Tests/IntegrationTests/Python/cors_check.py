"""Cross-origin requests from headless Chromium (over the DevTools protocol, `websockets`): serves a
page on http://127.0.0.1:PAGE_PORT and runs fetches from it to TARGET (another origin: the proxy
under test), then prints one JSON object with what each fetch got and the requests Chromium sent:

  cors_check.py --page-port N --target http://localhost:PORT [--chromium PATH] [--timeout 40]

  {"results": {"put": {"status": 200, "trace": "t1", "exposed": "7"}, "del": {"error": "TypeError…"}, …},
   "preflights": [URL, …], "page_errors": [...]}

The fetches (see FETCHES) are credentialed unless their name says otherwise. Exit status 0 when the
page ran them all; 1 otherwise. Chromium and its profile are always removed.
"""
import argparse
import asyncio
import http.server
import json
import sys
import threading

import websockets

from status_page_check import CDP, Failure, exception_text, first_page_session, run_in_browser

FETCHES = """(async () => {
  const B = %s;
  const r = {};
  async function attempt(name, path, init, read) {
    try {
      const res = await fetch(B + path, init);
      r[name] = await read(res);
    } catch (e) {
      r[name] = {error: String(e)};
    }
  }
  // Preflighted (PUT, a non-safelisted header), credentialed: allowed.
  await attempt("put", "/api/echo", {method: "PUT", credentials: "include",
      headers: {"Content-Type": "application/json", "X-Trace": "t1"}, body: "{}"},
    async res => { const j = await res.json(); return {status: res.status, trace: j.headers["x-trace"] || null,
                                                         exposed: res.headers.get("X-Total"), hidden: res.headers.get("Server")}; });
  // A simple credentialed GET: no preflight, the response must carry the CORS fields.
  await attempt("get", "/api/echo", {credentials: "include"}, async res => ({status: res.status}));
  // A method the route's CORS does not allow: the preflight is refused, the fetch fails.
  await attempt("del", "/api/echo", {method: "DELETE", credentials: "include"}, async res => ({status: res.status}));
  // A request header it does not allow.
  await attempt("bad_header", "/api/echo", {method: "PUT", headers: {"X-Evil": "1"}}, async res => ({status: res.status}));
  // A route without CORS: the browser hides the response.
  await attempt("no_cors", "/closed/echo", {}, async res => ({status: res.status}));
  // A route whose CORS does not allow credentials: credentialed fails, anonymous passes.
  await attempt("creds_refused", "/anon/echo", {credentials: "include"}, async res => ({status: res.status}));
  await attempt("anon", "/anon/echo", {credentials: "omit"}, async res => ({status: res.status}));
  return JSON.stringify(r);
})()"""

PAGE = b"<!doctype html><title>cors page</title><p>cross-origin client</p>"


class PageHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args):
        pass


async def check(args, browser, out):
    page_url = f"http://127.0.0.1:{args.page_port}/page.html"
    preflights, page_errors = [], []
    out["preflights"] = preflights
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
                request = params.get("request", {})
                if request.get("method") == "OPTIONS":
                    preflights.append(request.get("url"))
            elif method == "Runtime.exceptionThrown" and len(page_errors) < 20:
                page_errors.append(exception_text(params))

        cdp.handlers.append(on_event)
        for domain in ("Network", "Page", "Runtime"):
            await cdp.send(f"{domain}.enable", session=session)
        out["stage"] = f"navigating to {page_url}"
        nav = await cdp.send("Page.navigate", {"url": page_url}, session=session)
        if nav.get("errorText"):
            raise Failure(f"navigating to {page_url}: {nav['errorText']}")
        while True:
            ready = await cdp.send("Runtime.evaluate", {"expression": "document.title", "returnByValue": True}, session=session)
            if ready.get("result", {}).get("value") == "cors page":
                break
            await asyncio.sleep(0.1)
        out["stage"] = "running the fetches"
        reply = await cdp.send("Runtime.evaluate", {"expression": FETCHES % json.dumps(args.target), "awaitPromise": True,
                                                    "returnByValue": True}, session=session, timeout=30)
        if "exceptionDetails" in reply:
            raise Failure(f"the fetches threw: {reply['exceptionDetails']}")
        out["results"] = json.loads(reply["result"]["value"])
        out.pop("stage", None)
        await ws.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--page-port", type=int, required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--chromium")
    parser.add_argument("--timeout", type=float, default=40)
    args = parser.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.page_port), PageHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        return run_in_browser("cors_check", args, check, {})
    finally:
        server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
