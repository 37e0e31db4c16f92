// Shared helpers for the k6 scripts: base URL, auth, submit and poll.
import http from 'k6/http';

export const BASE = __ENV.BASE_URL || 'http://127.0.0.1:8080';
export const KEY = __ENV.API_KEY || 'loadtest-key-0001';

export function headers() {
  return { headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' } };
}

export function submit(body, wait) {
  const url = wait ? `${BASE}/v1/jobs?wait=${wait}` : `${BASE}/v1/jobs`;
  return http.post(url, JSON.stringify(body), Object.assign(headers(), { tags: { name: 'POST /v1/jobs' } }));
}

export function chunks(path, from, wait, limit) {
  return http.get(`${BASE}${path}?from=${from}&limit=${limit || 100}&wait=${wait}`,
    Object.assign(headers(), { tags: { name: `GET ${path.replace(/\/v1\/(jobs|offsets)\/[^/]+/, '/v1/$1/{id}')}` } }));
}
