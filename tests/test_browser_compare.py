"""The Compare page in a real browser (headless Chromium against ``streamlit run app.py``,
as tests/test_browser.py does): upload two real traces, see the verdict the library gives."""

from __future__ import annotations

import pytest
from test_browser import ARTIFACTS, _wait_idle, browser, server  # noqa: F401 (fixtures)

from analyzer import analyze
from analyzer.diff import compare

pytestmark = pytest.mark.browser


def test_compare_two_traces_in_the_browser(server, browser, shared_traces):  # noqa: F811
    b = shared_traces / "kineto/hta_recsys_2ranks/sampled_rank-0.json.gz"
    n = shared_traces / "kineto/hta_recsys_2ranks/sampled_rank-1.json.gz"
    want = compare(analyze([b]).to_dict(), analyze([n]).to_dict())["verdict"][0]["title"]
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{server}/compare")
    page.get_by_text("Upload the base run").wait_for(timeout=90_000)
    page.locator(".st-key-compare-base [data-testid='stFileUploaderDropzoneInput']").set_input_files(str(b))
    _wait_idle(page)
    page.locator(".st-key-compare-new [data-testid='stFileUploaderDropzoneInput']").set_input_files(str(n))
    page.locator(".st-key-verdict-1").wait_for(timeout=90_000)
    _wait_idle(page)
    title = page.locator(".st-key-verdict-1 h5").inner_text().split("#1", 1)[1].strip()
    assert title == want
    page.locator("[data-testid='stDownloadButton']").nth(2).wait_for(timeout=60_000)
    page.locator(".js-plotly-plot .main-svg").nth(1).wait_for(timeout=60_000)
    assert page.locator("[data-testid='stDownloadButton']").count() == 3
    assert page.locator(".js-plotly-plot .main-svg").count() >= 2
    assert not page.locator("[data-testid='stException']").count()
    assert not errors, errors
    ARTIFACTS.mkdir(exist_ok=True)
    # Streamlit scrolls inside its main block: grow the viewport to the page for the shot
    height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": 1400, "height": min(int(height) + 40, 12_000)})
    page.wait_for_timeout(800)
    page.screenshot(path=str(ARTIFACTS / "app-compare.png"))
    page.close()
