/// The HTML page a browser gets for 502, 503 and 504: in plain words, which upstream failed and
/// how each backend was tried ("nothing is listening on localhost:5173"), so a developer looking
/// at a browser tab knows what to start. Other clients keep the one-line text reason.
///
/// For a `GET`, the page watches for the backend to come back: it asks for the same URL again
/// every second or so (backing off to 5 s) and reloads itself as soon as the answer is not one
/// the proxy made (no `Proxy-Status` naming it). The script is inline: nothing external loads.
///
/// Only built on the error path; uses `String` freely.
enum ErrorPage {
    /// One backend tried for the request, and what went wrong.
    struct Attempt {
        var backend: String
        var url: String
        var address: String
        var problem: String
    }

    /// Whether the request's `Accept` includes `text/html` (a browser navigating).
    static func wanted(by request: RequestHead) -> Bool {
        guard let i = request.fieldIndex("accept") else { return false }
        let value = String(decoding: request.bytes[request.fields[i].value], as: UTF8.self).lowercased()
        return value.contains("text/html")
    }

    /// `http://localhost:5173/` → `localhost:5173`.
    static func authority(of url: String) -> String {
        var s = Substring(url)
        if let scheme = s.firstRange(of: "://") { s = s[scheme.upperBound...] }
        while s.hasSuffix("/") { s = s.dropLast() }
        return String(s)
    }

    /// A connect or probe error in words.
    static func explain(_ error: UVError, url: String) -> String {
        explain(error.name, url: url)
    }

    static func explain(_ problem: String, url: String) -> String {
        let place = authority(of: url)
        if problem.contains("ECONNREFUSED") { return "connection refused: nothing is listening on \(place)" }
        if problem.contains("ETIMEDOUT") { return "no answer to the connection attempt (timed out): is \(place) reachable?" }
        if problem.contains("EHOSTUNREACH") || problem.contains("ENETUNREACH") { return "\(place) is unreachable from here (\(problem))" }
        return problem
    }

    /// The page for `status`. `reason` is the short text reason; `attempts` the connect failures
    /// of this request; `unhealthy` the backends (id, url, last probe error) behind a 503.
    static func html(status: UInt16, reason: String, upstream: String, route: String,
                     attempts: [Attempt], unhealthy: [(id: String, url: String, problem: String?)], reloads: Bool = false) -> [UInt8] {
        let title = "\(status) \(StatusText.reason(status))"
        var summary: String
        var items: [String] = []
        switch status {
        case 503:
            summary = "No backend of upstream <b>\(escape(upstream))</b> is healthy, so the proxy did not try any."
            for b in unhealthy {
                let why = b.problem.map { explain($0, url: b.url) } ?? "not probed yet"
                items.append("<b>\(escape(b.id))</b> at \(escape(authority(of: b.url))): the last health check failed — \(escape(why))")
            }
        case 504:
            summary = "A backend of upstream <b>\(escape(upstream))</b> accepted the request but did not answer in time."
        default:
            summary = "The proxy could not get a complete response from upstream <b>\(escape(upstream))</b>."
        }
        for a in attempts {
            items.append("<b>\(escape(a.backend))</b> at \(escape(authority(of: a.url))) (\(escape(a.address))): \(escape(a.problem))")
        }
        var body = """
            <!doctype html>
            <html><head><meta charset="utf-8"><title>\(title)</title>
            <style>body{font:15px/1.5 system-ui,sans-serif;margin:3em auto;max-width:46em;padding:0 1em;color:#222}
            h1{font-size:1.4em}code{background:#f3f3f3;padding:.1em .3em}li{margin:.3em 0}.muted{color:#777}</style>
            </head><body>
            <h1>\(title)</h1>
            <p>\(summary)</p>
            <p class="muted">Route: \(escape(route)) → upstream \(escape(upstream))</p>

            """
        if !items.isEmpty {
            body += "<ul>\n" + items.map { "<li>\($0)</li>\n" }.joined() + "</ul>\n"
        }
        body += "<p>Details: <code>\(escape(reason))</code></p>\n"
        if reloads {
            body += "<p class=\"muted\" id=\"watch\">This page reloads by itself when the backend answers again.</p>\n" + reloadScript
        }
        body += "<p class=\"muted\">swift-proxy · <a href=\"/_health\">/_health</a> shows every backend's state.</p>\n</body></html>\n"
        return Array(body.utf8)
    }

    /// Polls the page's own URL; any answer the proxy did not make (see `Proxy-Status`) means
    /// the backend is back. A failed fetch (the proxy itself gone) just tries again.
    static let reloadScript = """
        <script>
        (() => {
          let delay = 1000, tries = 0;
          const watch = document.getElementById("watch");
          async function probe() {
            tries += 1;
            try {
              // A redirect (to a login on another origin, say) is an answer too: not followed here.
              const r = await fetch(location.href, {cache: "no-store", credentials: "same-origin", redirect: "manual", headers: {"Accept": "text/html"}});
              const ours = (r.headers.get("Proxy-Status") || "").startsWith("swift-proxy");
              if (r.body) r.body.cancel();
              if (!ours) { location.reload(); return; }
            } catch (e) {}
            if (watch) watch.textContent = "Still down (checked " + tries + " time" + (tries == 1 ? "" : "s") + "); this page reloads by itself when the backend answers again.";
            delay = Math.min(delay * 1.5, 5000);
            setTimeout(probe, delay);
          }
          setTimeout(probe, delay);
        })();
        </script>

        """

    static func escape(_ text: String) -> String {
        text.escaped { c in
            switch c {
            case "&": "&amp;"
            case "<": "&lt;"
            case ">": "&gt;"
            case "\"": "&quot;"
            case "'": "&#39;"
            default: nil
            }
        }
    }
}
