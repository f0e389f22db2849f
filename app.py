"""Streamlit app: ``streamlit run app.py``. Layout only; the logic is in ``analyzer.webapp``.

Pages: "Analyze traces" (upload traces or pick a bundled sample, see the ranked findings,
figures and downloads), "Compare" (two runs: the verdict, side-by-side tables and charts) and,
when the capacity planner is installed, "Capacity planning".
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import streamlit as st

from analyzer import webapp as wa
from analyzer.render import charts
from analyzer.webapp import capacity as _capacity  # noqa: F401 (wa.capacity)
from analyzer.webapp import compare as wa_compare

REPO = Path(__file__).resolve().parent
SAMPLES_DIR = REPO / "sample_traces"
SOURCE_SAMPLE, SOURCE_UPLOAD = "Bundled sample", "Upload traces"


# ------------------------------------------------------------------------------------------
# cached analysis (keyed by the content hash of the inputs and the options)
# ------------------------------------------------------------------------------------------


def _progress_bar():
    bar = st.progress(0.0, text="Reading traces…")
    return bar, (lambda frac, text: bar.progress(frac, text=text))


@st.cache_data(max_entries=16, show_spinner=False)
def analyze_uploads(key: str, _uploads: tuple[wa.Upload, ...], _limits: wa.Limits,
                    _options: wa.Options) -> dict:
    """The report dict of uploaded files; ``key`` = content hash of the files + options."""
    bar, on_progress = _progress_bar()
    try:
        if wa.isolation.isolation_enabled():  # a child process under a memory ceiling
            return wa.isolation.run_isolated(_uploads, _limits, _options, on_progress)
        with wa.uploads.reader_limits(_limits):  # the readers' caps, no looser than the upload's
            return wa.run_uploads(_uploads, _limits, _options, on_progress)
    finally:
        bar.empty()


@st.cache_data(max_entries=16, show_spinner=False)
def analyze_sample(key: str, _sample: wa.Sample, _options: wa.Options) -> dict:
    """The report dict of a bundled sample; ``key`` = the sample's files + options."""
    bar, on_progress = _progress_bar()
    try:
        return wa.run_analysis([_sample.path], _options, on_progress)
    finally:
        bar.empty()


# ------------------------------------------------------------------------------------------
# analysis page
# ------------------------------------------------------------------------------------------


def _switch_to_upload() -> None:
    if st.session_state.get("uploads"):
        st.session_state["source"] = SOURCE_UPLOAD


def _sidebar() -> tuple[str, list, wa.Sample | None, wa.Options, wa.Limits]:
    limits = wa.Limits.from_upload_mb(st.get_option("server.maxUploadSize"))
    samples = wa.list_samples(SAMPLES_DIR)
    with st.sidebar:
        st.header("Input")
        source = st.radio("Source", [SOURCE_SAMPLE, SOURCE_UPLOAD], key="source", horizontal=True,
                          label_visibility="collapsed")
        uploads = st.file_uploader(
            "Upload traces", type=list(wa.uploads.UPLOAD_TYPES), accept_multiple_files=True,
            key="uploads", on_change=_switch_to_upload,
            help="PyTorch profiler (Kineto) .json / .json.gz of one or more ranks, an Nsight "
                 "Systems .sqlite export, or a .zip of a whole profile directory. Add "
                 "server_args.json from SGLang for KV-cache figures.",
        )
        st.caption(f"Up to {wa.uploads.human_bytes(limits.max_upload_bytes)} in all; a .zip may "
                   f"hold up to {wa.uploads.human_bytes(limits.max_unzipped_bytes)} once extracted.")
        sample = None
        if samples:
            by_label = {s.label: s for s in samples}
            label = st.selectbox("Bundled sample", list(by_label), key="sample",
                                 disabled=source != SOURCE_SAMPLE)
            sample = by_label[label]
            if source == SOURCE_SAMPLE and sample.description:
                st.caption(sample.description)
        models, gpus = wa.preset_names()
        with st.expander("Options"):
            model = st.selectbox("Model (KV bytes per token, FLOPs)", ["(from server_args)", *models],
                                 key="model")
            gpu = st.selectbox("GPU (HBM bandwidth, peak FLOP/s)", ["(from the trace)", *gpus], key="gpu")
            metrics = st.file_uploader("Server metrics (SGLang /metrics text)", type=["prom", "txt"],
                                       key="metrics", help="Contrasts the server's queue with GPU time.")
            sargs = st.file_uploader("Server args (server_args.json)", type=["json"], key="server_args",
                                     help="Parallel sizes, model and flags of the run, when the trace "
                                          "directory had none.")
        options = wa.Options(model=None if model.startswith("(") else model,
                             gpu=None if gpu.startswith("(") else gpu,
                             metrics_text=_text(metrics), server_args_json=_text(sargs))
    return source, list(uploads or []), sample, options, limits


def _text(upload) -> str | None:
    """An option file's text (None when none given); undecodable bytes become U+FFFD."""
    return upload.getvalue().decode("utf-8", errors="replace") if upload is not None else None


def _run(source: str, uploads: list, sample: wa.Sample | None, options: wa.Options,
         limits: wa.Limits) -> tuple[dict | None, str]:
    """The report dict (or None with a message shown) and a file-name stem for downloads."""
    try:
        if source == SOURCE_UPLOAD:
            if not uploads:
                st.info("Upload one or more traces in the sidebar, or switch to a bundled sample.")
                return None, ""
            files = tuple(wa.Upload(u.name, u.getvalue()) for u in uploads)
            wa.uploads.check_sizes(files, limits)
            key = wa.content_key(files, options.key())
            return analyze_uploads(key, files, limits, options), f"trace-report-{key[:8]}"
        if sample is None:
            st.info("No bundled sample found: upload traces in the sidebar.")
            return None, ""
        key = "sample:" + sample.key() + repr(options.key())
        return analyze_sample(key, sample, options), f"trace-report-{sample.name}"
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line, never a traceback
        st.error(wa.page.md_escape(wa.error_line(exc)), icon=":material/error:")
        return None, ""


def _perfetto(source: str, uploads: list, sample: wa.Sample | None, options: wa.Options,
              limits: wa.Limits):
    """The lazily rendered Perfetto download: reads the same inputs again when clicked."""
    if source == SOURCE_UPLOAD:
        return wa.perfetto_export(
            lambda: wa.prepared_inputs([wa.Upload(u.name, u.getvalue()) for u in uploads], limits), options)
    return wa.perfetto_export(lambda: contextlib.nullcontext([sample.path]), options) if sample else None


def _card(card: wa.Card) -> None:
    with st.container(border=True, key=f"finding-{card.number}"):
        head, share = st.columns([5, 1.3], vertical_alignment="center")
        with head:
            st.markdown(f"##### :{card.color}-badge[{card.severity.upper()}] &nbsp;"
                        f"#{card.number} {wa.page.md_escape(card.title)}")
        share.markdown(f"**{card.share_text}**  \n{card.time_text}")
        st.markdown(f"**Recommendation.** {wa.page.md_escape(card.recommendation)}")
        if card.evidence:
            with st.expander("Evidence", expanded=card.number == 1):
                st.markdown(card.evidence_markdown())
                st.caption(f"finding id `{card.id}`")


def _section(sec: charts.Section) -> None:
    st.subheader(sec.title)
    if sec.caption:
        st.caption(sec.caption)
    if sec.figure is not None:
        st.plotly_chart(sec.figure, key=f"plot-{sec.key}", config={"displaylogo": False})
    if sec.table is not None:
        table = sec.table
        if sec.key == "kernels":
            query = st.text_input("Filter kernels", key="kernel-filter",
                                  placeholder="words in the kernel name or category, e.g. gemm nvjet")
            table = charts.filter_kernels(table, query)
            st.caption(f"{len(table)} of {len(sec.table)} kernels")
        st.dataframe(wa.display_table(table), hide_index=True, key=f"table-{sec.key}")
    if sec.note:
        (st.info if sec.empty else st.caption)(sec.note)


def analysis_page() -> None:
    source, uploads, sample, options, limits = _sidebar()
    doc, stem = _run(source, uploads, sample, options, limits)
    if doc is None:
        st.title("LLM serving trace analysis")
        return
    st.session_state["last_report"] = {"doc": doc, "label": stem.removeprefix("trace-report-")}
    page = wa.build_page(doc, stem=stem, perfetto=_perfetto(source, uploads, sample, options, limits))
    files = [(u.name, u.size) for u in uploads] if source == SOURCE_UPLOAD else []
    run_name = (files[0][0] + (f" +{len(files) - 1}" if len(files) > 1 else "")) if files else \
        (sample.label if sample is not None else "trace")
    st.set_page_config(page_title=f"{run_name} · Trace analyzer")
    st.title(page.title)
    for line in page.subtitle.split("  \n"):  # the run summary, then the run context
        st.caption(wa.page.md_escape(line))
    st.markdown(wa.page.md_escape(wa.page.run_files_line(doc, files)))
    skipped = wa.page.skipped_notes(doc)
    if skipped:
        st.warning("Left out of this run: " + "; ".join(wa.page.md_escape(n) for n in skipped),
                   icon=":material/warning:")
    for col, m in zip(st.columns(len(page.metrics)), page.metrics):
        col.metric(m.label, m.value, help=m.help, border=True)
    with st.container(horizontal=True):
        for d in page.downloads:
            st.download_button(f"Download {d.label}", data=d.data, file_name=d.file_name, mime=d.mime,
                               on_click="ignore", icon=":material/download:", key=f"dl-{d.label}")
    for w in page.warnings:
        st.warning(wa.page.md_escape(w))
    st.header("Findings")
    if not page.cards:
        st.success("No finding: nothing stood out. The figures below show where the time went.")
    for card in page.cards:
        _card(card)
    for a in page.abstained:
        st.caption(f"Could not tell: {wa.page.md_escape(a)}")
    for sec in page.sections:
        _section(sec)
    with st.expander("Inputs and notes"):
        if not page.inputs.empty:
            st.dataframe(page.inputs, hide_index=True)
        for n in page.notes:
            st.caption(wa.page.md_escape(n))


# ------------------------------------------------------------------------------------------
# navigation
# ------------------------------------------------------------------------------------------


def main() -> None:
    st.set_page_config(page_title="Trace analyzer", page_icon=":material/monitoring:", layout="wide")
    pages = [st.Page(analysis_page, title="Analyze traces", icon=":material/monitoring:",
                     url_path="analyze", default=True)]
    pages.append(st.Page(compare_page, title="Compare", icon=":material/compare_arrows:", url_path="compare"))
    if wa.capacity_available():
        pages.append(st.Page(capacity_page, title="Capacity planning", icon=":material/calculate:",
                             url_path="capacity"))
    st.navigation(pages).run()


def capacity_page() -> None:
    st.title("Capacity planning")
    st.caption("How many concurrent long-context calls should one replica serve? The KV-cache "
               "memory bound and a prefill/decode time model (docs/capacity-planning.md).")
    models, gpus = wa.preset_names()

    def pick(options: list[str], default: str) -> int:
        return options.index(default) if default in options else 0

    d = wa.capacity.CapacityInputs()
    c = st.columns(4)
    model = c[0].selectbox("Model", models, index=pick(models, d.model), key="cap-model")
    gpu = c[1].selectbox("GPU", gpus, index=pick(gpus, d.gpu), key="cap-gpu")
    kv_dtype = c[2].selectbox("KV cache dtype", ["bf16", "fp8"], key="cap-kv")
    mem = c[3].slider("mem_fraction_static", 0.5, 0.95, d.mem_fraction, 0.01, key="cap-mem")
    c = st.columns(4)
    tp = c[0].selectbox("TP", [1, 2, 4, 8, 16], index=3, key="cap-tp")
    pp = c[1].selectbox("PP", [1, 2, 4, 8], key="cap-pp")
    replicas = c[2].number_input("Replicas (R)", 1, 1024, d.replicas, key="cap-r")
    context = c[3].number_input("Context tokens (S)", 128, 2_000_000, d.context_tokens, 1000, key="cap-s")
    c = st.columns(4)
    output = c[0].number_input("Output tokens", 1, 100_000, d.output_tokens, key="cap-out")
    agents = c[1].number_input("Agents", 1, 100_000, d.agents, key="cap-agents")
    calls = c[2].number_input("Calls per agent", 1, 10_000, d.calls_per_agent, key="cap-calls")
    last = st.session_state.get("last_report")
    calibrate = c[3].toggle("Calibrate from trace", key="cap-cal", disabled=last is None,
                            help="Use the rates measured in the trace last analysed on the first page "
                                 "(prefill/GEMM throughput, decode step time, all-reduce time per byte).")
    inputs = wa.capacity.CapacityInputs(
        model=model, gpu=gpu, tp=int(tp), pp=int(pp), replicas=int(replicas), context_tokens=int(context),
        output_tokens=int(output), agents=int(agents), calls_per_agent=int(calls), kv_dtype=kv_dtype,
        mem_fraction=float(mem), calibrate=bool(calibrate))
    try:
        page = wa.capacity.capacity_page(inputs, last["doc"] if last else None)
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        st.error(wa.page.md_escape(wa.error_line(exc)), icon=":material/error:")
        return
    for col, m in zip(st.columns(len(page.metrics)), page.metrics):
        col.metric(m.label, m.value, help=m.help, border=True)
    if page.calibrated:
        st.caption(f"Calibrated from {last['label']}: " + ", ".join(page.calibrated))
    for w in page.warnings:
        st.warning(wa.page.md_escape(w))
    st.plotly_chart(page.figure, key="plot-capacity", config={"displaylogo": False})
    st.dataframe(wa.display_table(page.table), hide_index=True, key="table-capacity")
    with st.container(horizontal=True):
        for dl in page.downloads:
            st.download_button(f"Download {dl.label}", data=dl.data, file_name=dl.file_name,
                               mime=dl.mime, on_click="ignore", icon=":material/download:",
                               key=f"cap-dl-{dl.label}")
    if page.notes:
        with st.expander("Notes"):
            for n in page.notes:
                st.caption(wa.page.md_escape(n))


# ------------------------------------------------------------------------------------------
# compare page (analyzer.webapp.compare: two runs -> verdict, tables, charts, downloads)
# ------------------------------------------------------------------------------------------


@st.cache_data(max_entries=16, show_spinner=False)
def compare_side(key: str, _uploads: tuple[wa.Upload, ...], _limits: wa.Limits) -> tuple[dict, str]:
    """One side's report dict and source; ``key`` = content hash of its files."""
    bar, on_progress = _progress_bar()
    try:
        return wa_compare.side_report(list(_uploads), _limits, on_progress=on_progress)
    finally:
        bar.empty()


def compare_page() -> None:
    st.title("Compare two runs")
    st.caption("Each side: the traces of one run (files, or a .zip of a profile directory) or a "
               "saved JSON report. The verdict ranks what changed by the time it adds or saves per step.")
    limits = wa.Limits.from_upload_mb(st.get_option("server.maxUploadSize"))
    last = st.session_state.get("last_report")
    cols = st.columns(2)
    use_last = bool(last) and cols[0].toggle(
        f"Base: the run last analysed on the Analyze page ({last['label']})" if last else "",
        key="compare-base-last")
    picked = {}
    for col, side in zip(cols, ("base", "new")):
        if side == "base" and use_last:
            continue
        picked[side] = col.file_uploader(
            f"{side.capitalize()} run", type=[*wa.uploads.UPLOAD_TYPES], accept_multiple_files=True,
            key=f"compare-{side}", help="traces (.json, .json.gz, .sqlite, .zip) or a report .json")
    if not (use_last or picked["base"]) or not picked["new"]:
        st.info("Upload the base run on the left and the new run on the right.")
        return
    try:
        sides, labels = [], []
        for side in ("base", "new"):
            if side == "base" and use_last:
                sides.append((last["doc"], "report"))
                labels.append(last["label"])
                continue
            files = tuple(wa.Upload(u.name, u.getvalue()) for u in picked[side])
            wa.uploads.check_sizes(files, limits)
            sides.append(compare_side(wa.content_key(files, side), files, limits))
            labels.append(", ".join(u.name for u in picked[side]))
        diff = wa_compare.compare_sides(sides[0], sides[1], labels=(labels[0], labels[1]))
        page = wa_compare.build_compare_page(diff, sides[0][0], sides[1][0])
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        st.error(wa.error_line(exc), icon=":material/error:")
        return
    st.subheader(page.headline)
    st.caption(page.subtitle)
    for col, m in zip(st.columns(len(page.metrics)), page.metrics):
        col.metric(m.label, m.value, delta=m.delta, delta_color="inverse", help=m.help, border=True)
    with st.container(horizontal=True):
        for d in page.downloads:
            st.download_button(f"Download {d.label}", data=d.data, file_name=d.file_name, mime=d.mime,
                               on_click="ignore", icon=":material/download:", key=f"cmp-dl-{d.label}")
    for w in page.warnings:
        st.warning(w)
    st.header("Verdict")
    if not page.cards:
        st.success("No significant change between the two runs.")
    for card in page.cards:
        with st.container(border=True, key=f"verdict-{card.number}"):
            st.markdown(f"##### :{card.color}-badge[{card.kind.upper()}] &nbsp;#{card.number} "
                        f"{wa.page.md_escape(card.title)}")
            st.caption(f"{card.evidence} · `{card.id}`")
    for sec in page.sections:
        _section(sec)


if __name__ == "__main__":
    main()
