// The ops page. Polls /v1/ops/overview every second with the ops key kept
// in sessionStorage (sent as a bearer header: no cookie, so no CSRF), draws
// the offset pool, the jobs holding it and the last hour, and runs audit
// searches. The DOM is built with createElement and textContent only (no
// HTML parsing), so nothing a user typed into a filter can become markup; there
// is no inline script or style, as the Content-Security-Policy demands.

const KEY = 'pseudostream.opsKey';
const POLL_MS = 1000;
const COLUMNS = 40;
const MAX_JOB_ROWS = 100;
const EXPORT_PAGE = 1000;
const MAX_EXPORT_PAGES = 100;
const LIVE = new Set(['queued', 'running']);
const SVG = 'http://www.w3.org/2000/svg';

const $ = (id) => document.getElementById(id);
let key = sessionStorage.getItem(KEY);
let timer = null;
let polling = false;
let view = { now: Date.now(), jobs: new Map(), admitting: new Set(), others: new Set() };
let cells = [];
let drawn = [];
let roving = 0;
let pointed = null;
let audit = { params: null, next: null, page: 0 };

// ---- talking to the API ----

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${key}`, ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers, cache: 'no-store' });
  if (!response.ok) {
    let detail = `HTTP ${response.status}`;
    try {
      const problem = await response.json();
      detail = problem.detail || problem.title || detail;
    } catch { /* not a problem document: keep the status */ }
    const error = new Error(detail);
    error.status = response.status;
    throw error;
  }
  return response;
}

function say(text, kind = 'error') {
  const message = $('message');
  message.textContent = text;
  message.className = `message ${kind}`;
  message.hidden = !text;
}

// ---- signing in and out ----

function signOut(why) {
  clearTimeout(timer);
  sessionStorage.removeItem(KEY);
  key = null;
  for (const id of ['dashboard', 'forget', 'who']) $(id).hidden = true;
  $('login').hidden = false;
  $('updated').textContent = '';
  say(why);
  $('key').focus();
}

async function poll() {
  // One poll at a time: a cancel or a tab coming back asks for one now,
  // and must not start a second chain of timers.
  if (polling || !key) return;
  polling = true;
  clearTimeout(timer);
  try {
    const overview = await (await api('/v1/ops/overview')).json();
    if (!key) return;
    const first = $('dashboard').hidden;
    $('login').hidden = true;
    for (const id of ['dashboard', 'forget', 'who']) $(id).hidden = false;
    $('who').textContent = `${overview.caller.user} · tenant ${overview.caller.tenant}`;
    if ($('message').classList.contains('warn')) say('');
    draw(overview);
    $('updated').textContent = `updated ${new Date(overview.now).toLocaleTimeString()}`;
    if (first) cells[roving]?.focus();
  } catch (error) {
    if (error.status === 401) return signOut(`That key is not valid (401): ${error.message}.`);
    if (error.status === 403) return signOut(`Refused (403): ${error.message}.`);
    say(`Cannot reach the service (${error.message}); trying again every second.`, 'warn');
  } finally {
    polling = false;
  }
  if (!document.hidden) timer = setTimeout(poll, POLL_MS);
}

// ---- formatting ----

function seconds(s) {
  if (s == null) return '—';
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} m ${Math.floor(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} m`;
}

const age = (at) => seconds(Math.max(0, (view.now - Date.parse(at)) / 1000));
// Ids are UUIDv7: the first digits are the time, the last ones tell jobs apart.
const short = (id) => (id ? `…${id.slice(-8)}` : '');

function cellState(n) {
  const job = view.jobs.get(n);
  if (job) return job.status;
  if (view.admitting.has(n)) return 'admitting';
  if (view.others.has(n)) return 'other';
  return 'free';
}

function describe(n) {
  const job = view.jobs.get(n);
  if (job) {
    return `Offset ${n}: ${job.status}${job.cancelRequested ? ' (cancel requested)' : ''}\n`
      + `job ${job.jobId}\nuser ${job.user} · age ${age(job.submittedAt)}\n`
      + `filter ${job.filter || '(none: every row)'}`;
  }
  return {
    admitting: `Offset ${n}: leased, its job is being admitted or expired`,
    other: `Offset ${n}: leased by another tenant`,
    free: `Offset ${n}: free`,
  }[cellState(n)];
}

function element(tag, text, className) {
  const el = document.createElement(tag);
  if (text != null) el.textContent = text;
  if (className) el.className = className;
  return el;
}

function svg(tag, attributes, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) el.setAttribute(name, value);
  if (text != null) el.textContent = text;
  return el;
}

// ---- the pool grid: one focusable cell at a time (roving tabindex) ----

function buildGrid(size) {
  const rows = [];
  cells = [];
  drawn = [];
  for (let start = 0; start < size; start += COLUMNS) {
    const row = element('div', null, 'grid-row');
    row.setAttribute('role', 'row');
    for (let n = start; n < Math.min(size, start + COLUMNS); n++) {
      const cell = element('div', null, 'cell');
      cell.setAttribute('role', 'gridcell');
      cell.dataset.offset = n;
      cell.tabIndex = n === roving ? 0 : -1;
      row.append(cell);
      cells.push(cell);
    }
    rows.push(row);
  }
  $('grid').replaceChildren(...rows);
}

function showDetail(n, cell) {
  const text = describe(n);
  $('cell-detail').textContent = text.replaceAll('\n', ' · ');
  const tip = $('tip');
  tip.textContent = text;
  tip.hidden = false;
  const box = cell.getBoundingClientRect();
  const left = box.right + 8 + tip.offsetWidth > window.innerWidth ? box.left - 8 - tip.offsetWidth : box.right + 8;
  tip.style.left = `${Math.max(0, left) + window.scrollX}px`;
  tip.style.top = `${box.top + window.scrollY}px`;
  pointed = n;
}

function hideTip() {
  $('tip').hidden = true;
  pointed = null;
}

function moveFocus(to) {
  cells[roving].tabIndex = -1;
  roving = Math.max(0, Math.min(cells.length - 1, to));
  cells[roving].tabIndex = 0;
  cells[roving].focus();
}

function wireGrid() {
  const grid = $('grid');
  const offsetOf = (event) => (event.target.dataset?.offset ? Number(event.target.dataset.offset) : null);
  grid.addEventListener('mouseover', (e) => {
    const n = offsetOf(e);
    if (n != null) showDetail(n, e.target);
  });
  grid.addEventListener('mouseleave', hideTip);
  grid.addEventListener('focusin', (e) => {
    const n = offsetOf(e);
    if (n != null) showDetail(n, e.target);
  });
  grid.addEventListener('focusout', hideTip);
  grid.addEventListener('keydown', (e) => {
    const n = offsetOf(e);
    if (n == null) return;
    const column = n % COLUMNS;
    const step = {
      ArrowLeft: -1, ArrowRight: 1, ArrowUp: -COLUMNS, ArrowDown: COLUMNS,
      Home: -column, End: COLUMNS - 1 - column, PageUp: -5 * COLUMNS, PageDown: 5 * COLUMNS,
    }[e.key];
    if (step === undefined) return;
    e.preventDefault();
    moveFocus(n + step);
  });
}

function drawPool(overview) {
  const pool = overview.pool;
  if (cells.length !== pool.size) buildGrid(pool.size);
  for (let n = 0; n < cells.length; n++) {
    const state = cellState(n);
    if (drawn[n] === state) continue;
    drawn[n] = state;
    cells[n].className = `cell ${state}`;
    cells[n].setAttribute('aria-label', `offset ${n}, ${state === 'other' ? 'other tenant' : state}`);
  }
  $('pool-count').textContent = `${pool.leased} of ${pool.size} leased`
    + ` · ${pool.otherTenants.length} by other tenants · ${pool.admitting.length} admitting`;
  if (pointed != null && cells[pointed]) showDetail(pointed, cells[pointed]);
}

// ---- the jobs table: rows kept by job id, so focus survives a redraw ----

const rowsById = new Map();

function jobRow() {
  const row = element('tr');
  for (const name of ['offset', 'job', 'user', 'status', 'num', 'num', 'num', 'num', 'filter']) {
    row.append(element('td', null, name));
  }
  const action = element('td');
  const cancel = element('button', 'Cancel', 'cancel');
  cancel.type = 'button';
  cancel.addEventListener('click', () => cancelJob(row.job));
  action.append(cancel);
  row.append(action);
  return row;
}

function fillRow(row, job) {
  row.job = job;
  const [offset, id, user, status, rows, chunks, first, since, filter, action] = row.children;
  offset.textContent = job.offset;
  id.textContent = short(job.jobId);
  id.title = job.jobId;
  user.textContent = job.user;
  status.textContent = job.cancelRequested && LIVE.has(job.status) ? 'cancelling' : job.status;
  status.className = `status ${job.status}`;
  rows.textContent = job.rows.toLocaleString();
  chunks.textContent = job.chunks.toLocaleString();
  first.textContent = seconds(job.firstChunkSeconds);
  since.textContent = age(job.submittedAt);
  filter.textContent = job.filter || '(every row)';
  filter.title = job.filter;
  const cancel = action.firstChild;
  cancel.hidden = !LIVE.has(job.status) || job.cancelRequested;
  cancel.setAttribute('aria-label', `Cancel job ${short(job.jobId)} of ${job.user}`);
}

function drawJobs(jobs) {
  const order = [...jobs].sort((a, b) => (LIVE.has(b.status) - LIVE.has(a.status))
    || Date.parse(b.submittedAt) - Date.parse(a.submittedAt)).slice(0, MAX_JOB_ROWS);
  const body = $('jobs').tBodies[0];
  const focused = document.activeElement;
  const keep = new Set(order.map((job) => job.jobId));
  for (const [id, row] of rowsById) {
    if (!keep.has(id)) { row.remove(); rowsById.delete(id); }
  }
  order.forEach((job, i) => {
    let row = rowsById.get(job.jobId);
    if (!row) { row = jobRow(); rowsById.set(job.jobId, row); }
    fillRow(row, job);
    if (body.children[i] !== row) body.insertBefore(row, body.children[i] || null);
  });
  if (focused && focused !== document.activeElement && focused.isConnected) focused.focus();
  $('jobs-count').textContent = jobs.length > order.length
    ? `(newest ${order.length} of ${jobs.length})` : `(${jobs.length})`;
}

async function cancelJob(job) {
  if (!window.confirm(`Cancel job ${job.jobId} of ${job.user}?`)) return;
  try {
    await api(`/v1/jobs/${encodeURIComponent(job.jobId)}`, { method: 'DELETE' });
    say(`Cancel requested for job ${job.jobId}.`, 'info');
  } catch (error) {
    say(`Cancel failed: ${error.message}`);
  }
  poll();
}

// ---- the last hour ----

// A bucket's bound, short enough for 15 labels across the chart.
function bound(s) {
  return s < 1 ? `${Math.round(s * 10_000) / 10}ms` : `${s}s`;
}

function drawLatency(hour) {
  const counts = hour.firstChunkCounts;
  const bounds = hour.bucketBoundsSeconds;
  const total = counts.reduce((a, b) => a + b, 0);
  const label = (i) => (i < bounds.length ? bound(bounds[i]) : `>${bound(bounds.at(-1))}`);
  const quantile = (q) => {
    let seen = 0;
    for (let i = 0; i < counts.length; i++) {
      seen += counts[i];
      if (seen >= q * total) return i < bounds.length ? `≤ ${label(i)}` : label(i);
    }
    return '—';
  };
  const summary = total ? `${total} first chunks · p50 ${quantile(0.5)} · p95 ${quantile(0.95)}` : 'no first chunks yet';
  $('latency-summary').textContent = `(${summary})`;
  const plot = $('latency');
  plot.setAttribute('aria-label', `First-chunk latency over the last hour: ${summary}`);
  const max = Math.max(1, ...counts);
  const width = 600 / counts.length;
  const parts = [svg('line', { x1: 0, y1: 120, x2: 600, y2: 120, class: 'base' })];
  counts.forEach((n, i) => {
    const height = Math.round((n / max) * 100);
    const middle = i * width + width / 2;
    parts.push(svg('rect', { x: i * width + 3, y: 120 - height, width: width - 6, height, class: 'bar' }));
    if (n) parts.push(svg('text', { x: middle, y: 116 - height, class: 'value' }, n));
    parts.push(svg('text', { x: middle, y: 136, class: 'axis' }, label(i)));
  });
  parts.push(svg('text', { x: 300, y: 149, class: 'axis' }, 'submission to first chunk, by bucket (upper bound)'));
  plot.replaceChildren(...parts);
}

function drawRejections(hour) {
  const minutes = hour.minutes;
  const limited = minutes.reduce((a, m) => a + m.rateLimited, 0);
  const unavailable = minutes.reduce((a, m) => a + m.unavailable, 0);
  const summary = `${limited} × 429, ${unavailable} × 503`;
  $('rejections-summary').textContent = `(${summary})`;
  const plot = $('rejections');
  plot.setAttribute('aria-label', `Rejections over the last hour: ${summary}`);
  const max = Math.max(1, ...minutes.map((m) => m.rateLimited + m.unavailable));
  const width = 600 / minutes.length;
  const parts = [svg('line', { x1: 0, y1: 120, x2: 600, y2: 120, class: 'base' })];
  minutes.forEach((m, i) => {
    const h429 = Math.round((m.rateLimited / max) * 110);
    const h503 = Math.round((m.unavailable / max) * 110);
    if (h429) parts.push(svg('rect', { x: i * width + 1, y: 120 - h429, width: width - 2, height: h429, class: 'r429' }));
    if (h503) parts.push(svg('rect', { x: i * width + 1, y: 120 - h429 - h503, width: width - 2, height: h503, class: 'r503' }));
  });
  for (const [x, text] of [[10, '−60 min'], [300, '−30 min'], [590, 'now']]) {
    parts.push(svg('text', { x, y: 138, class: 'axis' }, text));
  }
  parts.push(svg('text', { x: 4, y: 12, class: 'axis start' }, `max ${max}/min`));
  plot.replaceChildren(...parts);
}

function draw(overview) {
  view = {
    now: Date.parse(overview.now),
    jobs: new Map(overview.jobs.map((job) => [job.offset, job])),
    admitting: new Set(overview.pool.admitting),
    others: new Set(overview.pool.otherTenants),
  };
  drawPool(overview);
  drawJobs(overview.jobs);
  drawLatency(overview.lastHour);
  drawRejections(overview.lastHour);
}

// ---- the audit search ----

function auditParams(form) {
  const data = new FormData(form);
  const params = new URLSearchParams();
  for (const name of ['user', 'fingerprint', 'status', 'limit']) {
    const value = String(data.get(name) || '').trim();
    if (value) params.set(name, value);
  }
  for (const name of ['from', 'to']) {
    const value = data.get(name);
    if (value) params.set(name, new Date(value).toISOString());
  }
  return params;
}

function drawAudit(entries) {
  const rows = entries.map((e) => {
    const row = element('tr');
    const cells = [
      new Date(e.submittedAt).toLocaleString(), e.user, e.status, e.rows.toLocaleString(),
      e.chunks.toLocaleString(), short(e.jobId), short(e.fingerprint), e.filter || '(every row)',
    ].map((text) => element('td', text));
    cells[3].className = 'num';
    cells[4].className = 'num';
    cells[5].title = e.jobId;
    cells[6].title = e.fingerprint;
    cells[7].title = e.filter;
    cells[7].className = 'filter';
    row.append(...cells);
    return row;
  });
  $('audit').tBodies[0].replaceChildren(...rows);
}

async function runAudit(cursor) {
  const params = new URLSearchParams(audit.params);
  if (cursor) params.set('cursor', cursor);
  $('audit-status').textContent = 'Searching…';
  try {
    const page = await (await api(`/v1/audit?${params}`)).json();
    audit.page = cursor ? audit.page + 1 : 1;
    audit.next = page.next;
    drawAudit(page.entries);
    $('audit-next').disabled = !page.next;
    $('audit-status').textContent = `Page ${audit.page}: ${page.entries.length} entries`
      + (page.next ? '; more on the next page.' : '; the last page.');
  } catch (error) {
    $('audit-status').textContent = `Search failed: ${error.message}`;
  }
}

async function exportCsv() {
  const params = auditParams($('audit-form'));
  params.set('limit', EXPORT_PAGE);
  params.set('format', 'csv');
  let path = `/v1/audit?${params}`;
  const parts = [];
  $('audit-status').textContent = 'Exporting…';
  try {
    for (let page = 0; path && page < MAX_EXPORT_PAGES; page++) {
      const response = await api(path);
      const text = await response.text();
      // Every page repeats the header line; keep the first page's.
      parts.push(page === 0 ? text : text.slice(text.indexOf('\r\n') + 2));
      path = /<([^>]+)>;\s*rel="next"/.exec(response.headers.get('Link') || '')?.[1];
    }
  } catch (error) {
    $('audit-status').textContent = `Export failed: ${error.message}`;
    return;
  }
  const url = URL.createObjectURL(new Blob(parts, { type: 'text/csv' }));
  const link = element('a');
  link.href = url;
  link.download = `audit-${new Date().toISOString().replaceAll(':', '')}.csv`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  $('audit-status').textContent = path
    ? `Exported the first ${MAX_EXPORT_PAGES * EXPORT_PAGE} entries; narrow the search for the rest.`
    : 'Exported every matching entry.';
}

// ---- wiring ----

$('key-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const typed = $('key').value.trim();
  if (!typed) return;
  key = typed;
  sessionStorage.setItem(KEY, key);
  $('key').value = '';
  say('');
  poll();
});
$('forget').addEventListener('click', () => signOut(''));
$('audit-form').addEventListener('submit', (event) => {
  event.preventDefault();
  audit = { params: auditParams(event.target), next: null, page: 0 };
  runAudit(null);
});
$('audit-next').addEventListener('click', () => runAudit(audit.next));
$('audit-csv').addEventListener('click', exportCsv);
document.addEventListener('visibilitychange', () => { if (!document.hidden) poll(); });
wireGrid();
if (key) poll();
else $('key').focus();
