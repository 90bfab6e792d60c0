/// The live status page (`GET /_status`): one self-contained HTML document, no external scripts, fonts or CSS.
///
/// It polls the JSON view (`GET /_status.json`) every second with `fetch` and draws, per upstream, a table
/// of its backends (health, connections, req/s, 5xx share, p50/p99 latency, totals) plus a summary row.
/// Rates and quantiles are computed in the browser from the difference between the last two polls, so the
/// proxy only ever serves cumulative counters; quantiles interpolate linearly inside a histogram bucket (as
/// Prometheus' `histogram_quantile` does). Data from the JSON is only ever inserted with `textContent`.
/// A `Content-Security-Policy` meta tag keeps the page from loading anything but its JSON from its own origin.
///
/// Stable hooks for tests: `<tr data-backend="ID">` with cells `data-field="health|active|idle|rps|errors|p50|p99|requests"`,
/// `#total-rps`, `#total-requests`, `#updated`, `#error`, and `document.body.dataset.polls` (successful polls so far).
enum StatusPageHTML {
    /// `__STATUS_JSON_PATH__` is replaced by the configured JSON path when served (it lands inside a
    /// single-quoted JS string, so the path must not contain `'`, `\` or `<`).
    static let template: String = #"""
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src data:">
    <link rel="icon" href="data:,">
    <title>Proxy status</title>
    <style>
    :root { color-scheme: light; }
    * { box-sizing: border-box; }
    body { margin: 0; padding: 20px 28px 40px; background: #f6f7f9; color: #1f2328;
      font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif; }
    header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 6px 22px; margin-bottom: 18px; }
    h1 { font-size: 20px; font-weight: 600; margin: 0 8px 0 0; }
    .stat { color: #57606a; }
    .stat b { color: #1f2328; font-weight: 600; font-variant-numeric: tabular-nums; }
    #updated { margin-left: auto; color: #57606a; font-size: 12px; }
    #updated::before { content: ''; display: inline-block; width: 8px; height: 8px; border-radius: 50%;
      background: #2da44e; margin-right: 6px; vertical-align: 1px; }
    body.stale #updated::before { background: #cf222e; }
    #error { display: none; background: #ffebe9; border: 1px solid #ff8182; color: #82071e;
      padding: 8px 12px; border-radius: 6px; margin-bottom: 14px; }
    body.stale #error { display: block; }
    body.stale main { opacity: .6; }
    section { background: #fff; border: 1px solid #d0d7de; border-radius: 8px; margin-bottom: 18px; overflow: hidden; }
    section h2 { font-size: 15px; font-weight: 600; margin: 0; padding: 10px 14px; background: #f0f3f6;
      border-bottom: 1px solid #d0d7de; }
    table { border-collapse: collapse; width: 100%; table-layout: fixed; }
    th:nth-child(1) { width: 12%; } th:nth-child(2) { width: 14%; } th:nth-child(3) { width: 19%; }
    th, td { padding: 7px 12px; text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
    th { font-size: 12px; font-weight: 600; color: #57606a; text-transform: uppercase; letter-spacing: .03em;
      border-bottom: 1px solid #d0d7de; }
    th:nth-child(-n+3), td:nth-child(-n+3) { text-align: left; }
    tbody tr + tr td { border-top: 1px solid #eaeef2; }
    tbody tr:hover { background: #f6f8fa; }
    tfoot td { border-top: 2px solid #d0d7de; font-weight: 600; background: #fafbfc; }
    td.id { font-weight: 600; }
    td.id, td.addr { overflow: hidden; text-overflow: ellipsis; }
    td.addr { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; color: #57606a; }
    .badge { display: inline-block; min-width: 46px; text-align: center; padding: 1px 8px; border-radius: 10px;
      font-size: 12px; font-weight: 700; color: #fff; }
    .up { background: #2da44e; }
    .down { background: #cf222e; }
    .why { color: #cf222e; font-size: 12px; margin-left: 4px; white-space: normal; }
    .bad { color: #cf222e; font-weight: 600; }
    .muted, tr.unassigned td { color: #8c959f; }
    footer { color: #8c959f; font-size: 12px; }
    </style>
    </head>
    <body data-polls="0">
    <header>
      <h1>Proxy status</h1>
      <span class="stat">workers <b id="workers">–</b></span>
      <span class="stat">generation <b id="generation">–</b></span>
      <span class="stat">uptime <b id="uptime">–</b></span>
      <span class="stat">clients <b id="clients">–</b></span>
      <span class="stat">tunnels <b id="tunnels">–</b></span>
      <span class="stat">HTTP/2 <b id="http2">–</b></span>
      <span class="stat">req/s <b id="total-rps">–</b></span>
      <span class="stat">requests <b id="total-requests">–</b></span>
      <span class="stat">unrouted <b id="unrouted">–</b></span>
      <span id="updated">waiting for data…</span>
    </header>
    <div id="error" role="alert"></div>
    <main id="upstreams"></main>
    <footer>Rates, error share and latency quantiles cover the last poll interval; “requests” are totals since start.</footer>
    <script>
    'use strict';
    const PATH = '__STATUS_JSON_PATH__';
    const INTERVAL_MS = 1000;
    const DASH = '–';
    let prev = null, cur = null, polls = 0;

    function el(tag, cls, text) {
      const e = document.createElement(tag);
      if (cls) e.className = cls;
      if (text !== undefined && text !== null) e.textContent = String(text);
      return e;
    }
    function setText(id, text) { document.getElementById(id).textContent = String(text); }
    function pad(n) { return String(n).padStart(2, '0'); }
    function clock(d) { return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()); }
    function uptime(s) {
      s = Math.floor(s || 0);
      const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
      return (d ? d + 'd ' : '') + (d || h ? h + 'h ' : '') + (d || h || m ? m + 'm ' : '') + (s % 60) + 's';
    }
    function num(x) { return typeof x === 'number' && isFinite(x) ? x : 0; }
    function total(responses) {
      let n = 0;
      for (const k in (responses || {})) n += num(responses[k]);
      return n;
    }
    function fiveXX(responses) { return num((responses || {})['5xx']); }
    function fmtRate(x) { return x === null ? DASH : x.toFixed(1); }
    function fmtMs(x) { return x === null ? DASH : x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : x.toFixed(0); }
    function fmtPct(x) { return x === null ? DASH : x.toFixed(x > 0 && x < 10 ? 2 : 1) + ' %'; }

    // Per-bucket (non-cumulative) counts; returns b - a, or null when there is no earlier poll.
    function diff(a, b) {
      if (!a || !b || a.length !== b.length) return null;
      return b.map((v, i) => Math.max(0, num(v) - num(a[i])));
    }
    function addInto(acc, counts) {
      if (!counts) return acc;
      if (!acc) return counts.slice();
      return acc.map((v, i) => v + num(counts[i]));
    }
    // histogram_quantile: linear interpolation inside the bucket; the +Inf bucket answers the last finite bound.
    function quantile(q, counts, bounds) {
      if (!counts || !bounds || !bounds.length) return null;
      const n = counts.reduce((s, v) => s + v, 0);
      if (n <= 0) return null;
      const rank = q * n;
      let cum = 0;
      for (let i = 0; i < counts.length; i++) {
        if (counts[i] > 0 && cum + counts[i] >= rank) {
          if (i >= bounds.length) return bounds[bounds.length - 1];
          const lo = i === 0 ? 0 : bounds[i - 1], hi = bounds[i];
          return lo + (hi - lo) * Math.max(0, rank - cum) / counts[i];
        }
        cum += counts[i];
      }
      return bounds[bounds.length - 1];
    }

    // One row's numbers from a current and (maybe) previous record with responses and duration.
    function stats(now, before, dt) {
      const requests = total(now.responses);
      const s = { requests: requests, rps: null, errors: null, hist: null,
                  active: num(now.active), idle: num(now.idle), d5xx: 0, dreq: 0 };
      if (before && dt > 0) {
        s.dreq = Math.max(0, requests - total(before.responses));
        s.d5xx = Math.max(0, fiveXX(now.responses) - fiveXX(before.responses));
        s.rps = s.dreq / dt;
        s.errors = s.dreq > 0 ? 100 * s.d5xx / s.dreq : null;
        s.hist = diff(before.duration && before.duration.counts, now.duration && now.duration.counts);
      }
      return s;
    }
    function cells(tr, s, bounds, cls) {
      const add = (field, text, extra) => {
        const td = el('td', extra || '', text);
        td.dataset.field = field;
        tr.appendChild(td);
        return td;
      };
      add('active', s.active);
      add('idle', s.idle);
      add('rps', fmtRate(s.rps));
      add('errors', fmtPct(s.errors), s.errors ? 'bad' : '');
      add('p50', fmtMs(quantile(0.5, s.hist, bounds)));
      add('p99', fmtMs(quantile(0.99, s.hist, bounds)));
      add('requests', s.requests);
    }

    // Every request the proxy answered: all backends, the upstreams' unassigned ones and the unrouted ones.
    function allRequests(d) {
      let n = total((d.unrouted || {}).responses);
      for (const up of (d.upstreams || [])) {
        n += total((up.unassigned || {}).responses);
        for (const b of (up.backends || [])) n += total(b.responses);
      }
      return n;
    }

    function render() {
      const dt = prev ? (num(cur.time_ms) - num(prev.time_ms)) / 1000 : 0;
      const bounds = cur.buckets_ms || [];
      setText('workers', num(cur.workers));
      setText('generation', num(cur.generation));
      setText('uptime', uptime(cur.uptime_s));
      setText('clients', num((cur.connections || {}).clients));
      setText('tunnels', num((cur.connections || {}).tunnels));
      setText('http2', num((cur.connections || {}).http2));
      setText('unrouted', total((cur.unrouted || {}).responses));

      const prevUps = new Map(((prev && prev.upstreams) || []).map(u => [u.name, u]));
      const main = el('main');
      main.id = 'upstreams';
      for (const up of (cur.upstreams || [])) {
        const pu = prevUps.get(up.name);
        const prevBackends = new Map(((pu && pu.backends) || []).map(b => [b.id, b]));
        const sec = el('section');
        sec.dataset.upstream = String(up.name);
        sec.appendChild(el('h2', '', 'Upstream ' + up.name));
        const table = el('table');
        const head = el('tr');
        for (const h of ['Backend', 'Address', 'Health', 'Active', 'Idle', 'Req/s', '5xx', 'p50 ms', 'p99 ms', 'Requests'])
          head.appendChild(el('th', '', h));
        table.appendChild(el('thead')).appendChild(head);
        const body = table.appendChild(el('tbody'));
        const sum = { active: 0, idle: 0, requests: 0, dreq: 0, d5xx: 0, hist: null };
        const fold = s => {
          sum.active += s.active; sum.idle += s.idle; sum.requests += s.requests;
          sum.dreq += s.dreq; sum.d5xx += s.d5xx; sum.hist = addInto(sum.hist, s.hist);
        };
        for (const b of (up.backends || [])) {
          const s = stats(b, prevBackends.get(b.id), dt);
          fold(s);
          const tr = el('tr');
          tr.dataset.backend = String(b.id);
          tr.appendChild(el('td', 'id', b.id));
          const addr = tr.appendChild(el('td', 'addr', b.address));
          addr.title = String(b.url || '');
          const health = tr.appendChild(el('td'));
          health.dataset.field = 'health';
          health.appendChild(el('span', 'badge ' + (b.healthy ? 'up' : 'down'), b.healthy ? 'UP' : 'DOWN'));
          if (!b.healthy && b.last_error) {
            health.appendChild(document.createTextNode(' '));
            health.appendChild(el('span', 'why', b.last_error));
          }
          if (b.healthy && b.ejected) {
            health.appendChild(document.createTextNode(' '));
            health.appendChild(el('span', 'badge down', 'EJECTED'));
          }
          if (num(b.probe_failures) || num(b.ejections)) {
            health.title = 'probe failures: ' + num(b.probe_failures) + ', ejections: ' + num(b.ejections);
          }
          cells(tr, s, bounds);
          body.appendChild(tr);
        }
        if (!(up.backends || []).length) {
          const tr = el('tr'), td = el('td', 'muted', 'no backends');
          td.colSpan = 10;
          tr.appendChild(td);
          body.appendChild(tr);
        }
        const un = up.unassigned || {};
        const us = stats(un, pu && pu.unassigned, dt);
        fold(us);
        if (us.requests > 0) {
          const tr = el('tr', 'unassigned');
          tr.dataset.unassigned = String(up.name);
          tr.appendChild(el('td', 'id', 'no backend'));
          tr.appendChild(el('td', 'addr', '503 from the proxy'));
          tr.appendChild(el('td'));
          cells(tr, us, bounds);
          body.appendChild(tr);
        }
        const foot = el('tr');
        foot.dataset.upstreamTotal = String(up.name);
        foot.appendChild(el('td', '', 'Total'));
        foot.appendChild(el('td'));
        const healthy = (up.backends || []).filter(b => b.healthy).length;
        foot.appendChild(el('td', '', healthy + ' / ' + (up.backends || []).length + ' up'));
        const have = prev && dt > 0 && pu;
        cells(foot, { active: sum.active, idle: sum.idle, requests: sum.requests, hist: have ? sum.hist : null,
                      rps: have ? sum.dreq / dt : null,
                      errors: have && sum.dreq > 0 ? 100 * sum.d5xx / sum.dreq : null }, bounds);
        table.appendChild(el('tfoot')).appendChild(foot);
        sec.appendChild(table);
        main.appendChild(sec);
      }
      document.getElementById('upstreams').replaceWith(main);
      const grand = allRequests(cur), grandPrev = prev ? allRequests(prev) : 0;
      setText('total-requests', grand);
      setText('total-rps', prev && dt > 0 ? fmtRate(Math.max(0, grand - grandPrev) / dt) : DASH);
    }

    async function poll() {
      try {
        const res = await fetch(PATH, { cache: 'no-store', headers: { 'Accept': 'application/json' } });
        if (!res.ok) throw new Error('HTTP ' + res.status + ' ' + res.statusText);
        const data = await res.json();
        prev = cur;
        cur = data;
        polls += 1;
        render();
        document.body.dataset.polls = String(polls);
        document.body.classList.remove('stale');
        setText('updated', 'updated ' + clock(new Date()));
      } catch (err) {
        document.body.classList.add('stale');
        setText('error', 'Fetching ' + PATH + ' failed at ' + clock(new Date()) + ': ' +
          (err && err.message ? err.message : String(err)) + ' (showing the last data)');
      } finally {
        setTimeout(poll, INTERVAL_MS);
      }
    }
    poll();
    </script>
    </body>
    </html>
    """#
}
