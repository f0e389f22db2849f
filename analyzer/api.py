"""The library API: load traces, analyse them, get a Report.

>>> from analyzer import analyze
>>> report = analyze(["sample_traces/synthetic/demo"])          # doctest: +SKIP
>>> report.top_finding.title                                     # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .analyses.timeline import RankTimeline, summarize, trace_timelines
from .model import BadInputError, TraceSet
from .report import InputInfo, Report

Progress = Callable[[int, int], None]
PathLike = str | Path


def load(
    paths: Sequence[PathLike] | PathLike, *, progress: Progress | None = None,
    skip_bad_ranks: bool = False,
) -> TraceSet:
    """Read traces (files, directories, .zip, Nsight exports) into a TraceSet.

    A rank that cannot be read raises ``BadInputError`` unless ``skip_bad_ranks``: then it
    is left out with a report warning."""
    from .readers import load_traces

    if isinstance(paths, (str, Path)):
        paths = [paths]
    return load_traces(list(paths), progress=progress, skip_bad=skip_bad_ranks)


def analyze(
    source: Sequence[PathLike] | PathLike | TraceSet,
    *,
    rules: Sequence[PathLike] = (),
    model: str | None = None,
    gpu: str | None = None,
    metrics: Any = None,
    server_args: Mapping[str, Any] | PathLike | None = None,
    progress: Progress | None = None,
    include_edges: bool = False,
    roofline: str = "auto",
    graph_capture: PathLike | None = None,
    skip_bad_ranks: bool = False,
) -> Report:
    """Analyse traces and return a :class:`Report`.

    ``source``: paths (files, directories, ``.zip``) or an already loaded TraceSet.
    ``rules``: extra classification rule files (later rules override built-in ones).
    ``model`` / ``gpu``: presets or config paths used for KV traffic and roofline figures.
    ``metrics``: a saved Prometheus text from SGLang's ``/metrics`` (path) or a parsed object.
    ``server_args``: SGLang's server_args (dict or JSON path); found beside traces otherwise.
    ``roofline``: "auto" reads the recorded shapes (a second, lazy pass over the file) when a
    trace has ``record_shapes``; "on" always tries; "off" never. ``graph_capture``: the
    CUDA-graph capture trace that maps graph-replayed kernels back to their ops.
    ``include_edges``: count the capture edges (idle before the first step's work and after
    the last step's, or around lone warm-up/teardown activity) as idle, as 0.1.0 did; by
    default they are reported apart as ``edge_us`` and left out of idle, shares and findings.
    ``skip_bad_ranks``: leave out (with a warning) the ranks that cannot be read, instead
    of raising ``BadInputError``.

    A TraceSet passed in is changed in place: its event tables are classified, and the
    python stack frames that no analysis reads (``analyses/prune.py``) are dropped from them.
    """
    from .analyses.context import trace_clues
    from .analyses.gaps import step_window
    from .analyses.kernel_table import kernel_table
    from .analyses.phases import attribute_steps, reassign_attention_by_phase
    from .analyses.prune import prune_python_frames
    from .analyses.serving import analyze_serving
    from .classify import classify_trace, load_rules

    given_args = _server_args(server_args) if server_args is not None else None
    parsed_metrics = _metrics(metrics)  # bad side inputs fail before the long work
    traceset = (
        source if isinstance(source, TraceSet)
        else load(source, progress=progress, skip_bad_ranks=skip_bad_ranks)
    )
    if not traceset.traces:
        raise BadInputError("no trace found in the inputs")
    ruleset = load_rules([str(r) for r in rules])
    attributions = []
    clues = []
    windows: dict[int, dict[int, tuple[int, int]]] = {}  # id(trace) -> device -> step window
    for trace in traceset.traces:
        clues.append(trace_clues(trace))  # engine/workload clues, before the frames go
        prune_python_frames(trace)  # python frames no marker reads (most rows of a stack trace)
        classify_trace(trace, ruleset)
        attr = attribute_steps(trace)  # found once, reused by the serving diagnosis
        reassign_attention_by_phase(trace, attr)  # attention kernels in decode steps are decode
        attributions.append(attr)
        win = step_window(attr)
        windows[id(trace)] = {attr.device: win} if win is not None else {}

    timelines: list[RankTimeline] = []
    by_rank: dict[int, RankTimeline] = {}
    for trace in sorted(traceset.traces, key=lambda t: t.rank.rank):
        for tl in trace_timelines(trace, step_windows=windows[id(trace)],
                                  include_edges=include_edges):
            timelines.append(tl)
            by_rank.setdefault(tl.rank, tl)

    sargs = given_args if given_args is not None else traceset.server_args
    warnings = [*traceset.warnings, *(w for t in traceset.traces for w in t.warnings)]
    if any(tl.activity_source == "cpu" for tl in timelines):
        warnings.append(
            "some traces have no GPU activity: their figures come from top-level CPU operators"
        )

    from .analyses.roofline_inputs import roofline_inputs

    shapes, capture = roofline_inputs(traceset.traces, roofline, graph_capture)
    result = analyze_serving(
        traceset.traces, by_rank, server_args=sargs, model=model, gpu=gpu, metrics=parsed_metrics,
        attributions=attributions, clues=clues, include_edges=include_edges,
        op_shapes=shapes, graph_capture=capture,
    )
    inputs = [i for t in sorted(traceset.traces, key=lambda t: t.rank.rank) for i in InputInfo.from_trace(t)]
    return Report(
        inputs=inputs,
        ranks=timelines,
        summary=summarize(timelines),
        findings=list(result.findings),
        serving=dict(result.sections),
        calibration=dict(result.calibration),
        warnings=warnings,
        notes=list(traceset.notes),
        abstained=list(result.abstained),
        server_args=sargs,
        metrics=_metrics_dict(parsed_metrics),
        context=result.context.to_dict() if result.context is not None else {},
        kernels=kernel_table(traceset.traces),
    )


def export_perfetto(
    source: Sequence[PathLike] | PathLike | TraceSet,
    *,
    ranks: Sequence[int] | None = None,
    rules: Sequence[PathLike] = (),
    model: str | None = None,
    gpu: str | None = None,
    server_args: Mapping[str, Any] | PathLike | None = None,
    progress: Progress | None = None,
) -> tuple[dict[str, Any], Report]:
    """A Chrome/Perfetto JSON trace (``analyzer.render.perfetto``) of ``ranks`` (default: the
    report's representative rank, the basis of its findings) and the Report it annotates.

    >>> doc, report = export_perfetto(["sample_traces/synthetic/demo"])   # doctest: +SKIP
    """
    from .analyses.comm_roles import cross_rank
    from .analyses.phases import attribute_steps
    from .analyses.spans import rank_spans
    from .render.perfetto import perfetto_trace

    traceset = source if isinstance(source, TraceSet) else load(source, progress=progress)
    report = analyze(traceset, rules=rules, model=model, gpu=gpu, server_args=server_args)
    doc = report.to_dict()
    by_rank = {t.rank.rank: t for t in traceset.traces}
    rep = doc["serving"].get("representative_rank")
    wanted = [rep if rep is not None else min(by_rank)] if ranks is None else list(ranks)
    unknown = [r for r in wanted if r not in by_rank]
    if unknown:
        raise BadInputError(f"no rank {', '.join(map(str, unknown))} in the inputs; ranks: "
                            + ", ".join(map(str, sorted(by_rank))))
    traces = [by_rank[r] for r in sorted(set(wanted))]
    attrs = {t.rank.rank: attribute_steps(t) for t in traceset.traces}  # all: cross-rank waits
    sizes = doc["serving"]["communication"]["sizes"]
    workload = str((doc.get("context") or {}).get("workload") or "serving")
    waits = pipe = None
    if len(traceset.traces) > 1:  # the same clocks and bubble verdict as the report
        from .analyses.bubbles import pipeline_context
        from .analyses.clock import align_clocks

        ordered = sorted(traceset.traces, key=lambda t: t.rank.rank)
        oattrs = [attrs[t.rank.rank] for t in ordered]
        clock = align_clocks(ordered, [a.act for a in oattrs])
        waits = cross_rank(ordered, oattrs, clock=clock).get("_wait_intervals")
        pipe = pipeline_context(ordered, oattrs, sizes, clock)
    spans = [rank_spans(t, attrs[t.rank.rank], sizes, workload=workload,
                        findings=doc["findings"] if t.rank.rank == rep else (), waits=waits,
                        pipeline=pipe.judge(t.rank.rank) if pipe is not None else None)
             for t in traces]
    return perfetto_trace(traces, spans, doc), report


def _server_args(value: Mapping[str, Any] | PathLike) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    if not Path(value).is_file():  # also a FIFO or device: never opened (it could block)
        raise BadInputError(f"cannot read server args {value}: not a regular file")
    try:
        data = json.loads(Path(value).read_text())
    except RecursionError:
        raise BadInputError(f"cannot read server args {value}: nested too deeply") from None
    except (OSError, ValueError) as exc:
        raise BadInputError(f"cannot read server args {value}: {exc}") from None
    if not isinstance(data, dict):
        raise BadInputError(f"server args {value} is not a JSON object")
    return data


def _metrics(value: Any) -> Any:
    if value is None or not isinstance(value, (str, Path)):
        return value
    from .collect.metrics import load_metrics

    return load_metrics(value)


def _metrics_dict(metrics: Any) -> dict[str, Any] | None:
    if metrics is None:
        return None
    if hasattr(metrics, "to_dict"):
        return metrics.to_dict()
    if isinstance(metrics, Mapping):
        return dict(metrics)
    return None
