"""The Streamlit app: AppTest flows (sample, upload, errors, downloads) and its library side
(analyzer.webapp: uploads, zips, cache keys, samples, progress, page model)."""

from __future__ import annotations

import re

import io
import stat
import zipfile
from pathlib import Path

import pytest

from analyzer import analyze
from analyzer.model import BadInputError
from analyzer.webapp import page as page_mod
from analyzer.webapp.samples import list_samples
from analyzer.webapp.session import ProgressRelay, error_line
from analyzer.webapp.uploads import (
    Limits,
    Upload,
    check_zip,
    content_key,
    prepared_inputs,
    safe_filename,
)

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_traces"
SGLANG = Path("kineto/sglang_qwen3-8b_mi300x_prefill_decode.json.gz")
RECSYS = Path("kineto/hta_recsys_2ranks")
LIMITS = Limits.from_upload_mb(64)


def _top_title(paths) -> str:
    """The top finding's title computed by the library directly (the app must show the same)."""
    report = analyze(paths)
    assert report.findings
    return report.findings[0].title


# ------------------------------------------------------------------------------------------
# AppTest flows
# ------------------------------------------------------------------------------------------

st_testing = pytest.importorskip("streamlit.testing.v1")


@pytest.fixture(scope="module", autouse=True)
def _fresh_cache():
    import streamlit as st

    st.cache_data.clear()  # once: later tests reuse the demo analysis, as reruns do
    yield
    st.cache_data.clear()


@pytest.fixture
def app():
    at = st_testing.AppTest.from_file(str(REPO / "app.py"), default_timeout=90)
    at.run()
    assert not at.exception, at.exception
    return at


def _finding_titles(at) -> list[str]:
    return [m.value.split("] &nbsp;", 1)[1] for m in at.markdown if m.value.startswith("##### :")]


def test_opens_on_the_demo_sample(app):
    samples = list_samples(SAMPLES)
    assert samples and samples[0].name == "demo"
    titles = _finding_titles(app)
    want = _top_title([samples[0].path])
    assert titles and titles[0] == f"#1 {page_mod.md_escape(want)}"
    labels = [b.label for b in app.get("download_button")]
    assert labels == ["Download HTML report", "Download Markdown", "Download JSON", "Download Perfetto trace"]
    assert len(app.get("plotly_chart")) >= 4
    assert not app.error


def test_pick_another_sample(app):
    samples = {s.name: s for s in list_samples(SAMPLES)}
    name = "batching_gaps" if "batching_gaps" in samples else max(samples)
    label = samples[name].label
    app.sidebar.selectbox(key="sample").set_value(label).run()
    assert not app.exception
    want = _top_title([samples[name].path])
    assert _finding_titles(app)[0] == f"#1 {page_mod.md_escape(want)}"


def test_upload_a_real_trace(app, shared_traces):
    path = shared_traces / SGLANG
    app.sidebar.file_uploader(key="uploads").set_value((path.name, path.read_bytes(), "application/gzip"))
    app.run()
    assert not app.exception, app.exception
    assert app.sidebar.radio(key="source").value == "Upload traces"
    want = _top_title([path])
    assert _finding_titles(app)[0] == f"#1 {page_mod.md_escape(want)}"
    assert next(b.label for b in app.get("download_button")) == "Download HTML report"
    # the kernel table's search narrows the rows
    app.text_input(key="kernel-filter").input("gemm").run()
    captions = [c.value for c in app.caption if re.fullmatch(r"\d+ of \d+ kernels", c.value)]
    shown, total = (int(x) for x in captions[0].split()[0:3:2])
    assert 0 < shown < total


def test_upload_is_cached_by_content(app, shared_traces, monkeypatch):
    from analyzer import webapp

    calls = []
    real = webapp.isolation.run_isolated
    monkeypatch.setattr(webapp.isolation, "run_isolated", lambda *a, **k: calls.append(1) or real(*a, **k))
    path = shared_traces / "kineto/hta_rocm_mi250_toy.json.gz"
    app.sidebar.file_uploader(key="uploads").set_value((path.name, path.read_bytes(), "application/gzip"))
    app.run()
    app.run()  # a rerun with the same bytes: served from st.cache_data
    assert not app.exception
    assert len(calls) == 1


def test_bad_upload_is_one_line_not_a_traceback(app):
    app.sidebar.file_uploader(key="uploads").set_value(("broken.json", b'{"traceEvents": [ {"ph": "X", ', "application/json"))
    app.run()
    assert not app.exception
    assert len(app.error) == 1
    msg = app.error[0].value
    assert "\n" not in msg and "Traceback" not in msg
    assert not _finding_titles(app)


def test_bad_upload_names_the_file_not_a_server_path(app):
    app.sidebar.file_uploader(key="uploads").set_value(("my-rank.json", b"not json at all", "application/json"))
    app.run()
    assert not app.exception and len(app.error) == 1
    msg = app.error[0].value
    assert "my-rank.json" in msg, msg
    assert "/tmp" not in msg and "trace-analyzer-upload" not in msg, msg


def test_file_left_out_is_a_visible_warning_and_run_names_its_files(app, shared_traces):
    good = shared_traces / "kineto/hta_rocm_mi250_toy.json.gz"
    app.sidebar.file_uploader(key="uploads").set_value([
        (good.name, good.read_bytes(), "application/gzip"),
        ("notes.json", b'{"hello": "world"}', "application/json")])
    app.run()
    assert not app.exception, app.exception
    warnings = " ".join(w.value for w in app.warning)
    assert "notes.json" in warnings and "/tmp" not in warnings, warnings
    run = " ".join(m.value for m in app.markdown if "This run" in m.value)
    assert good.name.replace("_", "\\_") in run or good.name in run, run
    for e in app.expander:  # the inputs table never shows the server's temp folder
        for df in e.dataframe:
            assert not df.value.astype(str).apply(lambda c: c.str.contains("trace-analyzer-upload")).any().any()


def test_abstentions_name_the_apps_options_not_cli_flags(app, shared_traces):
    path = shared_traces / "kineto/sglang_qwen3-8b_mi300x_prefill_decode.json.gz"
    app.sidebar.file_uploader(key="uploads").set_value((path.name, path.read_bytes(), "application/gzip"))
    app.run()
    assert not app.exception
    lines = [c.value for c in app.caption if c.value.startswith("Could not tell")]
    assert lines and not any("--model" in x or "--metrics" in x for x in lines), lines
    assert any("Options › Model" in x for x in lines), lines


def test_analysis_runs_under_a_memory_ceiling(app, shared_traces, monkeypatch):
    """The upload is analysed in a child process whose address space is capped: a ceiling
    too small for it is one line in the page, and the server keeps serving."""
    monkeypatch.setenv("ANALYZER_APP_MEMORY_MB", "150")
    path = shared_traces / "kineto/hta_rocm_mi250_toy.json.gz"
    app.sidebar.file_uploader(key="uploads").set_value((path.name, path.read_bytes(), "application/gzip"))
    app.sidebar.selectbox(key="gpu").set_value(app.sidebar.selectbox(key="gpu").options[2])  # not cached
    app.run()
    assert not app.exception and len(app.error) == 1
    assert "memory ceiling of 150 MiB" in app.error[0].value
    monkeypatch.setenv("ANALYZER_APP_MEMORY_MB", "2000")
    app.sidebar.selectbox(key="gpu").set_value(app.sidebar.selectbox(key="gpu").options[1])  # new cache key
    app.run()
    assert not app.exception and not app.error
    assert _finding_titles(app)


def test_memory_ceiling_scales_with_the_upload(monkeypatch):
    from analyzer.webapp.isolation import BASE_MB, PER_UPLOAD_BYTE, ceiling_bytes

    monkeypatch.delenv("ANALYZER_APP_MEMORY_MB", raising=False)
    ten_mb = 10 * 1024 * 1024
    assert ceiling_bytes(ten_mb) == (BASE_MB << 20) + PER_UPLOAD_BYTE * ten_mb < (1 << 30)
    monkeypatch.setenv("ANALYZER_APP_MEMORY_MB", "512")
    assert ceiling_bytes(ten_mb) == 512 << 20


def test_upload_mode_without_files_asks_for_them(app):
    app.sidebar.radio(key="source").set_value("Upload traces").run()
    assert not app.exception and not app.error
    assert any("Upload one or more traces" in i.value for i in app.info)


def test_capacity_page(app):
    from analyzer.webapp import capacity_available

    if not capacity_available():
        pytest.skip("capacity planner not installed")
    # the page is a function page of st.navigation: drive it on its own
    at = st_testing.AppTest.from_string(
        f"import sys; sys.path.insert(0, {str(REPO)!r})\nfrom app import capacity_page\ncapacity_page()\n",
        default_timeout=60)
    at.run()
    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    helps = {m.label: m.proto.help for m in at.metric}
    # Llama-3.1-70B, bf16: 80 layers x 2 (K, V) x 8 KV heads x 128 head dim x 2 bytes
    kv = 80 * 2 * 8 * 128 * 2
    assert metrics["KV per token"] == f"{kv / 1000:,.1f} kB"
    assert helps["KV per token"].startswith(f"{kv:,} B over all 80 layers")
    assert metrics["Rule of thumb"] == "2 – 4"  # 2 x R, 4 x R with R = 1
    assert len(at.get("plotly_chart")) == 1
    assert [b.label for b in at.get("download_button")] == ["Download Markdown", "Download JSON"]
    at.selectbox(key="cap-kv").set_value("fp8").run()
    assert {m.label: m.value for m in at.metric}["KV per token"] == f"{kv / 2 / 1000:,.1f} kB"
    at.number_input(key="cap-r").set_value(3).run()
    assert {m.label: m.value for m in at.metric}["Rule of thumb"] == "6 – 12"


# ------------------------------------------------------------------------------------------
# uploads, zips, cache keys
# ------------------------------------------------------------------------------------------


def test_content_key_is_order_independent_and_content_sensitive():
    a, b = Upload("a.json", b"1"), Upload("b.json", b"2")
    assert content_key([a, b]) == content_key([b, a])
    assert content_key([a, b]) != content_key([a, Upload("b.json", b"3")])
    assert content_key([a]) != content_key([Upload("c.json", b"1")])
    assert content_key([a], ("llama-3.1-8b", None)) != content_key([a], (None, None))


def test_total_size_limit_message():
    limits = Limits(max_upload_bytes=10, max_unzipped_bytes=100)
    with pytest.raises(BadInputError, match="over the 10 B limit"), prepared_inputs([Upload("a.json", b"x" * 6), Upload("b.json", b"y" * 6)], limits):
        pass
    with pytest.raises(BadInputError, match="empty"), prepared_inputs([Upload("a.json", b"")], limits):
        pass
    with pytest.raises(BadInputError, match="not a trace file"), prepared_inputs([Upload("notes.txt", b"hello")], limits):
        pass


def test_safe_filename_keeps_rank_naming():
    assert safe_filename("../../x/1767-TP-0-PP-1.trace.json.gz") == "1767-TP-0-PP-1.trace.json.gz"
    assert safe_filename("C:\\Users\\me\\a b.json") == "a_b.json"
    assert safe_filename("..") == "upload"


def _zip(members: dict[str, bytes], *, symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


@pytest.mark.parametrize("members,symlink,match", [
    ({"../evil.json": b"{}"}, None, "path traversal"),
    ({"/abs/evil.json": b"{}"}, None, "absolute path"),
    ({"ok.json": b"{}"}, "link.json", "symlink"),
    ({f"f{i}.json": b"{}" for i in range(30)}, None, "too many members"),
])
def test_zip_member_checks(tmp_path, members, symlink, match):
    z = tmp_path / "t.zip"
    z.write_bytes(_zip(members, symlink=symlink))
    with pytest.raises(BadInputError, match=match):
        check_zip(z, Limits(max_upload_bytes=1 << 20, max_unzipped_bytes=1 << 20, max_zip_members=20))


def test_zip_bomb_is_refused(tmp_path):
    data = _zip({"big.json": b"0" * (16 << 20)})  # 16 MiB of zeros: ~1000x
    assert len(data) < 100_000
    limits = Limits(max_upload_bytes=1 << 20, max_unzipped_bytes=1 << 30)
    with pytest.raises(BadInputError, match="zip bomb"), prepared_inputs([Upload("t.zip", data)], limits):
        pass
    # and the total cap, independent of the ratio
    small = Limits(max_upload_bytes=1 << 20, max_unzipped_bytes=1 << 20, max_zip_ratio=1e9)
    with pytest.raises(BadInputError, match="once extracted"), prepared_inputs([Upload("t.zip", data)], small):
        pass


def test_workspace_is_removed_even_after_an_error():
    seen = []
    with pytest.raises(RuntimeError), prepared_inputs([Upload("a.json.gz", b"x")], LIMITS) as paths:
        seen.extend(paths)
        assert all(p.exists() for p in paths)
        raise RuntimeError("boom")
    assert seen and not any(p.exists() for p in seen)


def test_zip_of_a_profile_directory_gives_all_ranks(shared_traces, tmp_path):
    folder = shared_traces / RECSYS
    files = sorted(folder.iterdir())
    data = _zip({f"profile/{f.name}": f.read_bytes() for f in files})
    with prepared_inputs([Upload("profile.zip", data)], LIMITS) as paths:
        report = analyze(paths)
        extracted = sorted(p.name for p in paths[0].rglob("*") if p.is_file())
    assert extracted == [f.name for f in files]
    direct = analyze([folder])
    assert len(report.ranks) == len(direct.ranks) == 2
    assert [f.id for f in report.findings] == [f.id for f in direct.findings]


def test_several_uploads_keep_their_names(shared_traces):
    files = sorted((shared_traces / RECSYS).iterdir())
    ups = [Upload(f.name, f.read_bytes()) for f in files]
    with prepared_inputs(ups, LIMITS) as paths:
        assert len(paths) == 1 and sorted(p.name for p in paths[0].iterdir()) == [f.name for f in files]


# ------------------------------------------------------------------------------------------
# samples, progress, errors, page model
# ------------------------------------------------------------------------------------------


def test_samples_list_demo_first_with_descriptions():
    samples = list_samples(SAMPLES)
    if not samples:
        pytest.skip("no bundled samples")
    assert samples[0].name == "demo"
    synthetic = [s for s in samples if s.synthetic]
    names = [s.name for s in synthetic]
    assert names[1:] == sorted(names[1:])  # synthetic first (demo leading), then recorded ones
    assert samples[: len(synthetic)] == synthetic
    for s in samples:
        assert s.files and all(f.name.endswith((".json.gz", ".sqlite", ".trace.json")) for f in s.files)
        assert s.label.endswith("(synthetic)" if s.synthetic else "(recorded)")
        assert s.synthetic == ("synthetic" in s.path.parts)
        assert s.description or not s.synthetic
        assert not any(f.name in ("ground_truth.json", "server_args.json") for f in s.files)
    assert samples[0].key() == list_samples(SAMPLES)[0].key()


def test_progress_relay_throttles():
    t = [0.0]
    got = []
    relay = ProgressRelay(lambda f, text: got.append(f), min_step=0.05, min_interval_s=0.5,
                          clock=lambda: t[0])
    for done in range(1001):
        t[0] += 0.01
        relay.reading(done, 1000)
    # 10 s of reading at most one update per 0.5 s -> about 20, monotonic, within [0, 0.85]
    assert 10 <= len(got) <= 21
    assert got == sorted(got) and got[-1] <= 0.85 + 1e-9


def test_error_line():
    assert error_line(BadInputError("x.json: truncated JSON\nmore")) == "x.json: truncated JSON"
    line = error_line(KeyError("boom"))
    assert "\n" not in line and line.startswith("Internal error (KeyError")


def test_page_model_from_a_report(shared_traces):
    doc = analyze([shared_traces / SGLANG]).to_dict()
    page = page_mod.build_page(doc)
    assert page.top_title == doc["findings"][0]["title"]
    assert [c.id for c in page.cards] == [f["id"] for f in doc["findings"]]
    shares = [f["share"] for f in doc["findings"]]
    assert [c.share_text for c in page.cards] == [f"{100 * s:.1f}% of wall" for s in shares]
    assert [m.label for m in page.metrics][:2] == ["Ranks", "GPU wall"]
    by_name = {d.file_name.rsplit(".", 1)[1]: d for d in page.downloads}
    import json

    assert json.loads(by_name["json"].data()) == json.loads(json.dumps(doc))
    assert by_name["md"].data().startswith("# ")
    assert by_name["html"].data().startswith("<!DOCTYPE html>")
    # kernel table for display: shares as percentages
    table = page_mod.display_table(next(s.table for s in page.sections if s.key == "kernels"))
    assert table["share of busy (%)"].max() <= 100.0


def test_markdown_escape_of_kernel_names():
    assert page_mod.md_escape("void at::native::<lambda>_kernel*") == "void at::native::\\<lambda\\>\\_kernel\\*"


def test_perfetto_download_is_rendered_only_when_asked_and_reads_the_inputs_again():
    """The Perfetto download needs the events, which the report dict does not hold: its
    callable reads the inputs again, and nothing is read before it is called."""
    import contextlib
    import json

    from analyzer import webapp as wa

    path = SAMPLES / "synthetic" / "batching_gaps"
    opened = []

    def inputs():
        opened.append(path)
        return contextlib.nullcontext([path])

    doc = analyze([path]).to_dict()
    page = page_mod.build_page(doc, stem="x", perfetto=wa.perfetto_export(inputs))
    d = next(d for d in page.downloads if d.label == "Perfetto trace")
    assert d.file_name == "x.perfetto.json" and opened == []
    trace = json.loads(d.data())
    assert opened == [path]
    names = {e["args"]["id"] for e in trace["traceEvents"] if e.get("cat") == "trace_analyzer.finding_summary"}
    assert names == {f["id"] for f in doc["findings"]}
    assert [x.label for x in page_mod.build_page(doc).downloads] == ["HTML report", "Markdown", "JSON"]
