"""Load the live status page in headless Chromium (over the DevTools protocol, with the `websockets`
package) and report what it shows. Used by the integration tests:

  status_page_check.py --url URL --screenshot OUT.png [--chromium PATH] [--timeout 40]

Waits until the page has polled its JSON at least 3 times and some backend shows a request rate,
records the backend rows' cells and the totals, waits 2.5 s, records them again, saves a PNG
screenshot and prints one JSON object:

  {"first": SNAPSHOT, "second": SNAPSHOT, "polls": N, "title": "...", "screenshot": PATH,
   "external_requests": [URL, ...], "page_errors": [...]}

  SNAPSHOT = {"polls": N, "total_requests": "123", "total_rps": "4.0", "updated": "updated 12:00:01",
              "error_banner": "", "backends": {"ID": {"upstream": "default", "rps": "4.0",
              "requests": "120", "p50": "1.23", "p99": "4.56", "errors": "0.0 %", "active": "0",
              "idle": "1", "health": "UP"}}}

(cell texts as shown; "–" where the page has no value). `external_requests` are the page's network
requests that leave its origin (there should be none). Exit status 0 when both snapshots were taken
and the total request count changed between them; else 1 with the reason on stderr (and whatever
was gathered still printed on stdout). Chromium and its profile directory are always removed.
"""
import argparse
import asyncio
import base64
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

import websockets

NUMBER = re.compile(r"^-?\d+(\.\d+)?$")

SNAPSHOT_JS = r"""(() => {
  const text = e => e ? e.textContent.trim() : null;
  const backends = {};
  for (const tr of document.querySelectorAll('tr[data-backend]')) {
    const section = tr.closest('[data-upstream]');
    const row = {upstream: section ? section.dataset.upstream : null};
    for (const td of tr.querySelectorAll('[data-field]')) row[td.dataset.field] = text(td);
    let key = tr.dataset.backend;
    if (key in backends) key = row.upstream + '/' + key;
    backends[key] = row;
  }
  const banner = document.getElementById('error');
  return {
    polls: Number((document.body && document.body.dataset.polls) || 0),
    title: document.title,
    total_requests: text(document.getElementById('total-requests')),
    total_rps: text(document.getElementById('total-rps')),
    updated: text(document.getElementById('updated')),
    error_banner: banner && banner.offsetParent !== null ? text(banner) : '',
    backends: backends,
  };
})()"""


class Failure(Exception):
    pass


class CDP:
    """A minimal DevTools protocol client over the browser websocket, with flattened sessions."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.pending = {}
        self.handlers = []
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self):
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if "id" in msg:
                    future = self.pending.pop(msg["id"], None)
                    if future and not future.done():
                        future.set_result(msg)
                else:
                    for handler in self.handlers:
                        handler(msg)
        except websockets.ConnectionClosed:
            pass
        finally:
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(Failure("the DevTools connection closed"))

    async def send(self, method, params=None, session=None, timeout=15):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        future = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        await self.ws.send(json.dumps(message))
        try:
            reply = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise Failure(f"{method}: no answer from Chromium in {timeout} s") from None
        if "error" in reply:
            raise Failure(f"{method}: {reply['error']}")
        return reply.get("result", {})


async def first_page_session(cdp):
    """A flat session on the browser's first page (made when it has none)."""
    targets = (await cdp.send("Target.getTargets"))["targetInfos"]
    pages = [t for t in targets if t.get("type") == "page"]
    target = pages[0]["targetId"] if pages else (await cdp.send("Target.createTarget", {"url": "about:blank"}))["targetId"]
    return (await cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True}))["sessionId"]


def exception_text(params):
    """What a `Runtime.exceptionThrown` event says, in one line."""
    d = params.get("exceptionDetails", {})
    return (d.get("exception") or {}).get("description") or d.get("text", "exception")


def find_chromium(explicit):
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit
        found = shutil.which(explicit)
        if found:
            return found
        raise Failure(f"--chromium {explicit}: not an executable")
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    raise Failure("no Chromium found (install the Debian package `chromium` or pass --chromium)")


class Browser:
    """Headless Chromium in its own process group with a throwaway profile."""

    def __init__(self, executable):
        self.profile = tempfile.mkdtemp(prefix="status-page-chromium-")
        self.stderr_tail = collections.deque(maxlen=40)
        self.ws_url = None
        try:
            self.proc = self._start(executable)
        except OSError:
            shutil.rmtree(self.profile, ignore_errors=True)
            raise
        threading.Thread(target=self._drain, daemon=True).start()

    def _start(self, executable):
        return subprocess.Popen(
            [executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
             f"--user-data-dir={self.profile}", "--window-size=1280,900", "--hide-scrollbars",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync",
             "--disable-background-networking", "--disable-component-update", "--mute-audio",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True)

    def _drain(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self.stderr_tail.append(line)
            match = re.search(r"DevTools listening on (ws://\S+)", line)
            if match and not self.ws_url:
                self.ws_url = match.group(1)

    def _from_port_file(self):
        try:
            with open(os.path.join(self.profile, "DevToolsActivePort")) as f:
                lines = f.read().split("\n")
            if len(lines) >= 2 and lines[0].strip().isdigit() and lines[1].startswith("/"):
                return f"ws://127.0.0.1:{lines[0].strip()}{lines[1].strip()}"
        except OSError:
            pass
        return None

    async def devtools_url(self):
        while True:
            url = self.ws_url or self._from_port_file()
            if url:
                return url
            if self.proc.poll() is not None:
                raise Failure(f"Chromium exited with status {self.proc.returncode}: " + " | ".join(self.stderr_tail))
            await asyncio.sleep(0.05)

    def close(self):
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.proc.pid, sig)  # Chromium and its helpers: the group it leads
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # helpers that outlived the browser process
        except (ProcessLookupError, PermissionError):
            pass
        for _ in range(20):
            shutil.rmtree(self.profile, ignore_errors=True)
            if not os.path.exists(self.profile):
                break
            time.sleep(0.1)


async def check(args, browser, out):
    parsed = urllib.parse.urlsplit(args.url)
    origin = f"{parsed.scheme}://{parsed.netloc}"
    requests, external, page_errors = [], [], []
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
                requests.append(url)
                if url.split(":", 1)[0] in ("data", "blob", "about"):
                    return  # not network traffic
                if url != origin and not url.startswith(origin + "/"):
                    external.append(url)
            elif method == "Runtime.exceptionThrown" and len(page_errors) < 20:
                page_errors.append(exception_text(params))
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error" and len(page_errors) < 20:
                page_errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error" and len(page_errors) < 20:
                entry = params["entry"]
                page_errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())

        cdp.handlers.append(on_event)
        for domain in ("Network", "Page", "Runtime", "Log"):
            await cdp.send(f"{domain}.enable", session=session)

        out["stage"] = f"navigating to {args.url}"
        nav = await cdp.send("Page.navigate", {"url": args.url}, session=session)
        if nav.get("errorText"):
            raise Failure(f"navigating to {args.url}: {nav['errorText']}")

        async def snapshot():
            reply = await cdp.send("Runtime.evaluate", {"expression": SNAPSHOT_JS, "returnByValue": True},
                                   session=session)
            if "exceptionDetails" in reply:
                return None
            return reply.get("result", {}).get("value")

        out["stage"] = "waiting for 3 polls and a request rate"
        while True:
            snap = await snapshot()
            out["last_seen"] = snap
            if snap and snap["polls"] >= 3 and any(NUMBER.match(row.get("rps") or "")
                                                   for row in snap["backends"].values()):
                break
            await asyncio.sleep(0.2)
        out.pop("last_seen", None)
        out["first"] = snap
        out["stage"] = "waiting 2.5 s for the second snapshot"
        await asyncio.sleep(2.5)
        out["second"] = await snapshot()
        out["polls"] = out["second"]["polls"] if out["second"] else snap["polls"]
        out["title"] = (out["second"] or snap)["title"]

        out["stage"] = "taking the screenshot"
        metrics = await cdp.send("Page.getLayoutMetrics", session=session)
        size = metrics.get("cssContentSize") or metrics.get("contentSize") or {}
        params = {"format": "png"}
        if size.get("height", 0) > 900:  # the whole page, not only the window
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": max(1280, size["width"]), "height": size["height"], "scale": 1})
        shot = await cdp.send("Page.captureScreenshot", params, session=session, timeout=30)
        os.makedirs(os.path.dirname(os.path.abspath(args.screenshot)), exist_ok=True)
        with open(args.screenshot, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        out["screenshot"] = os.path.abspath(args.screenshot)
        out["requests_seen"] = len(requests)
        out.pop("stage", None)
        await ws.close()

    if not out.get("second"):
        raise Failure("the page could not be read a second time")
    if out["second"]["total_requests"] == out["first"]["total_requests"]:
        raise Failure(f"#total-requests did not change in 2.5 s (still {out['first']['total_requests']!r})")


def run_in_browser(name, args, check, out):
    """Runs `check(args, browser, out)` in a fresh headless Chromium within `args.timeout`,
    always removing Chromium, then prints `out` as one JSON line. Returns the exit status (0, or
    1 with the reason on stderr as `NAME: …`)."""
    def terminated(signum, _frame):
        raise SystemExit(128 + signum)  # so that `finally` still removes Chromium
    signal.signal(signal.SIGTERM, terminated)

    error = None
    browser = None
    started = time.monotonic()
    try:
        browser = Browser(find_chromium(args.chromium))
        asyncio.run(asyncio.wait_for(check(args, browser, out), args.timeout))
    except (asyncio.TimeoutError, TimeoutError):
        error = f"timed out after {args.timeout:g} s while {out.get('stage', '?')}"
    except Failure as failure:
        error = str(failure)
    except (OSError, websockets.WebSocketException) as problem:
        error = f"{type(problem).__name__}: {problem} (while {out.get('stage', '?')})"
    finally:
        if browser:
            browser.close()
    out["elapsed_s"] = round(time.monotonic() - started, 2)
    if error and browser and browser.stderr_tail and out.get("stage") in ("starting Chromium", "connecting to DevTools"):
        out["chromium_stderr"] = list(browser.stderr_tail)
    print(json.dumps(out, ensure_ascii=False), flush=True)
    if error:
        print(f"{name}: {error}", file=sys.stderr)
        return 1
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--screenshot", required=True)
    parser.add_argument("--chromium")
    parser.add_argument("--timeout", type=float, default=40)
    args = parser.parse_args()
    out = {"first": None, "second": None, "polls": 0, "title": None, "screenshot": None, "external_requests": []}
    return run_in_browser("status_page_check", args, check, out)


if __name__ == "__main__":
    sys.exit(main())
