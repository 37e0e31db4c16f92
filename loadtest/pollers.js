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

export default function (data) {
  const offset = data.offsets[__VU % data.offsets.length];
  let from = Math.floor(Math.random() * 50);
  const res = chunks(`/v1/offsets/${offset}/chunks`, from, 0);
  check(res, { 'poll 200': (r) => r.status === 200 });
  sleep(1);
}
