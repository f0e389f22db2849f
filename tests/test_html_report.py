"""The self-contained HTML report and the figures behind it (analyzer.render.html / charts).

The browser checks open the file in headless Chromium with every non-file request aborted:
the plots must draw from the embedded plotly.js alone.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from analyzer import analyze
from analyzer.render import charts, render
from analyzer.render.html import evidence_items, render_html

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "sample_traces" / "synthetic" / "demo"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def demo_doc() -> dict:
    if not DEMO.is_dir():
        pytest.skip("sample_traces/synthetic/demo is absent")
    return analyze([DEMO]).to_dict()


@pytest.fixture(scope="module")
def demo_html(demo_doc) -> str:
    return render_html(demo_doc)


# ------------------------------------------------------------------------------------------
# the file itself
# ------------------------------------------------------------------------------------------


def test_one_self_contained_file(demo_doc, demo_html):
    assert demo_html.startswith("<!DOCTYPE html>")
    # no external resource of any kind
    assert not re.search(r"<script[^>]+src=", demo_html)
    assert not re.search(r"<link[^>]+href=", demo_html)
    assert "https://cdn.plot.ly/plotly" not in demo_html  # (plotly.js itself names cdn.plot.ly)
    # the partial plotly.js is embedded exactly once (compressed), and one newPlot per figure
    from analyzer.render.html import plotly_loader

    assert demo_html.count(plotly_loader()) == 1
    assert len(demo_html) < 1_500_000
    n_figs = sum(s.figure is not None for s in charts.report_sections(demo_doc))
    assert n_figs >= 4
    assert demo_html.count("Plotly.newPlot(") == n_figs


def test_findings_and_figures_are_in_the_page(demo_doc, demo_html):
    assert demo_doc["findings"], "the demo sample should produce findings"
    for i, f in enumerate(demo_doc["findings"], 1):
        assert f'data-finding-id="{f["id"]}"' in demo_html
        assert f">{f['title']}<" in demo_html.replace("&#x27;", "'")
    # cards are in rank order
    ids = re.findall(r'data-finding-id="([a-z0-9_]+)"', demo_html)
    assert ids == [f["id"] for f in demo_doc["findings"]]
    assert "prefers-color-scheme:dark" in demo_html
    assert "@media print" in demo_html


def test_untrusted_names_are_escaped(demo_doc):
    doc = copy.deepcopy(demo_doc)
    evil = "</script><img src=x onerror=alert(1)>"
    doc["ranks"][0]["top_kernels"][0]["name"] = evil
    doc["findings"][0]["title"] = evil
    doc["findings"][0]["evidence"]["top_kernels"] = [{"name": evil, "time_us": 1.0, "count": 1}]
    html = render_html(doc)
    assert evil not in html
    assert "<img src=x" not in html


def test_no_plotly_without_figures():
    doc = {"schema_version": "1.0", "tool": {"name": "trace-analyzer", "version": "0"},
           "inputs": [], "ranks": [], "findings": [], "summary": {
               "ranks": 0, "wall_us": 0.0, "busy_us": 0.0, "idle_us": 0.0, "busy_share": 0.0,
               "idle_share": 0.0, "categories": {}, "across_ranks": {},
               "communication": {"time_us": 0.0, "exposed_us": 0.0, "overlapped_us": 0.0, "by_collective": {}}}}
    html = render_html(doc)
    assert "Plotly.newPlot" not in html
    assert len(html) < 100_000
    assert "No finding" in html


def test_cli_writes_html(tmp_path):
    if not DEMO.is_dir():
        pytest.skip("no demo sample")
    out = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-m", "analyzer.cli", "analyze", str(DEMO), "--format", "html",
                           "-o", str(out)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and "Plotly.newPlot(" in text


# ------------------------------------------------------------------------------------------
# figures against the report's own figures (independent arithmetic here)
# ------------------------------------------------------------------------------------------


def test_category_bars_match_the_rank_figures(demo_doc):
    fig = charts.category_figure(demo_doc)
    ranks = demo_doc["ranks"]
    for trace in fig.data:
        for r, x in zip(ranks, trace.x):
            want = r["idle_us"] if trace.name == "idle" else r["categories"].get(trace.name, {}).get("time_us", 0.0)
            assert x == pytest.approx(want / 1000.0)
    # the stacked bar of each rank adds up to its wall time (categories may overlap: >=)
    for i, r in enumerate(ranks):
        total = sum(t.x[i] for t in fig.data)
        assert total >= r["wall_us"] / 1000.0 * (1 - 1e-9) or not r["categories"]


def test_skew_heatmap_is_deviation_from_median(demo_doc):
    df = charts.skew_frame(demo_doc)
    fig = charts.skew_figure(demo_doc)
    hm = fig.data[0]
    for j, col in enumerate(hm.x):
        values = list(df[col])
        med = statistics.median(values)
        for i in range(len(values)):
            want = round((values[i] - med) / med * 100) if med > 0 else 0
            assert hm.z[i][j] == pytest.approx(want, abs=0.5)


def test_communication_bars_split_exposed_and_overlapped(demo_doc):
    fig = charts.communication_figure(demo_doc)
    exposed = {t.name: t for t in fig.data}
    total = sum(exposed["exposed"].x) + sum(exposed["overlapped"].x)
    roles = [r for r in demo_doc["serving"]["communication"]["ranks"]]
    want = sum(v["time_us"] for r in roles for v in r["by_role"].values()) / 1000.0
    assert total == pytest.approx(want, rel=1e-6)


def test_kernel_filter_matches_a_plain_search(demo_doc):
    df = charts.kernels_table(demo_doc)
    got = charts.filter_kernels(df, "NVJET gemm")
    want = [k for k in df["kernel"] if "nvjet" in k.lower()]
    assert list(got["kernel"]) == [k for k in df["kernel"] if k in want]
    assert len(charts.filter_kernels(df, "")) == len(df)
    times = list(df["time (ms)"])
    assert times == sorted(times, reverse=True)


def test_steps_figure_from_a_step_timeline():
    """A report whose diagnosis timed its steps: points at the start times, gaps between."""
    steps = [{"step": i, "phase": "decode" if i else "prefill", "gpu_start_us": 1000.0 * i * 3,
              "gpu_span_us": 2000.0, "gpu_busy_us": 1900.0, "bs": 8, "tokens": 8} for i in range(5)]
    doc = {"serving": {"phases": {"ranks": [{"rank": 0, "timeline": steps}]}}}
    fig = charts.steps_figure(doc)
    xs = sorted(x for t in fig.data if t.type == "scatter" for x in t.x)
    assert xs == pytest.approx([0, 3, 6, 9, 12])  # ms
    gaps = [t for t in fig.data if t.type == "bar"]
    assert len(gaps) == 1 and list(gaps[0].y) == pytest.approx([1.0] * 4)  # 3 ms apart, 2 ms long


def test_evidence_formatting_uses_the_key_units():
    items = dict(evidence_items({
        "wall_us": 1500.0, "hbm_gbps": 3350, "straggler_last_share": 0.5, "growth": "quadratic",
        "missing": None, "top_kernels": [{"name": "k1", "time_us": 2_000_000.0, "count": 3}],
        "wait_us_by_rank": {"0": 1500.0},
    }))
    assert items["wall"] == ["1.5 ms"]
    assert items["HBM"] == ["3,350 GB/s"]
    assert items["straggler last share"] == ["50.0%"]
    assert items["growth"] == ["quadratic"]
    assert "missing" not in items
    assert items["top kernels"] == ["k1 — time 2.00 s, 3×"]
    assert items["wait by rank"] == ["0 1.5 ms"]


# ------------------------------------------------------------------------------------------
# in a browser, offline
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser_ctx_factory():
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    pw = sync_api.sync_playwright().start()
    made = []

    def make(scheme: str = "light"):
        ctx = pw.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix="ta-chromium-"), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1280, "height": 900}, color_scheme=scheme)
        made.append(ctx)
        return ctx

    yield make
    for c in made:
        c.close()
    pw.stop()


@pytest.mark.browser
def test_html_renders_its_plots_offline(demo_doc, demo_html, tmp_path, browser_ctx_factory):
    path = tmp_path / "report.html"
    path.write_text(demo_html)
    ARTIFACTS.mkdir(exist_ok=True)
    n_figs = demo_html.count("Plotly.newPlot(")
    ctx = browser_ctx_factory("light")
    blocked: list[str] = []
    ctx.route(re.compile(r"^(?!file:).*"), lambda route: (blocked.append(route.request.url), route.abort()))
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_function(f"document.querySelectorAll('.plot .main-svg').length >= {n_figs}",
                           timeout=20_000)
    plots = page.locator("div.plot")
    assert plots.count() == n_figs
    for i in range(n_figs):
        assert plots.nth(i).locator(".main-svg").count() >= 1
        assert plots.nth(i).locator("g.trace, .heatmaplayer image, .hm image").count() >= 1
    assert not errors, errors
    assert blocked == []
    # the top finding is the first card
    assert page.locator("article.card h3").first.inner_text() == demo_doc["findings"][0]["title"]
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(255, 255, 255)"
    page.screenshot(path=str(ARTIFACTS / "html-report-light.png"), full_page=True)
    # dark: the page and the plots' text follow prefers-color-scheme
    page.emulate_media(color_scheme="dark")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != "rgb(255, 255, 255)"
    tick = page.locator(".plot .xtick text").first
    assert tick.evaluate("e => getComputedStyle(e).fill") == page.evaluate(
        "getComputedStyle(document.body).color")
    page.screenshot(path=str(ARTIFACTS / "html-report-dark.png"))
    # print: the search box goes, the plots stay
    page.emulate_media(media="print", color_scheme="light")
    assert page.locator("input.search").is_hidden()
    assert page.locator(".plot .main-svg").count() >= n_figs


def test_render_dispatch_routes_html(demo_doc):
    assert render(demo_doc, "html").startswith("<!DOCTYPE html>")
    json.dumps(demo_doc, allow_nan=False)


def test_a_view_that_cannot_be_drawn_says_so(demo_doc):
    doc = copy.deepcopy(demo_doc)
    doc["serving"]["gaps"] = {"ranks": [{"rank": 0, "by_cause_us": {"scheduler": "lots"}, "idle_us": 5.0}]}
    sections = {s.key: s for s in charts.report_sections(doc)}
    assert sections["gaps"].figure is None
    assert sections["gaps"].note.startswith("Could not draw this view (")
    assert sections["categories"].figure is not None  # the others still draw
    assert "Could not draw this view" in render_html(doc)


def test_report_figures_are_cartesian_and_bundle_matches_plotly(demo_doc):
    """Every chart type of a report is one the shipped partial bundle draws, and the bundle is
    the plotly.js version of the installed plotly package (so the figure JSON matches it)."""
    import gzip
    import re
    from importlib import resources

    from analyzer.render import charts
    from analyzer.render.html import CARTESIAN_TRACES, PLOTLY_PARTIAL, PLOTLY_PARTIAL_VERSION, plotly_js

    types = {t.type for s in charts.report_sections(demo_doc) if s.figure is not None for t in s.figure.data}
    assert types and types <= CARTESIAN_TRACES, types
    full = re.search(r"plotly\.js v([0-9.]+)", plotly_js()[:4000]).group(1)
    js = gzip.decompress(resources.files("analyzer.render").joinpath(PLOTLY_PARTIAL).read_bytes()).decode()
    assert full == PLOTLY_PARTIAL_VERSION and f"v{full}" in js[:4000]


def test_markdown_fits_a_ticket(demo_doc):
    """Summary first, no chart, no link, every table under 100 rows even for 128 ranks."""
    import copy
    import re

    from analyzer.render import render

    doc = copy.deepcopy(demo_doc)
    doc["ranks"] = [dict(doc["ranks"][0], rank=i) for i in range(128)]
    md = render(doc, "markdown")
    lines = md.splitlines()
    first_section = next(i for i, ln in enumerate(lines) if ln.startswith("## "))
    assert any(ln.startswith("**Summary.**") for ln in lines[:first_section])
    assert not re.search(r"\]\(|https?://|<img|<script", md)
    run = 0
    for ln in lines + [""]:
        run = run + 1 if ln.startswith("|") else 0
        assert run < 100
