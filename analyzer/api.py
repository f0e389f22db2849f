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
    skip_bad_ranks: bool = False,
) -> Report:
    """Analyse traces and return a :class:`Report`.

    ``source``: paths (files, directories, ``.zip``) or an already loaded TraceSet.
    ``rules``: extra classification rule files (later rules override built-in ones).
    ``model`` / ``gpu``: presets or config paths used for KV traffic and roofline figures.
    ``metrics``: a saved Prometheus text from SGLang's ``/metrics`` (path) or a parsed object.
    ``server_args``: SGLang's server_args (dict or JSON path); found beside traces otherwise.
    ``skip_bad_ranks``: leave out (with a warning) the ranks that cannot be read, instead
    of raising ``BadInputError``.

    A TraceSet passed in is changed in place: its event tables are classified, and the
    python stack frames that no analysis reads (``analyses/prune.py``) are dropped from them.
    """
    from .analyses.context import trace_clues
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
    for trace in traceset.traces:
        clues.append(trace_clues(trace))  # engine/workload clues, before the frames go
        prune_python_frames(trace)  # python frames no marker reads (most rows of a stack trace)
        classify_trace(trace, ruleset)
        attr = attribute_steps(trace)  # found once, reused by the serving diagnosis
        reassign_attention_by_phase(trace, attr)  # attention kernels in decode steps are decode
        attributions.append(attr)

    timelines: list[RankTimeline] = []
    by_rank: dict[int, RankTimeline] = {}
    for trace in sorted(traceset.traces, key=lambda t: t.rank.rank):
        for tl in trace_timelines(trace):
            timelines.append(tl)
            by_rank.setdefault(tl.rank, tl)

    sargs = given_args if given_args is not None else traceset.server_args
    warnings = [*traceset.warnings, *(w for t in traceset.traces for w in t.warnings)]
    if any(tl.activity_source == "cpu" for tl in timelines):
        warnings.append(
            "some traces have no GPU activity: their figures come from top-level CPU operators"
        )

    result = analyze_serving(
        traceset.traces, by_rank, server_args=sargs, model=model, gpu=gpu, metrics=parsed_metrics,
        attributions=attributions, clues=clues,
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
    )


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
