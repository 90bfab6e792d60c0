/// The request inspector (`GET /_inspect`, like ngrok's local web interface): one self-contained HTML
/// document, no external scripts, fonts or CSS.
///
/// It polls the recorded requests (`GET <path>/api/requests`, the whole list, newest first) every second
/// and shows them as a live table: method, target, status (coloured by class; in-flight requests as
/// "pending"), duration, route, upstream / backend and body sizes, with replays ("replay of #N") and
/// tunnels marked. A text filter (method, target, host, route, upstream, backend, status, error) and
/// status-class buttons narrow the list. Clicking a row loads `GET <path>/api/requests/SEQ` into the detail
/// pane: both heads as tables; bodies with JSON pretty-printed, other text as is, binary (base64 or a
/// content encoding) as its size and a hex dump of the first 256 bytes, and a "truncated: showing N of M
/// bytes" note when only part was captured; timings; the backend attempts; the proxy's own error. "Replay"
/// posts `<path>/api/replay/SEQ`, waits (up to 10 s) for the new record with `replay_of == SEQ` to finish
/// and shows its response beside the original's; a refusal (404/409/503) shows the proxy's reason.
/// "Copy as curl" copies the record's `curl` command and shows it. Secrets arrive already masked by the
/// proxy. Data from the JSON is only ever inserted with `textContent`; a `Content-Security-Policy` meta tag
/// keeps the page from loading anything but its JSON from its own origin.
///
/// Stable hooks for tests: rows `<tr data-seq="N">` (also `data-state`, `data-replay-of`, `data-tunnel`)
/// with cells `data-field="method|target|status|duration|route|backend|sizes"` (and `seq|time|notes`);
/// `#filter-text`; status-class buttons `[data-status-class="all|2xx|3xx|4xx|5xx|errors|pending"]`
/// (the active one has `aria-pressed="true"`); `#detail` with `data-seq` once a record is loaded, holding
/// `#detail-status`, `#detail-request-head`, `#detail-request-body`, `#detail-response-head`,
/// `#detail-response-body`, `#detail-timings`, `#detail-attempts`, `#detail-error`; `#replay` and
/// `#replay-result` (`data-state`, then `data-replay-seq` and `data-status` once the replay is shown,
/// or `data-refused` with the HTTP status); `#copy-curl` and `#curl-command`; `#error` (poll failures);
/// `document.body.dataset.polls` (successful polls so far).
enum InspectorPageHTML {
    /// `__INSPECT_PATH__` is replaced by the configured base path when served (it lands inside a
    /// single-quoted JS string, so the path must not contain `'`, `\` or `<`).
    static let template: String = #"""
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src data:">
    <link rel="icon" href="data:,">
    <title>Request inspector</title>
    <style>
    :root { color-scheme: light; }
    * { box-sizing: border-box; }
    [hidden] { display: none !important; }
    body { margin: 0; padding: 16px 24px 32px; background: #f6f7f9; color: #1f2328;
      font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif; }
    .mono, pre, table.kv td { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
    header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 6px 22px; margin-bottom: 14px; }
    h1 { font-size: 20px; font-weight: 600; margin: 0 8px 0 0; }
    .stat { color: #57606a; }
    .stat b { color: #1f2328; font-weight: 600; font-variant-numeric: tabular-nums; }
    #updated { margin-left: auto; color: #57606a; font-size: 12px; }
    #updated::before { content: ''; display: inline-block; width: 8px; height: 8px; border-radius: 50%;
      background: #2da44e; margin-right: 6px; vertical-align: 1px; }
    body.stale #updated::before { background: #cf222e; }
    #error, #notice { display: none; padding: 8px 12px; border-radius: 6px; margin-bottom: 12px; }
    #error { background: #ffebe9; border: 1px solid #ff8182; color: #82071e; }
    #notice { background: #fff8c5; border: 1px solid #d4a72c; color: #7d4e00; }
    body.stale #error, body.disabled #notice { display: block; }
    body.stale #list { opacity: .6; }
    .toolbar { display: flex; flex-wrap: wrap; align-items: center; gap: 8px 14px; margin-bottom: 12px; }
    #filter-text { flex: 0 1 380px; padding: 6px 10px; border: 1px solid #d0d7de; border-radius: 6px; font: inherit; background: #fff; }
    .classes { display: inline-flex; }
    .classes button { font: inherit; font-size: 12px; font-weight: 600; padding: 5px 11px; border: 1px solid #d0d7de;
      background: #fff; color: #24292f; cursor: pointer; margin-left: -1px; }
    .classes button:first-child { border-radius: 6px 0 0 6px; margin-left: 0; }
    .classes button:last-child { border-radius: 0 6px 6px 0; }
    .classes button[aria-pressed="true"] { background: #0969da; border-color: #0969da; color: #fff; position: relative; }
    #shown { color: #57606a; font-size: 12px; }
    main { display: grid; grid-template-columns: minmax(0, 1fr); gap: 16px; align-items: start; }
    body.has-detail main { grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); }
    @media (max-width: 1000px) { body.has-detail main { grid-template-columns: minmax(0, 1fr); } }
    .panel { background: #fff; border: 1px solid #d0d7de; border-radius: 8px; overflow: hidden; }
    #list table { border-collapse: collapse; width: 100%; }
    #list th, #list td { padding: 6px 10px; text-align: left; white-space: nowrap; overflow: hidden; text-overflow: ellipsis;
      font-variant-numeric: tabular-nums; }
    #list th { font-size: 12px; font-weight: 600; color: #57606a; text-transform: uppercase; letter-spacing: .03em;
      border-bottom: 1px solid #d0d7de; background: #f0f3f6; }
    #list .c-target { width: 100%; max-width: 0; }   /* takes what the other (content-sized) columns leave */
    #list .c-route, #list .c-backend { max-width: 180px; }
    /* Beside the detail the list is narrow: the target keeps the room (a replay's or the proxy's
       badge shows in the detail pane instead). */
    body.has-detail .c-time, body.has-detail .c-route, body.has-detail .c-sizes, body.has-detail .c-notes { display: none; }
    #rows tr { cursor: pointer; }
    #rows tr + tr td { border-top: 1px solid #eaeef2; }
    #rows tr:hover { background: #f6f8fa; }
    #rows tr.selected { background: #ddf4ff; }
    #rows tr:focus { outline: 2px solid #0969da; outline-offset: -2px; }
    #rows td.mono { font-size: 13px; }
    .muted, #rows tr[data-state="in_flight"] td { color: #8c959f; }
    .method { font-weight: 600; }
    .st { font-weight: 700; }
    .s2 { color: #1a7f37; } .s3 { color: #0969da; } .s4 { color: #bc4c00; } .s5, .s0 { color: #cf222e; }
    .pending { color: #8c959f; font-weight: 600; font-style: italic; }
    .s1 { color: #57606a; }
    .tag { display: inline-block; padding: 0 7px; border-radius: 9px; font-size: 11px; font-weight: 600; margin-right: 4px;
      background: #eaeef2; color: #57606a; }
    .tag.replay { background: #fbefff; color: #8250df; }
    .tag.tunnel { background: #fff8c5; color: #7d4e00; }
    .tag.proxy { background: #ffebe9; color: #cf222e; }
    #empty { padding: 22px; color: #8c959f; text-align: center; }
    #detail { position: sticky; top: 12px; max-height: calc(100vh - 24px); overflow: auto; }
    .dhead { display: flex; flex-wrap: wrap; align-items: center; gap: 8px; padding: 10px 14px; background: #f0f3f6;
      border-bottom: 1px solid #d0d7de; }
    .dhead h2 { flex: 1 1 200px; min-width: 0; margin: 0; font-size: 15px; font-weight: 600; overflow-wrap: anywhere;
      display: -webkit-box; -webkit-box-orient: vertical; -webkit-line-clamp: 3; overflow: hidden; }
    #detail-status { font-size: 15px; }
    button.act { font: inherit; font-size: 13px; padding: 4px 12px; border: 1px solid #d0d7de; border-radius: 6px;
      background: #fff; color: #24292f; cursor: pointer; }
    button.act:hover { background: #f3f4f6; }
    button.act:disabled { color: #8c959f; cursor: default; }
    #close { border: 0; background: none; font-size: 18px; line-height: 1; color: #57606a; cursor: pointer; padding: 2px 4px; }
    .dsec { padding: 10px 14px; border-bottom: 1px solid #eaeef2; }
    .dsec:last-child { border-bottom: 0; }
    .dsec h3 { margin: 0 0 6px; font-size: 12px; font-weight: 600; color: #57606a; text-transform: uppercase; letter-spacing: .03em; }
    table.kv { border-collapse: collapse; width: 100%; }
    table.kv td { padding: 2px 10px 2px 0; font-size: 12px; vertical-align: top; white-space: normal; overflow-wrap: anywhere; }
    table.kv td:first-child { width: 1%; padding-right: 14px; white-space: nowrap; color: #57606a; }
    pre { margin: 0; padding: 8px 10px; background: #f6f8fa; border: 1px solid #eaeef2; border-radius: 6px;
      font-size: 12px; line-height: 1.45; white-space: pre-wrap; overflow-wrap: anywhere; max-height: 420px; overflow: auto; }
    pre.hex { white-space: pre; overflow-wrap: normal; }
    .meta { margin: 0 0 4px; font-size: 12px; color: #57606a; }
    .truncated { margin: 0 0 4px; font-size: 12px; font-weight: 600; color: #9a6700; }
    #detail-error { margin: 10px 14px 0; padding: 8px 12px; border-radius: 6px; background: #ffebe9;
      border: 1px solid #ff8182; color: #82071e; }
    #detail-error:empty { display: none; }
    #detail-attempts { margin: 0; padding-left: 20px; font-size: 13px; }
    .bad { color: #cf222e; }
    .compare { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 12px; margin-top: 6px; }
    .compare h4 { margin: 0 0 4px; font-size: 13px; }
    .compare .sub { margin: 8px 0 4px; font-size: 11px; color: #57606a; text-transform: uppercase; }
    #replay-result[data-refused] .msg, #replay-result[data-state="timeout"] .msg { color: #cf222e; }
    .offscreen { position: fixed; top: -1000px; left: 0; opacity: 0; }
    a.seqlink { color: #0969da; }
    </style>
    </head>
    <body data-polls="0">
    <header>
      <h1>Request inspector</h1>
      <span class="stat">recorded <b id="count">–</b></span>
      <span class="stat">keeps <b id="max">–</b></span>
      <span class="stat">secrets in heads <b id="secrets">–</b></span>
      <span id="updated">waiting for data…</span>
    </header>
    <div id="error" role="alert"></div>
    <div id="notice">Recording is turned off in the proxy's configuration: no new requests will show here.</div>
    <div class="toolbar">
      <input id="filter-text" type="search" placeholder="Filter: method, path, host, backend, status…" autocomplete="off" spellcheck="false" aria-label="Filter">
      <span class="classes" role="group" aria-label="Status class">
        <button type="button" data-status-class="all" aria-pressed="true">All</button>
        <button type="button" data-status-class="2xx" aria-pressed="false">2xx</button>
        <button type="button" data-status-class="3xx" aria-pressed="false">3xx</button>
        <button type="button" data-status-class="4xx" aria-pressed="false">4xx</button>
        <button type="button" data-status-class="5xx" aria-pressed="false">5xx</button>
        <button type="button" data-status-class="errors" aria-pressed="false" title="answered by the proxy itself, or no response">Errors</button>
        <button type="button" data-status-class="pending" aria-pressed="false" title="still in flight">Pending</button>
      </span>
      <span id="shown"></span>
    </div>
    <main>
      <section id="list" class="panel">
        <table>
          <thead><tr>
            <th class="c-seq">#</th><th class="c-time">Time</th><th class="c-method">Method</th><th class="c-target">Target</th>
            <th class="c-notes"></th><th class="c-status">Status</th><th class="c-duration">Duration</th>
            <th class="c-route">Route</th><th class="c-backend">Upstream / backend</th><th class="c-sizes">Req / resp body</th>
          </tr></thead>
          <tbody id="rows"></tbody>
        </table>
        <div id="empty">Waiting for data…</div>
      </section>
      <section id="detail" class="panel" hidden aria-live="polite">
        <div class="dhead">
          <span id="detail-status" class="st"></span>
          <h2 id="detail-title"></h2>
          <button type="button" id="replay" class="act" title="send the recorded request again">Replay</button>
          <button type="button" id="copy-curl" class="act">Copy as curl</button>
          <button type="button" id="close" title="close (Esc)" aria-label="close">×</button>
        </div>
        <div id="detail-error" role="alert"></div>
        <div id="curl-box" class="dsec" hidden>
          <h3>curl</h3>
          <p id="curl-note" class="meta"></p>
          <pre id="curl-command"></pre>
        </div>
        <div id="replay-result" class="dsec" hidden></div>
        <div class="dsec"><h3>Overview</h3><table class="kv" id="detail-summary"></table></div>
        <div class="dsec"><h3>Timings</h3><table class="kv" id="detail-timings"></table></div>
        <div class="dsec"><h3>Backend attempts</h3><ol id="detail-attempts"></ol></div>
        <div class="dsec"><h3>Request head</h3><div id="detail-request-head"></div></div>
        <div class="dsec"><h3>Request body</h3><div id="detail-request-body"></div></div>
        <div class="dsec"><h3>Response head</h3><div id="detail-response-head"></div></div>
        <div class="dsec"><h3>Response body</h3><div id="detail-response-body"></div></div>
      </section>
    </main>
    <script>
    'use strict';
    const BASE = '__INSPECT_PATH__';
    const INTERVAL_MS = 1000;
    const REPLAY_WAIT_MS = 10000;
    const HEX_BYTES = 256;
    const DASH = '–';
    let items = [];             // the last poll's records, newest first
    let polls = 0;
    let statusClass = 'all';
    let selected = null;        // the seq shown in the detail pane
    let selectedKey = '';       // its list entry when the detail was loaded: a change (done now) reloads it
    let detail = null;          // the loaded detail record
    let detailToken = 0, replayToken = 0;
    const rowCache = new Map(); // seq -> { key, tr }

    function $(id) { return document.getElementById(id); }
    function el(tag, cls, text) {
      const e = document.createElement(tag);
      if (cls) e.className = cls;
      if (text !== undefined && text !== null) e.textContent = String(text);
      return e;
    }
    function setText(id, text) { $(id).textContent = String(text); }
    function str(x) { return x === null || x === undefined ? '' : String(x); }
    function num(x) { return typeof x === 'number' && isFinite(x) ? x : 0; }
    function pad(n, w) { return String(n).padStart(w || 2, '0'); }
    function clock(d) {
      return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()) + '.' + pad(d.getMilliseconds(), 3);
    }
    function fmtMs(x) {
      if (typeof x !== 'number' || !isFinite(x)) return DASH;
      return (x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : x.toFixed(0)) + ' ms';
    }
    function fmtBytes(n) {
      n = num(n);
      if (n < 1024) return n + ' B';
      if (n < 1048576) return (n / 1024).toFixed(1) + ' KiB';
      return (n / 1048576).toFixed(1) + ' MiB';
    }
    function errText(err) { return err && err.message ? err.message : String(err); }
    function sleep(ms) { return new Promise(resolve => setTimeout(resolve, ms)); }

    async function fetchJSON(url, options) {
      const res = await fetch(url, Object.assign({ cache: 'no-store', headers: { 'Accept': 'application/json' } }, options || {}));
      let data = null;
      try { data = await res.json(); } catch (e) { data = null; }
      return { ok: res.ok, status: res.status, statusText: res.statusText, data: data };
    }
    function failure(r) {
      return 'HTTP ' + r.status + (r.data && r.data.error ? ': ' + r.data.error : r.statusText ? ' ' + r.statusText : '');
    }

    // ---- one record's classification and labels ----
    function pending(it) { return it.state === 'in_flight'; }
    function hasReplayOf(it) { return it.replay_of !== null && it.replay_of !== undefined; }
    function classOf(it) {
      if (pending(it)) return 'pending';
      const s = num(it.status);
      return s >= 100 && s < 600 ? Math.floor(s / 100) + 'xx' : 'none';
    }
    function isError(it) { return !!it.error || (!pending(it) && !(num(it.status) > 0)); }
    function statusLabel(it) { return pending(it) ? 'pending' : num(it.status) > 0 ? String(it.status) : 'no response'; }
    function statusCss(it) { return pending(it) ? 'st pending' : 'st s' + Math.floor(num(it.status) / 100); }
    function backendLabel(it) { return [str(it.upstream), str(it.backend)].filter(Boolean).join(' / ') || DASH; }

    function matches(it) {
      if (statusClass === 'errors' && !isError(it)) return false;
      if (statusClass === 'pending' && !pending(it)) return false;
      if (/^[1-5]xx$/.test(statusClass) && classOf(it) !== statusClass) return false;
      const words = $('filter-text').value.toLowerCase().split(/\s+/).filter(Boolean);
      if (!words.length) return true;
      const hay = [it.method, it.target, it.host, it.route, it.upstream, it.backend, statusLabel(it), it.error]
        .map(str).join('\n').toLowerCase();
      return words.every(w => hay.includes(w));
    }

    // ---- the list ----
    function buildRow(it) {
      const tr = el('tr');
      tr.dataset.seq = String(it.seq);
      tr.dataset.state = str(it.state);
      if (hasReplayOf(it)) tr.dataset.replayOf = String(it.replay_of);
      if (it.tunnel) tr.dataset.tunnel = 'true';
      tr.tabIndex = 0;
      const add = (field, text, cls) => {
        const td = el('td', cls, text);
        td.dataset.field = field;
        tr.appendChild(td);
        return td;
      };
      add('seq', '#' + it.seq, 'muted c-seq');
      add('time', it.started_ms ? clock(new Date(it.started_ms)) : DASH, 'muted c-time');
      add('method', it.method, 'method c-method');
      add('target', it.target, 'mono c-target').title = str(it.host) + str(it.target);
      const notes = add('notes', '', 'c-notes');
      if (hasReplayOf(it)) notes.appendChild(el('span', 'tag replay', 'replay of #' + it.replay_of));
      if (it.tunnel) notes.appendChild(el('span', 'tag tunnel', 'tunnel'));
      if (it.error) notes.appendChild(el('span', 'tag proxy', 'proxy'));
      const status = add('status', statusLabel(it), statusCss(it) + ' c-status');
      if (it.error) status.title = str(it.error);
      add('duration', pending(it) ? DASH : fmtMs(it.duration_ms), 'c-duration');
      add('route', it.route || DASH, 'mono c-route');
      add('backend', backendLabel(it), 'c-backend');
      const sizes = add('sizes', '↑ ' + fmtBytes(it.request_bytes) + '  ↓ ' + fmtBytes(it.response_bytes), 'c-sizes');
      sizes.title = 'request body ' + num(it.request_bytes) + ' bytes, response body ' + num(it.response_bytes) + ' bytes';
      return tr;
    }

    function renderList() {
      const body = $('rows');
      const shown = items.filter(matches);
      shown.forEach((it, i) => {
        const key = JSON.stringify(it);
        let c = rowCache.get(it.seq);
        if (!c || c.key !== key) {
          const tr = buildRow(it);
          if (c && c.tr.parentNode) c.tr.replaceWith(tr);
          c = { key: key, tr: tr };
          rowCache.set(it.seq, c);
        }
        const at = body.children[i];
        if (at !== c.tr) body.insertBefore(c.tr, at || null);
      });
      while (body.children.length > shown.length) body.lastChild.remove();
      const known = new Set(items.map(it => it.seq));
      for (const seq of Array.from(rowCache.keys())) if (!known.has(seq)) rowCache.delete(seq);
      for (const tr of body.children) tr.classList.toggle('selected', Number(tr.dataset.seq) === selected);
      setText('shown', shown.length === items.length ? items.length + ' shown' : shown.length + ' of ' + items.length + ' shown');
      $('empty').hidden = shown.length > 0;
      $('empty').textContent = items.length ? 'No request matches the filter.' : 'No requests recorded yet: send some through the proxy.';
    }

    function setStatusClass(cls) {
      statusClass = cls;
      for (const b of document.querySelectorAll('[data-status-class]'))
        b.setAttribute('aria-pressed', String(b.dataset.statusClass === cls));
      renderList();
    }

    // ---- the detail pane ----
    function kvTable(table, rows, fieldNames) {
      table.replaceChildren();
      rows.forEach((row, i) => {
        const tr = el('tr');
        tr.appendChild(el('td', '', row[0]));
        const td = tr.appendChild(el('td', '', row[1]));
        if (fieldNames) td.dataset.field = fieldNames[i];
        table.appendChild(tr);
      });
    }
    function renderHead(container, head) {
      container.replaceChildren();
      if (!Array.isArray(head)) { container.appendChild(el('p', 'meta', 'No response (yet).')); return; }
      if (!head.length) { container.appendChild(el('p', 'meta', 'No fields.')); return; }
      const table = el('table', 'kv');
      kvTable(table, head.map(f => [str(f && f[0]), str(f && f[1])]));
      container.appendChild(table);
    }
    function toBytes(body) {
      const data = str(body.data);
      if (body.encoding !== 'base64') return new TextEncoder().encode(data);
      const bin = atob(data.replace(/\s+/g, ''));
      const bytes = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
      return bytes;
    }
    function hexdump(bytes) {
      const lines = [];
      for (let off = 0; off < bytes.length; off += 16) {
        let hex = '', ascii = '';
        for (let i = 0; i < 16; i++) {
          const b = bytes[off + i];
          hex += (off + i < bytes.length ? pad(b.toString(16), 2) : '  ') + (i === 7 ? '  ' : ' ');
          if (off + i < bytes.length) ascii += b >= 32 && b < 127 ? String.fromCharCode(b) : '.';
        }
        lines.push(pad(off.toString(16), 8) + '  ' + hex + ' ' + ascii);
      }
      return lines.join('\n');
    }
    function renderBody(container, body, missing) {
      container.replaceChildren();
      if (!body) { container.appendChild(el('p', 'meta', missing || 'No body recorded.')); return; }
      const size = num(body.size), captured = num(body.captured);
      const binary = body.encoding === 'base64' || !!body.content_encoding;
      const meta = [fmtBytes(size) + (size >= 1024 ? ' (' + size + ' bytes)' : '')];
      if (body.content_type) meta.push(str(body.content_type));
      if (body.content_encoding) meta.push('content-encoding ' + body.content_encoding);
      if (binary) meta.push('binary');
      container.appendChild(el('p', 'meta', meta.join(' · ')));
      if (body.truncated || captured < size)
        container.appendChild(el('p', 'truncated', 'truncated: showing ' + captured + ' of ' + size + ' bytes'));
      if (size === 0 && !str(body.data)) { container.appendChild(el('p', 'meta', '(empty)')); return; }
      if (binary) {
        let bytes;
        try { bytes = toBytes(body); } catch (e) {
          container.appendChild(el('p', 'meta bad', 'the captured bytes are not valid base64'));
          return;
        }
        const n = Math.min(HEX_BYTES, bytes.length);
        container.appendChild(el('p', 'meta', 'hex of the first ' + n + ' of ' + size + ' bytes'));
        container.appendChild(el('pre', 'hex', hexdump(bytes.subarray(0, n))));
        return;
      }
      let text = str(body.data);
      if (/json/i.test(str(body.content_type))) {
        try { text = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not (whole) JSON: as is */ }
      }
      container.appendChild(el('pre', '', text));
    }

    function seqLink(seq) {
      const a = el('a', 'seqlink', '#' + seq);
      a.href = '#';
      a.addEventListener('click', e => { e.preventDefault(); select(seq); });
      return a;
    }

    function renderDetail(d) {
      detail = d;
      const pane = $('detail');
      pane.dataset.seq = String(d.seq);
      pane.dataset.state = str(d.state);
      delete pane.dataset.loading;
      const status = $('detail-status');
      status.textContent = statusLabel(d);
      status.className = statusCss(d);
      setText('detail-title', '#' + d.seq + '  ' + str(d.method) + ' ' + str(d.target));
      $('detail-title').title = str(d.method) + ' ' + str(d.target);
      $('copy-curl').disabled = !d.curl;
      setText('detail-error', d.error || '');

      const summary = [
        ['Host', str(d.host) || DASH], ['Protocol', str(d.protocol) || DASH],
        ['Started', d.started_ms ? new Date(d.started_ms).toLocaleDateString() + ' ' + clock(new Date(d.started_ms)) : DASH],
        ['State', pending(d) ? 'in flight' : 'done'], ['Route', str(d.route) || DASH],
        ['Upstream', str(d.upstream) || DASH], ['Backend', str(d.backend) || DASH],
        ['Request body', fmtBytes(d.request_bytes)], ['Response body', fmtBytes(d.response_bytes)],
      ];
      if (d.tunnel) summary.push(['Tunnel', 'yes (WebSocket/upgrade: bodies not recorded)']);
      if (d.compressed) summary.push(['Sent as', str(d.compressed) + ' (compressed by the proxy; head and body shown as the backend sent them)']);
      if (hasReplayOf(d)) summary.push(['Replay of', '']);
      kvTable($('detail-summary'), summary);
      if (hasReplayOf(d)) $('detail-summary').lastChild.lastChild.appendChild(seqLink(d.replay_of));

      const t = d.timings || {};
      kvTable($('detail-timings'),
        [['Queue', fmtMs(t.queue_ms)], ['Connect', fmtMs(t.connect_ms)], ['First byte', fmtMs(t.first_byte_ms)],
         ['Total', fmtMs(t.total_ms)]],
        ['queue', 'connect', 'first_byte', 'total']);

      const attempts = $('detail-attempts');
      attempts.replaceChildren();
      for (const a of (Array.isArray(d.attempts) ? d.attempts : [])) {
        const li = el('li', /^response /.test(str(a && a.outcome)) ? '' : 'bad');
        li.appendChild(el('b', '', str(a && a.backend) || DASH));
        li.appendChild(document.createTextNode(' — ' + str(a && a.outcome)));
        attempts.appendChild(li);
      }
      if (!attempts.children.length) attempts.appendChild(el('li', 'muted', pending(d) ? 'none yet' : 'none (no backend was tried)'));

      const req = d.request || {}, res = d.response;
      renderHead($('detail-request-head'), Array.isArray(req.head) ? req.head : []);
      renderBody($('detail-request-body'), req.body, d.tunnel ? 'Not recorded for tunnels.' : null);
      renderHead($('detail-response-head'), res ? (Array.isArray(res.head) ? res.head : []) : null);
      renderBody($('detail-response-body'), res && res.body, res ? (d.tunnel ? 'Not recorded for tunnels.' : null) : 'No response (yet).');
    }

    function renderDetailMissing(seq, why) {
      detail = null;
      const pane = $('detail');
      delete pane.dataset.loading;
      pane.dataset.seq = String(seq);
      pane.dataset.state = 'missing';
      $('detail-status').textContent = '';
      setText('detail-title', '#' + seq);
      setText('detail-error', 'Could not load #' + seq + ' (evicted from the recording?): ' + why);
      $('copy-curl').disabled = true;
      for (const id of ['detail-summary', 'detail-timings', 'detail-attempts', 'detail-request-head',
                        'detail-request-body', 'detail-response-head', 'detail-response-body']) $(id).replaceChildren();
    }

    async function loadDetail() {
      const seq = selected, token = ++detailToken;
      const it = items.find(x => x.seq === seq);
      selectedKey = it ? JSON.stringify(it) : '';
      try {
        const r = await fetchJSON(BASE + '/api/requests/' + seq);
        if (token !== detailToken || seq !== selected) return;
        if (!r.ok || !r.data) throw new Error(failure(r));
        renderDetail(r.data);
      } catch (err) {
        if (token === detailToken && seq === selected) renderDetailMissing(seq, errText(err));
      }
    }

    function select(seq) {
      const pane = $('detail');
      if (selected !== seq) {
        replayToken++;                       // a replay still waiting belongs to the previous record
        $('replay').disabled = false;
        $('replay-result').hidden = true;
        $('replay-result').replaceChildren();
        resetData($('replay-result'));
        $('curl-box').hidden = true;
        $('curl-command').textContent = '';
        delete pane.dataset.seq;
        pane.dataset.loading = String(seq);
        detail = null;
      }
      selected = seq;
      pane.hidden = false;
      document.body.classList.add('has-detail');
      for (const tr of $('rows').children) tr.classList.toggle('selected', Number(tr.dataset.seq) === selected);
      loadDetail();
    }

    function closeDetail() {
      selected = null;
      detailToken++;
      replayToken++;
      $('detail').hidden = true;
      document.body.classList.remove('has-detail');
      for (const tr of $('rows').children) tr.classList.remove('selected');
    }

    function resetData(node) { for (const k of Object.keys(node.dataset)) delete node.dataset[k]; }

    // ---- replay ----
    function replayMessage(text, state) {
      const out = $('replay-result');
      out.hidden = false;
      out.dataset.state = state;
      out.replaceChildren(el('h3', '', 'Replay'), el('p', 'meta msg', text));
    }

    function replayColumn(title, d) {
      const col = el('div');
      col.appendChild(el('h4', '', title));
      const line = el('p', 'meta');
      line.appendChild(el('span', statusCss(d), statusLabel(d)));
      line.appendChild(document.createTextNode('  ' + fmtMs(d.duration_ms) + ' · ' + backendLabel(d)));
      col.appendChild(line);
      if (d.error) col.appendChild(el('p', 'meta bad', d.error));
      col.appendChild(el('p', 'sub', 'Response head'));
      const head = col.appendChild(el('div'));
      head.dataset.part = 'head';
      renderHead(head, d.response ? d.response.head : null);
      col.appendChild(el('p', 'sub', 'Response body'));
      const body = col.appendChild(el('div'));
      body.dataset.part = 'body';
      renderBody(body, d.response && d.response.body, 'No response.');
      return col;
    }

    async function replay() {
      if (selected === null) return;
      const seq = selected, token = ++replayToken, original = detail;
      const out = $('replay-result');
      resetData(out);
      $('replay').disabled = true;
      replayMessage('Replaying #' + seq + '…', 'sending');
      try {
        // The replay's record gets a seq above the newest one now.
        let latest = items.reduce((m, it) => Math.max(m, num(it.seq)), 0);
        const list = await fetchJSON(BASE + '/api/requests').catch(() => null);
        if (list && list.ok && list.data) latest = Math.max(latest, num(list.data.latest));
        const r = await fetchJSON(BASE + '/api/replay/' + seq, { method: 'POST', headers: { 'X-Inspect-Action': 'replay' } });
        if (token !== replayToken) return;
        if (r.status !== 202) {
          replayMessage('Replay refused — ' + failure(r), 'refused');
          out.dataset.refused = String(r.status);
          return;
        }
        replayMessage('Replay of #' + seq + ' sent; waiting for it to finish…', 'waiting');
        const deadline = Date.now() + REPLAY_WAIT_MS;
        let done = null;
        while (!done && Date.now() < deadline) {
          await sleep(250);
          if (token !== replayToken) return;
          const l = await fetchJSON(BASE + '/api/requests?after=' + latest).catch(() => null);
          if (token !== replayToken) return;
          const mine = ((l && l.ok && l.data && l.data.items) || [])
            .filter(x => x.replay_of === seq && num(x.seq) > latest).sort((a, b) => a.seq - b.seq)[0];
          if (mine && !pending(mine)) done = mine;
          else if (mine) out.querySelector('.msg').textContent = 'Replay #' + mine.seq + ' in flight…';
        }
        if (!done) { replayMessage('The replay of #' + seq + ' did not finish within ' + REPLAY_WAIT_MS / 1000 + ' s.', 'timeout'); return; }
        const d = await fetchJSON(BASE + '/api/requests/' + done.seq);
        if (token !== replayToken) return;
        const rep = d.ok && d.data ? d.data : done;
        const orig = original && original.seq === seq ? original : (await fetchJSON(BASE + '/api/requests/' + seq)).data || {};
        if (token !== replayToken) return;
        const same = num(rep.status) === num(orig.status);
        replayMessage('Replay #' + rep.seq + ' finished: ' + statusLabel(rep) + (same ? ' (same status as the original)' : ' (the original answered ' + statusLabel(orig) + ')'), 'done');
        const msg = out.querySelector('.msg');
        msg.appendChild(document.createTextNode(' '));
        msg.appendChild(seqLink(rep.seq));
        const grid = el('div', 'compare');
        grid.appendChild(replayColumn('Original #' + seq, orig)).dataset.side = 'original';
        grid.appendChild(replayColumn('Replay #' + rep.seq, rep)).dataset.side = 'replay';
        out.appendChild(grid);
        out.dataset.replaySeq = String(rep.seq);
        out.dataset.status = String(num(rep.status));
      } catch (err) {
        if (token === replayToken) replayMessage('Replay failed: ' + errText(err), 'failed');
      } finally {
        if (token === replayToken) $('replay').disabled = false;
      }
    }

    // ---- copy as curl ----
    function copyWithTextarea(text) {
      const ta = el('textarea', 'offscreen');
      ta.value = text;
      ta.setAttribute('readonly', '');
      document.body.appendChild(ta);
      ta.select();
      let ok = false;
      try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
      ta.remove();
      return ok;
    }
    async function copyCurl() {
      const cmd = detail && detail.seq === selected ? str(detail.curl) : '';
      $('curl-command').textContent = cmd;
      $('curl-box').hidden = false;
      if (!cmd) { setText('curl-note', 'No curl command for this request.'); return; }
      setText('curl-note', 'Copying…');
      let ok = false;
      if (navigator.clipboard && navigator.clipboard.writeText) {
        try {
          ok = await Promise.race([navigator.clipboard.writeText(cmd).then(() => true), sleep(1500).then(() => false)]);
        } catch (e) { ok = false; }
      }
      if (!ok) ok = copyWithTextarea(cmd);
      setText('curl-note', ok ? 'Copied to the clipboard.' : 'Could not copy automatically: select the command below and copy it.');
    }

    // ---- polling ----
    async function poll() {
      try {
        const r = await fetchJSON(BASE + '/api/requests');
        if (!r.ok || !r.data) throw new Error(failure(r));
        const data = r.data;
        items = (Array.isArray(data.items) ? data.items : []).filter(it => it && typeof it.seq === 'number')
          .sort((a, b) => b.seq - a.seq);
        polls += 1;
        setText('count', items.length);
        setText('max', data.max_requests === undefined ? DASH : data.max_requests);
        setText('secrets', data.reveal_secrets ? 'revealed' : 'masked');
        document.body.classList.toggle('disabled', data.enabled === false);
        renderList();
        if (selected !== null) {
          const it = items.find(x => x.seq === selected);
          if (it && JSON.stringify(it) !== selectedKey) loadDetail();
        }
        document.body.dataset.polls = String(polls);
        document.body.classList.remove('stale');
        setText('updated', 'updated ' + clock(new Date()).slice(0, 8));
      } catch (err) {
        document.body.classList.add('stale');
        setText('error', 'Fetching ' + BASE + '/api/requests failed at ' + clock(new Date()).slice(0, 8) + ': ' +
          errText(err) + ' (showing the last data)');
      } finally {
        setTimeout(poll, INTERVAL_MS);
      }
    }

    $('filter-text').addEventListener('input', renderList);
    for (const b of document.querySelectorAll('[data-status-class]'))
      b.addEventListener('click', () => setStatusClass(b.dataset.statusClass));
    $('rows').addEventListener('click', e => {
      const tr = e.target.closest('tr[data-seq]');
      if (tr) select(Number(tr.dataset.seq));
    });
    $('rows').addEventListener('keydown', e => {
      const tr = e.target.closest('tr[data-seq]');
      if (tr && e.key === 'Enter') select(Number(tr.dataset.seq));
    });
    document.addEventListener('keydown', e => {
      if (e.key === 'Escape' && selected !== null && e.target !== $('filter-text')) closeDetail();
    });
    $('close').addEventListener('click', closeDetail);
    $('replay').addEventListener('click', replay);
    $('copy-curl').addEventListener('click', copyCurl);
    poll();
    </script>
    </body>
    </html>
    """#
}
