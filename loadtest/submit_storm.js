// (c) A submit storm of unique filters: admission throughput and clean
// rejections (202, or 503 + Retry-After when the pool is full; never 5xx
// other than those, never an error body that is not problem+json).
import { check } from 'k6';
import { Counter } from 'k6/metrics';
import { submit } from './lib.js';

const accepted = new Counter('accepted');
const poolFull = new Counter('pool_full');

export const options = {
  scenarios: {
    storm: { executor: 'constant-arrival-rate', rate: parseInt(__ENV.RATE || '500'), timeUnit: '1s', duration: __ENV.DURATION || '30s', preAllocatedVUs: 200, maxVUs: 1000 },
  },
  thresholds: {
    checks: ['rate==1'],
    'http_req_duration{name:POST /v1/jobs}': ['p(99)<100'],
  },
};

export default function () {
  const n = `${__VU}-${__ITER}`;
  const res = submit({ filter: `message contains "${n}" or customer = "cust-${n}"`, timeRange: { last: '1d' }, maxRows: 100 });
  if (res.status === 202) accepted.add(1);
  if (res.status === 503) poolFull.add(1);
  check(res, {
    'accepted or pool full': (r) => r.status === 202 || (r.status === 503 && r.headers['Retry-After'] !== undefined),
    'errors are problems': (r) => r.status === 202 || r.headers['Content-Type'] === 'application/problem+json',
  });
}
