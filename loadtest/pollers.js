// (b) 2,500 virtual dashboard users polling offsets for several minutes.
// Setup submits one job per offset it will use; every VU then polls its
// offset's chunks (short waits), like a dashboard connector. Zero errors.
import { check, sleep } from 'k6';
import { submit, chunks } from './lib.js';

const OFFSETS = parseInt(__ENV.OFFSETS || '50');
const DURATION = __ENV.DURATION || '3m';

export const options = {
  setupTimeout: '120s',
  scenarios: {
    pollers: { executor: 'constant-vus', vus: parseInt(__ENV.VUS || '2500'), duration: DURATION },
  },
  thresholds: {
    http_req_failed: ['rate==0'],
    'http_req_duration{name:GET /v1/offsets/{id}/chunks}': ['p(99)<50'],
    checks: ['rate==1'],
  },
};

export function setup() {
  const offsets = [];
  for (let i = 0; i < OFFSETS; i++) {
    const res = submit({ filter: `status = ${[200, 201, 204, 404, 500][i % 5]} and bytes > ${i}`, timeRange: { last: '7d' }, maxRows: 5000 });
    if (res.status === 202) offsets.push(res.json().offset);
  }
  return { offsets };
}

// Each VU is one dashboard: it reads its offset a page at a time from where
// it left off (PAGE chunks = PAGE x 10 rows, what a dashboard panel shows),
// about once a second, and starts over at the end (a new dashboard on the same
// offset). VUs start at random positions so reads spread over the result.
const PAGE = parseInt(__ENV.PAGE || '10');
let position = -1;

export default function (data) {
  const offset = data.offsets[__VU % data.offsets.length];
  if (position < 0) position = Math.floor(Math.random() * 50);
  const res = chunks(`/v1/offsets/${offset}/chunks`, position, 0, PAGE);
  const ok = check(res, { 'poll 200': (r) => r.status === 200 });
  if (ok) {
    // Only the two fields the loop needs, picked out by k6's Go-side JSON
    // selector: building every page as JavaScript objects took 1.5 of the
    // machine's 2 cores, and the load generator's CPU, not the server's,
    // then set the latency k6 measured (the server used 0.1 cores).
    const count = res.json('chunks.#');
    const last = count > 0 && res.json(`chunks.${count - 1}.isLast`) === true;
    position = last ? 0 : res.json('next');
  }
  // Once a second on average, with jitter: 2,500 independent dashboards do
  // not poll in step, and a fixed sleep kept the VUs (which all start
  // together) polling in one burst a second.
  sleep(0.5 + Math.random());
}
