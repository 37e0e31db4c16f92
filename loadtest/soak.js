// The soak (docs/RELIABILITY.md): DASHBOARDS long-polling dashboards plus
// RATE submissions a second, for DURATION, against a server whose offset
// pool is small enough that every offset's job is replaced several times
// in the run. Run by loadtest/soak.sh, which starts the server on the
// distributed stack, samples its RSS and applies the pass rule.
//
// Every dashboard is configured with one offset (VU mod OFFSETS, like a
// dashboard connector's `offset=42`) and follows whatever job holds it:
// it reads the result a page at a time, long-polls (`wait=20`) at the head
// of a running job, and starts over at chunk 0 when a new job replaces the
// one it was reading.
//
// What is an error (the `errors` counter, threshold 0, and k6's
// `http_req_failed`): any transport error or timeout, and any status but
//  - 202 for a submission (a 429 or 503 means the soak's limits are wrong
//    or the pool leaks offsets: soak.sh turns the rate limit off and sizes
//    the pool for the submission rate);
//  - 200 for an offset read, or 404 `offset-not-found` while the offset is
//    between two jobs (its last job expired, the next one not yet leased):
//    a dashboard's normal "nothing here yet", counted as `offset_vacant`.
// A page whose chunks do not continue where the dashboard left off (a gap
// or a repeat in `chunkSeq`), and a result whose last chunk says anything
// but `completed` (a row cap reached is `completed` + `truncated`), are
// errors too.
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter } from 'k6/metrics';
import { BASE, headers } from './lib.js';

const OFFSETS = parseInt(__ENV.OFFSETS || '45');
const DASHBOARDS = parseInt(__ENV.DASHBOARDS || '2500');
const RATE = parseInt(__ENV.RATE || '1');
const DURATION = __ENV.DURATION || '10m';
const WAIT = parseInt(__ENV.WAIT || '20');
const PAGE = parseInt(__ENV.PAGE || '10');
// Row caps of the submitted jobs: small enough that 600 results fit in a
// memory broker, large enough that a result takes several pages.
const MAX_ROWS = parseInt(__ENV.MAX_ROWS || '2000');
// The range the submissions draw from, at most the dataset's days.
const DAYS = parseInt(__ENV.DAYS || '90');

const errors = new Counter('errors');
const vacant = new Counter('offset_vacant');
const replaced = new Counter('job_replaced');
const finished = new Counter('results_read');
const accepted = new Counter('submissions_accepted');
const shared = new Counter('submissions_deduplicated');

export const options = {
  scenarios: {
    dashboards: { executor: 'constant-vus', vus: DASHBOARDS, duration: DURATION, exec: 'dashboard' },
    submissions: {
      executor: 'constant-arrival-rate', rate: RATE, timeUnit: '1s', duration: DURATION,
      preAllocatedVUs: 4, maxVUs: 20, exec: 'submission',
    },
  },
  thresholds: {
    errors: ['count==0'],
    http_req_failed: ['rate==0'],
    checks: ['rate==1'],
  },
  // The per-minute figures come from soak.sh; k6's own summary is enough.
  summaryTrendStats: ['med', 'p(95)', 'p(99)', 'max'],
};

const SERVICES = ['checkout', 'payments', 'search', 'auth', 'inventory', 'shipping',
  'catalog', 'cart', 'notifications', 'recommendations', 'pricing', 'gateway'];
const REGIONS = ['us-east-1', 'us-west-2', 'eu-west-1', 'eu-central-1', 'ap-southeast-1'];
const STATUSES = [200, 201, 204, 404, 429, 500, 502, 503];
const RANGES = ['1h', '6h', '24h', '3d', '7d', '30d', '90d'];

function pick(list) {
  return list[Math.floor(Math.random() * list.length)];
}

// A dashboard panel's query: a few dimensions, sometimes a regex, sometimes
// a field list or ascending order; one in five looks for a rare event. Drawn at random from tens of thousands
// of combinations, so almost every submission is a new job; the odd repeat
// is shared (deduplicated), as refreshing dashboards are.
function query() {
  const ranges = RANGES.filter((r) => !r.endsWith('d') || parseInt(r) <= DAYS);
  if (Math.random() < 0.2) {
    // A rare event over the longest ranges: the job scans for a while, and
    // its dashboards long-poll at the head of a running job.
    return {
      filter: `status = 503 and message ~ "cpu at 9${Math.floor(Math.random() * 10)}% on node_${Math.floor(Math.random() * 8)}$"`,
      timeRange: { last: pick(ranges.slice(-2)) },
      maxRows: MAX_ROWS,
    };
  }
  const terms = [`service = "${pick(SERVICES)}"`];
  switch (Math.floor(Math.random() * 5)) {
    case 0: terms.push(`status = ${pick(STATUSES)}`); break;
    case 1: terms.push(`status >= 500 and region = "${pick(REGIONS)}"`); break;
    case 2: terms.push(`endpoint ~ "^/api/v[12]/" and latency_ms > ${Math.floor(Math.random() * 900)}`); break;
    case 3: terms.push(`message ~ "(not found|timeout|error)" and not region = "${pick(REGIONS)}"`); break;
    default: terms.push(`bytes > ${Math.floor(Math.random() * 4096)} and method in ("GET", "POST")`);
  }
  const body = {
    filter: terms.join(' and '),
    timeRange: { last: pick(ranges) },
    maxRows: 100 + Math.floor(Math.random() * (MAX_ROWS - 100)),
  };
  if (Math.random() < 0.3) body.fields = ['ts', 'service', 'status', 'latency_ms', 'message'];
  if (Math.random() < 0.2) body.order = 'asc';
  return body;
}

// A sample of 0, so the `errors` threshold has data when nothing failed.
export function setup() {
  errors.add(0);
}

export function submission() {
  const res = http.post(`${BASE}/v1/jobs`, JSON.stringify(query()), Object.assign(headers(), {
    tags: { name: 'POST /v1/jobs' },
    responseCallback: http.expectedStatuses(202),
  }));
  if (!check(res, { 'submission 202': (r) => r.status === 202 })) {
    errors.add(1, { what: 'submission', status: String(res.status) });
    console.warn(`submission ${res.status}: ${res.body}`);
    return;
  }
  accepted.add(1);
  if (res.json('deduplicated') === true) shared.add(1);
}

// One dashboard's state: the job it is reading and where it stands.
let job = null;
let from = 0;
let lastSeq = -1;

const offsetRead = { responseCallback: http.expectedStatuses(200, 404) };

export function dashboard() {
  const offset = __VU % OFFSETS;
  const res = http.get(`${BASE}/v1/offsets/${offset}/chunks?from=${from}&limit=${PAGE}&wait=${WAIT}`,
    Object.assign(headers(), offsetRead, { tags: { name: 'GET /v1/offsets/{n}/chunks' } }));
  if (res.status === 404 && res.json('type') === 'https://pseudostream.dev/problems/offset-not-found') {
    vacant.add(1);
    sleep(2 + 3 * Math.random());
    return;
  }
  if (!check(res, { 'offset read 200': (r) => r.status === 200 })) {
    errors.add(1, { what: 'offset read', status: String(res.status) });
    console.warn(`offset ${offset} read ${res.status}: ${res.body}`);
    sleep(1);
    return;
  }
  // Only the fields the loop needs, by k6's Go-side JSON selector: parsing
  // every page into JavaScript objects costs the load generator the CPU the
  // server needs (see pollers.js).
  const id = res.json('jobId');
  if (id !== job) {
    if (job !== null) replaced.add(1);
    job = id;
    lastSeq = -1;
    if (from !== 0) {
      from = 0; // a new job at the offset: read it from its start
      return;
    }
  }
  const count = res.json('chunks.#');
  if (count > 0) {
    const first = res.json('chunks.0.chunkSeq');
    const last = res.json(`chunks.${count - 1}.chunkSeq`);
    if (first !== lastSeq + 1 || last !== first + count - 1) {
      errors.add(1, { what: 'chunk sequence' });
      console.warn(`offset ${offset} job ${id}: chunks ${first}..${last} after ${lastSeq}`);
    }
    lastSeq = last;
    from = res.json('next');
    if (res.json(`chunks.${count - 1}.isLast`) === true) {
      finished.add(1);
      const ended = res.json(`chunks.${count - 1}.status`);
      if (ended !== 'completed') {
        errors.add(1, { what: 'job ended', status: String(ended) });
        console.warn(`offset ${offset} job ${id} ended ${ended}: ${res.json(`chunks.${count - 1}.error`)}`);
      }
      // The result is complete: the panel shows it, and checks for a new
      // job now and then. Under the server's 10 s keep-alive idle limit, so
      // the connection is reused rather than raced against its closing.
      sleep(3 + 4 * Math.random());
    } else {
      sleep(0.2 + 0.3 * Math.random()); // rendering the page
    }
    return;
  }
  // Nothing new: a running job's long-poll ran out (poll again at once), or
  // the job had finished before this dashboard's first read of it.
  const status = res.json('status');
  if (status !== 'queued' && status !== 'running') sleep(3 + 4 * Math.random());
}
