"""The app's Compare page: AppTest flows (two uploads, a saved report on one side, errors)
and its library side (analyzer.webapp.compare)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analyzer import analyze
from analyzer.diff import compare
from analyzer.webapp.compare import build_compare_page, side_report
from analyzer.webapp.page import md_escape
from analyzer.webapp.uploads import Limits, Upload

REPO = Path(__file__).resolve().parent.parent
RECSYS = Path("kineto/hta_recsys_2ranks")
LIMITS = Limits.from_upload_mb(64)

st_testing = pytest.importorskip("streamlit.testing.v1")


@pytest.fixture
def page():
    at = st_testing.AppTest.from_string(
        f"import sys; sys.path.insert(0, {str(REPO)!r})\nfrom app import compare_page\ncompare_page()\n",
        default_timeout=90)
    at.run()
    assert not at.exception, at.exception
    return at


def _verdict_titles(at) -> list[str]:
    return [m.value.split("] &nbsp;", 1)[1] for m in at.markdown if m.value.startswith("##### :")]


def test_compare_asks_for_both_sides(page):
    assert any("Upload the base run" in i.value for i in page.info)
    assert not page.error


def test_compare_two_uploaded_traces_shows_the_verdict(page, shared_traces):
    b = shared_traces / RECSYS / "sampled_rank-0.json.gz"
    n = shared_traces / RECSYS / "sampled_rank-1.json.gz"
    page.file_uploader(key="compare-base").set_value((b.name, b.read_bytes(), "application/gzip"))
    page.file_uploader(key="compare-new").set_value((n.name, n.read_bytes(), "application/gzip"))
    page.run()
    assert not page.exception, page.exception
    assert not page.error
    want = compare(analyze([b]).to_dict(), analyze([n]).to_dict())
    titles = _verdict_titles(page)
    assert titles and titles[0] == f"#1 {md_escape(want['verdict'][0]['title'])}"
    assert len(titles) == len(want["verdict"])
    assert [d.label for d in page.get("download_button")] == [
        "Download HTML diff", "Download Markdown", "Download JSON"]
    assert len(page.get("plotly_chart")) >= 2


def test_compare_a_saved_report_with_its_trace_says_no_change(page, shared_traces):
    t = shared_traces / RECSYS / "sampled_rank-0.json.gz"
    report = json.dumps(analyze([t]).to_dict()).encode()
    page.file_uploader(key="compare-base").set_value(("base-report.json", report, "application/json"))
    page.file_uploader(key="compare-new").set_value((t.name, t.read_bytes(), "application/gzip"))
    page.run()
    assert not page.exception and not page.error
    assert any("No significant change" in s.value for s in page.success)


def test_compare_against_the_run_last_analysed(shared_traces):
    t = shared_traces / RECSYS / "sampled_rank-0.json.gz"
    at = st_testing.AppTest.from_string(
        f"import sys; sys.path.insert(0, {str(REPO)!r})\nfrom app import compare_page\ncompare_page()\n",
        default_timeout=90)
    at.session_state["last_report"] = {"doc": analyze([t]).to_dict(), "label": "demo"}
    at.run()
    at.toggle(key="compare-base-last").set_value(True).run()
    at.file_uploader(key="compare-new").set_value((t.name, t.read_bytes(), "application/gzip"))
    at.run()
    assert not at.exception and not at.error
    assert any("No significant change" in s.value for s in at.success)


def test_compare_bad_upload_is_one_line(page, shared_traces):
    t = shared_traces / RECSYS / "sampled_rank-0.json.gz"
    page.file_uploader(key="compare-base").set_value(("broken.json", b'{"traceEvents": [', "application/json"))
    page.file_uploader(key="compare-new").set_value((t.name, t.read_bytes(), "application/gzip"))
    page.run()
    assert not page.exception
    assert len(page.error) == 1 and "\n" not in page.error[0].value


def test_side_report_detects_a_saved_report_by_content(shared_traces):
    t = shared_traces / RECSYS / "sampled_rank-0.json.gz"
    doc = analyze([t]).to_dict()
    got, source = side_report([Upload("anything.json", json.dumps(doc).encode())], LIMITS)
    assert source == "report" and got["summary"] == doc["summary"]
    got, source = side_report([Upload(t.name, t.read_bytes())], LIMITS)
    assert source == "trace" and got["summary"]["busy_us"] == doc["summary"]["busy_us"]


def test_compare_page_model(shared_traces):
    b, n = (analyze([shared_traces / RECSYS / f"sampled_rank-{r}.json.gz"]).to_dict() for r in (0, 1))
    diff = compare(b, n)
    p = build_compare_page(diff, b, n)
    assert [c.title for c in p.cards] == [v["title"] for v in diff["verdict"]]
    keys = [s.key for s in p.sections]
    assert "diff-kernels-removed" in keys and "diff-totals" in keys and "diff-steps" in keys
    removed = next(s for s in p.sections if s.key == "diff-kernels-removed").table
    assert "split_embedding_codegen_forward_weighted_kernel" in set(removed["kernel"])
    assert all(d.data() for d in p.downloads)
