// (a) 100 concurrent long queries: 90-day range, regex filter, each unique
// (so no dedup). Measures submit -> first chunk readable as `first_chunk_ms`.
// Run the server with PSEUDOSTREAM_RATE_LIMIT=0/1s (one key for every VU).
import { check } from 'k6';
import { Trend, Counter } from 'k6/metrics';
import { submit, chunks } from './lib.js';

const firstChunk = new Trend('first_chunk_ms', true);
const completed = new Counter('jobs_completed');

export const options = {
  scenarios: {
    long: { executor: 'per-vu-iterations', vus: 100, iterations: 1, maxDuration: '10m' },
  },
  thresholds: {
    first_chunk_ms: ['p(95)<100'],
    checks: ['rate==1'],
    http_req_failed: ['rate==0'],
  },
};

export default function () {
  const started = Date.now();
  const body = {
    // Unique per VU: a different regex suffix and row cap.
    filter: `endpoint ~ "^/api/v[12]/(orders|cart)" and message !~ "cache hit ${__VU}$" and latency_ms > 1`,
    timeRange: { last: '90d' },
    maxRows: 100000 + __VU,
  };
  const res = submit(body, 5);
  check(res, { 'accepted': (r) => r.status === 202 });
  if (res.status !== 202) return;
  const job = res.json();
  let next = 0;
  if (job.firstChunk) {
    firstChunk.add(Date.now() - started);
    next = 1;
  }
  for (;;) {
    const page = chunks(`/v1/jobs/${job.jobId}/chunks`, next, 20);
    if (!check(page, { 'chunks 200': (r) => r.status === 200 })) return;
    const p = page.json();
    if (next === 0 && p.chunks.length > 0) firstChunk.add(Date.now() - started);
    next = p.next;
    if (p.chunks.length > 0 && p.chunks[p.chunks.length - 1].isLast) {
      completed.add(1);
      check(p.chunks[p.chunks.length - 1], { 'completed': (c) => c.status === 'completed' });
      return;
    }
  }
}
