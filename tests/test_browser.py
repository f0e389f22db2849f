"""The app in a real browser: ``streamlit run app.py`` on a free localhost port, driven by
headless Chromium (Playwright with the system executable). Uploads a real trace, waits for
the findings, checks the top finding against the library, and saves screenshots in
test-artifacts/ (gitignored)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from analyzer import analyze

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TRACE = Path("kineto/sglang_qwen3-8b_mi300x_prefill_decode.json.gz")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    port = _free_port()
    env = dict(os.environ, STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.port", str(port),
         "--server.headless", "true", "--server.address", "127.0.0.1"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"streamlit did not start: {log.read().decode(errors='replace')[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix="ta-chromium-"), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1400, "height": 1000})
        yield ctx
        ctx.close()


def _wait_idle(page) -> None:
    """Until the script run is over (Streamlit's running indicator gone)."""
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=90_000)


def _uploader(page):
    """The trace uploader (the first file input; the Options expander holds two more)."""
    return page.locator("[data-testid='stFileUploaderDropzoneInput']").first


def _upload(page, *paths) -> None:
    """Put files in the trace uploader; set them again if a rerun swallowed the first try
    (the sidebar can be re-mounted while the page settles)."""
    for _ in range(4):
        _uploader(page).set_input_files([str(p) for p in paths])
        try:
            page.locator("[data-testid='stFileChip']").first.wait_for(timeout=20_000)
            return
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: try again
            _wait_idle(page)
    raise AssertionError("the uploader never showed the file")


def test_upload_a_real_trace_in_the_browser(server, browser, shared_traces):
    path = shared_traces / TRACE
    want = analyze([path]).findings[0].title  # the library's answer for the same file
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server)
    # the demo sample is analysed on arrival: the page works before any upload
    page.locator(".st-key-finding-1").wait_for(timeout=90_000)
    _wait_idle(page)
    _uploader(page).set_input_files(str(path))
    # the demo has 2 files: wait for the page of the uploaded one (1 file), then for idle
    page.get_by_text(f"from 1 file(s) · top finding: {want}").wait_for(timeout=90_000)
    _wait_idle(page)
    card = page.locator(".st-key-finding-1 h5")
    title = card.inner_text().split("#1", 1)[1].strip()
    assert title == want
    assert page.get_by_role("radio", name="Upload traces").is_checked()
    assert page.locator("[data-testid='stDownloadButton']").count() == 4  # HTML, Markdown, JSON, Perfetto
    assert page.locator(".js-plotly-plot .main-svg").count() >= 3
    assert not page.locator("[data-testid='stException']").count()
    assert not errors, errors
    ARTIFACTS.mkdir(exist_ok=True)
    # Streamlit scrolls inside its main block: grow the viewport to the page for the shots
    height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": 1400, "height": min(int(height) + 40, 12_000)})
    page.wait_for_timeout(800)
    page.screenshot(path=str(ARTIFACTS / "app-upload-light.png"))
    page.emulate_media(color_scheme="dark")
    page.wait_for_timeout(800)
    page.screenshot(path=str(ARTIFACTS / "app-upload-dark.png"))
    page.close()


def test_html_report_draws_every_chart_offline(browser, tmp_path, shared_traces):
    """The CLI's HTML report opened from disk with every network request blocked: the
    compressed partial plotly.js inflates in the page, every chart is drawn, no console
    error, no request leaves the page; the size is recorded."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    out = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-m", "analyzer.cli", "analyze", str(shared_traces / TRACE),
                           "-f", "html", "-o", str(out)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    size = out.stat().st_size
    assert size <= 1_500_000, size
    page = browser.new_page()
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    def block(route):
        if not route.request.url.startswith("file:"):
            requests.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    page.route("**/*", block)
    page.goto(out.as_uri())
    n = page.locator("div.plot").count()
    assert n > 0
    page.wait_for_function(f"document.querySelectorAll('div.plot.js-plotly-plot').length === {n}",
                           timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "html_report_offline.png"), full_page=False)
    (ARTIFACTS / "html_report_size.txt").write_text(f"{size} bytes, {n} charts\n")
    page.close()
    assert not errors, errors
    assert not requests, requests


def test_replacing_and_mixing_uploads_in_the_browser(server, browser, shared_traces, tmp_path):
    """Upload one trace, then replace it with another: the second run is of the second file
    alone (no merge); then a bad file next to a good one: a visible warning names it."""
    first = shared_traces / "kineto/hta_rocm_mi250_toy.json.gz"
    second = shared_traces / TRACE
    page = browser.new_page()
    page.goto(server)
    page.locator(".st-key-finding-1").wait_for(timeout=180_000)
    _wait_idle(page)
    _upload(page, first)
    page.get_by_text(f"This run: {first.name}").wait_for(timeout=180_000)
    _wait_idle(page)
    # the uploader keeps earlier files until they are removed: remove the first, add the second
    page.get_by_role("button", name=f"Remove {first.name}").click()
    _wait_idle(page)
    _upload(page, second)
    page.get_by_text(f"This run: {second.name}").wait_for(timeout=180_000)
    _wait_idle(page)
    assert page.get_by_text("1 rank(s) from 1 file(s)").count() >= 1
    assert not page.get_by_text(first.name, exact=False).locator("visible=true").count() or \
        "This run: " + first.name not in page.inner_text("body")
    bad = tmp_path / "readme.json"
    bad.write_text('{"hello": "world"}')
    _uploader(page).set_input_files(str(bad))  # added next to the good one
    page.locator("[data-testid='stAlertContentWarning']").filter(has_text="readme.json").wait_for(timeout=180_000)
    _wait_idle(page)
    body = page.inner_text("body")
    assert "trace-analyzer-upload" not in body and "/tmp/" not in body
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app-mixed-upload.png"))
    page.close()
