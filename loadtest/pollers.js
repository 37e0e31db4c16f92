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
// once a second, and starts over at the end (a new dashboard on the same
// offset). VUs start at random positions so reads spread over the result.
const PAGE = parseInt(__ENV.PAGE || '10');
let position = -1;

export default function (data) {
  const offset = data.offsets[__VU % data.offsets.length];
  if (position < 0) position = Math.floor(Math.random() * 50);
  const res = chunks(`/v1/offsets/${offset}/chunks`, position, 0, PAGE);
  const ok = check(res, { 'poll 200': (r) => r.status === 200 });
  if (ok) {
    const page = res.json();
    const last = page.chunks.length > 0 && page.chunks[page.chunks.length - 1].isLast;
    position = last ? 0 : page.next;
  }
  sleep(1);
}
