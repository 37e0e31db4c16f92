#!/usr/bin/env python3
"""The ops page in a real browser: headless Chromium (Debian's) driven by
Playwright, against the real server binary with jobs running.

Starts `pseudostream serve` on a free port over a small demo dataset,
submits jobs over HTTP, then in the page: a `query` key is refused with a
visible message; the ops key shows leased offsets in the grid (and another
tenant's as taken); a long job appears in the jobs table and finishes; an
audit search by its fingerprint finds it; hover and the arrow keys show an
offset's job. Any Content-Security-Policy violation or script error fails
the run. Saves a screenshot of the page.

    python3 tests/browser/ops_page.py [--bin target/debug/pseudostream] \
        [--screenshot docs/ops-page.png]

Needs `pip install playwright` and Chromium at /usr/bin/chromium
(`apt-get install chromium`); never `playwright install`.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

OPS_KEY = "browser-ops-key-0001"
QUERY_KEY = "browser-query-key-01"
OTHER_TENANT_KEY = "browser-other-key-01"
# One key per user: the rate limit (1 job a minute per user) then lets
# each submit once and turns a second try into a visible 429.
USERS = ["ann", "ben", "cat", "dan", "eve", "fay"]
USER_KEYS = {user: f"browser-{user}-key-00001" for user in USERS}
# Users of the long jobs: one cancelled from the page, one running in the
# screenshot.
LONG_KEYS = {user: f"browser-{user}-key-00001" for user in ["gus", "hal"]}
TIMEOUT_MS = 20_000


def log(message):
    print(f"[ops-page {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Server:
    """The real binary on a free port, in a temp data dir."""

    def __init__(self, binary, work):
        keys = [
            f"{OPS_KEY}=olga:acme:ops",
            f"{QUERY_KEY}=quinn:acme:query",
            f"{OTHER_TENANT_KEY}=zed:globex:query",
        ] + [
            f"{key}={user}:acme:query"
            for user, key in {**USER_KEYS, **LONG_KEYS}.items()
        ]
        env = dict(
            os.environ,
            PSEUDOSTREAM_LISTEN="127.0.0.1:0",
            PSEUDOSTREAM_DATA_DIR=str(work / "data"),
            # Generated in about 5 s; a job over all of it runs for about
            # ten (time to catch it running and cancel it from the page,
            # whose table refreshes once a second).
            PSEUDOSTREAM_DEMO_DAYS="3",
            PSEUDOSTREAM_DEMO_ROWS_PER_DAY="1000000",
            PSEUDOSTREAM_MAX_ROWS="3000000",
            PSEUDOSTREAM_API_KEYS=",".join(keys),
            PSEUDOSTREAM_RATE_LIMIT="1/60s",
            PSEUDOSTREAM_RESULT_TTL="5m",
            RUST_LOG="warn",
        )
        self.stdout = open(work / "stdout", "w+")
        self.stderr = open(work / "stderr", "w+")
        self.process = subprocess.Popen(
            [str(binary), "serve"], env=env, stdout=self.stdout, stderr=self.stderr
        )
        self.base = self._wait_ready()

    def _wait_ready(self):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited during start-up:\n{self.output()}")
            self.stdout.seek(0)
            found = re.search(r"^pseudostream listening on (http://\S+)$", self.stdout.read(), re.M)
            if found:
                try:
                    urllib.request.urlopen(found.group(1) + "/readyz", timeout=2)
                    return found.group(1)
                except (urllib.error.URLError, OSError):
                    pass
            time.sleep(0.1)
        raise SystemExit(f"the server was not ready within 120 s:\n{self.output()}")

    def output(self):
        self.stdout.seek(0)
        self.stderr.seek(0)
        return self.stdout.read() + self.stderr.read()

    def request(self, key, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {key}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def submit(self, key, filter_text, **extra):
        body = {"filter": filter_text, "timeRange": {"last": "7d"}, **extra}
        return self.request(key, "POST", "/v1/jobs", body)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if "panicked" in self.output():
            raise SystemExit(f"the server panicked:\n{self.output()}")


def submit_background_jobs(server):
    """Quick jobs from six users (they finish and keep their offsets), one
    from another tenant, and a few 429s for the rejection chart."""
    jobs = []
    for n, (user, key) in enumerate(USER_KEYS.items()):
        status, body = server.submit(key, f"status >= {400 + n} and service = \"checkout\"")
        assert status == 202, (status, body)
        jobs.append(body)
    status, body = server.submit(OTHER_TENANT_KEY, "status = 503")
    assert status == 202, (status, body)
    for _ in range(3):
        status, body = server.submit(USER_KEYS["ann"], "status = 418")
        assert status == 429, (status, body)
    return jobs, body


def run(page, server, screenshot):
    problems = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on(
        "console",
        lambda message: problems.append(f"console {message.type}: {message.text}")
        if message.type == "error"
        else None,
    )
    page.goto(server.base + "/ops")
    expect(page.get_by_role("heading", name="Sign in with an ops key")).to_be_visible()

    log("a query key is refused with a visible message")
    page.get_by_label("API key").fill(QUERY_KEY)
    page.get_by_role("button", name="Use key").click()
    message = page.locator("#message")
    expect(message).to_be_visible()
    expect(message).to_contain_text("403")
    expect(message).to_contain_text("`ops` role")
    expect(page.locator("#dashboard")).to_be_hidden()
    # The refused key is not kept.
    assert page.evaluate("sessionStorage.getItem('pseudostream.opsKey')") is None
    # The 403 is the one console error a refused key may cause.
    problems[:] = [p for p in problems if "403" not in p]

    jobs, _ = submit_background_jobs(server)

    log("the ops key shows the pool")
    page.get_by_label("API key").fill(OPS_KEY)
    page.get_by_role("button", name="Use key").click()
    expect(page.locator("#dashboard")).to_be_visible()
    expect(message).to_be_hidden()
    expect(page.locator("#who")).to_have_text("olga · tenant acme")
    assert page.evaluate("sessionStorage.getItem('pseudostream.opsKey')") == OPS_KEY
    cells = page.locator("#grid [role=gridcell]")
    expect(cells).to_have_count(1000)
    for job in jobs:
        cell = page.locator(f"#grid [data-offset='{job['offset']}']")
        expect(cell).not_to_have_class(re.compile(r"\bfree\b"), timeout=TIMEOUT_MS)
    expect(page.locator("#grid .cell.other")).to_have_count(1)
    expect(page.locator("#pool-count")).to_contain_text("7 of 1000 leased")
    expect(page.locator("#jobs-count")).to_have_text("(6)")

    log("a long job appears and finishes")
    status, long_job = server.submit(QUERY_KEY, "", maxRows=500000)
    assert status == 202, (status, long_job)
    short_id = long_job["jobId"][-8:]
    row = page.locator("#jobs tbody tr", has_text=short_id)
    expect(row).to_be_visible(timeout=TIMEOUT_MS)
    first_status = row.locator("td.status").inner_text()
    log(f"  first seen as {first_status}")
    expect(row.locator("td.status")).to_have_text("completed", timeout=60_000)
    expect(row.get_by_role("button", name=re.compile("^Cancel"))).to_be_hidden()
    cell = page.locator(f"#grid [data-offset='{long_job['offset']}']")
    expect(cell).to_have_class(re.compile(r"\bcompleted\b"))

    log("hover and keyboard show an offset's job")
    cell.hover()
    tip = page.locator("#tip")
    expect(tip).to_be_visible()
    expect(tip).to_contain_text(long_job["jobId"])
    expect(tip).to_contain_text("user quinn")
    # Signing in focused the grid's first cell; focus another, then move.
    start = jobs[1]["offset"]
    page.locator(f"#grid [data-offset='{start}']").focus()
    expect(page.locator("#cell-detail")).to_contain_text(jobs[1]["jobId"])
    page.keyboard.press("ArrowRight")
    focused = page.evaluate("document.activeElement.dataset.offset")
    assert focused == str(start + 1), focused
    expect(page.locator("#cell-detail")).to_contain_text(f"Offset {start + 1}:")
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.dataset.offset") == str(start + 41)

    log("an audit search finds the long job")
    form = page.locator("#audit-form")
    form.get_by_label("Fingerprint").fill(long_job["fingerprint"])
    form.get_by_role("button", name="Search").click()
    found = page.locator("#audit tbody tr")
    expect(found).to_have_count(1, timeout=TIMEOUT_MS)
    expect(found.first).to_contain_text(short_id)
    expect(found.first).to_contain_text("completed")
    expect(found.first).to_contain_text("quinn")
    # Then the tenant's whole trail: one page holds it.
    form.get_by_label("Fingerprint").fill("")
    form.get_by_label("Per page").select_option("25")
    form.get_by_role("button", name="Search").click()
    expect(page.locator("#audit-status")).to_contain_text("Page 1: 7 entries")

    log("a running job is cancelled from the page")
    status, doomed = server.submit(LONG_KEYS["gus"], "", maxRows=3000000)
    assert status == 202, (status, doomed)
    row = page.locator("#jobs tbody tr", has_text=doomed["jobId"][-8:])
    expect(row.locator("td.status")).to_have_text("running", timeout=TIMEOUT_MS)
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=re.compile("^Cancel job")).click()
    expect(message).to_contain_text(f"Cancel requested for job {doomed['jobId']}")
    expect(row.locator("td.status")).to_have_text("cancelled", timeout=TIMEOUT_MS)
    cell = page.locator(f"#grid [data-offset='{doomed['offset']}']")
    expect(cell).to_have_class(re.compile(r"\bcancelled\b"))

    expect(page.locator("#rejections-summary")).to_contain_text("3 × 429")
    expect(page.locator("#latency-summary")).to_contain_text("first chunks")
    # The screenshot shows a job running.
    # Another row cap than the cancelled job's: the same query would join it.
    status, running = server.submit(LONG_KEYS["hal"], "", maxRows=2900000)
    assert status == 202, (status, running)
    row = page.locator("#jobs tbody tr", has_text=running["jobId"][-8:])
    expect(row.locator("td.status")).to_have_text("running", timeout=TIMEOUT_MS)
    page.locator("body").click(position={"x": 5, "y": 5})
    page.screenshot(path=str(screenshot), full_page=True)
    log(f"screenshot: {screenshot}")
    if problems:
        raise SystemExit("the page reported problems:\n" + "\n".join(problems))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    parser.add_argument("--bin", default=f"{target}/debug/pseudostream")
    parser.add_argument("--screenshot", default="docs/ops-page.png")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ops-page-") as tmp:
        work = Path(tmp)
        # A copy: a shared target dir may get another checkout's binary mid-run.
        binary = work / "pseudostream"
        shutil.copy2(args.bin, binary)
        server = Server(binary, work)
        log(f"server ready at {server.base} after {time.monotonic() - started:.1f} s")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=args.chromium)
                try:
                    page = browser.new_page(viewport={"width": 1366, "height": 768})
                    page.set_default_timeout(TIMEOUT_MS)
                    run(page, server, Path(args.screenshot))
                finally:
                    browser.close()
        except BaseException:
            print(server.output()[-4000:], file=sys.stderr)
            raise
        finally:
            server.stop()
    log(f"passed in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
