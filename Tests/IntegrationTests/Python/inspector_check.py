"""The request inspector page in headless Chromium (DevTools protocol, `websockets`). Sends a few
requests through the proxy first, then opens the page and drives it the way a developer would:

  inspector_check.py --url http://127.0.0.1:PORT/_inspect --proxy http://127.0.0.1:PORT
                     [--chromium PATH] [--timeout 60]

(a) through PROXY: `GET /api/json?x=1`, `POST /api/echo` (JSON body, `Authorization: Bearer
secret-token-123`, `Cookie: session=abc`), `GET /missing-backend` (whatever it answers);
(b) waits for the list (a poll and 3 rows) and records the rows, newest first;
(c) counts the rows the text filter "echo" leaves, and the 4xx and 5xx status classes;
(d) clicks the POST /api/echo row and reads the detail pane (heads, bodies, timings, attempts);
(e) "Copy as curl"; (f) "Replay", waiting up to 15 s for the replay to show; (g) sends
`GET /api/json?live=1` and waits up to 5 s for its row to appear without a reload.
Prints one JSON object:

  {"sent": [...], "rows": [{"seq": 3, "method": "GET", "target": "/missing-backend", "status": "502", ...}],
   "polls": N, "filtered_echo": 1, "filtered_4xx": 0, "filtered_5xx": 1, "detail_seq": 2,
   "request_head": [["Authorization", "•••…"], ...], "auth_masked": true, "cookie_masked": true,
   "request_body": "{\\n  \\"hello\\": \\"world\\", ...", "request_body_pretty": true, "response_status": "200",
   "response_head": [...], "response_body": "...", "timings": "...", "attempts": "...", "detail_error": "",
   "secret_in_page": false, "curl": "curl -X POST ...", "curl_ok": true, "clipboard": "curl ..." | null,
   "replay_seq": 5, "replay_status": "200", "replay_text": "...", "replay_refused": null, "replay_row": {...},
   "live_row_seen": true, "live_row_after_s": 0.8, "same_document": true,
   "page_errors": [], "log_errors": [], "external_requests": []}

Check outcomes are only reported (the caller asserts them); the exit status is 1 only when the harness
fails: Chromium does not start, the page never lists the requests, or the whole run passes --timeout.
Chromium and its profile are always removed.
"""
import argparse
import asyncio
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import websockets

from status_page_check import CDP, Failure, exception_text, first_page_session, run_in_browser

SECRET = "secret-token-123"

# The visible rows, top to bottom, as {FIELD: text, ..., seq: N, state, replay_of} (seq from `data-seq`).
ROWS_JS = r"""(() => Array.from(document.querySelectorAll('tr[data-seq]'))
  .filter(tr => tr.getClientRects().length > 0)
  .map(tr => {
    const row = {};
    for (const td of tr.querySelectorAll('[data-field]')) row[td.dataset.field] = td.textContent.trim();
    return Object.assign(row, {seq: Number(tr.dataset.seq), state: tr.dataset.state || null,
                               replay_of: tr.dataset.replayOf ? Number(tr.dataset.replayOf) : null});
  }))()"""

# A detail part: its table rows as [name, value] (when it has a table), its text as shown and its <pre>'s.
PART_JS = r"""((sel) => {
  const e = document.querySelector(sel);
  if (!e) return null;
  const rows = Array.from(e.querySelectorAll('tr')).map(tr => Array.from(tr.children).map(td => td.textContent.trim()));
  const pre = e.querySelector('pre');
  return {rows: rows, text: (e.innerText || e.textContent).trim(), pre: pre ? pre.textContent : null};
})"""


def send(proxy, method, path, body=None, headers=None):
    """One request through the proxy; what came back (never raises)."""
    request = urllib.request.Request(proxy.rstrip("/") + path, data=body, method=method, headers=headers or {})
    seen = {"method": method, "path": path}
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            seen["status"] = response.status
            seen["content_type"] = response.headers.get("Content-Type")
            seen["body"] = response.read(4096).decode("utf-8", "replace")[:300]
    except urllib.error.HTTPError as error:
        seen["status"] = error.code
        seen["content_type"] = error.headers.get("Content-Type") if error.headers else None
        try:
            seen["body"] = error.read(4096).decode("utf-8", "replace")[:300]
        except OSError:
            seen["body"] = None
    except (OSError, urllib.error.URLError) as error:
        seen["status"] = None
        seen["error"] = f"{type(error).__name__}: {error}"
    return seen


def header_value(rows, name):
    for row in rows or []:
        if len(row) >= 2 and row[0].strip().rstrip(":").lower() == name:
            return row[1]
    return None


async def check(args, browser, out):
    parsed = urllib.parse.urlsplit(args.url)
    origin = f"{parsed.scheme}://{parsed.netloc}"
    external, page_errors, log_errors = [], [], []
    out.update(external_requests=external, page_errors=page_errors, log_errors=log_errors)

    out["stage"] = "sending requests through the proxy"
    out["sent"] = [
        await asyncio.to_thread(send, args.proxy, "GET", "/api/json?x=1", None, {"Accept": "application/json"}),
        await asyncio.to_thread(send, args.proxy, "POST", "/api/echo", json.dumps({"hello": "world", "n": 1}).encode(),
                                {"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}",
                                 "Cookie": "session=abc"}),
        await asyncio.to_thread(send, args.proxy, "GET", "/missing-backend"),
    ]

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
                if url.split(":", 1)[0] in ("data", "blob", "about"):
                    return  # not network traffic
                if url != origin and not url.startswith(origin + "/"):
                    external.append(url)
            elif method == "Runtime.exceptionThrown" and len(page_errors) < 20:
                page_errors.append(exception_text(params))
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error" and len(page_errors) < 20:
                page_errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error" and len(log_errors) < 20:
                entry = params["entry"]  # e.g. a refused replay's 409 ("Failed to load resource"), a CSP violation
                log_errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())

        cdp.handlers.append(on_event)
        for domain in ("Network", "Page", "Runtime", "Log"):
            await cdp.send(f"{domain}.enable", session=session)
        try:  # lets the page's clipboard write succeed, and this check read it back
            await cdp.send("Browser.grantPermissions", {"origin": origin, "permissions": [
                "clipboardReadWrite", "clipboardSanitizedWrite"]})
        except Failure:
            pass

        async def evaluate(expression, await_promise=False, timeout=15):
            reply = await cdp.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                        "awaitPromise": await_promise}, session=session, timeout=timeout)
            if "exceptionDetails" in reply:
                return None
            return reply.get("result", {}).get("value")

        async def wait_for(expression, seconds, interval=0.1):
            """The expression's first truthy value within `seconds`, else None."""
            deadline = time.monotonic() + seconds
            while True:
                value = await evaluate(expression)
                if value or time.monotonic() >= deadline:
                    return value or None
                await asyncio.sleep(interval)

        async def click(selector):
            """A real mouse click in the middle of the element (scrolled into view); a DOM click when it
            has no box. False when there is no such element."""
            box = await evaluate(f"""(() => {{
              const e = document.querySelector({json.dumps(selector)});
              if (!e) return null;
              e.scrollIntoView({{block: 'center'}});
              const r = e.getBoundingClientRect();
              return {{x: r.left + r.width / 2, y: r.top + r.height / 2, w: r.width, h: r.height}};
            }})()""")
            if not box:
                return False
            if box["w"] <= 0 or box["h"] <= 0:
                await evaluate(f"document.querySelector({json.dumps(selector)}).click()")
                return True
            for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
                await cdp.send("Input.dispatchMouseEvent", {"type": kind, "x": box["x"], "y": box["y"],
                                                            "button": "left", "clickCount": 1}, session=session)
            return True

        async def rows():
            return await evaluate(ROWS_JS) or []

        async def part(selector):
            return await evaluate(f"{PART_JS}({json.dumps(selector)})")

        out["stage"] = f"navigating to {args.url}"
        nav = await cdp.send("Page.navigate", {"url": args.url}, session=session)
        if nav.get("errorText"):
            raise Failure(f"navigating to {args.url}: {nav['errorText']}")

        # (b) the list
        out["stage"] = "waiting for a poll and 3 rows"
        listed = await wait_for("Number(document.body && document.body.dataset.polls || 0) >= 1 && "
                                "document.querySelectorAll('tr[data-seq]').length >= 3", 20)
        out["title"] = await evaluate("document.title")
        out["rows"] = [{k: r.get(k) for k in ("seq", "method", "target", "status", "duration", "route", "backend",
                                              "sizes", "state", "replay_of")} for r in await rows()]
        if not listed:
            out["error_banner"] = await evaluate("(document.getElementById('error') || {}).textContent || ''")
            raise Failure("the page did not list 3 requests within 20 s")
        out["polls"] = int(await evaluate("Number(document.body.dataset.polls || 0)") or 0)

        # (c) filters
        out["stage"] = "filtering"
        await evaluate("document.getElementById('filter-text').focus()")
        await cdp.send("Input.insertText", {"text": "echo"}, session=session)
        await asyncio.sleep(0.4)
        echo_rows = await rows()
        out["filtered_echo"] = len(echo_rows)
        out["filtered_echo_targets"] = [r.get("target") for r in echo_rows]
        await evaluate("(() => { const f = document.getElementById('filter-text'); f.value = '';"
                       " f.dispatchEvent(new Event('input', {bubbles: true})); })()")
        await asyncio.sleep(0.3)
        out["unfiltered"] = len(await rows())
        for cls in ("4xx", "5xx"):
            clicked = await click(f'[data-status-class="{cls}"]')
            await asyncio.sleep(0.4)
            out[f"filtered_{cls}"] = len(await rows()) if clicked else None
            out[f"filtered_{cls}_statuses"] = [r.get("status") for r in await rows()] if clicked else None
        await click('[data-status-class="all"]')
        await asyncio.sleep(0.3)
        out["after_all"] = len(await rows())

        # (d) the detail of POST /api/echo
        out["stage"] = "opening the POST /api/echo detail"
        echo = next((r for r in await rows()
                     if r.get("method") == "POST" and (r.get("target") or "").startswith("/api/echo")), None)
        out["detail_seq"] = None
        if echo:
            await click(f'tr[data-seq="{echo["seq"]}"] [data-field="target"]')
            if await wait_for(f"!!document.querySelector('#detail[data-seq=\"{echo['seq']}\"]')", 10):
                out["detail_seq"] = echo["seq"]
        if out["detail_seq"] is not None:
            head = await part("#detail-request-head") or {}
            out["request_head"] = head.get("rows") or head.get("text")
            auth = header_value(head.get("rows"), "authorization")
            cookie = header_value(head.get("rows"), "cookie")
            out["auth_value"], out["cookie_value"] = auth, cookie
            out["auth_masked"] = auth is not None and SECRET not in auth and SECRET not in (head.get("text") or "")
            out["cookie_masked"] = cookie is not None and "abc" not in cookie
            body = await part("#detail-request-body") or {}
            text = body.get("pre") if body.get("pre") is not None else body.get("text") or ""
            out["request_body"] = text
            out["request_body_pretty"] = "\n" in text and '"hello": "world"' in text
            out["response_status"] = await evaluate(
                "((document.getElementById('detail-status') || "
                f"document.querySelector('tr[data-seq=\"{echo['seq']}\"] [data-field=\"status\"]') || {{}}).textContent || '').trim()")
            response_head = await part("#detail-response-head") or {}
            out["response_head"] = response_head.get("rows") or response_head.get("text")
            response_body = await part("#detail-response-body") or {}
            out["response_body"] = (response_body.get("pre") if response_body.get("pre") is not None
                                    else response_body.get("text"))
            for key, selector in (("timings", "#detail-timings"), ("attempts", "#detail-attempts"),
                                  ("detail_error", "#detail-error")):
                got = await part(selector)
                out[key] = got.get("text") if got else None
            out["secret_in_page"] = bool(await evaluate(f"document.body.innerText.includes({json.dumps(SECRET)})"))

            # (e) copy as curl
            out["stage"] = "copying as curl"
            await click("#copy-curl")
            curl = await wait_for("((document.getElementById('curl-command') || {}).textContent || '').trim()", 5)
            out["curl"] = curl
            out["curl_ok"] = bool(curl) and curl.startswith("curl") and "/api/echo" in curl \
                and ("-X POST" in curl or "--data" in curl) and SECRET not in curl
            await asyncio.sleep(0.3)
            try:
                out["clipboard"] = await evaluate("navigator.clipboard.readText()", await_promise=True, timeout=5)
            except Failure:
                out["clipboard"] = None

            # (f) replay
            out["stage"] = "replaying"
            await click("#replay")
            shown = await wait_for("!!document.querySelector('#replay-result[data-replay-seq], #replay-result[data-refused]')", 15)
            result = await evaluate("""(() => { const e = document.getElementById('replay-result');
              return e ? {seq: e.dataset.replaySeq || null, status: e.dataset.status || null,
                          refused: e.dataset.refused || null, state: e.dataset.state || null,
                          text: (e.innerText || e.textContent).trim()} : null; })()""") or {}
            out["replay_seq"] = int(result["seq"]) if shown and (result.get("seq") or "").isdigit() else None
            out["replay_status"] = result.get("status")
            out["replay_refused"] = result.get("refused")
            out["replay_state"] = result.get("state")
            out["replay_text"] = (result.get("text") or "")[:2000]
            if out["replay_seq"] is not None:
                found = await wait_for(f"(() => {{ const rows = {ROWS_JS}; return rows.find(r => r.seq === "
                                       f"{out['replay_seq']}) || null; }})()", 3)
                out["replay_row"] = found
        else:
            out["detail_text"] = await evaluate("((document.getElementById('detail') || {}).textContent || '').trim().slice(0, 2000)")

        # (g) live update, no reload
        out["stage"] = "waiting for a new request to show"
        await evaluate("window.__inspectorCheck = 1")
        out["sent"].append(await asyncio.to_thread(send, args.proxy, "GET", "/api/json?live=1", None,
                                                   {"Accept": "application/json"}))
        started = time.monotonic()
        seen = await wait_for("Array.from(document.querySelectorAll('tr[data-seq] [data-field=\"target\"]'))"
                              ".some(td => td.textContent.includes('live=1'))", 5)
        out["live_row_seen"] = bool(seen)
        out["live_row_after_s"] = round(time.monotonic() - started, 2) if seen else None
        out["same_document"] = await evaluate("window.__inspectorCheck === 1") is True
        out["polls"] = int(await evaluate("Number(document.body.dataset.polls || 0)") or 0)
        out["error_banner"] = await evaluate(
            "(() => { const e = document.getElementById('error'); return e && e.offsetParent !== null ? e.textContent : ''; })()")
        out.pop("stage", None)
        await ws.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--proxy", required=True)
    parser.add_argument("--chromium")
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()
    return run_in_browser("inspector_check", args, check, {"rows": [], "external_requests": [], "page_errors": []})


if __name__ == "__main__":
    sys.exit(main())
